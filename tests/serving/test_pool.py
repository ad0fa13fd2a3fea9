"""The worker pool and parked connections, over real sockets: idle clients hold no thread,
slow clients are cut off by their timeouts, and the server stops fast and gracefully.

Each test names the rule it checks.  Timing assertions are generous upper bounds
(they guard against a design that blocks, not against a slow machine); the
figures themselves belong in the benchmark.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from wsgibridge import WSGIServer, make_server
from wsgibridge._types import Environ, StartResponse
from wsgibridge.serving.readiness import HAS_EPOLL

from ..conftest import ResponseReader, ServerFactory, connect, running_server, simple_app

TIMEOUT = 5.0


@pytest.fixture(autouse=True, params=["epoll", "poll"])
def use_epoll(request: pytest.FixtureRequest) -> bool:
    """Every test here runs with workers waiting on an epoll, and with the fallback
    where the reactor polls parked connections and hands them over (no epoll)."""
    if request.param == "epoll" and not HAS_EPOLL:
        pytest.skip("no epoll on this system")
    return bool(request.param == "epoll")


@pytest.fixture
def serve(use_epoll: bool) -> Iterator[ServerFactory]:
    """The shared ``serve`` fixture, with this module's choice of ``use_epoll``."""
    with contextlib.ExitStack() as stack:

        def start(app: Any, **options: Any) -> WSGIServer:
            options.setdefault("use_epoll", use_epoll)
            return stack.enter_context(running_server(app, **options))

        yield start


def get(path: str = "/", close: bool = False) -> bytes:
    extra = "Connection: close\r\n" if close else ""
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def fetch(server: WSGIServer, path: str = "/") -> tuple[int, float]:
    """One request on a new connection: (status, seconds it took)."""
    start = time.perf_counter()
    with connect(server) as sock:
        sock.sendall(get(path, close=True))
        response = ResponseReader(sock).read_response()
    return response.status, time.perf_counter() - start


def kept_alive(server: WSGIServer, count: int) -> list[socket.socket]:
    """``count`` connections that each had one request answered and are now idle."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect(server)
            socks.append(sock)
            sock.sendall(get())
            assert ResponseReader(sock).read_response().status == 200
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


@contextlib.contextmanager
def closing_all(socks: list[socket.socket]) -> Iterator[list[socket.socket]]:
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def wait_for_eof(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes ``sock`` (fails after ``timeout``)."""
    start = time.perf_counter()
    sock.settimeout(timeout)
    data = sock.recv(65536)
    while data:
        data = sock.recv(65536)
    return time.perf_counter() - start


# -- idle connections hold no thread -----------------------------------------------------


def test_a_thousand_idle_keepalive_connections_do_not_delay_a_new_client(
    serve: ServerFactory,
) -> None:
    """1,000 idle keep-alive connections with 8 workers must not delay a new client's
    request: idle connections are parked in the selector, not on threads."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2200:
        pytest.skip(f"needs ~2,100 file descriptors, RLIMIT_NOFILE is {soft}")
    server = serve(simple_app(), threads=8, connection_limit=1100)
    with closing_all(kept_alive(server, 1000)) as idle:
        assert server.open_connections >= 1000
        timings = [fetch(server) for _ in range(20)]
        assert all(status == 200 for status, _ in timings)
        worst = max(seconds for _, seconds in timings)
        print(f"\nnew request, 1,000 idle connections open: worst of 20 {worst * 1000:.1f} ms")
        assert worst < 1.0
        # ... and the idle ones are still alive and served on their own connection.
        for sock in idle[::100]:
            sock.sendall(get("/again"))
            assert ResponseReader(sock).read_response().status == 200


def test_idle_and_half_sent_requests_leave_the_only_worker_free(serve: ServerFactory) -> None:
    """With one thread, idle keep-alive clients and a client trickling its head wait in
    the selector; a new client is answered at once."""
    server = serve(simple_app(), threads=1)
    with closing_all(kept_alive(server, 5)), connect(server) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        status, seconds = fetch(server)
        assert status == 200 and seconds < 1.0


def test_busy_keepalive_clients_share_one_worker_fairly(serve: ServerFactory) -> None:
    """With one worker, a client hammering keep-alive requests never starves another:
    the worker takes whichever connection is ready next, never sticking to one."""
    server = serve(simple_app(), threads=1)
    stop = threading.Event()
    served = [0]

    def hammer() -> None:
        with connect(server) as sock:
            reader = ResponseReader(sock)
            while not stop.is_set():
                sock.sendall(get())
                reader.read_response()
                served[0] += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        while served[0] < 50:
            time.sleep(0.01)
        worst = max(fetch(server)[1] for _ in range(10))
        assert worst < 0.5
    finally:
        stop.set()
        thread.join(TIMEOUT)
    assert not thread.is_alive()


def test_requests_run_in_parallel_up_to_the_thread_count(serve: ServerFactory) -> None:
    """``threads`` requests are handled at once (an app waiting on I/O does not serialise
    the others); one more waits for a free worker."""
    inside = threading.Semaphore(0)
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        inside.release()
        release.wait(TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server = serve(app, threads=3)
    socks = [connect(server) for _ in range(4)]
    with closing_all(socks):
        for sock in socks:
            sock.sendall(get(close=True))
        for _ in range(3):
            assert inside.acquire(timeout=TIMEOUT)
        assert not inside.acquire(timeout=0.3)  # the fourth waits for a worker
        release.set()
        assert inside.acquire(timeout=TIMEOUT)
        assert all(ResponseReader(s).read_response().status == 200 for s in socks)


# -- timeouts ------------------------------------------------------------------------------


def test_a_request_head_not_complete_in_time_gets_408_and_close(serve: ServerFactory) -> None:
    """header_timeout bounds the whole head, not each read: a client dripping bytes is cut
    off (a per-read timeout would never fire), with 408 Request Timeout."""
    server = serve(simple_app(), header_timeout=0.5)
    with connect(server) as sock:
        start = time.perf_counter()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        data = b""
        sock.settimeout(0.15)
        for part in (b"Host: t\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", b"X-C: 3\r\n", b"X-D: 4\r\n"):
            try:
                sock.sendall(part)
            except OSError:
                break
            try:
                data += sock.recv(65536)
            except TimeoutError:
                continue
            if data:
                break
        sock.settimeout(TIMEOUT)
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
        elapsed = time.perf_counter() - start
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert b"Connection: close" in data
    assert 0.4 < elapsed < 2.0


def test_a_new_connection_that_says_nothing_is_closed_after_header_timeout(
    serve: ServerFactory,
) -> None:
    """A connection that never sends a byte (a slowloris, a browser preconnect) is closed
    after header_timeout without an answer."""
    server = serve(simple_app(), header_timeout=0.4)
    with connect(server) as sock:
        assert 0.3 < wait_for_eof(sock, TIMEOUT) < 2.0


def test_an_idle_keepalive_connection_is_closed_after_keepalive_timeout(
    serve: ServerFactory,
) -> None:
    """keepalive_timeout: an idle persistent connection is closed by the server (RFC 9112
    §9.8 lets a server close idle connections at any time)."""
    server = serve(simple_app(), keepalive_timeout=0.4)
    with closing_all(kept_alive(server, 1)) as (sock,):
        assert 0.3 < wait_for_eof(sock, TIMEOUT) < 2.0


def test_a_body_that_stops_arriving_is_408(serve: ServerFactory) -> None:
    """read_timeout bounds each read of the body: the app's read raises a 408 error, which
    the server answers with 408 and Connection: close."""
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            raised.append(exc)
            raise
        start_response("200 OK", [])
        return [b"complete"]

    server = serve(app, read_timeout=0.3)
    with connect(server) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nab")
        response = ResponseReader(sock).read_response()
    assert response.status == 408
    assert response.header("Connection") == "close"
    assert len(raised) == 1 and getattr(raised[0], "status", None) == 408


def test_a_client_that_stops_reading_is_cut_off_after_write_timeout(
    serve: ServerFactory,
) -> None:
    """write_timeout: a client that never reads cannot hold a worker; the app's iterable
    is closed, and other clients are served meanwhile."""
    closed = threading.Event()

    class Endless:
        def __iter__(self) -> Iterator[bytes]:
            chunk = b"x" * 65536
            while True:
                yield chunk

        def close(self) -> None:
            closed.set()

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/endless":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return Endless()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(app, threads=1, write_timeout=0.3)
    with connect(server) as stuck:
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(get("/endless"))
        assert closed.wait(TIMEOUT)  # the worker gave up on the stuck client
        status, _ = fetch(server, "/other")
        assert status == 200


# -- stopping ------------------------------------------------------------------------------


def test_stopping_an_idle_server_is_fast_and_closes_idle_connections(use_epoll: bool) -> None:
    """Stop returns well under 100 ms for an idle server, and idle keep-alive
    connections are closed at once; no worker thread is left."""
    with (
        running_server(simple_app(), use_epoll=use_epoll) as server,
        closing_all(kept_alive(server, 3)) as idle,
    ):
        start = time.perf_counter()
        server.stop()
        elapsed = time.perf_counter() - start
        print(f"\nstop of an idle server with 3 keep-alive connections: {elapsed * 1000:.1f} ms")
        assert elapsed < 0.5
        for sock in idle:
            assert wait_for_eof(sock, 1.0) < 1.0
    workers = [t for t in threading.enumerate() if t.name.startswith("wsgibridge-worker")]
    assert workers == []


def test_stop_lets_a_request_in_flight_finish_with_connection_close(use_epoll: bool) -> None:
    """Graceful stop: the request being handled completes, its response says
    Connection: close, and only then does the server close."""
    entered, release = threading.Event(), threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        entered.set()
        release.wait(TIMEOUT)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"finished"]

    with (
        running_server(app, graceful_timeout=5.0, use_epoll=use_epoll) as server,
        connect(server) as sock,
    ):
        sock.sendall(get())
        assert entered.wait(TIMEOUT)
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        try:
            # The listener is closed at once: refused (or reset, for a connect that
            # raced the close).
            with pytest.raises((ConnectionRefusedError, ConnectionResetError)):
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    connect(server, timeout=0.5).close()
                    time.sleep(0.01)
            release.set()
            response = ResponseReader(sock).read_response()
        finally:
            release.set()
            stopper.join(TIMEOUT)
        assert not stopper.is_alive()
        assert (response.status, response.body) == (200, b"finished")
        assert response.header("Connection") == "close"


def test_stop_cuts_requests_still_running_after_the_graceful_timeout(use_epoll: bool) -> None:
    """After graceful_timeout the remaining sockets are shut down: stop returns, and the
    client sees a closed connection, never a complete-looking response."""
    entered, release = threading.Event(), threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first part"
        entered.set()
        release.wait(TIMEOUT)
        yield b"never sent"

    try:
        with (
            running_server(app, graceful_timeout=0.3, use_epoll=use_epoll) as server,
            connect(server) as sock,
        ):
            sock.sendall(get())
            assert entered.wait(TIMEOUT)
            start = time.perf_counter()
            server.stop()
            elapsed = time.perf_counter() - start
            data = b""
            sock.settimeout(TIMEOUT)
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    data += chunk
    finally:
        release.set()
    assert 0.25 < elapsed < 2.5
    assert b"first part" in data and b"never sent" not in data
    assert not data.endswith(b"0\r\n\r\n")  # the chunked body was not terminated


# -- regressions (an adversarial review found these) ---------------------------------------


def test_accepting_resumes_after_the_connection_limit_every_time(serve: ServerFactory) -> None:
    """Hitting connection_limit pauses accepting; closing connections must resume it, also
    when a close races the pause (workers may pause it; only the reactor resumes it)."""
    server = serve(simple_app(), connection_limit=2, threads=4)
    failures: list[BaseException] = []

    def client() -> None:
        try:
            for _ in range(60):
                assert fetch(server)[0] == 200
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == [] and not any(t.is_alive() for t in threads)
    assert fetch(server)[0] == 200


def test_a_pipelined_head_gets_its_own_header_timeout(serve: ServerFactory) -> None:
    """Bytes of the next head that arrived with a slow request start their header_timeout
    when that head is being read, not when they arrived (else: an instant 408)."""
    release = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            release.wait(1.0)  # longer than header_timeout
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = serve(app, header_timeout=0.5)
    with connect(server) as sock:
        sock.sendall(get("/slow") + b"GET /second HTTP/1.1\r\n")
        reader = ResponseReader(sock)
        assert reader.read_response().body == b"/slow"
        time.sleep(0.05)  # the rest of the second head, a moment later
        sock.sendall(b"Host: t\r\n\r\n")
        second = reader.read_response()
    assert (second.status, second.body) == (200, b"/second")


def test_parked_connections_do_not_pile_up_timer_entries(serve: ServerFactory) -> None:
    """Every park posts a deadline; entries of connections parked again or closed since
    are dropped, so a busy keep-alive client cannot grow the reactor's heap without bound."""
    server = serve(simple_app(), threads=1)
    with connect(server) as sock:
        reader = ResponseReader(sock)
        for _ in range(1500):
            sock.sendall(get())
            reader.read_response()
            time.sleep(0.0001)
    for _ in range(300):
        assert fetch(server)[0] == 200
    assert len(server.reactor.timers) + len(server.reactor.posted) < 2 * 1 + 256 + 600


def test_stop_racing_the_start_never_raises(use_epoll: bool) -> None:
    """stop() right after serve_forever starts in another thread: no exception either side."""
    for _ in range(50):
        server = make_server(simple_app(), "127.0.0.1", 0, use_epoll=use_epoll)
        errors: list[BaseException] = []

        def run(server: WSGIServer = server, errors: list[BaseException] = errors) -> None:
            try:
                server.serve_forever()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        server.stop()
        thread.join(TIMEOUT)
        assert errors == [] and not thread.is_alive()
