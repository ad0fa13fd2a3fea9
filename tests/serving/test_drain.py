"""Readiness and drain: ``health_path``, ``shutdown_delay`` and the listen backlog at a stop.

In-process servers (``make_server`` in a thread) for the API, and ``python -m
wsgibridge`` subprocesses with real signals for the command line, one
process and ``--workers 2``.  Every socket read has a timeout; every server
and process is stopped or killed, whatever the outcome.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wsgibridge import Config, make_server
from wsgibridge._types import Environ, StartResponse
from wsgibridge.accesslog import AccessRecord
from wsgibridge.serving.server import WSGIServer

from ..conftest import RawResponse, ResponseReader, serving
from ..test_serving_processes import (
    APP_MODULE,
    Address,
    Launcher,
    needs_proc,
    read_until_closed,
    request,
    worker_pids,
)

HEALTH = "/healthz"


class CountingApp:
    """Counts its calls; ``/block`` waits on ``release`` (announcing itself on ``started``)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        self.calls.append(f"{environ['REQUEST_METHOD']} {path}")
        if path == "/block":
            self.started.set()
            self.release.wait(10)
        body = f"app {path}".encode()
        headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]


@contextlib.contextmanager
def live(app: CountingApp, **options: Any) -> Iterator[WSGIServer]:
    options.setdefault("graceful_timeout", 5.0)
    server = make_server(app, "127.0.0.1", 0, access_log=True, **options)
    with serving(server):
        assert server.serving.wait(5)
        yield server
    app.release.set()


def ask(server: WSGIServer, raw: bytes, method: str = "GET") -> RawResponse:
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(raw)
        return ResponseReader(sock).read_response(method)


def get(path: str, method: str = "GET", *, close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n".encode() + connection + b"\r\n"


# -- the health path, in-process ------------------------------------------------------------


def test_health_path_is_answered_by_the_server_without_the_app_or_an_access_line() -> None:
    app = CountingApp()
    records: list[AccessRecord] = []
    with live(app, health_path=HEALTH) as server:
        server.observers.append(records.append)
        response = ask(server, get(HEALTH))
        assert (response.status, response.body) == (200, b"ok\n")
        assert response.header("Cache-Control") == "no-store"
        assert response.header("Date") is not None
        head = ask(server, get(HEALTH, "HEAD"), "HEAD")
        assert head.status == 200 and head.body == b""
        assert head.header("Content-Length") == "3"
        assert ask(server, get(HEALTH + "?from=probe")).status == 200
        assert app.calls == []
        assert records == []
        # Not the probe: other paths, and other methods on the path, are the app's.
        assert ask(server, get(HEALTH + "x")).body == b"app /healthzx"
        post = b"POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"
        assert ask(server, post).body == b"app /healthz"
        assert app.calls == ["GET /healthzx", "POST /healthz"]


def test_health_probes_share_a_keep_alive_connection_with_requests() -> None:
    app = CountingApp()
    with (
        live(app, health_path=HEALTH) as server,
        socket.create_connection((server.host, server.port), timeout=5) as sock,
    ):
        reader = ResponseReader(sock)
        sock.sendall(get(HEALTH, close=False) + get("/", close=False) + get(HEALTH))
        first, second, third = (reader.read_response() for _ in range(3))
        assert [first.status, second.status, third.status] == [200, 200, 200]
        assert first.header("Connection") is None
        assert second.body == b"app /"
        assert third.header("Connection") == "close"
        assert read_until_closed(sock, 5) == b""


def test_health_access_log_asks_for_the_probes_lines() -> None:
    app = CountingApp()
    records: list[AccessRecord] = []
    with live(app, health_path=HEALTH, health_access_log=True) as server:
        server.observers.append(records.append)
        assert ask(server, get(HEALTH)).status == 200
        deadline = time.monotonic() + 5
        while not records and time.monotonic() < deadline:
            time.sleep(0.01)  # the record is made after the response is sent
        [record] = records
        assert (record.status, record.path) == (200, HEALTH)
        assert app.calls == []


def test_health_path_off_by_default() -> None:
    app = CountingApp()
    with live(app) as server:
        assert ask(server, get(HEALTH)).body == b"app /healthz"


@pytest.mark.parametrize("path", ["healthz", "/a b", "/\x01"])
def test_health_path_must_be_a_path(path: str) -> None:
    with pytest.raises(ValueError, match="health_path"):
        Config(health_path=path)


def test_shutdown_delay_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="shutdown_delay"):
        Config(shutdown_delay=-1)
    with pytest.raises(ValueError, match="shutdown_delay"):
        Config(shutdown_delay=float("nan"))


# -- drain() and stop(delay=...), in-process --------------------------------------------------


def test_drain_fails_the_health_check_and_closes_responses_while_serving_on() -> None:
    app = CountingApp()
    with live(app, health_path=HEALTH) as server:
        began = time.monotonic()
        server.drain(0.6)
        assert server.draining and not server.stopping
        unhealthy = ask(server, get(HEALTH, close=False))
        assert unhealthy.status == 503 and unhealthy.body == b"stopping\n"
        assert unhealthy.header("Connection") == "close"
        # Still accepting and serving, each response closing its connection.
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(get("/", close=False))
            response = ResponseReader(sock).read_response()
            assert response.status == 200 and response.header("Connection") == "close"
            assert read_until_closed(sock, 5) == b""
        server.drain(30)  # a later call never postpones the stop
        assert server.reactor.loop_done.wait(5)
        took = time.monotonic() - began
        assert 0.5 <= took < 3.0, took
        assert server.stopping


def test_stop_with_a_delay_serves_until_it_is_over() -> None:
    app = CountingApp()
    with live(app, health_path=HEALTH) as server:
        done = threading.Event()

        def stop() -> None:
            server.stop(delay=0.5)
            done.set()

        threading.Thread(target=stop, daemon=True).start()
        deadline = time.monotonic() + 5
        while not server.draining and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ask(server, get(HEALTH)).status == 503
        assert ask(server, get("/")).status == 200
        assert not done.is_set()
        assert done.wait(5)


def test_request_shutdown_fails_the_health_check_too() -> None:
    """A probe that waited in the backlog while the only thread was busy is answered
    after the stop began: 503."""
    app = CountingApp()
    with (
        live(app, health_path=HEALTH, threads=1) as server,
        socket.create_connection((server.host, server.port), timeout=5) as busy,
    ):
        busy.sendall(get("/block"))
        assert app.started.wait(5)
        with socket.create_connection((server.host, server.port), timeout=5) as probe:
            probe.sendall(get(HEALTH, close=False))
            server.request_shutdown()
            assert server.draining
            app.release.set()
            assert ResponseReader(busy).read_response().status == 200
            response = ResponseReader(probe).read_response()
            assert response.status == 503
            assert response.header("Connection") == "close"


# -- the backlog at a stop ---------------------------------------------------------------------


def backlog_clients(server: WSGIServer, count: int) -> list[socket.socket]:
    """``count`` clients connected and their requests sent, none accepted yet."""
    clients = []
    for index in range(count):
        sock = socket.create_connection((server.host, server.port), timeout=5)
        clients.append(sock)
        sock.sendall(get(f"/queued/{index}"))
    return clients


@pytest.mark.parametrize("use_epoll", [True, False], ids=["epoll", "poll"])
def test_a_stop_serves_the_clients_waiting_in_the_listen_backlog(use_epoll: bool) -> None:
    """``threads=1`` busy in the app: clients connect and send, unaccepted (epoll), or
    accepted by the reactor and parked with their request waiting (poll); the stop
    begins; each still gets its response (``Connection: close``), none a reset."""
    app = CountingApp()
    server = make_server(app, "127.0.0.1", 0, threads=1, graceful_timeout=5.0, use_epoll=use_epoll)
    clients: list[socket.socket] = []
    try:
        with serving(server):
            assert server.serving.wait(5)
            busy = socket.create_connection((server.host, server.port), timeout=5)
            clients.append(busy)
            busy.sendall(get("/block"))
            assert app.started.wait(5)
            clients += backlog_clients(server, 6)
            if not use_epoll:
                time.sleep(0.2)  # the reactor accepts them itself: parked, bytes waiting
            server.request_shutdown()
            deadline = time.monotonic() + 5
            while server.reactor._listener_fds and time.monotonic() < deadline:
                time.sleep(0.005)
            assert not server.reactor._listener_fds  # the listeners are closed
            app.release.set()
            for index, sock in enumerate(clients):
                response = ResponseReader(sock).read_response()
                assert response.status == 200, index
                assert response.header("Connection") == "close"
                assert read_until_closed(sock, 5) == b""
            expected = [f"GET /queued/{index}" for index in range(6)]
            assert sorted(call for call in app.calls if call != "GET /block") == expected
    finally:
        app.release.set()
        for sock in clients:
            sock.close()


def test_a_backlog_client_that_has_not_sent_yet_is_waited_for() -> None:
    """Clients whose handshake is done but whose request comes only after the stop
    began are still answered (the race between connect() and send())."""
    app = CountingApp()
    server = make_server(app, "127.0.0.1", 0, threads=1, graceful_timeout=5.0)
    address = (server.host, server.port)
    with contextlib.ExitStack() as stack, serving(server):
        stack.callback(app.release.set)
        assert server.serving.wait(5)
        busy = stack.enter_context(socket.create_connection(address, timeout=5))
        busy.sendall(get("/block"))
        assert app.started.wait(5)
        late = stack.enter_context(socket.create_connection(address, timeout=5))
        split = stack.enter_context(socket.create_connection(address, timeout=5))
        server.request_shutdown()
        deadline = time.monotonic() + 5
        while server.reactor._listener_fds and time.monotonic() < deadline:
            time.sleep(0.005)
        app.release.set()
        assert ResponseReader(busy).read_response().status == 200
        late.sendall(get("/late"))
        split.sendall(get("/split")[:10])
        time.sleep(0.05)
        split.sendall(get("/split")[10:])  # a head in two pieces
        assert ResponseReader(late).read_response().status == 200
        assert ResponseReader(split).read_response().status == 200
        assert "GET /split" in app.calls


# -- the command line: one process and --workers 2 ---------------------------------------------


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    (tmp_path / "procapp.py").write_text(APP_MODULE)
    with Launcher(tmp_path) as launcher:
        yield launcher


def status_of(launch: Launcher, address: Address, path: str) -> tuple[int, str | None]:
    response = launch.get(address, path)
    return response.status, response.header("Connection")


WORKERS = ["1", pytest.param("2", marks=needs_proc)]


@pytest.mark.parametrize("workers", WORKERS)
def test_sigterm_with_a_shutdown_delay_fails_the_probe_serves_on_then_exits(
    launch: Launcher, workers: str
) -> None:
    server = launch.start(
        "--port", "0", "--workers", workers, "--health-path", HEALTH, "--shutdown-delay", "1"
    )
    [address] = server.serving()
    if workers != "1":
        worker_pids(launch, address, 2, timeout=10)
    assert status_of(launch, address, HEALTH) == (200, "close")
    assert "GET /healthz" not in server.stderr()  # no access line for the probe
    sent = server.send(signal.SIGTERM)
    deadline = sent + 5
    while status_of(launch, address, HEALTH)[0] != 503 and time.monotonic() < deadline:
        time.sleep(0.01)  # with workers: the arbiter relays the signal first
    time.sleep(0.05)  # and (with workers) to the other one a moment later
    answered = []
    while time.monotonic() - sent < 0.7:  # well inside the delay: new clients are served
        status, connection = status_of(launch, address, "/")
        assert status == 200
        answered.append(connection)
        health = status_of(launch, address, HEALTH)
        assert health == (503, "close")
    assert answered and set(answered) == {"close"}
    code = server.wait(10)
    exited = time.monotonic() - sent
    print(f"--workers {workers} --shutdown-delay 1: exit {code} after {exited * 1000:.0f} ms")
    assert code == 0, server.stderr()
    assert 1.0 <= exited < 4.0
    assert "did not stop in time" not in server.stderr()


@pytest.mark.parametrize("workers", WORKERS)
def test_a_second_signal_cuts_the_shutdown_delay_short(launch: Launcher, workers: str) -> None:
    server = launch.start("--port", "0", "--workers", workers, "--shutdown-delay", "30")
    [address] = server.serving()
    assert launch.get(address).status == 200
    sent = server.send(signal.SIGTERM)
    server.wait_for("received SIGTERM")
    time.sleep(0.2)  # the drain is under way (nothing announces it in the workers)
    assert server.proc.poll() is None, server.stderr()
    server.send(signal.SIGTERM)
    code = server.wait(10)
    exited = time.monotonic() - sent
    assert code == 0, server.stderr()
    assert exited < 5.0


def test_sigterm_serves_the_listen_backlog(launch: Launcher) -> None:
    """One thread busy for 1 s, eight clients queued in the backlog, SIGTERM: all eight
    are answered, none is reset."""
    server = launch.start("--port", "0", "--threads", "1")
    [address] = server.serving()
    busy = launch.connect(address)
    busy.sendall(request("/sleep/1", close=True))
    server.wait_for("APP-STARTED")
    queued = []
    for _ in range(8):
        sock = launch.connect(address)
        sock.sendall(request("/", close=True))
        queued.append(sock)
    server.send(signal.SIGTERM)
    server.wait_for("from the listen backlog")
    for sock in [busy, *queued]:
        response = ResponseReader(sock).read_response()
        assert response.status == 200
        assert response.header("Connection") == "close"
    assert server.wait(10) == 0, server.stderr()
    assert "8 connection(s) from the listen backlog" in server.stderr()


class LoadLoop:
    """Clients that send requests (new connections and keep-alive) until the balancer,
    which probes the health path, has seen it fail - as a load balancer would."""

    def __init__(self, launch: Launcher, address: Address, clients: int) -> None:
        assert isinstance(address, tuple)
        self.launch = launch
        self.address: tuple[str, int] = address
        self.ok = 0
        self.failed: list[str] = []
        self.unhealthy_at = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i % 2 == 0,), daemon=True)
            for i in range(clients)
        ]
        self._threads.append(threading.Thread(target=self._balancer, daemon=True))
        for thread in self._threads:
            thread.start()

    def _balancer(self) -> None:
        while not self._stop.is_set():
            try:
                status = self.launch.get(self.address, HEALTH).status
            except OSError:
                status = 0
            if status != 200:
                self.unhealthy_at = time.monotonic()
                # The balancer takes a moment to take the server out of rotation.
                time.sleep(0.3)
                self._stop.set()
                return
            time.sleep(0.02)

    def _client(self, keep_alive: bool) -> None:
        sock: socket.socket | None = None
        reader: ResponseReader | None = None
        while not self._stop.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(self.address, timeout=5)
                    reader = ResponseReader(sock)
                sock.sendall(request("/", close=not keep_alive))
                assert reader is not None
                response = reader.read_response()
                assert response.status == 200
                with self._lock:
                    self.ok += 1
                if not keep_alive or response.header("Connection") == "close":
                    sock.close()
                    sock = None
            except (OSError, AssertionError) as exc:
                with self._lock:
                    self.failed.append(repr(exc))
                if sock is not None:
                    sock.close()
                sock = None
        if sock is not None:
            sock.close()

    def join(self, timeout: float) -> None:
        for thread in self._threads:
            thread.join(timeout)
        self._stop.set()


@pytest.mark.parametrize("workers", WORKERS)
def test_no_request_fails_during_the_drain_under_load(launch: Launcher, workers: str) -> None:
    server = launch.start(
        "--port",
        "0",
        "--workers",
        workers,
        "--health-path",
        HEALTH,
        "--shutdown-delay",
        "1",
        "--access-log-file",
        "/dev/null",
    )
    [address] = server.serving()
    load = LoadLoop(launch, address, clients=4)
    time.sleep(0.5)
    before = load.ok
    sent = server.send(signal.SIGTERM)
    load.join(10)
    code = server.wait(10)
    exited = time.monotonic() - sent
    print(
        f"--workers {workers}, load during a 1 s drain: {load.ok} requests"
        f" ({load.ok - before} after SIGTERM), {len(load.failed)} failed;"
        f" exit {code} after {exited * 1000:.0f} ms"
    )
    assert load.failed == []
    assert load.ok > before
    assert code == 0, server.stderr()


def test_sigterm_without_a_delay_exits_promptly(launch: Launcher) -> None:
    server = launch.start("--port", "0", "--health-path", HEALTH)
    [address] = server.serving()
    assert launch.get(address, HEALTH).status == 200
    sent = server.send(signal.SIGTERM)
    code = server.wait(5)
    exited = time.monotonic() - sent
    print(f"--shutdown-delay 0: exit {code} {exited * 1000:.0f} ms after SIGTERM")
    assert code == 0
    assert exited < 2.0
