"""``SocketReader``: the connection's ``rfile``, a byte buffer over the socket.

Why not the standard ``BufferedReader`` that ``StreamRequestHandler`` makes?
Three things a server with parked keep-alive connections needs and it cannot
give: to know how many bytes are already buffered without blocking (is a
pipelined request waiting?), to keep a half-received request head in the
buffer while the connection waits in the selector without a thread, and to
look at the whole head at once instead of line by line.  A
``BufferedReader`` also becomes unusable after one socket timeout ("cannot
read from timed out object"), while here a timeout is just an exception.

Rule: the reader never reads past what its caller asked for when the caller
gave a size (``read(n)`` asks the socket for at most the missing bytes), so a
request body is never over-read into the next request; only ``fill`` (used
for request heads) reads whatever is available.  One thread at a time owns
a connection, so there is no locking.
"""

from __future__ import annotations

from collections.abc import Callable

RECV_SIZE = 64 * 1024


class SocketReader:
    """Buffered reads from a connected socket (``read``, ``readline``, ``peek``, ``fill``)."""

    __slots__ = ("_buffer", "_pos", "_recv", "eof")

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        """``recv`` is the socket's ``recv`` (or, in tests, ``io.BytesIO(...).read``)."""
        self._recv = recv
        # bytes while whole recv results are consumed one by one (no copying);
        # a bytearray once data must be appended, so that a head arriving a
        # byte at a time costs amortised linear time, not quadratic.
        self._buffer: bytes | bytearray = b""
        self._pos = 0
        self.eof = False  # the peer has closed its side

    # -- the buffer -----------------------------------------------------------

    def buffered(self) -> int:
        """Bytes received and not yet consumed."""
        return len(self._buffer) - self._pos

    def peek(self) -> bytes | bytearray:
        """The buffered bytes, not consumed (no socket read; valid until the next call)."""
        if self._pos:
            if isinstance(self._buffer, bytearray):
                del self._buffer[: self._pos]
            else:
                self._buffer = self._buffer[self._pos :]
            self._pos = 0
        return self._buffer

    def consume(self, n: int) -> None:
        """Drop ``n`` buffered bytes (after the caller parsed them from :meth:`peek`)."""
        self._pos += n
        if self._pos >= len(self._buffer):
            self._buffer = b""
            self._pos = 0

    def fill(self, recv: Callable[[int], bytes] | None = None) -> int:
        """One ``recv`` of whatever is available into the buffer; 0 at end-of-file.

        Blocks until at least one byte arrives, under the socket's timeout;
        ``recv`` replaces the reader's own for this call (a non-blocking one
        raises ``BlockingIOError`` when nothing has arrived).
        """
        data = (recv or self._recv)(RECV_SIZE)
        if not data:
            self.eof = True
            return 0
        buffer = self._buffer
        if self._pos >= len(buffer):
            self._buffer = data
            self._pos = 0
        elif isinstance(buffer, bytearray):
            buffer += data
        else:
            self._buffer = bytearray(memoryview(buffer)[self._pos :])
            self._buffer += data
            self._pos = 0
        return len(data)

    # -- the file interface (wsgi.input and trailers read through these) ---------

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all until EOF for -1/None); short only at end-of-file."""
        buffer, pos = self._buffer, self._pos
        have = len(buffer) - pos
        if size is not None and 0 <= size <= have:
            end = pos + size
            self._pos = end
            if end == len(buffer):
                self._buffer = b""
                self._pos = 0
                if pos == 0 and type(buffer) is bytes:
                    return buffer
            return bytes(buffer[pos:end])
        parts = [bytes(buffer[pos:])] if have else []
        self._buffer = b""
        self._pos = 0
        missing = -1 if size is None or size < 0 else size - have
        recv = self._recv
        while missing != 0 and not self.eof:
            data = recv(RECV_SIZE if missing < 0 else min(missing, RECV_SIZE))
            if not data:
                self.eof = True
                break
            parts.append(data)
            if missing > 0:
                missing -= len(data)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        """Bytes up to and including the next LF, at most ``size``; short only at EOF.

        May buffer bytes past the line: only used where whatever follows belongs
        to the same message or is refused anyway (request heads, chunk lines,
        trailers, ``readline`` calls of the app within a bounded body).
        """
        limit = -1 if size is None or size < 0 else size
        searched = 0  # bytes after pos already searched: a long line costs linear time
        while True:
            buffer, pos = self._buffer, self._pos
            stop = pos + limit if limit >= 0 else len(buffer)
            end = buffer.find(b"\n", pos + searched, stop)
            if end >= 0:
                return self.read(end + 1 - pos)
            have = len(buffer) - pos
            searched = have
            if (limit >= 0 and have >= limit) or self.eof:
                return self.read(have if limit < 0 else min(limit, have))
            if not self.fill():
                return self.read(have)

    def close(self) -> None:
        """Forget the buffer (the socket belongs to the server)."""
        self._buffer = b""
        self._pos = 0

    def readable(self) -> bool:
        return True
