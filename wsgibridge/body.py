"""Request bodies as ``wsgi.input`` streams, bounded to exactly one request.

Strategy: the socket's buffered ``rfile`` is shared by every request on a
keep-alive connection, so the app must never be handed ``rfile`` itself.  Each
request gets a stream that knows how many body bytes belong to it, returns
end-of-file exactly there, reads from ``rfile`` only what the app asks for
(never the whole body at once unless the app calls ``read()``), and raises
:class:`~wsgibridge.errors.ClientDisconnected` if the body stops short: an
app must never mistake a cut-off upload for a complete one.

After the response, :meth:`InputStream.drain` reads and discards what the app
left unread, up to a cap, so that the next request starts at the right byte.
If the remainder is larger than the cap, the connection has to be closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from .errors import ClientDisconnected

DRAIN_CHUNK = 64 * 1024


class Reader(Protocol):
    """What a body stream needs of the connection's buffered ``rfile``."""

    def read(self, size: int | None = -1, /) -> bytes: ...

    def readline(self, size: int | None = -1, /) -> bytes: ...


class InputStream:
    """The ``wsgi.input`` interface of PEP 3333 (read, readline, readlines, iteration).

    ``on_first_read`` is called once, before the first byte of the body is read
    from the socket: the handler uses it to send a lazy ``100 Continue``.
    """

    def __init__(self, on_first_read: Callable[[], None] | None = None) -> None:
        self._on_first_read = on_first_read

    # -- the PEP 3333 interface -------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readline(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """Lines until end-of-file, or until ``hint`` bytes have been read."""
        lines: list[bytes] = []
        total = 0
        while hint is None or hint <= 0 or total < hint:
            line = self.readline()
            if not line:
                break
            lines.append(line)
            total += len(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Closing ``wsgi.input`` is a no-op: the connection belongs to the server."""

    # -- for the server ---------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once the app has asked for body bytes (or there were none to ask for)."""
        return self._on_first_read is None

    def _start(self) -> None:
        callback = self._on_first_read
        if callback is not None:
            self._on_first_read = None
            callback()

    def drain(self, limit: int) -> bool:
        """Discard the unread rest of the body; False if the connection cannot be reused."""
        raise NotImplementedError


class ContentLengthInput(InputStream):
    """A body of known length (``Content-Length``), read straight from ``rfile``."""

    def __init__(
        self,
        rfile: Reader,
        length: int,
        on_first_read: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(on_first_read if length > 0 else None)
        self._rfile = rfile
        self.length = length
        self.remaining = length

    def _short(self) -> ClientDisconnected:
        self.remaining = 0
        return ClientDisconnected(
            f"the client closed the connection after {self.length - self.remaining}"
            f" of {self.length} body bytes"
        )

    def read(self, size: int | None = -1) -> bytes:
        remaining = self.remaining
        if remaining <= 0:
            return b""
        if self._on_first_read is not None:
            self._start()
        wanted = remaining if size is None or size < 0 else min(size, remaining)
        data = self._rfile.read(wanted)
        if len(data) < wanted:
            self.remaining -= len(data)
            raise self._short()
        self.remaining = remaining - wanted
        return data

    def readline(self, size: int | None = -1) -> bytes:
        remaining = self.remaining
        if remaining <= 0:
            return b""
        if self._on_first_read is not None:
            self._start()
        limit = remaining if size is None or size < 0 else min(size, remaining)
        line = self._rfile.readline(limit)
        if len(line) < limit and not line.endswith(b"\n"):
            self.remaining -= len(line)
            raise self._short()
        self.remaining = remaining - len(line)
        return line

    def drain(self, limit: int) -> bool:
        remaining = self.remaining
        if remaining == 0:
            return True
        if not self.started or remaining > limit:
            # A client waiting for 100 Continue may never send the body, and a
            # remainder past the cap is not worth reading: close instead.
            return False
        rfile = self._rfile
        while remaining > 0:
            data = rfile.read(min(remaining, DRAIN_CHUNK))
            if not data:
                self.remaining = remaining
                return False
            remaining -= len(data)
        self.remaining = 0
        return True
