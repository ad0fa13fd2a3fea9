#!/usr/bin/env python3
"""wsgibridge's side-by-side benchmark: the same apps, the same wrk settings, one run.

Every server (``servers.py``) is started as a subprocess on 127.0.0.1:<free
port>, serving one app from ``apps.py``, checked by hand (status, exact body,
framing), driven by ``wrk`` and stopped (SIGTERM, then SIGKILL to its process
group).  By default wrk (one thread) and this script run on the first CPU and
every server's process tree on the others (``--no-pin`` turns that off).

For each (server, scenario) a fresh server is started, wrk runs a warm-up
that checks every response in Lua (2xx and the exact body), then the measured
run, whose wrk counters (connect/read/write errors, timeouts, HTTP >= 400)
must all be zero.  Any error fails the run (exit status 1) after the table is
printed; speed never does.

    python benchmarks/run.py                       # every server and scenario
    python benchmarks/run.py --servers wsgibridge,waitress,bhrh --scenarios hello-ka
    python benchmarks/run.py --smoke               # seconds; CI
    python benchmarks/run.py --idle 1000           # new requests beside 1,000 idle connections
    python benchmarks/run.py --upload-gib 1        # wsgibridge's memory on a 1 GiB upload
    python benchmarks/run.py --startstop           # in-process start + request + stop

Standard library only (the servers measured are the only other packages).
This file is the command line only: it checks the options, pins, and hands
each measurement to its module (``matrix``, ``idle``, ``upload``,
``startstop``; README.md, "Files", lists them all).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

import compiled
import idle
import machine
import matrix
import median
import servers
import startstop
import steal
import upload
from common import BenchError, Settings, module_available, out, say
from scenarios import SCENARIOS
from serverproc import stop_all
from servers import SERVERS, ServerSpec


def parse_cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def usage_error(message: str) -> NoReturn:
    """Refuse the options: exit status 2, as argparse does."""
    print(f"benchmarks/run.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def comma_list(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return list(known)
    for n in names:
        if n not in known:
            usage_error(f"unknown {what} {n!r}; known: {', '.join(known)}")
    return names


def usable_specs(specs: list[ServerSpec]) -> tuple[list[ServerSpec], bool]:
    """For --idle and --upload-gib: the rows that can run; True if one is broken."""
    kept, broken = [], False
    for spec in specs:
        try:
            if spec.skip:
                say(f"{spec.name} skipped: {spec.skip}")
                continue
            if spec.compiled:
                compiled.check(spec)
        except BenchError as exc:
            say(f"FAIL {spec.name}: {exc}")
            broken = True
            continue
        kept.append(spec)
    return kept, broken


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Servers: "
        + "; ".join(f"{s.name} ({s.description})" for s in SERVERS.values())
        + ". Scenarios: "
        + "; ".join(f"{s.name} ({s.description})" for s in SCENARIOS.values())
        + ".",
    )
    p.add_argument(
        "--servers",
        help="comma list (default: all; wsgibridge only for --upload-gib)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help="comma list (default: all)",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per measured run (10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of checked warm-up (2)")
    p.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    p.add_argument("--timeout", type=float, default=2.0, help="wrk request timeout, s (2)")
    p.add_argument("--baseline", default="waitress", help="server of the ratio column (waitress)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the matrix N times, one table each, then (N > 1) a table of their medians",
    )
    p.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    p.add_argument("--no-pin", action="store_true", help="do not pin wrk and the servers to CPUs")
    p.add_argument(
        "--server-cpus",
        help="CPUs for the servers, e.g. 1 or 1-3 (default: all usable but the first)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="1 s checked runs, 2 connections, installed servers only, pinning if possible; "
        "fails only on a broken run",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=BASE ARGS",
        help="another server: BASE (one with a CLI: wsgibridge, gunicorn, granian) with extra "
        "CLI arguments, "
        "e.g. 'wsgibridge-w2=wsgibridge --workers 2'; then name it in --servers",
    )
    p.add_argument(
        "--compiled-python",
        metavar="PATH",
        default=compiled.default_python(),
        help="the interpreter of the wsgibridge-compiled row, a venv with the compiled build "
        f"(default: {compiled.shown(compiled.DEFAULT_PYTHON)} if it exists; without one "
        "the row is skipped)",
    )
    g = p.add_argument_group("extra measurements (instead of the matrix; combinable)")
    g.add_argument("--idle", type=int, metavar="N", help="N idle keep-alive connections open")
    g.add_argument("--idle-probes", type=int, default=50, help="new-connection requests (50)")
    g.add_argument("--idle-budget", type=float, default=1.0, help="seconds per probe (1)")
    g.add_argument("--upload-gib", type=float, metavar="G", help="stream a G GiB body")
    g.add_argument("--startstop", action="store_true", help="in-process start+request+stop")
    g.add_argument("--startstop-n", type=int, default=20, help="repetitions (20)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    compiled.configure(args.compiled_python)  # before the variants, which copy it
    for text in args.variant:
        name, sep, rest = text.partition("=")
        words = shlex.split(rest)
        if not sep or not name or not words:
            usage_error(f"--variant wants NAME=BASE ARGS, not {text!r}")
        try:
            servers.add_variant(name.strip(), words[0], words[1:])
        except ValueError as exc:
            usage_error(f"--variant: {exc}")

    extras = args.idle is not None or args.upload_gib is not None or args.startstop
    default_servers = "wsgibridge" if args.upload_gib is not None and not args.idle else "all"
    server_names = comma_list(args.servers or default_servers, list(SERVERS), "server")
    scen_names = comma_list(args.scenarios, list(SCENARIOS), "scenario")
    if args.smoke:
        args.duration, args.connections = 1, 2
    if args.duration < 1 or args.warmup < 1 or args.connections < 1 or args.repeat < 1:
        usage_error("--duration, --warmup, --connections and --repeat must be >= 1")

    specs = [SERVERS[n] for n in server_names]
    wrk = shutil.which("wrk")
    needs_wrk = not extras
    if needs_wrk and wrk is None:
        usage_error("wrk is not installed: apt-get install -y wrk")

    # Rows with an interpreter of their own are checked in it, row by row.
    missing = {s.name: s.missing() for s in specs if not s.python and not s.skip and s.missing()}
    if missing and not args.smoke:
        text = "; ".join(f"{k} needs {', '.join(v)}" for k, v in missing.items())
        usage_error(
            f"not installed: {text}. pip install -e '.[bench]', or choose --servers "
            "(--smoke skips what is missing)"
        )
    flask_missing = "flask-ka" in scen_names and not module_available("flask")
    if not extras and flask_missing and not args.smoke:
        usage_error("flask-ka needs Flask: pip install -e '.[bench]'")

    # Pinning: this script and wrk on the first usable CPU, servers on the rest.
    usable = sorted(os.sched_getaffinity(0))
    client_cpus: set[int] | None = None
    server_cpus: set[int] | None = None
    if not args.no_pin:
        if len(usable) >= 2:
            client_cpus = {usable[0]}
            server_cpus = parse_cpus(args.server_cpus) if args.server_cpus else set(usable[1:])
            if server_cpus & client_cpus or not server_cpus <= set(usable):
                usage_error(f"--server-cpus must be usable CPUs other than {usable[0]}")
        elif not args.smoke:
            usage_error("pinning needs two CPUs; pass --no-pin on this machine")

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    workdir = tempfile.mkdtemp(prefix="wsgibridge-bench-")
    if args.idle:
        idle.raise_fd_limit(args.idle + 256)
    ticks_at_start = steal.sample()
    info = machine.machine_info(specs, wrk)
    record: dict[str, Any] = {"machine": info, "args": vars(args)}
    failed = interrupted = False
    try:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        settings = Settings(
            wrk=wrk or "wrk",
            duration=args.duration,
            warmup=args.warmup,
            connections=args.connections,
            timeout=args.timeout,
            client_cpus=client_cpus,
            server_cpus=server_cpus,
            workdir=workdir,
            smoke=args.smoke,
        )
        out(machine.machine_line(info))
        pin = (
            f"wrk and this script on CPU {sorted(client_cpus)[0]}, each server's process tree "
            f"on CPU {','.join(map(str, sorted(server_cpus or [])))}"
            if client_cpus
            else "no CPU pinning"
        )
        if not extras:
            what = (
                f"{args.duration} s checked run"
                if args.smoke
                else f"{args.warmup} s checked warm-up + {args.duration} s measured run"
            )
            out(f"wrk -t1 -c{args.connections} --timeout {args.timeout:g}s, {what} per row; {pin}")
            scens = [SCENARIOS[n] for n in scen_names]
            runs = []
            for run_no in range(1, args.repeat + 1):
                cells = matrix.report_run(
                    specs, scens, run_no, args.repeat, args.baseline, settings, record
                )
                runs.append(cells)
                failed = failed or any(c.outcome == "FAIL" for c in cells)
            if len(runs) > 1:
                median.report_median(runs, args.baseline, args.smoke, record)
        elif args.idle is not None or args.upload_gib is not None:
            out(pin.replace("wrk and this script", "This script (the client)"))
            specs, bad = usable_specs(specs)
            failed = failed or bad
        if args.idle is not None:
            bad = idle.report_idle(
                specs, args.idle, args.idle_probes, args.idle_budget, settings, record
            )
            failed = failed or bad
        if args.upload_gib is not None:
            bad = upload.report_upload(specs, args.upload_gib, settings, record)
            failed = failed or bad
        if args.startstop:
            bad = startstop.report_startstop(args.startstop_n, record)
            failed = failed or bad
    except KeyboardInterrupt:
        say("interrupted: every server stopped")
        interrupted = True
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        record["steal_run_pct"] = steal.percent(ticks_at_start, steal.sample())
        out()
        out(machine.steal_line(record["steal_run_pct"]))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(record, f, indent=1, default=str)
    if failed:
        say("the run is BROKEN: see the FAIL rows above")
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
