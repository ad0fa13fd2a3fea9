"""A connection's life outside its handler: parked, active, lingering, closed.

Rule: :class:`Connections` owns the table of open connections and is the
only code that changes a connection's state; the handler owns what happens
inside one (its requests), the reactor only decides *when* (readiness,
deadlines).  States of a connection (``Connection.state``), and who moves it::

    accepted (worker, or reactor) --> ACTIVE (worker) or PARKED (reactor)
    ACTIVE --(worker: nothing ready)--> PARKED --(worker: readable)--> ACTIVE
    ACTIVE --(worker: done)--> LINGERING --(reactor: EOF / 5 s / 64 MiB)--> closed
    PARKED --(reactor: deadline, or stopping)--> closed

A connection leaves PARKED only through :meth:`Connections.claim`, under a
lock, so a readiness event and a deadline can never both act on it.  Before
HTTP, a new connection is taken through its PROXY header and TLS handshake
(:meth:`Connections.serve`), only as far as the bytes that have arrived
allow.  A connection closed while the client may still be sending lingers:
half-closed, its input read and dropped for a moment, so that the kernel
does not answer those bytes with a reset that destroys our last response
(nginx's ``lingering_close``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any, Protocol

from ..errors import HTTPError, IncompleteMessage
from ..http.proxy_protocol import MAX_PROXY_HEADER, parse_proxy_header, proxy_header_end
from ..http.response import error_message
from .handler import ServerContext, WSGIRequestHandler
from .readiness import EpollSource, QueueSource, ReactorPoller, readable
from .tls import PLAIN_HTTP_MESSAGE, handshake, looks_like_plain_http

log = logging.getLogger("wsgibridge.server")

ACTIVE, PARKED, LINGERING, CLOSED = "active", "parked", "lingering", "closed"

# After a refusal (or a body we would not read), how long and how much of
# the client's remaining upload is read and discarded before closing (a proxy
# in front may be mid-way through a large buffered upload).  Read in slices,
# so one fast sender cannot hog the reactor.
CLOSE_LINGER_SECONDS = 5.0
CLOSE_LINGER_BYTES = 64 * 1024 * 1024
LINGER_SLICE = 256 * 1024
# Attempts of the PROXY/TLS opening on the bytes at hand before parking.
OPEN_STEPS = 8


class Connection:
    """The server's record of one connection (the handler holds the HTTP state)."""

    __slots__ = (
        "accepted_at",
        "address",
        "client_unknown",
        "drained",
        "fd",
        "generation",
        "handler",
        "in_source",
        "linger_bytes",
        "proxy_line",
        "proxy_peer",
        "registered",
        "sock",
        "state",
    )

    def __init__(self, sock: socket.socket, address: Any, expect_proxy_line: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.address = address
        self.accepted_at = time.monotonic()
        # The PROXY header (v1 line, v2 block) received so far; None when none is
        # expected (any more).
        self.proxy_line: bytes | None = b"" if expect_proxy_line else None
        self.proxy_peer: Any = None  # the proxy's own address, once a PROXY header named the client
        # A PROXY header said the client is unknown (v1 UNKNOWN, v2 PROXY with an
        # unsupported family): the bytes are some client's, passed through.
        self.client_unknown = False
        self.handler: WSGIRequestHandler | None = None
        self.state = ACTIVE
        self.generation = 0  # bumped on every park, so a stale deadline is ignored
        self.registered = False  # in the reactor's poller
        self.in_source = False  # in the workers' EpollSource
        self.linger_bytes = 0
        self.drained = False  # taken from the backlog as the server stops (adopt())


class Host(ServerContext, Protocol):
    """What the connections need of their server (``WSGIServer`` is one): what its
    handlers need, and how to make them."""

    ssl_context: ssl.SSLContext | None
    handler_class: type[WSGIRequestHandler]


class Scheduler(Protocol):
    """What the connections need of the reactor (``Reactor`` is one)."""

    @property
    def accepting(self) -> bool: ...

    def add_timer(self, deadline: float, conn: Connection) -> None: ...

    def wake(self) -> None: ...

    def close_listeners(self) -> None: ...

    def accept(self, fd: int) -> Connection | None: ...


class Connections:
    """The open connections, and every change of their state (from any thread)."""

    def __init__(
        self,
        host: Host,
        poller: ReactorPoller,
        source: EpollSource | QueueSource,
        scheduler: Scheduler,
    ) -> None:
        self.host = host
        self.config = host.config
        self.poller = poller
        self.source = source
        self.scheduler = scheduler
        self.table: dict[int, Connection] = {}
        # Notified whenever a connection closes (server_close waits on it).
        self.changed = threading.Condition()
        # Taken for every change of a parked connection's state: a worker
        # woken for it and the reactor expiring it may both try.
        self._state_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.table)

    def add(self, conn: Connection) -> None:
        """A connection just accepted: a worker takes it when its first bytes arrive."""
        self.table[conn.fd] = conn
        self.park(conn, conn.accepted_at + self.config.header_timeout)

    def adopt(self, conn: Connection) -> None:
        """A client taken from the listen backlog as the server stops (or a parked one
        whose next request has arrived): a worker serves its one request
        (:meth:`serve`), waiting for its bytes if need be.

        It counts as a request in flight (the stop waits for it, up to the
        graceful timeout), is never parked or expired (the reactor is gone),
        and the stop's closing of idle connections passes it by.
        """
        conn.drained = True
        conn.generation += 1
        conn.state = PARKED
        self.table[conn.fd] = conn
        source = self.source
        try:
            if isinstance(source, EpollSource):
                registered = conn.in_source
                conn.in_source = True
                source.arm(conn.fd, registered)  # a worker takes it once its bytes are there
            else:
                source.put(conn.fd)  # a worker takes it now and waits for them
        except (OSError, ValueError):
            if self.claim(conn):
                self.forget(conn)

    def claim(self, conn: Connection, generation: int | None = None) -> bool:
        """Take a parked connection (PARKED -> ACTIVE); False if someone else did first."""
        with self._state_lock:
            if conn.state != PARKED or (generation is not None and conn.generation != generation):
                return False
            conn.state = ACTIVE
            return True

    # -- in a worker -------------------------------------------------------------------

    def serve_fd(self, fd: int) -> None:
        """A worker's job: the parked connection on ``fd`` has become readable, or
        (epoll) a client waits on the listener ``fd``: its first request is served
        here and now if it has arrived, else the new connection is parked."""
        conn = self.table.get(fd)
        if conn is None:
            conn = self.scheduler.accept(fd)
            if conn is None:
                return
            self.table[conn.fd] = conn
        elif not self.claim(conn):
            return
        self.serve(conn)

    def serve(self, conn: Connection) -> None:
        if conn.drained:
            self._serve_drained(conn)
            return
        handler = conn.handler
        try:
            if handler is None:
                handler = self._open(conn)
                if handler is None:
                    return  # parked until more bytes arrive, or closed
                conn.handler = handler
            handler.handle()
        except Exception:
            log.exception("unexpected error serving %s", conn.address)
            self.close(conn)
            return
        if handler.close_connection or self.host.stopping:
            self.close(conn, linger=handler.linger_on_close)
        else:
            self.park(conn, handler.deadline())

    def _serve_drained(self, conn: Connection) -> None:
        """A backlog client's request, served here until its response (the server is stopping).

        Nothing parks it: this worker waits for its bytes itself, until
        ``header_timeout`` after the accept (the stop's graceful timeout
        shuts the socket down sooner if it must).
        """
        deadline = conn.accepted_at + self.config.header_timeout
        handler = conn.handler
        try:
            while conn.state != CLOSED and readable(
                conn.sock, max(deadline - time.monotonic(), 0.0)
            ):
                if handler is None:
                    handler = conn.handler = self._open(conn, park=False)
                    if handler is None:
                        continue  # the PROXY header or TLS handshake wants more bytes
                handler.handle()
                if not handler.waiting or handler.requests_served:
                    break  # answered (and closing: the server is stopping), or gone
                # Part of its head is here: only the stop said close, and its
                # request has not been answered yet.
                handler.close_connection = False
        except Exception:
            log.exception("unexpected error serving %s", conn.address)
        if conn.state != CLOSED:
            self.close(conn)

    # -- before HTTP: the PROXY header and the TLS handshake -------------------------------

    def _open(self, conn: Connection, park: bool = True) -> WSGIRequestHandler | None:
        """Take a new connection through its PROXY header and TLS handshake; then its handler.

        Only as far as the bytes that have arrived allow, never blocking on the
        client: without the bytes it needs, the connection is parked (holding
        no thread) until more arrive or ``header_timeout`` after the accept.
        Returns None when it parked or closed the connection.
        """
        deadline = conn.accepted_at + self.config.header_timeout
        ssl_context = self.host.ssl_context
        for _ in range(OPEN_STEPS):
            try:
                done = (conn.proxy_line is None or self._take_proxy_line(conn)) and (
                    ssl_context is None or self._tls_step(conn, ssl_context, deadline)
                )
            except HTTPError as exc:
                log.warning("%s: %d %s (%s)", conn.address, exc.status, exc.status.phrase, exc)
                self._refuse(conn, exc)
                return None
            except (OSError, ValueError) as exc:
                self._tls_failed(conn, exc)
                return None
            if done:
                handler = self.host.handler_class(conn.sock, conn.address, self.host)
                handler.proxy_peer = conn.proxy_peer
                handler.client_unknown = conn.client_unknown
                handler.connected(conn.accepted_at)
                return handler
            if not readable(conn.sock, 0.0):
                break
        if park:
            self.park(conn, deadline)
        return None

    def _take_proxy_line(self, conn: Connection) -> bool:
        """Consume the PROXY protocol header (a v1 line or a v2 block), byte-exact:
        nothing after it is read.

        True once it is complete: the client is then the address it names.
        """
        received = conn.proxy_line
        assert received is not None
        sock = conn.sock
        try:
            data = sock.recv(
                MAX_PROXY_HEADER - len(received), socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            raise IncompleteMessage("the connection closed before its PROXY header")
        # What belongs to the header may be taken even before it is complete;
        # the request after it is left in the kernel for the handler (or the
        # TLS layer) to read.
        taken, complete = proxy_header_end(received + data)
        line = received + sock.recv(taken - len(received))
        if not complete or len(line) < taken:
            conn.proxy_line = line
            return False
        header = parse_proxy_header(line)
        conn.proxy_line = None
        if header.source is not None and header.source_port is not None:
            # "the receiver ... MUST use the information from the PROXY header
            # as the connection's source" (the PROXY protocol specification, 2.1).
            conn.proxy_peer = conn.address
            conn.address = (header.source, header.source_port)
        elif header.family == "UNKNOWN":
            # The real endpoints stand (the proxy's address), but what follows is
            # not the proxy's own request: its forwarding headers and request id
            # are not believed (LOCAL is the proxy's own, a health check).
            conn.client_unknown = True
        return True

    def _tls_step(self, conn: Connection, context: ssl.SSLContext, deadline: float) -> bool:
        """Advance the TLS handshake with the bytes that have arrived; True once it is done."""
        sock = conn.sock
        if not isinstance(sock, ssl.SSLSocket):
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = sock
        sock.setblocking(False)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            return False  # OpenSSL read all there was: waiting for the client
        except ssl.SSLWantWriteError:
            # Our side cannot send (a full socket buffer): finish blocking, under
            # what is left of the deadline.
            handshake(sock, max(deadline - time.monotonic(), 0.0))
        return True

    def _tls_failed(self, conn: Connection, exc: BaseException) -> None:
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket) and looks_like_plain_http(exc):
            log.info("%s sent plain HTTP to the TLS port", conn.address)
            # nginx's clear-text 400, sent without waiting; the TLS layer is
            # dropped and the reactor closes lingeringly, holding no worker.
            raw = socket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            conn.sock = raw
            try:
                raw.setblocking(False)
                raw.send(error_message(400, PLAIN_HTTP_MESSAGE))
            except OSError:
                pass
            metrics = self.host.metrics
            if metrics is not None:
                metrics.refused("400")
            self.close(conn, linger=True)
            return
        log.info("TLS handshake with %s failed: %s", conn.address, exc)
        self.close(conn)

    def _refuse(self, conn: Connection, exc: HTTPError) -> None:
        """Answer a bad PROXY header with its 4xx (in clear text only) and close."""
        if self.host.ssl_context is None:
            handler = self.host.handler_class(conn.sock, conn.address, self.host)
            conn.handler = handler
            handler.reject(exc)
            self.close(conn, linger=True)
        else:
            self.close(conn)

    # -- parked ------------------------------------------------------------------------

    def park(self, conn: Connection, deadline: float) -> None:
        """Wait, holding no thread, for bytes on ``conn`` (a worker takes it) or ``deadline``."""
        conn.generation += 1
        conn.state = PARKED
        self.scheduler.add_timer(deadline, conn)
        try:
            source = self.source
            if isinstance(source, EpollSource):
                registered = conn.in_source
                # Marked first: the event can fire, and a worker park the
                # connection again, before arm() has even returned here.
                conn.in_source = True
                try:
                    source.arm(conn.fd, registered)
                except BaseException:
                    conn.in_source = registered
                    raise
            else:
                self.poller.arm(conn)
        except (OSError, ValueError):
            if self.claim(conn):
                self.close(conn)
            return
        if self.host.stopping and self.claim(conn):
            # Parked while the reactor was closing the idle ones: close it here.
            self.close(conn)

    def expire(self, conn: Connection) -> None:
        """A parked connection's deadline passed (in the reactor, which has claimed it).

        Bytes waiting in the socket mean the client did its part and the
        workers were all busy: the request may well be complete, so the
        connection waits on for a worker, which refuses the head with 408 if
        it turns out incomplete.  Otherwise a partial head gets its 408 here,
        and the connection closes lingeringly so no reset destroys the answer.
        """
        if not self.host.stopping and readable(conn.sock, 0.0):
            self.park(conn, time.monotonic() + self.config.header_timeout)
            return
        handler = conn.handler
        linger = False
        if handler is not None and handler.head_pending:
            # Part of a request head arrived, the rest did not in time.
            log.info("%s: request head not complete in time; closing", conn.address)
            try:
                conn.sock.setblocking(False)  # the reactor never waits on a client
                conn.sock.send(error_message(408, "the request head was not complete in time"))
            except (OSError, ValueError):
                pass
            else:
                linger = True
            metrics = self.host.metrics
            if metrics is not None:
                metrics.refused("408")
        conn.state = ACTIVE
        self.close(conn, linger=linger)

    # -- closing -----------------------------------------------------------------------

    def close(self, conn: Connection, linger: bool = False) -> None:
        """Close a connection that no one else holds (a worker's, or the reactor's)."""
        stopping = self.host.stopping
        if stopping:
            # Before a client can see its connection closed by the stop, the
            # listeners are: reconnecting is refused, never left to hang.
            self.scheduler.close_listeners()
        handler = conn.handler
        if handler is not None:
            try:
                handler.finish()
            except Exception:
                log.exception("error finishing the connection from %s", conn.address)
        if linger and not stopping:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
                conn.sock.setblocking(False)
            except OSError:
                pass
            else:
                if conn.in_source:
                    # From now on the reactor reads it, in its own poller.
                    self.source.remove(conn.fd)
                    conn.in_source = False
                conn.generation += 1
                conn.state = LINGERING
                self.scheduler.add_timer(time.monotonic() + CLOSE_LINGER_SECONDS, conn)
                try:
                    self.poller.arm(conn)
                except (OSError, ValueError):
                    pass
                else:
                    if not self.host.stopping:
                        return
                    # The reactor may have stopped (and closed the lingering
                    # ones) before this one became LINGERING: close it here.
        self.forget(conn)

    def discard(self, conn: Connection) -> None:
        """Read and drop what a lingering client still sends (in the reactor)."""
        try:
            stop_at = min(conn.linger_bytes + LINGER_SLICE, CLOSE_LINGER_BYTES)
            while conn.linger_bytes < stop_at:
                data = conn.sock.recv(65536)
                if not data:
                    self.forget(conn)  # the client is done: close
                    return
                conn.linger_bytes += len(data)
            if conn.linger_bytes >= CLOSE_LINGER_BYTES:
                self.forget(conn)
                return
            raise BlockingIOError  # a slice read: let the others have a turn
        except (BlockingIOError, InterruptedError):
            try:
                self.poller.arm(conn)
                return
            except (OSError, ValueError):
                pass
        except OSError:
            pass
        self.forget(conn)

    def forget(self, conn: Connection) -> None:
        """Close and drop a connection; safe to call twice, from two threads."""
        with self.changed:
            if conn.state == CLOSED:
                return
            conn.state = CLOSED
            if self.table.get(conn.fd) is conn:
                del self.table[conn.fd]
            self.changed.notify_all()
        if conn.registered:
            self.poller.remove(conn.fd)
        # (An fd in the workers' epoll leaves it when the socket closes below:
        # the descriptor is never duplicated.)
        conn.handler = None  # a stale timer entry must not keep the request alive
        try:
            conn.sock.close()
        except OSError:
            pass
        if not self.scheduler.accepting:
            # Below the limit again? The reactor decides, and resumes accepting.
            self.scheduler.wake()

    def drop(self, conn: Connection | None) -> None:
        """Close a connection the reactor holds after an unexpected error on it."""
        if conn is None:
            return
        if conn.state == LINGERING or self.claim(conn):
            self.forget(conn)

    def close_idle(self) -> None:
        """Close every parked and lingering connection (the reactor, when it stops).

        A parked connection whose next request has already arrived (every
        worker was busy) is not idle: it is answered, as the backlog is.
        """
        for conn in list(self.table.values()):
            if conn.drained:
                continue  # from the backlog: a worker serves it (adopt())
            if conn.state == LINGERING:
                self.forget(conn)
            elif self.claim(conn):
                try:
                    waiting = readable(conn.sock, 0.0)
                except (OSError, ValueError):
                    waiting = False
                if waiting:
                    self.adopt(conn)
                else:
                    self.forget(conn)
