"""The request watchdog: a request past ``request_deadline`` is logged once, with its stack.

The apps block in a function with a name of their own until the test lets
them go; the test waits (bounded) for the warning on ``wsgibridge.error``,
which must name the request, the client, the time and that function.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from wsgibridge import Config, make_server
from wsgibridge._types import Environ, StartResponse
from wsgibridge.serving.watchdog import MAX_PERIOD, MIN_PERIOD, check_period

from ..conftest import ResponseReader, logging_to, running_server, simple_app

TIMEOUT = 5.0
DEADLINE = 0.2


class Records(logging.Handler):
    """The records of one logger, with a bounded wait for the next ones."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()

    def late(self) -> list[str]:
        with self.changed:
            return [r.getMessage() for r in self.records if "still running" in r.getMessage()]

    def wait_late(self, count: int, timeout: float = TIMEOUT) -> list[str]:
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.late()) < count and time.monotonic() < deadline:
                self.changed.wait(deadline - time.monotonic())
        found = self.late()
        assert len(found) >= count, f"{len(found)} watchdog warnings, wanted {count}"
        return found


@pytest.fixture
def records() -> Iterator[Records]:
    with logging_to("wsgibridge.error", Records()) as handler:
        yield handler


def wait_for_the_database(gate: threading.Event) -> None:
    """Where the app is stuck: the log's stack must name this function."""
    gate.wait(TIMEOUT)


class GatedApp:
    """``/stuck`` waits in :func:`wait_for_the_database` until ``release()``; the rest is fast."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/stuck":
            self.entered.release()
            wait_for_the_database(self.gate)
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    def release(self) -> None:
        self.gate.set()

    @contextlib.contextmanager
    def released_after(self) -> Iterator[None]:
        """Whatever happens in the block, no app thread stays stuck after it."""
        try:
            yield
        finally:
            self.release()


def send(sock: socket.socket, target: str) -> None:
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())


def test_a_request_past_the_deadline_is_logged_once_with_where_the_app_waits(
    records: Records,
) -> None:
    app = GatedApp()
    with (
        running_server(app, request_deadline=DEADLINE) as server,
        app.released_after(),
        socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock,
    ):
        reader = ResponseReader(sock)
        send(sock, "/fast")
        assert reader.read_response().status == 200
        send(sock, "/stuck?order=7")
        assert app.entered.acquire(timeout=TIMEOUT)
        [message] = records.wait_late(1)
        port = sock.getsockname()[1]
        assert message.startswith(f'"GET /stuck?order=7 HTTP/1.1" from 127.0.0.1:{port}: ')
        elapsed = re.search(r"still running after ([\d.]+) s", message)
        assert elapsed is not None
        assert float(elapsed[1]) >= DEADLINE
        assert "(request deadline 0.2 s), in thread wsgibridge-worker-" in message
        # The stack of the thread, down to where the app waits.
        assert "in wait_for_the_database\n" in message
        assert "gate.wait(TIMEOUT)" in message
        # Looked at again and again (the period is MIN_PERIOD here): still once.
        time.sleep(4 * check_period(DEADLINE))
        assert len(records.late()) == 1
        app.release()
        assert reader.read_response().status == 200
        # The fast request before was never reported.
        assert not any("/fast" in m for m in records.late())
    assert server.watched == {}  # every request left the table when it ended


def test_each_late_request_is_reported_even_on_the_same_thread(records: Records) -> None:
    """Two stuck requests one after the other (one connection, one thread): two warnings."""
    app = GatedApp()
    with (
        running_server(app, request_deadline=DEADLINE, threads=1) as server,
        app.released_after(),
        socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock,
    ):
        reader = ResponseReader(sock)
        for number in (1, 2):
            app.gate.clear()
            send(sock, f"/stuck?n={number}")
            assert app.entered.acquire(timeout=TIMEOUT)
            records.wait_late(number)
            app.release()
            assert reader.read_response().status == 200
        first, second = records.late()
        assert "GET /stuck?n=1 " in first
        assert "GET /stuck?n=2 " in second


def test_an_app_that_raises_leaves_the_table(records: Records) -> None:
    def broken(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raise RuntimeError("broken")

    with (
        running_server(broken, request_deadline=60.0) as server,
        socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock,
    ):
        send(sock, "/")
        assert ResponseReader(sock).read_response().status == 500
    assert server.watched == {}  # (the threads are joined: their requests are over)


def test_the_on_deadline_hook_is_called_once_per_late_request(records: Records) -> None:
    app = GatedApp()
    calls: list[float] = []
    server = make_server(
        app, "127.0.0.1", 0, request_deadline=DEADLINE, read_timeout=5.0, graceful_timeout=2.0
    )
    server.on_deadline = lambda: calls.append(time.monotonic())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
            send(sock, "/stuck")
            assert app.entered.acquire(timeout=TIMEOUT)
            records.wait_late(1)
            time.sleep(2 * check_period(DEADLINE))
            assert len(calls) == 1
            app.release()
            assert ResponseReader(sock).read_response().status == 200
    finally:
        app.release()
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def test_off_by_default_nothing_is_watched() -> None:
    """Without a deadline there is no table for the handler to write, and no check to run."""
    server = make_server(simple_app(), "127.0.0.1", 0)
    try:
        assert server.watchdog is None
        assert server.watched is None
        assert server.reactor.watchdog is None
    finally:
        server.server_close()


def test_the_check_period_is_a_quarter_of_the_deadline_within_bounds() -> None:
    assert check_period(2.0) == 0.5
    assert check_period(0.01) == MIN_PERIOD
    assert check_period(3600.0) == MAX_PERIOD


@pytest.mark.parametrize(
    "options",
    [
        {"request_deadline": -1.0},
        {"request_deadline": float("nan")},
        {"request_deadline": float("inf")},
        {"deadline_action": "kill"},
        {"deadline_action": "recycle"},  # without a deadline
    ],
)
def test_bad_watchdog_settings_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Config(**options)


def test_watchdog_settings_are_accepted() -> None:
    config = Config(request_deadline=30.0, deadline_action="recycle", workers=2)
    assert (config.request_deadline, config.deadline_action) == (30.0, "recycle")
    assert Config().request_deadline == 0.0
    assert Config().deadline_action == "log"
