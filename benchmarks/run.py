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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import resource
import selectors
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any, NoReturn

import apps
import servers
from servers import BENCH_DIR, PROJECT_ROOT, SERVERS, ServerSpec

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT = 30.0  # seconds a server may take to answer its first request
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
MIB = 1 << 20

log = logging.getLogger("bench")


# ----------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    name: str
    app: str
    description: str
    close: bool = False  # send Connection: close
    post_len: int = 0  # POST a body of this many bytes
    unit: str = "req/s"  # what the ratio columns compare: req/s or MiB/s

    @property
    def expected_body(self) -> bytes:
        if self.app == "big":
            return apps.BIG_CHUNK * apps.BIG_CHUNKS
        if self.app == "echo":
            return b"%d" % self.post_len
        return apps.BODY


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("hello-ka", "hello", "13 bytes, Content-Length, keep-alive"),
        Scenario("hello-close", "hello", "13 bytes, Connection: close", close=True),
        Scenario("nolen-ka", "hello_nolen", "13 bytes from a generator, no length"),
        Scenario("big-ka", "big", "1 MiB (16 x 64 KiB), keep-alive", unit="MiB/s"),
        Scenario("echo64k-ka", "echo", "POST 64 KiB read by the app", post_len=65536),
        Scenario("flask-ka", "flask_hello", "Flask hello, keep-alive"),
    )
}


# ----------------------------------------------------------------------------------------
# /proc: CPU time, memory and membership of a server's process group


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    pgrp: int
    ticks: int  # utime + stime + cutime + cstime
    threads: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    # rest[0] state, [2] pgrp, [11..14] utime stime cutime cstime, [17] num_threads
    ticks = sum(int(x) for x in rest[11:15])
    return ProcStat(pid, rest[0], int(rest[2]), ticks, int(rest[17]))


def group_stats(pgid: int) -> list[ProcStat]:
    """Every live (non-zombie) process in process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st.pgrp == pgid and st.state != "Z":
                out.append(st)
    return out


def vm_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def system_busy_seconds() -> float:
    """CPU seconds spent in tasks (user + nice + system), summed over all CPUs."""
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    return (user + nice + system) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----------------------------------------------------------------------------------------
# Server subprocesses


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _load_prctl() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[[int, int], int] = libc.prctl
        return prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # loaded before any fork: the child only calls it
PR_SET_PDEATHSIG = 1


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """preexec_fn: pin to ``cpus`` and die with this script (PR_SET_PDEATHSIG)."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


class ServerProcess:
    """One server under test, in its own session and process group."""

    def __init__(self, spec: ServerSpec, app: str, cpus: set[int] | None, workdir: str) -> None:
        self.spec = spec
        self.app = app
        self.port = free_port()
        self.argv = spec.command(sys.executable, HOST, self.port, app)
        self.logpath = os.path.join(workdir, f"{spec.name}-{app}-{self.port}.log")
        env = dict(os.environ)
        paths = [BENCH_DIR, PROJECT_ROOT]  # the apps, and this checkout's wsgibridge
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        with open(self.logpath, "wb") as logfile:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=BENCH_DIR,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_setup(cpus),
            )
        self.pgid = self.proc.pid  # a new session: its leader's pid is the group id
        _RUNNING.append(self)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, size: int = 1500) -> str:
        try:
            with open(self.logpath, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.spec.name} exited with status {self.proc.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with HTTPConnection(self.port, timeout=1.0) as conn:
                    conn.request("GET", close=True)
                return
            except (OSError, BenchError):
                time.sleep(0.05)
        raise BenchError(f"{self.spec.name} not answering after {timeout:g} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        return sum(st.ticks for st in group_stats(self.pgid)) / CLK_TCK

    def peak_rss_kib(self) -> int:
        """VmHWM summed over the process group (every worker's own peak)."""
        return sum(vm_kib(st.pid, "VmHWM") for st in group_stats(self.pgid))

    def rss_kib(self) -> int:
        return sum(vm_kib(st.pid, "VmRSS") for st in group_stats(self.pgid))

    def threads(self) -> int:
        return sum(st.threads for st in group_stats(self.pgid))

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL to the whole group; True if it stopped on SIGTERM."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        clean = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                clean = False
        deadline = time.monotonic() + 5.0
        while True:
            left = [st.pid for st in group_stats(self.pgid)]
            if self.proc.poll() is None:
                left.append(self.proc.pid)
            if not left:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.spec.name}: processes {left} survive SIGKILL")
            clean = False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.2)
        return clean


_RUNNING: list[ServerProcess] = []


def stop_all() -> None:
    for server in list(_RUNNING):
        try:
            server.stop()
        except BenchError as exc:
            log.error("%s", exc)


class BenchError(Exception):
    """A broken run: a server that fails, answers wrong or makes wrk count errors."""


# ----------------------------------------------------------------------------------------
# A small HTTP/1.1 client for the checks, the idle test and the upload


@dataclass
class Response:
    version: str
    status: int
    headers: dict[str, str]
    body: bytes
    framing: str  # length, chunked or eof

    @property
    def closes(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        if self.framing == "eof" or "close" in conn:
            return True
        return self.version == "HTTP/1.0" and "keep-alive" not in conn


class HTTPConnection:
    """One client connection with a deadline per call; reads responses exactly."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.deadline = 0.0

    def __enter__(self) -> HTTPConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def head(self, method: str, close: bool, extra: Sequence[str] = ()) -> bytes:
        lines = [f"{method} / HTTP/1.1", f"Host: {HOST}:{self.port}", *extra]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def request(self, method: str = "GET", body: bytes = b"", close: bool = False) -> Response:
        extra = [f"Content-Length: {len(body)}"] if body or method == "POST" else []
        self.begin()
        self.sock.sendall(self.head(method, close, extra) + body)
        return self.read_response()

    def begin(self, timeout: float | None = None) -> None:
        self.deadline = time.monotonic() + (self.timeout if timeout is None else timeout)

    def _fill(self) -> bool:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError("response not complete in time")
        self.sock.settimeout(left)
        data = self.sock.recv(262144)
        self.buf += data
        return bool(data)

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[: i + 2]
                return line
            if not self._fill():
                raise BenchError("connection closed mid-line")

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise BenchError(f"connection closed {n - len(self.buf)} bytes short")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def read_response(self) -> Response:
        status_line = self._line()
        while not status_line:  # tolerate a stray CRLF
            status_line = self._line()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise BenchError(f"bad status line {status_line[:80]!r}")
        headers: dict[str, str] = {}
        while line := self._line():
            name, _, value = line.decode("latin-1").partition(":")
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        version, status = parts[0], int(parts[1])
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int(self._line().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                chunks.append(self._exactly(size))
                self._exactly(2)
            return Response(version, status, headers, b"".join(chunks), "chunked")
        if "content-length" in headers:
            n = int(headers["content-length"])
            return Response(version, status, headers, self._exactly(n), "length")
        if status in (204, 304) or 100 <= status < 200:
            return Response(version, status, headers, b"", "length")
        while self._fill():
            pass
        body = bytes(self.buf)
        self.buf.clear()
        return Response(version, status, headers, body, "eof")


def check_server(port: int, scen: Scenario) -> str:
    """One request as the scenario sends it, checked exactly; returns the framing seen."""
    method, body = ("POST", b"x" * scen.post_len) if scen.post_len else ("GET", b"")
    with HTTPConnection(port, timeout=10.0) as conn:
        resp = conn.request(method, body, close=scen.close)
        expected = scen.expected_body
        if resp.status != 200 or resp.body != expected:
            raise BenchError(
                f"check failed: status {resp.status}, {len(resp.body)}-byte body "
                f"{resp.body[:40]!r} (expected {len(expected)} bytes {expected[:40]!r})"
            )
        kept = False
        if not resp.closes:  # does the server really keep the connection?
            try:
                again = conn.request(method, body)
                kept = again.status == 200 and again.body == expected
            except (OSError, BenchError):
                kept = False
    persistence = "keep-alive" if kept else "close"
    return f"{resp.version.removeprefix('HTTP/')} {resp.framing} {persistence}"


# ----------------------------------------------------------------------------------------
# wrk

WRK_SCRIPT = r"""-- written by benchmarks/run.py
wrk.method = "{method}"
{body}{close}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
{verify}
function done(summary, latency, requests)
  local checked, bad_status, bad_body, first_bad = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    checked = checked + (t:get("checked") or 0)
    bad_status = bad_status + (t:get("bad_status") or 0)
    bad_body = bad_body + (t:get("bad_body") or 0)
    local f = t:get("first_bad")
    if first_bad == "" and f then first_bad = f end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,"connect":%.0f,' ..
    '"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,' ..
    '"p99_us":%.0f,"max_us":%.0f,"checked":%.0f,"bad_status":%.0f,' ..
    '"bad_body":%.0f,"first_bad":"%s"}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max,
    checked, bad_status, bad_body, first_bad))
end
"""

WRK_VERIFY = r"""local expected = {expected}
function init(args)
  checked, bad_status, bad_body, first_bad = 0, 0, 0, nil
end
function response(status, headers, body)
  checked = checked + 1
  if status < 200 or status > 299 then
    bad_status = bad_status + 1
    if not first_bad then first_bad = "status " .. status end
  elseif body ~= expected then
    bad_body = bad_body + 1
    if not first_bad then first_bad = "a " .. #body .. "-byte body" end
  end
end
"""


def lua_string(data: bytes) -> str:
    if data and data == data[:1] * len(data):
        return f'string.rep("{data[:1].decode()}", {len(data)})'
    return json.dumps(data.decode("ascii"))  # ASCII bodies: a JSON string is a Lua string


def write_wrk_script(workdir: str, scen: Scenario, verify: bool) -> str:
    path = os.path.join(workdir, f"wrk-{scen.name}-{'verify' if verify else 'fast'}.lua")
    body = ""
    if scen.post_len:
        body = (
            f'wrk.body = string.rep("x", {scen.post_len})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )
    script = WRK_SCRIPT.format(
        method="POST" if scen.post_len else "GET",
        body=body,
        close='wrk.headers["Connection"] = "close"\n' if scen.close else "",
        verify=WRK_VERIFY.format(expected=lua_string(scen.expected_body)) if verify else "",
    )
    with open(path, "w") as f:
        f.write(script)
    return path


@dataclass
class WrkResult:
    seconds: float
    requests: int
    bytes: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    checked: int
    first_bad: str


def run_wrk(
    wrk: str,
    port: int,
    script: str,
    duration: int,
    connections: int,
    timeout: float,
    cpus: set[int] | None,
) -> WrkResult:
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        f"{timeout:g}s",
        "-s",
        script,
        f"http://{HOST}:{port}/",
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=duration + 30,
            preexec_fn=child_setup(cpus),
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {shlex.join(cmd)}") from exc
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[len("WRKJSON ") :])
            errors = {k: int(r[k]) for k in ("connect", "read", "write", "timeout", "status")}
            errors["non-2xx"] = int(r["bad_status"])
            errors["bad body"] = int(r["bad_body"])
            return WrkResult(
                seconds=r["duration_us"] / 1e6,
                requests=int(r["requests"]),
                bytes=int(r["bytes"]),
                p50_ms=r["p50_us"] / 1000,
                p99_ms=r["p99_us"] / 1000,
                max_ms=r["max_us"] / 1000,
                errors=errors,
                checked=int(r["checked"]),
                first_bad=str(r["first_bad"]),
            )
    out = (proc.stdout + proc.stderr).strip()[-400:]
    raise BenchError(f"wrk failed (status {proc.returncode}): {shlex.join(cmd)}\n{out}")


def error_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in errors.items() if v) or "0"


def eof_ends(result: WrkResult, connections: int, framing: str) -> int:
    """Take out the read errors wrk counts where close-delimited responses end.

    wrk completes such a response at EOF and then counts the EOF itself as one
    read error.  Only when the check saw that framing, and at most one per
    response (plus one per connection), are they not errors.
    """
    reads = result.errors["read"]
    if " eof " not in framing or reads > result.requests + connections:
        return 0
    result.errors["read"] = 0
    return reads


# ----------------------------------------------------------------------------------------
# The matrix


@dataclass
class Cell:
    run: int
    server: str
    scenario: str
    outcome: str = "ok"  # ok, n/a, not installed, FAIL
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
    peak_rss_mib: float = 0.0
    framing: str = ""
    eof_ends: int = 0  # wrk "read errors" that are the ends of EOF-delimited responses

    def rate(self, unit: str) -> float:
        return self.mibps if unit == "MiB/s" else self.rps


@dataclass
class Settings:
    wrk: str
    duration: int
    warmup: int
    connections: int
    timeout: float
    client_cpus: set[int] | None
    server_cpus: set[int] | None
    workdir: str
    smoke: bool


def measure(spec: ServerSpec, scen: Scenario, run_no: int, st: Settings) -> Cell:
    cell = Cell(run_no, spec.name, scen.name)
    if not spec.supports(scen.app):
        cell.outcome = "n/a"
        return cell
    with ServerProcess(spec, scen.app, st.server_cpus, st.workdir) as server:
        try:
            server.wait_ready()
            cell.framing = check_server(server.port, scen)
            verify = write_wrk_script(st.workdir, scen, verify=True)
            fast = write_wrk_script(st.workdir, scen, verify=False)
            # The warm-up checks every response; in --smoke it is the measured run.
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
    return cell


def run_matrix(
    specs: list[ServerSpec], scens: list[Scenario], run_no: int, st: Settings
) -> list[Cell]:
    cells = []
    # Scenario by scenario, so every server meets the same moment of a noisy machine;
    # every other run in reverse server order.
    order = specs if run_no % 2 else specs[::-1]
    for scen in scens:
        for spec in order:
            missing = spec.missing() + (
                ["flask"] if scen.app == "flask_hello" and not module_available("flask") else []
            )
            if missing and spec.supports(scen.app):
                cell = Cell(run_no, spec.name, scen.name, "not installed", ", ".join(missing))
            else:
                cell = measure(spec, scen, run_no, st)
            cells.append(cell)
            say(format_progress(cell, st.smoke))
    rank = {spec.name: i for i, spec in enumerate(specs)}
    cells.sort(key=lambda c: (scens.index(SCENARIOS[c.scenario]), rank[c.server]))
    return cells


def format_progress(cell: Cell, smoke: bool) -> str:
    head = f"  [{cell.run}] {cell.scenario:12s} {cell.server:18s}"
    if cell.outcome != "ok":
        return f"{head} {cell.outcome} {cell.detail}"
    if smoke:
        return f"{head} {cell.rps:9,.0f} req/s, checked"
    return (
        f"{head} {cell.rps:9,.0f} req/s {cell.mibps:8,.1f} MiB/s  p99 {cell.p99_ms:6.2f} ms"
        f"  {cell.cpu_us_per_request:5.0f} us/req  {cell.peak_rss_mib:5.1f} MiB"
        f"  other {cell.other_cpu_pct:3.0f}%"
    )


def base_name(server: str) -> str:
    return SERVERS[server].base if server in SERVERS else server


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}x" if base else "-"


def matrix_table(cells: list[Cell], baseline: str, smoke: bool) -> str:
    def base_rate(server: str, scen: Scenario) -> float | None:
        for c in cells:
            if c.server == server and c.scenario == scen.name and c.outcome == "ok":
                return c.rate(scen.unit)
        return None

    lines = [
        f"| scenario | server | req/s | MiB/s | p50 ms | p99 ms | errors | CPU µs/req "
        f"| peak RSS MiB | response | other CPU | vs {baseline} | vs bhrh |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for c in cells:
        scen = SCENARIOS[c.scenario]
        if c.outcome != "ok":
            detail = c.detail.splitlines()[0][:90] if c.detail else ""
            text = f"**{c.outcome}**" + (f": {detail}" if detail else "")
            lines.append(f"| {c.scenario} | {c.server} | {text} |" + " |" * 10)
            continue
        vs_bhrh = "-"
        if base_name(c.server) == "wsgibridge":
            vs_bhrh = ratio(c.rate(scen.unit), base_rate("bhrh", scen))
        cpu = "-" if smoke else f"{c.cpu_us_per_request:.0f}"
        errors = error_text(c.errors) + (f" (+{c.eof_ends} EOF ends)" if c.eof_ends else "")
        other = "-" if smoke else f"{c.other_cpu_pct:.0f}%"
        lines.append(
            f"| {c.scenario} | {c.server} | {c.rps:,.0f} | {c.mibps:,.1f} | {c.p50_ms:.2f} "
            f"| {c.p99_ms:.2f} | {errors} | {cpu} | {c.peak_rss_mib:.1f} "
            f"| {c.framing} | {other} | {ratio(c.rate(scen.unit), base_rate(baseline, scen))} "
            f"| {vs_bhrh} |"
        )
    return "\n".join(lines)


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
    out = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    for scen_name, peer, target in RATIO_TARGETS:
        mine, theirs = got.get(("wsgibridge", scen_name)), got.get((peer, scen_name))
        if mine and theirs:
            unit = SCENARIOS[scen_name].unit
            value = mine.rate(unit) / theirs.rate(unit)
            out.append(
                f"{scen_name} {unit} vs {peer}: {value:.2f}x (target >= {target:g}x) "
                f"{verdict(value >= target)}"
            )
    hello = got.get(("wsgibridge", "hello-ka"))
    if hello and hello.cpu_us_per_request:
        us = hello.cpu_us_per_request
        out.append(f"hello-ka CPU per request: {us:.0f} µs (target <= 40 µs) {verdict(us <= 40)}")
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
        out.append(f"p99 no worse than waitress's: {text} {verdict(not worse)}")
    rss = [c.peak_rss_mib for c in cells if c.server == "wsgibridge" and c.outcome == "ok"]
    if rss:
        out.append(
            f"peak RSS: at most {max(rss):.1f} MiB (target <= 30 MiB) {verdict(max(rss) <= 30)}"
        )
    return out


# ----------------------------------------------------------------------------------------
# --idle: new requests while N idle keep-alive connections are open


@dataclass
class IdleResult:
    server: str
    idle: int
    held: int = 0
    probes: list[float] = field(default_factory=list)  # seconds, successful probes
    failed: int = 0
    still_open: int = 0
    threads: int = 0
    rss_mib: float = 0.0
    before_ms: float = 0.0
    error: str = ""


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise BenchError(f"--idle needs {needed} file descriptors; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def probe(port: int, budget: float) -> float | None:
    """Seconds for connect + request + full response on a new connection (None: failed)."""
    began = time.perf_counter()
    try:
        with HTTPConnection(port, timeout=budget) as conn:
            conn.begin(budget - (time.perf_counter() - began))
            conn.sock.sendall(conn.head("GET", close=True))
            resp = conn.read_response()
        if resp.status == 200 and resp.body == apps.BODY:
            return time.perf_counter() - began
    except (OSError, BenchError):
        pass
    return None


def open_idle(
    port: int, n: int, deadline: float
) -> tuple[list[socket.socket], list[socket.socket]]:
    """``n`` connections that each made one keep-alive request.

    Returns (every socket opened, the ones whose response arrived in time).
    """
    sel = selectors.DefaultSelector()
    request = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    socks, bufs = [], {}
    answered: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            socks.append(s)
            if s.connect_ex((HOST, port)) not in (0, 115):  # 115: EINPROGRESS
                continue
            sel.register(s, selectors.EVENT_WRITE)
        while sel.get_map() and time.monotonic() < deadline:
            for key, events in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                conn = key.fileobj
                if not isinstance(conn, socket.socket):
                    continue
                if events & selectors.EVENT_WRITE:
                    if conn.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                        sel.unregister(conn)
                        continue
                    try:
                        conn.send(request)
                    except OSError:
                        sel.unregister(conn)
                        continue
                    bufs[conn] = b""
                    sel.modify(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                bufs[conn] += data
                _, sep, body = bufs[conn].partition(b"\r\n\r\n")
                if sep and len(body) >= len(apps.BODY):
                    answered.append(conn)
                    sel.unregister(conn)
                elif not data:
                    sel.unregister(conn)
    finally:
        sel.close()
    return socks, answered


def count_open(socks: list[socket.socket]) -> int:
    """Connections the server has not closed (no EOF or reset waiting on them)."""
    alive = 0
    for s in socks:
        try:
            if s.fileno() < 0:
                continue
            s.setblocking(False)
            try:
                data = s.recv(1, socket.MSG_PEEK)
                alive += bool(data)  # unexpected bytes, but open
            except BlockingIOError:
                alive += 1
        except OSError:
            pass
    return alive


def idle_test(spec: ServerSpec, n: int, probes: int, budget: float, st: Settings) -> IdleResult:
    result = IdleResult(spec.name, n)
    socks: list[socket.socket] = []
    with ServerProcess(spec, "hello", st.server_cpus, st.workdir) as server:
        try:
            server.wait_ready()
            before = [p for p in (probe(server.port, budget) for _ in range(5)) if p is not None]
            result.before_ms = statistics.median(before) * 1000 if before else 0.0
            socks, answered = open_idle(server.port, n, time.monotonic() + 10 + n / 100)
            time.sleep(0.5)
            result.held = count_open(answered)
            failures_in_a_row = 0
            for _ in range(probes):
                took = probe(server.port, budget)
                if took is None:
                    result.failed += 1
                    failures_in_a_row += 1
                    if failures_in_a_row >= 3:
                        break
                else:
                    failures_in_a_row = 0
                    result.probes.append(took)
            result.still_open = count_open(answered)
            result.threads = server.threads()
            result.rss_mib = server.rss_kib() / 1024
        except (BenchError, OSError) as exc:
            result.error = str(exc).strip().splitlines()[0]
        finally:
            for s in socks:
                s.close()
    return result


def format_idle(r: IdleResult) -> str:
    if r.error:
        return f"{r.server}: FAIL {r.error}"
    took = sorted(r.probes)
    med = (
        f"median {statistics.median(took) * 1000:.2f} ms, max {took[-1] * 1000:.2f} ms"
        if took
        else ""
    )
    return f"{r.server}: held {r.held}/{r.idle}, {len(took)} answered, {r.failed} failed {med}"


def idle_table(rows: list[IdleResult], budget: float) -> str:
    lines = [
        "| server | idle connections held | no idle: median ms | requests | median ms | max ms "
        "| failed | idle still open after | server threads | RSS MiB | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.server} | **FAIL**: {r.error} |" + " |" * 9)
            continue
        med = f"{statistics.median(r.probes) * 1000:.2f}" if r.probes else "-"
        top = f"{max(r.probes) * 1000:.2f}" if r.probes else "-"
        target = "-"
        if base_name(r.server) == "wsgibridge":
            ok = not r.failed and r.probes and max(r.probes) < 0.010
            target = "max < 10 ms: " + ("met" if ok else "**missed**")
        lines.append(
            f"| {r.server} | {r.held}/{r.idle} | {r.before_ms:.2f} | {len(r.probes) + r.failed} "
            f"| {med} | {top} | {r.failed} | {r.still_open} | {r.threads} | {r.rss_mib:.1f} "
            f"| {target} |"
        )
    return "\n".join(lines) + (
        f"\n\nA request is connect + GET + the whole response on a new connection; failed: "
        f"not answered within {budget:g} s (3 failures in a row end the row)."
    )


# ----------------------------------------------------------------------------------------
# --upload-gib: peak RSS while a large body streams to apps:upload_sink


@dataclass
class UploadResult:
    server: str
    framing: str
    size: int
    seconds: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    error: str = ""


def upload_test(spec: ServerSpec, size: int, framing: str, st: Settings) -> UploadResult:
    result = UploadResult(spec.name, framing, size)
    chunk = memoryview(b"u" * 65536)
    with ServerProcess(spec, "upload_sink", st.server_cpus, st.workdir) as server:
        try:
            server.wait_ready()
            result.rss_before_mib = server.peak_rss_kib() / 1024
            with HTTPConnection(server.port, timeout=60.0) as conn:
                framing_header = (
                    f"Content-Length: {size}"
                    if framing == "length"
                    else "Transfer-Encoding: chunked"
                )
                head = conn.head(
                    "POST", True, ["Content-Type: application/octet-stream", framing_header]
                )
                began = time.perf_counter()
                conn.sock.sendall(head)
                left = size
                while left > 0:
                    piece = chunk[: min(left, len(chunk))]
                    if framing == "chunked":
                        conn.sock.sendall(b"%x\r\n" % len(piece))
                        conn.sock.sendall(piece)
                        conn.sock.sendall(b"\r\n")
                    else:
                        conn.sock.sendall(piece)
                    left -= len(piece)
                if framing == "chunked":
                    conn.sock.sendall(b"0\r\n\r\n")
                conn.begin(60.0)
                resp = conn.read_response()
                result.seconds = time.perf_counter() - began
            if resp.status != 200 or resp.body != str(size).encode():
                raise BenchError(f"upload answered {resp.status} {resp.body[:60]!r}")
            result.peak_rss_mib = server.peak_rss_kib() / 1024
        except (BenchError, OSError) as exc:
            result.error = str(exc).strip().splitlines()[0]
    return result


def format_upload(r: UploadResult) -> str:
    if r.error:
        return f"{r.server} {r.framing}: FAIL {r.error}"
    return f"{r.server} {r.framing}: {r.seconds:.1f} s, peak RSS {r.peak_rss_mib:.1f} MiB"


def upload_table(rows: list[UploadResult]) -> str:
    lines = [
        "| server | body | size | MiB/s | RSS before MiB | peak RSS MiB (VmHWM) | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        body = "Content-Length" if r.framing == "length" else "chunked (64 KiB chunks)"
        if r.error:
            lines.append(
                f"| {r.server} | {body} | {r.size / (1 << 30):g} GiB | **FAIL**: {r.error} |||"
            )
            continue
        target = "-"
        if base_name(r.server) == "wsgibridge":
            target = "<= 64 MiB: " + ("met" if r.peak_rss_mib <= 64 else "**missed**")
        lines.append(
            f"| {r.server} | {body} | {r.size / (1 << 30):g} GiB | {r.size / MIB / r.seconds:,.0f} "
            f"| {r.rss_before_mib:.1f} | {r.peak_rss_mib:.1f} | {target} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# --startstop: start + one request + stop of an in-process background server


@dataclass
class StartStopResult:
    name: str
    starts: list[float] = field(default_factory=list)
    requests: list[float] = field(default_factory=list)
    stops: list[float] = field(default_factory=list)
    threads_left: int = 0
    error: str = ""


Starter = Callable[[Any], tuple[str, Callable[[], None]]]  # app -> (url, stop)


def start_wsgibridge(app: Any) -> tuple[str, Callable[[], None]]:
    from wsgibridge import serve_in_thread

    server = serve_in_thread(app)

    def stop() -> None:
        server.stop()

    return server.url, stop


def start_wsgibridge_testing(app: Any) -> tuple[str, Callable[[], None]]:
    from wsgibridge.testing import StopableWSGIServer

    server = StopableWSGIServer.create(app)
    server.wait()

    def stop() -> None:
        server.shutdown()

    return server.application_url, stop


def start_werkzeug(app: Any) -> tuple[str, Callable[[], None]]:
    from werkzeug.serving import make_server

    server = make_server(HOST, 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return f"http://{HOST}:{server.server_port}/", stop


def start_webtest(app: Any) -> tuple[str, Callable[[], None]]:
    from webtest.http import StopableWSGIServer

    server = StopableWSGIServer.create(app)
    server.wait()

    def stop() -> None:
        server.shutdown()

    return str(server.application_url), stop


STARTERS: list[tuple[str, str, Starter]] = [
    ("wsgibridge.serve_in_thread", "wsgibridge", start_wsgibridge),
    ("wsgibridge.testing.StopableWSGIServer", "wsgibridge", start_wsgibridge_testing),
    ("werkzeug make_server + thread", "werkzeug", start_werkzeug),
    ("webtest.http.StopableWSGIServer", "webtest", start_webtest),
]


def get(url: str) -> bytes:
    host, _, port = url.split("/")[2].partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise BenchError(f"{url} answered {resp.status}")
        return body
    finally:
        conn.close()


def startstop_test(name: str, start: Starter, n: int) -> StartStopResult:
    result = StartStopResult(name)
    threads_before = threading.active_count()
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            url, stop = start(apps.hello)
            t1 = time.perf_counter()
            try:
                body = get(url)
            finally:
                t2 = time.perf_counter()
                stop()
            t3 = time.perf_counter()
            if body != apps.BODY:
                raise BenchError(f"{name} answered {body[:40]!r}")
            result.starts.append(t1 - t0)
            result.requests.append(t2 - t1)
            result.stops.append(t3 - t2)
    except Exception as exc:  # any failure of a peer's helper is reported, not fatal
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    time.sleep(0.2)
    result.threads_left = max(0, threading.active_count() - threads_before)
    return result


def startstop_table(rows: list[StartStopResult], n: int) -> str:
    lines = [
        f"| helper | start ms | request ms | stop ms | total ms (median of {n}) | total max ms "
        "| threads left behind |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error or not r.starts:
            lines.append(f"| {r.name} | **FAIL**: {r.error or 'no result'} |" + " |" * 5)
            continue
        totals = [a + b + c for a, b, c in zip(r.starts, r.requests, r.stops, strict=True)]

        def ms(xs: list[float]) -> str:
            return f"{statistics.median(xs) * 1000:.2f}"

        lines.append(
            f"| {r.name} | {ms(r.starts)} | {ms(r.requests)} | {ms(r.stops)} | {ms(totals)} "
            f"| {max(totals) * 1000:.2f} | {r.threads_left} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------
# The machine


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wrk_version(wrk: str | None) -> str:
    if not wrk:
        return "not installed"
    try:
        proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (proc.stdout + proc.stderr).strip().splitlines()
    words = first[0].split() if first else []
    return words[1].removeprefix("debian/") if len(words) > 1 else "unknown"


def git_commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", PROJECT_ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def machine_info(specs: Sequence[ServerSpec], wrk: str | None) -> dict[str, str]:
    info = {
        "cpu": cpu_model(),
        "cpus": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "wrk": wrk_version(wrk),
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    }
    bases = {spec.base for spec in specs}
    for base in sorted(bases):
        spec = SERVERS[base]
        if spec.distribution is not None:
            info[base] = spec.version()
    if "wsgibridge" in bases and (commit := git_commit()):
        info["wsgibridge"] += f" (checkout {commit})"
    for extra in ("flask", "webtest"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[extra] = importlib.metadata.version(extra)
    return info


def machine_line(info: dict[str, str]) -> str:
    tools = ", ".join(
        f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cpus", "kernel", "load")
    )
    return (
        f"Machine: {info['cpu']}, {info['cpus']} CPUs, Linux {info['kernel']}, "
        f"load average at start {info['load']}; {tools}"
    )


# ----------------------------------------------------------------------------------------
# Command line


def say(text: str = "") -> None:
    print(text, file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    print(text, flush=True)


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
    p.add_argument("--repeat", type=int, default=1, help="run the matrix N times, one table each")
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
        help="another server: BASE (wsgibridge or gunicorn) with extra CLI arguments, "
        "e.g. 'wsgibridge-w2=wsgibridge --workers 2'; then name it in --servers",
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

    missing = {s.name: s.missing() for s in specs if s.missing()}
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
        raise_fd_limit(args.idle + 256)
    info = machine_info(specs, wrk)
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
        out(machine_line(info))
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
            for run_no in range(1, args.repeat + 1):
                say(f"run {run_no} of {args.repeat}")
                cells = run_matrix(specs, [SCENARIOS[n] for n in scen_names], run_no, settings)
                record.setdefault("matrix", []).extend(asdict(c) for c in cells)
                out()
                out(f"### Run {run_no} of {args.repeat}" if args.repeat > 1 else "### Results")
                out()
                out(matrix_table(cells, args.baseline, args.smoke))
                if not args.smoke and (targets := targets_report(cells)):
                    out()
                    out("Targets of issue 6 for wsgibridge, this run:")
                    for line in targets:
                        out(f"- {line}")
                bad = [c for c in cells if c.outcome == "FAIL"]
                for c in bad:
                    say(f"FAIL {c.server} {c.scenario}: {c.detail}")
                failed = failed or bool(bad)
        elif args.idle is not None or args.upload_gib is not None:
            out(pin.replace("wrk and this script", "This script (the client)"))
        if args.idle is not None:
            idle_specs = [s for s in specs if not s.missing()]
            say(f"idle: {args.idle} connections")
            rows = []
            for spec in idle_specs:
                rows.append(
                    idle_test(spec, args.idle, args.idle_probes, args.idle_budget, settings)
                )
                say(f"  {format_idle(rows[-1])}")
            record["idle"] = [asdict(r) for r in rows]
            out()
            out(
                f"### {args.idle} idle keep-alive connections, then new requests on new connections"
            )
            out()
            out(idle_table(rows, args.idle_budget))
            failed = failed or any(r.error for r in rows)
        if args.upload_gib is not None:
            size = int(args.upload_gib * (1 << 30))
            up_specs = [s for s in specs if not s.missing() and s.supports("upload_sink")]
            rows_up = []
            for spec in up_specs:
                for framing in ("length", "chunked"):
                    rows_up.append(upload_test(spec, size, framing, settings))
                    say(f"  {format_upload(rows_up[-1])}")
            record["upload"] = [asdict(r) for r in rows_up]
            out()
            out(f"### A {args.upload_gib:g} GiB upload streamed to apps:upload_sink")
            out()
            out(upload_table(rows_up))
            failed = failed or any(r.error for r in rows_up)
        if args.startstop:
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            logging.getLogger("waitress").setLevel(logging.ERROR)
            if PROJECT_ROOT not in sys.path:
                sys.path.insert(1, PROJECT_ROOT)  # this checkout's wsgibridge
            rows_ss = []
            for name, module, starter in STARTERS:
                if not module_available(module):
                    say(f"  {name}: {module} not installed, skipped")
                    continue
                rows_ss.append(startstop_test(name, starter, args.startstop_n))
                say(f"  {name}: done")
            record["startstop"] = [asdict(r) for r in rows_ss]
            out()
            out("### In-process background server: start, one request, stop")
            out()
            out(startstop_table(rows_ss, args.startstop_n))
            failed = failed or any(r.error for r in rows_ss)
    except KeyboardInterrupt:
        say("interrupted: every server stopped")
        interrupted = True
    finally:
        stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(record, f, indent=1, default=str)
    if failed:
        say("the run is BROKEN: see the FAIL rows above")
    return 1 if failed or interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
