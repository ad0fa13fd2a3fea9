"""A small HTTP/1.1 client for the checks, the idle test and the upload.

It reads every response exactly (length, chunked or to EOF) under a deadline
per call, and reports the framing it saw; it never retries.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common import HOST, BenchError
from scenarios import Scenario


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
