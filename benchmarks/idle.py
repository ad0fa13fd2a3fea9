"""``--idle N``: how fast a server answers new connections while N idle keep-alive ones are open.

The idle connections each make one request and then stay silent; the probes
are timed one after the other (connect + GET + whole response), each within
the budget, and three failures in a row end the row.
"""

from __future__ import annotations

import resource
import selectors
import socket
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import apps
from client import HTTPConnection
from common import HOST, BenchError, Settings, base_name, out, say
from serverproc import ServerProcess
from servers import ServerSpec


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


def report_idle(
    specs: list[ServerSpec],
    n: int,
    probes: int,
    budget: float,
    st: Settings,
    record: dict[str, Any],
) -> bool:
    """The measurement for every installed server, and its table; True if a row failed."""
    idle_specs = [s for s in specs if not s.missing()]
    say(f"idle: {n} connections")
    rows = []
    for spec in idle_specs:
        rows.append(idle_test(spec, n, probes, budget, st))
        say(f"  {format_idle(rows[-1])}")
    record["idle"] = [asdict(r) for r in rows]
    out()
    out(f"### {n} idle keep-alive connections, then new requests on new connections")
    out()
    out(idle_table(rows, budget))
    return any(r.error for r in rows)
