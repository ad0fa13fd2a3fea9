"""``metrics_bind`` on an embedded server: what it counts, and its listener, over real sockets.

The figures are read as Prometheus reads them (prometheus_client's own text
parser).  A request is counted after its response is sent, so the tests
read every response to the end of its connection (``Connection: close``)
before they scrape: by then the count is there.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from wsgibridge import Config, make_server
from wsgibridge.serving.connection import ACTIVE, LINGERING, PARKED
from wsgibridge.serving.scrape import MAX_SCRAPES
from wsgibridge.serving.server import WSGIServer

from ..conftest import ResponseReader, exchange, needs_unix, serving, simple_app
from ..malformed import CASES

Families = dict[str, Any]

STATUS_CASES = {case.status: case for case in reversed(CASES)}  # the first case per status


def reading_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Reads the request body whole, answers ``Hello, World!``."""
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]


@pytest.fixture
def metered() -> Iterator[WSGIServer]:
    """A server with metrics on 127.0.0.1:<free port>, serving in a thread."""
    server = make_server(reading_app, port=0, metrics_bind=("127.0.0.1:0",), graceful_timeout=1.0)
    with serving(server):
        yield server


def metrics_address(server: WSGIServer) -> tuple[str, int]:
    host, _, port = server.metrics_addresses[0].rpartition(":")
    return host, int(port)


def get(
    address: tuple[str, int], method: str = "GET", path: str = "/metrics"
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(*address, timeout=5)
    connection.request(method, path)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def scrape(server: WSGIServer) -> Families:
    connection = http.client.HTTPConnection(*metrics_address(server), timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode("utf-8")
    finally:
        connection.close()
    return {family.name: family for family in text_string_to_metric_families(text)}


def total(families: Families, family: str, sample: str | None = None, **labels: str) -> float:
    """The sum of ``family``'s samples named ``sample`` whose labels include ``labels``."""
    name = sample or family
    return sum(
        float(s.value)
        for s in families[family].samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def requests_total(families: Families, **labels: str) -> float:
    return total(families, "wsgibridge_requests", "wsgibridge_requests_total", **labels)


def refused(families: Families, reason: str) -> float:
    return total(families, "wsgibridge_refused", "wsgibridge_refused_total", reason=reason)


def close_request(method: str = "GET", path: str = "/", body: bytes = b"") -> bytes:
    length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
    return (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".encode()
        + length
        + b"\r\n"
        + body
    )


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.01)


# -- what is counted ---------------------------------------------------------------------


def test_the_counters_rise_by_exactly_the_requests_sent(metered: WSGIServer) -> None:
    before = scrape(metered)
    assert requests_total(before) == 0
    for _ in range(7):
        assert exchange(metered, close_request()).startswith(b"HTTP/1.1 200 ")
    for _ in range(2):
        assert exchange(metered, close_request("HEAD")).startswith(b"HTTP/1.1 200 ")
    assert exchange(metered, close_request("POST", body=b"x" * 300)).startswith(b"HTTP/1.1 200 ")
    # Keep-alive: three requests on one connection (read to the end before the scrape).
    with socket.create_connection((metered.host, metered.port), timeout=5) as sock:
        reader = ResponseReader(sock)
        for close in (False, False, True):
            sock.sendall(close_request() if close else b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert reader.read_response().status == 200
        expect_closed(reader)
    after = scrape(metered)
    assert requests_total(after, method="GET", status_class="2xx") == 10
    assert requests_total(after, method="HEAD", status_class="2xx") == 2
    assert requests_total(after, method="POST", status_class="2xx") == 1
    assert requests_total(after) == 13
    assert total(after, "wsgibridge_received_bytes", "wsgibridge_received_bytes_total") == 300
    body = len(b"Hello, World!")
    sent = total(after, "wsgibridge_sent_bytes", "wsgibridge_sent_bytes_total")
    assert sent == 11 * body  # HEAD answers carry no body


def expect_closed(reader: ResponseReader) -> None:
    deadline = time.monotonic() + 5
    while not reader.at_eof():
        assert time.monotonic() < deadline


def test_the_histograms_count_every_request_and_agree_with_the_totals(metered: WSGIServer) -> None:
    for path in ("/", "/a", "/b?x=1"):
        exchange(metered, close_request(path=path))
    families = scrape(metered)
    count = requests_total(families)
    assert count == 3
    duration = "wsgibridge_request_duration_seconds"
    assert total(families, duration, f"{duration}_count") == count
    assert total(families, duration, f"{duration}_bucket", le="+Inf") == count
    assert 0 < total(families, duration, f"{duration}_sum") < 5
    size = "wsgibridge_response_size_bytes"
    assert total(families, size, f"{size}_count") == count
    assert total(families, size, f"{size}_sum") == total(
        families, "wsgibridge_sent_bytes", "wsgibridge_sent_bytes_total"
    )
    assert total(families, size, f"{size}_bucket", le="100.0") == count  # 13 bytes each


@pytest.mark.parametrize("status", [400, 414, 431, 501, 505])
def test_a_refusal_is_counted_by_its_status_and_the_next_client_is_served(
    metered: WSGIServer, status: int
) -> None:
    case = STATUS_CASES[status]
    assert exchange(metered, case.raw).startswith(f"HTTP/1.1 {status} ".encode())
    families = scrape(metered)
    assert refused(families, str(status)) == 1
    assert total(families, "wsgibridge_refused", "wsgibridge_refused_total") == 1
    assert requests_total(families, status_class=f"{status // 100}xx") == 1
    assert exchange(metered, close_request()).startswith(b"HTTP/1.1 200 ")
    assert requests_total(scrape(metered), status_class="2xx") == 1


def test_a_body_over_the_limit_is_refused_with_413_and_counted() -> None:
    server = make_server(simple_app(), port=0, metrics_bind=("127.0.0.1:0",), max_body_size=10)
    with serving(server):
        answer = exchange(server, close_request("POST", body=b"y" * 11))
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert refused(scrape(server), "413") == 1


def test_a_chunked_body_over_the_limit_is_refused_mid_stream_and_counted() -> None:
    server = make_server(reading_app, port=0, metrics_bind=("127.0.0.1:0",), max_body_size=10)
    with serving(server):
        chunked = (
            b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n14\r\n" + b"z" * 20 + b"\r\n0\r\n\r\n"
        )
        assert exchange(server, chunked).startswith(b"HTTP/1.1 413 ")
        families = scrape(server)
        assert refused(families, "413") == 1
        assert requests_total(families, method="POST", status_class="4xx") == 1


def test_a_head_not_complete_in_time_is_refused_with_408_and_counted() -> None:
    server = make_server(simple_app(), port=0, metrics_bind=("127.0.0.1:0",), header_timeout=0.3)
    with serving(server), socket.create_connection((server.host, server.port), 5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # and nothing more
        answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert refused(scrape(server), "408") == 1


def test_the_connection_limit_is_counted_when_accepting_pauses() -> None:
    server = make_server(simple_app(), port=0, metrics_bind=("127.0.0.1:0",), connection_limit=1)
    with serving(server), socket.create_connection((server.host, server.port), 5) as first:
        first.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert ResponseReader(first).read_response().status == 200  # open, parked
        with socket.create_connection((server.host, server.port), 5) as second:
            second.sendall(close_request())
            wait_until(lambda: refused(scrape(server), "connection_limit") == 1)
            first.close()  # below the limit again: the second client is served
            assert ResponseReader(second).read_response().status == 200
    # (one pause, however many workers found the limit reached)


# -- the gauges ------------------------------------------------------------------------------


def test_the_gauges_show_a_request_in_flight_and_a_parked_connection() -> None:
    started, release = threading.Event(), threading.Event()

    def slow(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            started.set()
            release.wait(5)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = make_server(slow, port=0, metrics_bind=("127.0.0.1:0",), threads=4)
    with serving(server), contextlib.ExitStack() as stack:
        idle = stack.enter_context(socket.create_connection((server.host, server.port), 5))
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert ResponseReader(idle).read_response().status == 200
        busy = stack.enter_context(socket.create_connection((server.host, server.port), 5))
        busy.sendall(close_request(path="/slow"))
        assert started.wait(5)
        wait_until(lambda: gauge(scrape(server), "wsgibridge_connections", state=PARKED) == 1)
        families = scrape(server)
        assert gauge(families, "wsgibridge_requests_in_flight") == 1
        assert gauge(families, "wsgibridge_connections", state=ACTIVE) == 1
        assert gauge(families, "wsgibridge_connections", state=LINGERING) == 0
        assert gauge(families, "wsgibridge_worker_threads_busy") >= 1
        assert gauge(families, "wsgibridge_worker_threads") == 4
        assert gauge(families, "wsgibridge_worker_processes") == 1
        release.set()
        assert ResponseReader(busy).read_response().status == 200
        expect_closed(ResponseReader(busy))
        families = scrape(server)
        assert gauge(families, "wsgibridge_requests_in_flight") == 0
        assert gauge(families, "wsgibridge_connections", state=ACTIVE) == 0
        assert requests_total(families) == 2


def gauge(families: Families, family: str, **labels: str) -> float:
    return total(families, family, **labels)


def test_build_info_names_the_build_and_the_start_time_is_now(metered: WSGIServer) -> None:
    import wsgibridge

    families = scrape(metered)
    (info,) = families["wsgibridge_build_info"].samples
    assert info.labels == {
        "version": wsgibridge.__version__,
        "build": "compiled" if wsgibridge.compiled else "pure",
    }
    start = gauge(families, "wsgibridge_start_time_seconds")
    assert time.time() - 60 < start <= time.time()


# -- the listener ------------------------------------------------------------------------------


def test_the_listener_answers_only_get_and_head_on_metrics(metered: WSGIServer) -> None:
    address = metrics_address(metered)
    response = get(address, path="/")
    assert response.status == 404
    assert b"Hello" not in response.read()  # never the app
    assert get(address, path="/metrics/x").status == 404
    posted = get(address, "POST")
    assert posted.status == 405
    assert posted.getheader("Allow") == "GET, HEAD"
    assert get(address, path="/metrics?name[]=x").status == 200  # a query is ignored
    head = get(address, "HEAD")
    assert head.status == 200 and int(head.getheader("Content-Length") or 0) > 0
    assert requests_total(scrape(metered)) == 0  # scrapes are not the app's requests


def test_the_app_port_does_not_serve_the_figures(metered: WSGIServer) -> None:
    response = requests.get(f"{metered.url}metrics", timeout=5)
    assert response.status_code == 200
    assert response.text == "Hello, World!"  # the app's answer


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /metrics HTTP/1.1 junk\r\n\r\n", 400),
        (b"GET /" + b"m" * 2000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 100 + b"\r\n", 431),
    ],
)
def test_a_malformed_scrape_gets_its_4xx_and_the_next_one_is_answered(
    metered: WSGIServer, raw: bytes, status: int
) -> None:
    with socket.create_connection(metrics_address(metered), timeout=5) as sock:
        sock.sendall(raw)
        answer = ResponseReader(sock).read_response()
    assert answer.status == status
    assert answer.header("Connection") == "close"
    assert requests_total(scrape(metered)) == 0


def test_a_slow_scraper_neither_blocks_others_nor_stays_forever(
    metered: WSGIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsgibridge.serving import scrape as scrape_module

    monkeypatch.setattr(scrape_module, "SCRAPE_TIMEOUT", 0.3)
    with socket.create_connection(metrics_address(metered), timeout=5) as slow:
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # the rest never comes
        scrape(metered)  # answered meanwhile
        answer = ResponseReader(slow).read_response()  # then the slow one gets its 408
        assert answer.status == 408


def test_more_scrapers_than_allowed_at_once_are_closed_and_scrapes_go_on(
    metered: WSGIServer,
) -> None:
    address = metrics_address(metered)
    with contextlib.ExitStack() as stack:
        for _ in range(MAX_SCRAPES):
            stack.enter_context(socket.create_connection(address, timeout=5)).sendall(b"GET")
        extra = stack.enter_context(socket.create_connection(address, timeout=5))
        assert extra.recv(1) == b""  # closed at once
    scrape(metered)  # and the held ones are gone with their sockets


def test_stop_stops_the_metrics_thread_and_closes_its_listener() -> None:
    server = make_server(simple_app(), port=0, metrics_bind=("127.0.0.1:0",))
    address = None
    with serving(server):
        address = metrics_address(server)
        scrape(server)
        assert any(t.name == "wsgibridge-metrics" for t in threading.enumerate())
    assert not any(t.name == "wsgibridge-metrics" for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()


def test_a_server_never_served_closes_its_metrics_listener() -> None:
    server = make_server(simple_app(), port=0, metrics_bind=("127.0.0.1:0",))
    address = metrics_address(server)
    server.server_close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()


@needs_unix
def test_metrics_on_a_unix_socket() -> None:
    with tempfile.TemporaryDirectory(prefix="wbm-") as directory:
        path = os.path.join(directory, "metrics.sock")
        server = make_server(simple_app(), port=0, metrics_bind=(f"unix:{path}",))
        assert server.metrics_addresses == [f"unix:{path}"]
        assert server.metrics_url == ""
        with serving(server):
            exchange(server, close_request())
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                answer = ResponseReader(sock).read_response()
            assert answer.status == 200
            families = {f.name: f for f in text_string_to_metric_families(answer.body.decode())}
            assert requests_total(families) == 1
        assert not Path(path).exists()  # removed at the stop, as --bind's are


def test_no_metrics_bind_means_no_metrics_at_all() -> None:
    server = make_server(simple_app(), port=0)
    try:
        assert server.metrics is None
        assert server.metrics_addresses == [] and server.metrics_url == ""
        with pytest.raises(RuntimeError, match="no metrics_bind"):
            server.metrics_snapshot()
    finally:
        server.server_close()


def test_metrics_url_and_a_bad_address_refused_before_anything_listens() -> None:
    server = make_server(simple_app(), port=0, metrics_bind=("127.0.0.1:0",))
    try:
        host, port = metrics_address(server)
        assert server.metrics_url == f"http://{host}:{port}/metrics"
    finally:
        server.server_close()
    with pytest.raises(ValueError, match="invalid bind address 'nowhere'"):
        Config(metrics_bind=("nowhere",))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
def test_a_metrics_address_in_use_leaves_no_listener_open() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(OSError, match="in use"):
            make_server(simple_app(), port=0, metrics_bind=(f"127.0.0.1:{port}",))
        assert len(os.listdir("/proc/self/fd")) == before


def test_a_head_request_for_another_path_gets_a_404_without_content(metered: WSGIServer) -> None:
    with socket.create_connection(metrics_address(metered), timeout=5) as sock:
        sock.sendall(b"HEAD /nothing HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_to_eof(sock)
    head, _, content = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 ")
    assert b"Content-Length: " in head and content == b""


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.mark.skipif(not hasattr(os, "dup"), reason="needs os.dup")
def test_a_scraper_on_a_descriptor_past_1024_is_answered(metered: WSGIServer) -> None:
    """The metrics thread waits with poll(): select() cannot watch a descriptor past
    FD_SETSIZE, which a server with many connections hands a new scraper."""
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"the descriptor limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    filler: list[int] = []
    try:
        with open(os.devnull, "rb") as null:
            while len(filler) < 1100:
                filler.append(os.dup(null.fileno()))
        # The server's side of the next scrape gets the lowest free descriptor: past
        # 1024.  The request comes a moment after the connection, so the thread has to
        # wait on that descriptor for it.
        with socket.create_connection(metrics_address(metered), timeout=5) as sock:
            time.sleep(0.2)
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_to_eof(sock).startswith(b"HTTP/1.1 200 ")
        assert requests_total(scrape(metered)) == 0  # and the thread is still there
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
