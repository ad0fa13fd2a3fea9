"""systemd notification (``sd_notify(3)``): a fake ``NOTIFY_SOCKET`` receives what is said.

The fake is an ``AF_UNIX`` datagram socket bound by the test (a path in a short
temporary directory, or a name in Linux's abstract namespace); the server runs
as ``python -m wsgibridge`` in a subprocess with ``NOTIFY_SOCKET`` (and
``WATCHDOG_USEC``) in its environment, and gets real signals.  Every receive
has a timeout; every socket, process and directory is released.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgibridge import make_server
from wsgibridge.serving.notify import Notifier

from ..conftest import serving, simple_app
from ..test_serving_processes import APP_MODULE, Launcher, needs_proc, short_directory

needs_abstract = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the abstract namespace is Linux's"
)


class FakeSystemd:
    """The receiving end of ``NOTIFY_SOCKET``: every datagram, as a list of fields."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.messages: list[list[str]] = []

    def receive(self, timeout: float = 10.0) -> list[str]:
        self.sock.settimeout(timeout)
        fields = self.sock.recv(4096).decode().split("\n")
        self.messages.append(fields)
        return fields

    def receive_until(self, field: str, timeout: float = 10.0) -> list[list[str]]:
        """Messages up to and including the first one carrying ``field``."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(max(deadline - time.monotonic(), 0.01))
            seen.append(message)
            if field in message:
                return seen

    def quiet_for(self, seconds: float) -> bool:
        """True if nothing arrives for ``seconds``."""
        self.sock.settimeout(seconds)
        try:
            self.messages.append(self.sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_directory("wbn-") as path:
        yield path


@pytest.fixture
def systemd(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    """A fake systemd socket, named in ``NOTIFY_SOCKET`` for the servers started here."""
    path = str(short_dir / "notify")
    fake = FakeSystemd(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    (tmp_path / "procapp.py").write_text(APP_MODULE)
    with Launcher(tmp_path) as launcher:
        yield launcher


def status(message: list[str]) -> str:
    return next((field for field in message if field.startswith("STATUS=")), "")


# -- the Notifier --------------------------------------------------------------------------


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("serving") is False
    assert notifier.watchdog_interval is None


def test_a_path_socket_receives_the_fields(short_dir: Path) -> None:
    fake = FakeSystemd(str(short_dir / "n"))
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(short_dir / "n")})
        assert notifier.ready("serving on x\nand a second line")
        assert fake.receive(5) == ["READY=1", "STATUS=serving on x and a second line"]
        assert notifier.stopping("stopping")
        assert fake.receive(5) == ["STOPPING=1", "STATUS=stopping"]
    finally:
        fake.close()


@needs_abstract
def test_an_at_sign_names_the_abstract_namespace() -> None:
    name = f"wsgibridge-test-{os.getpid()}-{threading.get_ident()}"
    fake = FakeSystemd(b"\0" + name.encode())
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert fake.receive(5) == ["WATCHDOG=1"]
    finally:
        fake.close()


def test_a_missing_socket_never_raises(short_dir: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(short_dir / "nobody")})
    assert notifier.enabled
    assert notifier.ready("serving") is False
    assert notifier.stopping("stopping") is False


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "2000000"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_interval_is_half_watchdog_usec_for_our_pid(
    env: dict[str, str], interval: float | None
) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/systemd/notify", **env}).watchdog_interval == interval


def test_the_reactor_heartbeat_runs_while_the_loop_does() -> None:
    beats: list[float] = []
    server = make_server(simple_app(), "127.0.0.1", 0)
    server.reactor.set_heartbeat(0.02, lambda: beats.append(time.monotonic()))
    with serving(server):
        deadline = time.monotonic() + 5
        while len(beats) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(beats) >= 5
    count = len(beats)
    time.sleep(0.1)
    assert len(beats) == count  # the loop is over: so are the pings


# -- the command line under a fake systemd ---------------------------------------------------


def test_ready_status_watchdog_and_stopping_in_order(
    launch: Launcher, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # a ping every 0.1 s
    server = launch.start("--port", "0", "--threads", "3")
    ready = systemd.receive()
    assert ready[0] == "READY=1"
    [address] = server.serving()
    assert status(ready) == f"STATUS=serving on {address[0]}:{address[1]}, 3 threads"
    assert launch.get(address).status == 200  # listening when READY said so
    pings = [systemd.receive(), systemd.receive(), systemd.receive()]
    assert pings == [["WATCHDOG=1"]] * 3
    sent = server.send(signal.SIGTERM)
    stopping = systemd.receive_until("STOPPING=1")[-1]
    assert "STATUS=stopping" in status(stopping)
    assert server.wait(5) == 0, server.stderr()
    print(f"STOPPING=1 then exit {(time.monotonic() - sent) * 1000:.0f} ms after SIGTERM")
    kinds = [message[0] for message in systemd.messages]
    assert kinds[0] == "READY=1"
    assert kinds.index("STOPPING=1") > kinds.index("WATCHDOG=1")
    assert "READY=1" not in kinds[1:]


def test_stopping_comes_at_the_signal_before_the_shutdown_delay(
    launch: Launcher, systemd: FakeSystemd
) -> None:
    server = launch.start("--port", "0", "--shutdown-delay", "0.5")
    assert systemd.receive()[0] == "READY=1"
    server.serving()
    sent = server.send(signal.SIGTERM)
    stopping = systemd.receive()
    said = time.monotonic() - sent
    assert stopping[0] == "STOPPING=1"
    assert "draining for 0.5s" in status(stopping)
    assert said < 0.5
    assert server.wait(5) == 0
    assert time.monotonic() - sent >= 0.5


def test_no_watchdog_pings_for_another_pid(
    launch: Launcher, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # not the server: a child that inherited it
    server = launch.start("--port", "0")
    assert systemd.receive()[0] == "READY=1"
    server.serving()
    assert systemd.quiet_for(0.3)
    server.send(signal.SIGTERM)
    assert systemd.receive()[0] == "STOPPING=1"
    assert server.wait(5) == 0


@needs_proc
def test_with_workers_the_arbiter_says_ready_pings_and_stopping(
    launch: Launcher, systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    server = launch.start("--port", "0", "--workers", "2", "--threads", "2")
    ready = systemd.receive()
    assert ready[0] == "READY=1"
    assert "with 2 workers, 2 threads each" in status(ready)
    [address] = server.serving()
    assert launch.get(address).status == 200
    assert [systemd.receive(), systemd.receive()] == [["WATCHDOG=1"]] * 2
    server.send(signal.SIGTERM)
    stopping = systemd.receive_until("STOPPING=1")[-1]
    assert "stopping 2 workers" in status(stopping)
    assert server.wait(10) == 0, server.stderr()
    assert [message[0] for message in systemd.messages].count("READY=1") == 1
