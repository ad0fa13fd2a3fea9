"""A connection's bytes: socket timeouts, reading what has arrived, the head's deadline, writing.

Rule: the handler's half that deals with the socket, not with HTTP - a
mixin of :class:`~wsgibridge.serving.handler.WSGIRequestHandler`, which is,
with it, the only code that reads or writes a connection.  Reads never wait
for a client (a connection with nothing ready goes back to the server, which
parks it); every read and write of a body has its own timeout, enforced by
the kernel on plain Linux sockets (``SO_RCVTIMEO``/``SO_SNDTIMEO``: no poll
before each call) and by Python's socket timeouts elsewhere and for TLS.
The head of a request must be complete ``header_timeout`` after its first
byte (the first request's: after the accept).
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from socketserver import _SocketWriter  # type: ignore[attr-defined]  # unbuffered sendall
from typing import Any, Protocol

from ..config import Config
from ..errors import RequestTimeout
from ..http.parser import Limits, RequestHead, skip_empty_line, take_head
from ..http.reader import SocketReader

# A socket with a Python timeout polls before every recv and send: two system
# calls per request more than needed.  On Linux, plain connections are
# blocking sockets whose timeouts the kernel enforces (SO_RCVTIMEO and
# SO_SNDTIMEO, per call like Python's); TLS ones keep Python's timeouts.
KERNEL_TIMEOUTS = sys.platform.startswith("linux")


def _timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO / SO_SNDTIMEO."""
    whole = int(seconds)
    return struct.pack("@ll", whole, int((seconds - whole) * 1_000_000))


def prepare_listener(listener: socket.socket, config: Config) -> bool:
    """Set on a listener what :meth:`ConnectionStream.open_stream` would set on each
    connection: ``TCP_NODELAY`` and the kernel timeouts.

    True when the connections it accepts inherit them (TCP on Linux, which
    copies the listener's options into every accepted socket): the handler
    then skips three system calls per connection.  False elsewhere, for a
    Unix socket (whose connections start with the defaults), or when the
    kernel refuses an option.
    """
    if not KERNEL_TIMEOUTS or listener.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    try:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(config.read_timeout))
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(config.write_timeout))
    except OSError:
        return False
    return True


class StreamServer(Protocol):
    """What the stream needs of its server: the timeouts and the parser's limits."""

    config: Config
    limits: Limits


class ConnectionStream:
    """The socket side of a connection's handler (a mixin: see the module docstring)."""

    connection: socket.socket
    server: StreamServer  # the handler's ServerContext is one
    rfile: SocketReader
    wfile: Any
    requests_served: int
    close_connection: bool
    waiting: bool

    def open_stream(self, sock: socket.socket, config: Config, preset: bool = False) -> None:
        """Set the socket's timeouts up and make ``rfile``/``wfile`` over it.

        ``preset``: the kernel timeouts came with the socket from its listener
        (:func:`prepare_listener`).
        """
        self._timeout = config.read_timeout
        self._kernel_timeouts = KERNEL_TIMEOUTS and not isinstance(sock, ssl.SSLSocket)
        self._split_timeouts = False
        recv: Callable[[int], bytes]
        if self._kernel_timeouts:
            if sock.gettimeout() is not None:  # socket.setdefaulttimeout() was called
                sock.settimeout(None)
            if not preset:
                rcv, snd = _timeval(config.read_timeout), _timeval(config.write_timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, rcv)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, snd)
            recv = self._recv_kernel_timed
        else:
            sock.settimeout(self._timeout)
            # One socket timeout serves reads and writes unless they differ.
            self._split_timeouts = config.read_timeout != config.write_timeout
            recv = self._timed_recv if self._split_timeouts else sock.recv
        self.rfile = SocketReader(recv)
        self.wfile = _SocketWriter(sock)
        self._connected_at = time.monotonic()
        # When the first byte of the next request head (or of the one empty
        # line allowed before it) arrived; the head must be complete within
        # header_timeout of it.
        self._head_started = 0.0
        self._head_begun = False  # bytes of the next request have arrived
        self._idle_since = 0.0  # when the last request ended (time.monotonic)
        self._empty_line: bool | None = None  # its leading empty line: skipped, none, unknown
        self._scanned = 0  # buffered head bytes already searched for its end
        self._poll: Any = None  # a select.poll for ready(), made on first use
        # For TLS, bytes already decrypted but not read are invisible to poll().
        self._pending: Any = getattr(sock, "pending", None)

    def connected(self, accepted_at: float) -> None:
        """The server accepted the connection at ``accepted_at`` (``time.monotonic``).

        The first request head is due ``header_timeout`` after the accept, the
        PROXY line and TLS handshake included.
        """
        self._connected_at = accepted_at

    def ready(self, timeout: float) -> bool:
        """True if the socket has bytes to read, waiting at most ``timeout`` seconds.

        Bytes already in ``rfile`` don't count: the caller has looked at them.
        """
        if self._pending is not None and self._pending():
            return True  # TLS bytes already decrypted are invisible to poll()
        poller = self._poll
        if poller is None:
            poller = self._poll = select.poll()
            poller.register(self.connection, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    def deadline(self) -> float:
        """When a parked connection is closed if nothing more arrives (``time.monotonic``)."""
        config = self.server.config
        if self._head_begun:
            return self._head_started + config.header_timeout  # a head is arriving, slowly
        if not self.requests_served:
            return self._connected_at + config.header_timeout  # connected, said nothing
        return self._idle_since + config.keepalive_timeout  # idle since the last response

    @property
    def head_pending(self) -> bool:
        """True while part of a request head (or its leading empty line) has arrived."""
        return self._head_begun or bool(self.rfile.buffered())

    def _note_head_bytes(self) -> None:
        """The next request's first bytes are here (or about to be read): its clock starts."""
        if not self._head_begun:
            self._head_begun = True
            # The first request's head is due header_timeout after the connect.
            self._head_started = time.monotonic() if self.requests_served else self._connected_at

    def read_head(self) -> RequestHead | None:
        """The next request head, or None: closed (``close_connection``) or not all here yet.

        Never blocks: it reads only what has arrived, and otherwise sets
        ``self.waiting`` so the server parks the connection until more bytes
        arrive.  A head still incomplete past its deadline (a worker may get
        to a connection late, when all were busy) is refused with 408.
        """
        reader = self.rfile
        limits = self.server.limits
        if reader.buffered():
            # Bytes of this head came with the previous request (pipelined):
            # its header_timeout starts now, not when those bytes arrived.
            self._note_head_bytes()
        while True:
            head = None
            if reader.buffered():
                if self._empty_line is None:
                    self._empty_line = skip_empty_line(reader, limits)
                    if self._empty_line and not reader.buffered():
                        # The one empty line a client may send after a body (RFC
                        # 9112 §2.2) is not the start of a head: the connection is
                        # still idle, its keep-alive deadline unchanged.
                        self._head_begun = False
                if self._empty_line is not None:
                    head = take_head(reader, limits, self._scanned)
            if head is not None:
                self._head_begun = False
                self._empty_line = None
                self._scanned = 0
                return head
            if reader.eof:
                self.close_connection = True
                return None
            self._scanned = reader.buffered()
            if not self._fill():
                if self._head_begun and time.monotonic() >= self.deadline():
                    raise RequestTimeout("the request head was not complete in time")
                # Wait in the selector; a partial head stays in the buffer.
                self.waiting = True
                return None

    def _fill(self) -> bool:
        """Read what has arrived into ``rfile``, never waiting; False if nothing had."""
        reader = self.rfile
        if self._kernel_timeouts:
            try:
                got = reader.fill(self._recv_nowait)
            except (BlockingIOError, InterruptedError):
                return False
        else:
            # With Python's timeouts a recv first waits for bytes under it (and
            # for TLS, a readable socket may hold only part of a record): without one.
            sock = self.connection
            sock.settimeout(0.0)
            try:
                got = reader.fill()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return False
            finally:
                sock.settimeout(self._timeout)
        if got:
            self._note_head_bytes()
        return True

    # -- writing ---------------------------------------------------------------------------

    def send_file(self, file: Any, offset: int, count: int) -> int:
        sock = self.connection
        if self._kernel_timeouts:
            # socket.sendfile waits without limit on a blocking socket.
            sock.settimeout(self.server.config.write_timeout)
            try:
                sent: int = sock.sendfile(file, offset, count)
            finally:
                sock.settimeout(None)
            return sent
        if self._split_timeouts:
            self._set_timeout(self.server.config.write_timeout)
        sent = sock.sendfile(file, offset, count)
        return sent

    def _send(self, data: bytes) -> None:
        """All of ``data`` to the client, under the write timeout (``TimeoutError``)."""
        if self._kernel_timeouts:
            try:
                self.connection.sendall(data)
            except BlockingIOError:
                # SO_SNDTIMEO passed: the client stopped reading.
                raise TimeoutError("timed out writing to the client") from None
            return
        if self._split_timeouts:
            self._set_timeout(self.server.config.write_timeout)
        self.connection.sendall(data)

    # -- timeouts ---------------------------------------------------------------------------

    def _set_timeout(self, seconds: float) -> None:
        if self._timeout != seconds:
            self.connection.settimeout(seconds)
            self._timeout = seconds

    def _recv_nowait(self, size: int) -> bytes:
        data: bytes = self.connection.recv(size, socket.MSG_DONTWAIT)
        return data

    def _recv_kernel_timed(self, size: int) -> bytes:
        """``recv`` on a blocking socket with SO_RCVTIMEO: its EAGAIN is a timeout."""
        try:
            data: bytes = self.connection.recv(size)
        except BlockingIOError:
            raise TimeoutError("timed out reading from the client") from None
        return data

    def _timed_recv(self, size: int) -> bytes:
        """``recv`` under the read timeout (used when reads and writes have different ones)."""
        self._set_timeout(self.server.config.read_timeout)
        data: bytes = self.connection.recv(size)
        return data
