"""What the pre-forked server's process tests share: an app that says who and which
version answered, and a load of client threads that counts every failed request."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..conftest import ResponseReader
from ..test_serving_processes import Address, Launcher, ServerProcess, request

# Every response's body is "PID VERSION"; GET /grow/N keeps N more MiB alive.
VERSIONED_APP = """\
import os

VERSION = "{version}"
HOLD = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/grow/"):
        HOLD.append(b"x" * (int(path.rsplit("/", 1)[1]) * 1024 * 1024))
    body = f"{{os.getpid()}} {{VERSION}}".encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
"""


def write_app(directory: Path, version: str, name: str = "verapp") -> None:
    (directory / f"{name}.py").write_text(VERSIONED_APP.format(version=version))


def launcher_in(directory: Path) -> Iterator[Launcher]:
    """A launcher serving from ``directory``, with ``verapp`` at v1 (a fixture's body)."""
    write_app(directory, "v1")
    with Launcher(directory) as launcher:
        yield launcher


def tcp(address: Address) -> tuple[str, int]:
    assert not isinstance(address, str)
    return address


class Load:
    """Client threads requesting ``/`` until stopped: some over keep-alive connections
    (http.client, which reconnects after a ``Connection: close``), some on a new
    connection each time.  Every exception or non-200 answer is a failure."""

    def __init__(self, address: Address, keepalive: int = 2, fresh: int = 2, pause: float = 0.005):
        self.host, self.port = tcp(address)
        self.pause = pause
        self.ok = 0
        self.failures: list[str] = []
        self.answers: list[tuple[int, str]] = []  # (pid, version), in order
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._keepalive, name=f"load-keepalive-{n}", daemon=True)
            for n in range(keepalive)
        ] + [
            threading.Thread(target=self._fresh, name=f"load-fresh-{n}", daemon=True)
            for n in range(fresh)
        ]
        for thread in self._threads:
            thread.start()

    def _record(self, status: int, body: bytes) -> None:
        with self._lock:
            if status != 200:
                self.failures.append(f"status {status}: {body[:200]!r}")
                return
            pid, _, version = body.decode().partition(" ")
            self.ok += 1
            self.answers.append((int(pid), version))

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def _keepalive(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            while not self._stop.is_set():
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    self._record(response.status, response.read())
                except (OSError, http.client.HTTPException) as exc:
                    self._fail(f"keep-alive: {exc!r}")
                    conn.close()
                self._stop.wait(self.pause)
        finally:
            conn.close()

    def _fresh(self) -> None:
        while not self._stop.is_set():
            try:
                with socket.create_connection((self.host, self.port), timeout=10) as sock:
                    sock.sendall(request("/", close=True))
                    response = ResponseReader(sock).read_response()
                self._record(response.status, response.body)
            except (OSError, EOFError, ValueError) as exc:
                self._fail(f"new connection: {exc!r}")
            self._stop.wait(self.pause)

    @property
    def pids(self) -> set[int]:
        with self._lock:
            return {pid for pid, _ in self.answers}

    def count(self) -> int:
        with self._lock:
            return self.ok

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in self._threads), "a client hangs"

    def report(self, what: str) -> str:
        line = f"{what}: {self.ok} requests answered, {len(self.failures)} failed"
        print(line)
        return line


def matching(server: ServerProcess, needle: str) -> list[str]:
    """The stderr lines so far containing ``needle``."""
    return [line for line in server.stderr().splitlines() if needle in line]


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, server: ServerProcess
) -> None:
    """Poll ``condition()`` every 20 ms up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s; stderr:\n{server.stderr()}")
        time.sleep(0.02)
