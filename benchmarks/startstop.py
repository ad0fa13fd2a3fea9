"""``--startstop``: start + one request + stop of an in-process background server, N times.

Runs in this script's own process, so it measures the helpers a test suite
would call (``wsgibridge.serve_in_thread`` and its peers); a helper that is not
installed is skipped, and any failure of one is reported in its row, not raised.
"""

from __future__ import annotations

import http.client
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import apps
from common import HOST, BenchError, module_available, out, say
from servers import PROJECT_ROOT


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


def report_startstop(n: int, record: dict[str, Any]) -> bool:
    """Every installed helper, ``n`` times each, and the table; True if a row failed."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("waitress").setLevel(logging.ERROR)
    if PROJECT_ROOT not in sys.path:
        sys.path.insert(1, PROJECT_ROOT)  # this checkout's wsgibridge
    rows_ss = []
    for name, module, starter in STARTERS:
        if not module_available(module):
            say(f"  {name}: {module} not installed, skipped")
            continue
        rows_ss.append(startstop_test(name, starter, n))
        say(f"  {name}: done")
    record["startstop"] = [asdict(r) for r in rows_ss]
    out()
    out("### In-process background server: start, one request, stop")
    out()
    out(startstop_table(rows_ss, n))
    return any(r.error for r in rows_ss)
