"""A raw-socket HTTP client for tests that speak bytes: ``RawClient`` and ``RawResponse``.

Rule: the client sends exactly the bytes it is given and parses what comes
back only when asked, so a test can pipeline, send malformed requests, or
watch a connection close.  Every read is bounded twice: by the socket's
timeout (``TimeoutError``) and by a byte limit (``ValueError``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from types import TracebackType

TIMEOUT = 5.0  # seconds any one read or send may wait
HEAD_LIMIT = 64 * 1024  # bytes of a response head (or of a recv_until) at most
BODY_LIMIT = 16 * 1024 * 1024  # bytes of a response body at most
RECV_SIZE = 64 * 1024


@dataclass
class RawResponse:
    """One response as read off the socket."""

    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(repr=False)
    body: bytes = field(repr=False)
    raw: bytes = field(repr=False)  # the bytes it was parsed from, head and framing included

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header by name (case-insensitive; repeats joined with ", ")."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else default


class RawClient:
    """One TCP connection to ``(host, port)``; a context manager.

    ``send(bytes)``, then ``recv_response()`` for each response expected (by
    Content-Length, chunked, or until close), ``recv_until(marker)`` for
    bytes up to a marker, ``closed()`` to ask whether the server closed it.
    """

    def __init__(self, host: str, port: int, *, timeout: float = TIMEOUT) -> None:
        self.address = (host, port)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self._buffer = bytearray()
        self._eof = False

    # -- sending --------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """All of ``data``, as given (``TimeoutError`` if the server stops reading)."""
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        """Half-close: the server sees the end of the request bytes."""
        self.sock.shutdown(socket.SHUT_WR)

    # -- receiving ------------------------------------------------------------------

    def _fill(self) -> bool:
        """Read what arrives next into the buffer; False at the end of the stream."""
        if self._eof:
            return False
        try:
            data = self.sock.recv(RECV_SIZE)
        except ConnectionResetError:
            data = b""
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def recv(self, size: int = RECV_SIZE) -> bytes:
        """Up to ``size`` bytes: buffered ones, or what arrives next (b"" once closed)."""
        if not self._buffer:
            self._fill()
        return self._take(size)

    def recv_until(self, marker: bytes, limit: int = HEAD_LIMIT) -> bytes:
        """The bytes up to and including ``marker`` (``EOFError`` if it never comes)."""
        while True:
            at = self._buffer.find(marker)
            if at >= 0:
                return self._take(at + len(marker))
            if len(self._buffer) > limit:
                raise ValueError(f"no {marker!r} in the first {limit} bytes")
            if not self._fill():
                raise EOFError(f"the connection closed before {marker!r}")

    def _exact(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not self._fill():
                raise EOFError(f"the connection closed {n - len(self._buffer)} bytes short")
        return self._take(n)

    def recv_response(self, method: str = "GET", body_limit: int = BODY_LIMIT) -> RawResponse:
        """The next response: its head, then its body framed as RFC 9112 §6.3 says.

        ``ValueError`` for a status line or framing that is not HTTP/1.x's,
        ``EOFError`` when the connection closes inside the response.
        """
        head = self.recv_until(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ValueError(f"not an HTTP/1.x status line: {lines[0]!r}")
        headers = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"not a header field: {line!r}")
            headers.append((name, value.strip()))
        raw = bytearray(head)
        response = RawResponse(version, int(code), reason, headers, b"", b"")
        status = response.status
        length = response.header("Content-Length")
        if method == "HEAD" or status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in (response.header("Transfer-Encoding") or "").lower():
            body = self._chunked(raw, body_limit)
        elif length is not None:
            if not length.isdigit() or int(length) > body_limit:
                raise ValueError(f"Content-Length {length!r}")
            body = self._exact(int(length))
            raw += body
        else:
            while len(self._buffer) <= body_limit and self._fill():
                pass
            body = self._take(body_limit)
            raw += body
        response.body = body
        response.raw = bytes(raw)
        return response

    def _chunked(self, raw: bytearray, body_limit: int) -> bytes:
        body = bytearray()
        while True:
            line = self.recv_until(b"\r\n", limit=4096)
            raw += line
            size_text = line[:-2].split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError(f"not a chunk size: {size_text!r}") from None
            if size == 0:
                while (line := self.recv_until(b"\r\n", limit=HEAD_LIMIT)) != b"\r\n":
                    raw += line  # trailer fields
                raw += line
                return bytes(body)
            if len(body) + size > body_limit:
                raise ValueError(f"a chunked body over {body_limit} bytes")
            chunk = self._exact(size + 2)
            raw += chunk
            if chunk[-2:] != b"\r\n":
                raise ValueError("a chunk not followed by CRLF")
            body += chunk[:-2]

    def closed(self, timeout: float = 1.0) -> bool:
        """True when the server has closed (or reset) the connection and nothing is
        left to read; waits up to ``timeout`` seconds for it to happen."""
        if self._buffer:
            return False
        previous = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            return not self._fill()
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(previous)

    # -- the end ----------------------------------------------------------------------

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        host, port = self.address
        return f"<RawClient to {host}:{port}{' (closed)' if self._eof else ''}>"
