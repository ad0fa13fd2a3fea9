"""``serve_in_thread`` / ``BackgroundServer``: a server for tests and embedding.

It returns only once the socket is bound and accepting, stops
gracefully and fast, installs no signal handlers, names and joins its
threads, runs several at once and from any thread.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from wsgibridge import BackgroundServer, serve, serve_in_thread
from wsgibridge._types import Environ, StartResponse

from ..conftest import ResponseReader, needs_unix, simple_app

TIMEOUT = 5.0


def get(server: BackgroundServer, path: str = "/") -> tuple[int, bytes]:
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        response = ResponseReader(sock).read_response()
    return response.status, response.body


def our_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("wsgibridge-"))


def test_serve_in_thread_is_ready_at_return_and_gone_after_the_block() -> None:
    """The URL works the moment serve_in_thread returns (no sleep, no retry loop), and
    after the ``with`` block the port is closed and every thread is joined."""
    before = our_threads()
    with serve_in_thread(simple_app(b"ready")) as server:
        assert server.url == f"http://127.0.0.1:{server.port}/"
        assert server.port > 0 and server.running
        assert get(server) == (200, b"ready")
        names = our_threads()
        assert f"wsgibridge-reactor-{server.port}" in names
        assert any(name.startswith("wsgibridge-worker-") for name in names)
    assert not server.running
    assert our_threads() == before
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port), timeout=TIMEOUT).close()


def test_start_and_stop_without_with() -> None:
    """The same object works without ``with``: start() returns it, stop() twice is fine."""
    server = BackgroundServer(simple_app(), port=0)
    assert not server.running
    assert server.start() is server
    try:
        assert get(server)[0] == 200
    finally:
        server.stop()
    server.stop()
    assert not server.running


def test_start_plus_stop_is_fast() -> None:
    """Start plus stop is fast enough to run per test - asserted with a generous bound;
    the figure is printed (and measured in the benchmark's --startstop)."""
    timings = []
    for _ in range(10):
        began = time.perf_counter()
        server = serve_in_thread(simple_app())
        server.stop()
        timings.append(time.perf_counter() - began)
    best, worst = min(timings), max(timings)
    print(f"\nstart+stop, background server: best {best * 1e3:.1f} ms, worst {worst * 1e3:.1f} ms")
    assert worst < 1.0


def test_stop_with_an_idle_keepalive_client_is_fast() -> None:
    """pytest-httpserver#263: stop must not hang on an idle keep-alive connection."""
    with serve_in_thread(simple_app()) as server:
        sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
        with sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert ResponseReader(sock).read_response().status == 200
            took = server.stop()
            assert took < 0.5
            assert sock.recv(1) == b""  # closed by the server


def test_no_signal_handlers_are_installed() -> None:
    """Embedding must never touch the host program's signals."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    wakeup = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup)
    with serve_in_thread(simple_app()) as server:
        assert get(server)[0] == 200
        assert {s: signal.getsignal(s) for s in before} == before
        assert signal.set_wakeup_fd(wakeup) == wakeup
    assert {s: signal.getsignal(s) for s in before} == before


def test_several_servers_at_once_from_other_threads() -> None:
    """Several servers in one process, each started and stopped from its own thread."""
    results: dict[int, tuple[int, bytes]] = {}
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            with serve_in_thread(simple_app(str(number).encode())) as server:
                results[number] = get(server)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert errors == []
    assert results == {n: (200, str(n).encode()) for n in range(4)}


def test_a_request_in_flight_finishes_before_stop_returns() -> None:
    """stop() is graceful: the request being handled completes first."""
    entered, release = threading.Event(), threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        entered.set()
        release.wait(TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server = serve_in_thread(app)
    result: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: result.append(get(server)))
    client.start()
    assert entered.wait(TIMEOUT)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    release.set()
    stopper.join(TIMEOUT)
    client.join(TIMEOUT)
    assert result == [(200, b"done")]
    assert not server.running


def test_options_are_config_fields() -> None:
    """Any Config field can be given; a bad one fails at construction, not in the thread."""
    with serve_in_thread(simple_app(), threads=2, url_prefix="/app") as server:
        assert server.server.config.threads == 2
        assert get(server, "/elsewhere")[0] == 404
    with pytest.raises(ValueError):
        serve_in_thread(simple_app(), threads=0)


@needs_unix
def test_serve_with_workers_off_the_main_thread_refuses_before_binding(tmp_path: Path) -> None:
    """``serve(workers=2)`` needs the main thread (signals and fork); refused from another
    thread before a socket is bound, so no Unix socket file is left behind."""
    path = tmp_path / "w.sock"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            serve(simple_app(), bind=(f"unix:{path}",), workers=2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert "main thread" in str(errors[0])
    assert not path.exists()
