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

from .._mypyc import mypyc_attr
from ..errors import (
    BadRequest,
    ClientDisconnected,
    HTTPError,
    IncompleteMessage,
    PayloadTooLarge,
    RequestTimeout,
)
from .grammar import CHUNK_EXT, CHUNK_SIZE
from .parser import Limits, Reader, line_content, read_trailer_section

# The most bytes a stream asks of ``rfile`` in one call where the size comes
# from the client (a chunk size), so a body that only claims to be huge never
# turns into one huge request for memory.  ``reader.SocketReader`` bounds its
# socket reads the same way, so ``read(n)`` grows only as bytes arrive.
READ_CHUNK = 64 * 1024
DRAIN_CHUNK = READ_CHUNK


@mypyc_attr(allow_interpreted_subclasses=True)
class InputStream:
    """The ``wsgi.input`` interface of PEP 3333 (read, readline, readlines, iteration).

    ``on_first_read`` is called once, before the first byte of the body is read
    from the socket: the handler uses it to send a lazy ``100 Continue``.

    Once the body turns out broken (cut off, malformed, too large, too slow),
    every further read raises the same error again: a retry must never make a
    broken body look complete.
    """

    received: int  # body bytes received so far (read by the app, or drained)

    def __init__(self, on_first_read: Callable[[], None] | None = None) -> None:
        self._on_first_read = on_first_read
        # The error that broke the stream; once set, the connection cannot be reused.
        self.failed: Exception | None = None

    # -- the PEP 3333 interface -------------------------------------------------

    def read(self, size: int | None = -1) -> bytes:
        if self.failed is not None:
            raise self.failed
        if size == 0:
            return b""  # asks for nothing, so sends no 100 Continue either
        try:
            return self._read(-1 if size is None or size < 0 else size)
        except ClientDisconnected:
            raise
        except OSError as exc:
            raise self._broken(exc) from exc

    def readline(self, size: int | None = -1) -> bytes:
        if self.failed is not None:
            raise self.failed
        if size == 0:
            return b""
        try:
            return self._readline(-1 if size is None or size < 0 else size)
        except ClientDisconnected:
            raise
        except OSError as exc:
            raise self._broken(exc) from exc

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

    # -- for subclasses ---------------------------------------------------------

    def _read(self, size: int) -> bytes:
        """``read`` with ``size`` -1 for "all"; may raise OSError."""
        raise NotImplementedError

    def _readline(self, size: int) -> bytes:
        """``readline`` with ``size`` -1 for "no limit"; may raise OSError."""
        raise NotImplementedError

    def _fail(self, exc: Exception) -> Exception:
        """Mark the stream broken by ``exc`` and return it, to be raised."""
        self.failed = exc
        return exc

    def _broken(self, exc: OSError) -> Exception:
        """The stream's error for a socket error while reading the body."""
        if isinstance(exc, TimeoutError):
            return self._fail(RequestTimeout("the client stopped sending the body"))
        return self._fail(ClientDisconnected(f"the connection broke mid-body: {exc}"))

    # -- for the server ---------------------------------------------------------

    @property
    def started(self) -> bool:
        """True once the app has asked for body bytes (or there were none to ask for)."""
        return self._on_first_read is None

    def _start(self) -> None:
        callback = self._on_first_read
        if callback is not None:
            self._on_first_read = None
            callback()  # an OSError here (client gone before 100 Continue) is _broken

    def drain(self, limit: int) -> bool:
        """Discard the unread rest of the body; False if the connection cannot be reused."""
        raise NotImplementedError

    def unread(self) -> bool:
        """True if the client may still be sending body bytes nobody has read."""
        raise NotImplementedError

    def drainable(self, limit: int) -> bool:
        """False if the unread rest certainly cannot be discarded within ``limit`` bytes."""
        raise NotImplementedError


@mypyc_attr(allow_interpreted_subclasses=True)
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
        self.received = 0  # body bytes read so far (by the app or the drain)

    def _fail(self, exc: Exception) -> Exception:
        self.remaining = 0
        return super()._fail(exc)

    def _short(self, got: int) -> Exception:
        received = self.length - self.remaining + got
        return self._fail(
            ClientDisconnected(
                f"the client closed the connection after {received} of {self.length} body bytes"
            )
        )

    def drainable(self, limit: int) -> bool:
        remaining = self.remaining
        return remaining == 0 or (self.started and remaining <= limit)

    def unread(self) -> bool:
        # After a failure the stream stopped counting: assume the worst.
        return self.remaining > 0 or self.failed is not None

    def _read(self, size: int) -> bytes:
        remaining = self.remaining
        if remaining <= 0:
            return b""
        if self._on_first_read is not None:
            self._start()
        wanted = remaining if size < 0 else min(size, remaining)
        data = self._rfile.read(wanted)
        if len(data) < wanted:
            raise self._short(len(data))
        self.remaining = remaining - wanted
        self.received += wanted
        return data

    def _readline(self, size: int) -> bytes:
        remaining = self.remaining
        if remaining <= 0:
            return b""
        if self._on_first_read is not None:
            self._start()
        limit = remaining if size < 0 else min(size, remaining)
        line = self._rfile.readline(limit)
        if len(line) < limit and not line.endswith(b"\n"):
            raise self._short(len(line))
        self.remaining = remaining - len(line)
        self.received += len(line)
        return line

    def drain(self, limit: int) -> bool:
        if self.failed is not None:
            return False
        remaining = self.remaining
        if remaining == 0:
            return True
        if not self.started or remaining > limit:
            # A client waiting for 100 Continue may never send the body, and a
            # remainder past the cap is not worth reading: close instead.
            return False
        try:
            while self.remaining > 0:
                self.read(DRAIN_CHUNK)
        except (HTTPError, ClientDisconnected):
            return False
        return True


MAX_CHUNK_LINE = 4096  # a chunk-size line, extensions included
# 15 hex digits: under 2**60 bytes, so every size fits the C ssize_t that
# ``read``/``readline`` limits become, with room to add the bytes already received.
MAX_CHUNK_SIZE_DIGITS = 15


@mypyc_attr(allow_interpreted_subclasses=True)
class ChunkedInput(InputStream):
    """A ``Transfer-Encoding: chunked`` body, decoded as the app reads it (RFC 9112 §7.1).

    Nothing is buffered beyond what the app asks for.  A malformed chunk raises
    :class:`~wsgibridge.errors.BadRequest`, a body over ``max_body`` raises
    :class:`~wsgibridge.errors.PayloadTooLarge`, a disconnect raises
    :class:`~wsgibridge.errors.ClientDisconnected`; after any of them the
    stream stays broken and the connection is closed.
    """

    def __init__(
        self,
        rfile: Reader,
        limits: Limits,
        max_body: int = 0,
        on_first_read: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(on_first_read)
        self._rfile = rfile
        self._limits = limits
        self._max_body = max_body
        self._chunk_left = 0  # data bytes left in the current chunk
        self.done = False  # the last chunk and trailer section have been read
        self.received = 0  # decoded body bytes so far

    @property
    def remaining(self) -> int:
        """Unknown for a chunked body: 0 once it is complete, else -1."""
        return 0 if self.done else -1

    def _fail(self, exc: Exception) -> Exception:
        self.done = True
        return super()._fail(exc)

    def _next_chunk(self) -> None:
        """Read a chunk-size line (and, after the last chunk, the trailer section)."""
        line = self._rfile.readline(MAX_CHUNK_LINE + 1)
        if len(line) > MAX_CHUNK_LINE:
            raise self._fail(BadRequest("a chunk-size line is too long"))
        try:
            content = line_content(line, "chunk-size line")
        except IncompleteMessage:
            raise self._cut_off() from None
        except BadRequest as exc:
            raise self._fail(exc) from None
        match = CHUNK_SIZE.match(content)
        if match is None or CHUNK_EXT.fullmatch(content, match.end()) is None:
            raise self._fail(BadRequest("a chunk size is not 1*HEXDIG [chunk-ext]"))
        digits = match.group()
        if len(digits.lstrip(b"0")) > MAX_CHUNK_SIZE_DIGITS:
            raise self._fail(BadRequest("a chunk size is absurdly large"))
        size = int(digits, 16)
        if size == 0:
            # last-chunk, then trailer-section CRLF: read under the same rules
            # and limits as the header section, checked, and discarded.
            try:
                read_trailer_section(self._rfile, self._limits)
            except IncompleteMessage:
                raise self._cut_off() from None
            except HTTPError as exc:
                raise self._fail(exc) from None
            self.done = True
            return
        if self._max_body and self.received + size > self._max_body:
            raise self._fail(
                PayloadTooLarge(f"the chunked body is larger than {self._max_body} bytes")
            )
        self._chunk_left = size

    def _consumed(self, n: int) -> None:
        """Account for ``n`` chunk-data bytes just read; check the CRLF that ends a chunk."""
        self._chunk_left -= n
        self.received += n
        if self._chunk_left == 0:
            crlf = self._rfile.read(2)
            if crlf != b"\r\n":
                if len(crlf) < 2:
                    raise self._cut_off()
                # RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
                raise self._fail(BadRequest("chunk data is not followed by CRLF"))

    def _cut_off(self) -> Exception:
        # RFC 9112 §8: a chunked message "is incomplete if the zero-sized chunk
        # that terminates the encoding has not been received".
        return self._fail(ClientDisconnected("the client closed the connection mid-body"))

    def _begin(self) -> bool:
        """False if there is nothing more to read; sends the lazy 100 Continue."""
        if self.done:
            return False
        if self._on_first_read is not None:
            self._start()
        return True

    def _read(self, limit: int) -> bytes:
        if not self._begin():
            return b""
        parts: list[bytes] = []
        while limit != 0 and not self.done:
            if self._chunk_left == 0:
                self._next_chunk()
                continue
            n = self._chunk_left if limit < 0 else min(limit, self._chunk_left)
            n = min(n, READ_CHUNK)  # the size is the client's claim: take it in pieces
            data = self._rfile.read(n)
            if len(data) < n:
                raise self._cut_off()
            self._consumed(n)
            parts.append(data)
            if limit > 0:
                limit -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _readline(self, limit: int) -> bytes:
        if not self._begin():
            return b""
        parts: list[bytes] = []
        while limit != 0 and not self.done:
            if self._chunk_left == 0:
                self._next_chunk()
                continue
            n = self._chunk_left if limit < 0 else min(limit, self._chunk_left)
            n = min(n, READ_CHUNK)  # readline(n) must stay a C ssize_t, and memory bounded
            data = self._rfile.readline(n)
            newline = data.endswith(b"\n")
            if len(data) < n and not newline:
                raise self._cut_off()
            self._consumed(len(data))
            parts.append(data)
            if newline:
                break
            if limit > 0:
                limit -= len(data)
        return b"".join(parts)

    def unread(self) -> bool:
        return not self.done or self.failed is not None

    def drainable(self, limit: int) -> bool:
        # The size of the rest is unknown: worth trying once the client is sending.
        return self.failed is None and (self.done or self.started)

    def drain(self, limit: int) -> bool:
        if self.done:
            return self.failed is None
        if not self.started:
            return False
        start = self.received
        try:
            while not self.done:
                left = limit - (self.received - start)
                if left < 0:
                    return False
                self.read(min(DRAIN_CHUNK, left + 1))
        except (HTTPError, ClientDisconnected):
            return False
        return self.failed is None
