"""The scenario matrix: every (scenario, server) row measured the same way, then tabled.

A row is a fresh server, the hand check, the checked wrk warm-up and the
measured wrk run; any error fails the row and leaves it without numbers.
Rows go scenario by scenario, so every server of a scenario meets the machine
in about the same state.  Speed is reported, never judged: only a broken row
makes the run fail.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import compiled
import steal
from client import check_server
from common import MIB, BenchError, Settings, base_name, module_available, out, say
from procstat import children_cpu_seconds, system_busy_seconds
from scenarios import SCENARIOS, Scenario
from serverproc import ServerProcess
from servers import ServerSpec
from wrk import eof_ends, error_text, run_wrk, write_wrk_script

Ratio = float | None


@dataclass
class Cell:
    run: int
    server: str
    scenario: str
    outcome: str = "ok"  # ok, n/a, not installed, skipped, FAIL
    detail: str = ""
    rps: float = 0.0
    mibps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_us_per_request: float = 0.0
    server_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    steal_pct: float | None = None  # of all CPU time during the measured run (None: n/a)
    peak_rss_mib: float = 0.0
    framing: str = ""
    eof_ends: int = 0  # wrk "read errors" that are the ends of EOF-delimited responses
    access_log_lines: int = 0  # lines in the row's access log, when it has one

    def rate(self, unit: str) -> float:
        return self.mibps if unit == "MiB/s" else self.rps


def measure(spec: ServerSpec, scen: Scenario, run_no: int, st: Settings) -> Cell:
    cell = Cell(run_no, spec.name, scen.name)
    if not spec.supports(scen.app):
        cell.outcome = "n/a"
        return cell
    if spec.compiled:
        try:
            compiled.check(spec)
        except BenchError as exc:
            cell.outcome, cell.detail = "FAIL", str(exc)
            return cell
    with ServerProcess(spec, scen.app, st.server_cpus, st.workdir) as server:
        try:
            server.wait_ready()
            cell.framing = check_server(server.port, scen)
            verify = write_wrk_script(st.workdir, scen, verify=True)
            fast = write_wrk_script(st.workdir, scen, verify=False)
            # The warm-up checks every response; in --smoke it is the measured run.
            ticks0 = steal.sample()
            first = run_wrk(
                st.wrk,
                server.port,
                verify,
                st.duration if st.smoke else st.warmup,
                st.connections,
                st.timeout,
                st.client_cpus,
            )
            cell.eof_ends = eof_ends(first, st.connections, cell.framing)
            if first.checked != first.requests or any(first.errors.values()):
                raise BenchError(
                    f"warm-up: {error_text(first.errors)}"
                    + (f" (first: {first.first_bad})" if first.first_bad else "")
                    + f"; {first.checked} of {first.requests} responses checked"
                )
            if st.smoke:
                result, cpu, wall, other = first, 0.0, first.seconds, 0.0
            else:
                ticks0 = steal.sample()
                busy0, wrk0 = system_busy_seconds(), children_cpu_seconds()
                cpu0, t0 = server.cpu_seconds(), time.monotonic()
                result = run_wrk(
                    st.wrk,
                    server.port,
                    fast,
                    st.duration,
                    st.connections,
                    st.timeout,
                    st.client_cpus,
                )
                cpu, wall = server.cpu_seconds() - cpu0, time.monotonic() - t0
                wrk_cpu = children_cpu_seconds() - wrk0
                other = max(0.0, system_busy_seconds() - busy0 - cpu - wrk_cpu)
                cell.eof_ends = eof_ends(result, st.connections, cell.framing)
            cell.steal_pct = steal.percent(ticks0, steal.sample())
            cell.errors = result.errors
            if any(result.errors.values()):
                raise BenchError(f"wrk counted errors: {error_text(result.errors)}")
            if result.requests == 0 or result.seconds <= 0:
                raise BenchError("wrk completed no request")
            if result.bytes < result.requests * len(scen.expected_body):
                raise BenchError(f"wrk read {result.bytes} bytes for {result.requests} responses")
            cell.rps = result.requests / result.seconds
            cell.mibps = result.bytes / result.seconds / MIB
            cell.p50_ms, cell.p99_ms, cell.max_ms = result.p50_ms, result.p99_ms, result.max_ms
            cell.requests = result.requests
            cell.cpu_us_per_request = cpu / result.requests * 1e6
            cell.server_cpu_pct = 100 * cpu / wall
            cell.other_cpu_pct = 100 * other / wall
            cell.peak_rss_mib = server.peak_rss_kib() / 1024
        except (BenchError, OSError) as exc:
            cell.outcome = "FAIL"
            cell.detail = str(exc).strip()
    if cell.outcome == "ok" and server.access_log:
        check_access_log(cell, server.access_log)
    return cell


def check_access_log(cell: Cell, path: str) -> None:
    """A row that logs must have logged every response wrk counted (read once it stopped)."""
    try:
        with open(path, "rb") as f:
            cell.access_log_lines = sum(
                block.count(b"\n") for block in iter(lambda: f.read(MIB), b"")
            )
    except OSError as exc:
        cell.outcome, cell.detail = "FAIL", f"no access log: {exc}"
        return
    if cell.access_log_lines < cell.requests:
        cell.outcome = "FAIL"
        cell.detail = (
            f"the access log has {cell.access_log_lines} lines for {cell.requests} responses"
        )


def row_missing(spec: ServerSpec, app: str) -> list[str]:
    """What the row's interpreter lacks to serve ``app``."""
    wanted = ["flask"] if app == "flask_hello" else []
    if spec.skip:
        return []
    if spec.python:
        return compiled.missing(spec, wanted)
    return spec.missing() + [m for m in wanted if not module_available(m)]


def run_matrix(
    specs: list[ServerSpec], scens: list[Scenario], run_no: int, st: Settings
) -> list[Cell]:
    cells = []
    # Scenario by scenario, so every server meets the same moment of a noisy machine;
    # every other run in reverse server order.
    order = specs if run_no % 2 else specs[::-1]
    for scen in scens:
        for spec in order:
            missing = row_missing(spec, scen.app)
            if spec.skip:
                cell = Cell(run_no, spec.name, scen.name, "skipped", spec.skip)
            elif missing and spec.supports(scen.app):
                cell = Cell(run_no, spec.name, scen.name, "not installed", ", ".join(missing))
            else:
                cell = measure(spec, scen, run_no, st)
            cells.append(cell)
            say(format_progress(cell, st.smoke))
    rank = {spec.name: i for i, spec in enumerate(specs)}
    cells.sort(key=lambda c: (scens.index(SCENARIOS[c.scenario]), rank[c.server]))
    return cells


def format_progress(cell: Cell, smoke: bool) -> str:
    head = f"  [{cell.run}] {cell.scenario:12s} {cell.server:19s}"
    if cell.outcome != "ok":
        return f"{head} {cell.outcome} {cell.detail}"
    if smoke:
        return f"{head} {cell.rps:9,.0f} req/s, checked"
    return (
        f"{head} {cell.rps:9,.0f} req/s {cell.mibps:8,.1f} MiB/s  p99 {cell.p99_ms:6.2f} ms"
        f"  {cell.cpu_us_per_request:5.0f} us/req  {cell.peak_rss_mib:5.1f} MiB"
        f"  other {cell.other_cpu_pct:3.0f}%  steal {steal.text(cell.steal_pct)}"
    )


def ratios(cells: list[Cell], baseline: str) -> dict[tuple[str, str], tuple[Ratio, Ratio]]:
    """Each measured row's (vs baseline, vs bhrh) in this run, keyed by (server, scenario).

    A ratio is the row's req/s (MiB/s for big-ka) over the other row's in the
    same run; None without that row.  vs bhrh is only for wsgibridge rows.
    """
    rates = {
        (c.server, c.scenario): c.rate(SCENARIOS[c.scenario].unit)
        for c in cells
        if c.outcome == "ok"
    }
    result: dict[tuple[str, str], tuple[Ratio, Ratio]] = {}
    for (server, scenario), rate in rates.items():
        base = rates.get((baseline, scenario))
        bhrh = rates.get(("bhrh", scenario)) if base_name(server) == "wsgibridge" else None
        result[(server, scenario)] = (rate / base if base else None, rate / bhrh if bhrh else None)
    return result


def ratio_text(value: Ratio) -> str:
    return "-" if value is None else f"{value:.2f}x"


def matrix_table(cells: list[Cell], baseline: str, smoke: bool) -> str:
    vs = ratios(cells, baseline)
    lines = [
        f"| scenario | server | req/s | MiB/s | p50 ms | p99 ms | errors | CPU µs/req "
        f"| peak RSS MiB | response | other CPU | steal | vs {baseline} | vs bhrh |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in cells:
        if c.outcome != "ok":
            lines.append(
                f"| {c.scenario} | {c.server} | {outcome_text(c.outcome, c.detail)} |" + " |" * 11
            )
            continue
        vs_base, vs_bhrh = vs[(c.server, c.scenario)]
        cpu = "-" if smoke else f"{c.cpu_us_per_request:.0f}"
        errors = error_text(c.errors) + (f" (+{c.eof_ends} EOF ends)" if c.eof_ends else "")
        other = "-" if smoke else f"{c.other_cpu_pct:.0f}%"
        lines.append(
            f"| {c.scenario} | {c.server} | {c.rps:,.0f} | {c.mibps:,.1f} | {c.p50_ms:.2f} "
            f"| {c.p99_ms:.2f} | {errors} | {cpu} | {c.peak_rss_mib:.1f} "
            f"| {c.framing} | {other} | {steal.text(c.steal_pct)} "
            f"| {ratio_text(vs_base)} | {ratio_text(vs_bhrh)} |"
        )
    return "\n".join(lines)


def outcome_text(outcome: str, detail: str) -> str:
    """A row without numbers: its outcome in bold, and the first line of why."""
    first = detail.splitlines()[0][:90] if detail else ""
    if outcome == "skipped":
        first = "see below the table"
    return f"**{outcome}**" + (f": {first}" if first else "")


# The targets for wsgibridge: (scenario, against, minimum ratio).
RATIO_TARGETS = [
    ("hello-ka", "waitress", 2.0),
    ("hello-ka", "bhrh", 1.0),
    ("hello-close", "waitress", 1.0),
    ("nolen-ka", "waitress", 3.0),
    ("big-ka", "bhrh", 1.0),
    ("echo64k-ka", "waitress", 2.0),
    ("flask-ka", "waitress", 1.4),
]


def targets_report(cells: list[Cell]) -> list[str]:
    """The issue's targets against this run's wsgibridge row (informational only)."""
    got = {(c.server, c.scenario): c for c in cells if c.outcome == "ok"}
    lines: list[str] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for scen_name, peer, target in RATIO_TARGETS:
        mine, theirs = got.get(("wsgibridge", scen_name)), got.get((peer, scen_name))
        if mine and theirs:
            unit = SCENARIOS[scen_name].unit
            value = mine.rate(unit) / theirs.rate(unit)
            lines.append(
                f"{scen_name} {unit} vs {peer}: {value:.2f}x (target >= {target:g}x) "
                f"{verdict(value >= target)}"
            )
    hello = got.get(("wsgibridge", "hello-ka"))
    if hello and hello.cpu_us_per_request:
        us = hello.cpu_us_per_request
        lines.append(f"hello-ka CPU per request: {us:.0f} µs (target <= 40 µs) {verdict(us <= 40)}")
    worse = [
        f"{c.scenario} {c.p99_ms:.2f} vs {got[('waitress', c.scenario)].p99_ms:.2f} ms"
        for c in cells
        if c.server == "wsgibridge"
        and ("waitress", c.scenario) in got
        and c.outcome == "ok"
        and c.p99_ms > got[("waitress", c.scenario)].p99_ms
    ]
    if ("wsgibridge", "hello-ka") in got and ("waitress", "hello-ka") in got:
        text = "; ".join(worse) if worse else "none worse"
        lines.append(f"p99 no worse than waitress's: {text} {verdict(not worse)}")
    rss = [c.peak_rss_mib for c in cells if c.server == "wsgibridge" and c.outcome == "ok"]
    if rss:
        lines.append(
            f"peak RSS: at most {max(rss):.1f} MiB (target <= 30 MiB) {verdict(max(rss) <= 30)}"
        )
    return lines


def report_run(
    specs: list[ServerSpec],
    scens: list[Scenario],
    run_no: int,
    repeat: int,
    baseline: str,
    st: Settings,
    record: dict[str, Any],
) -> list[Cell]:
    """Run ``run_no`` of ``repeat``: measure it, print its table, return its rows."""
    say(f"run {run_no} of {repeat}")
    cells = run_matrix(specs, scens, run_no, st)
    record.setdefault("matrix", []).extend(asdict(c) for c in cells)
    out()
    out(f"### Run {run_no} of {repeat}" if repeat > 1 else "### Results")
    out()
    out(matrix_table(cells, baseline, st.smoke))
    skipped = {c.server: c.detail for c in cells if c.outcome == "skipped"}
    if skipped:
        out()
        for server, why in skipped.items():
            out(f"{server} skipped: {why}")
    if not st.smoke and (targets := targets_report(cells)):
        out()
        out("Targets of issue 6 for wsgibridge (its defaults, access log on), this run:")
        for line in targets:
            out(f"- {line}")
    for c in cells:
        if c.outcome == "FAIL":
            say(f"FAIL {c.server} {c.scenario}: {c.detail}")
    return cells
