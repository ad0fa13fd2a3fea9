"""The server: listening sockets, a reactor thread, a worker pool, parked connections.

Strategy.  ``WSGIServer`` binds every listening socket when it is made (port
0 gives a real port at once).  ``serve_forever`` runs the *reactor* in the
calling thread: one selector over the listeners, a wake-up socket and the
lingering connections, and the timers.  A connection is *parked* when it has
nothing to do - new, idle between keep-alive requests, or waiting for the
rest of a slowly sent request head - so idle clients hold a file descriptor,
never a thread.  Parked connections wait in a :mod:`~wsgibridge.ready`
source that the :class:`~wsgibridge.pool.WorkerPool`'s threads wait on
themselves: when one becomes readable, a worker claims it, serves every
request that is ready on it (``WSGIRequestHandler.handle``) and parks it
again, then takes the next ready one without blocking.  A stream of small
requests on many connections is so served by one thread back to back; the
reactor only steps in (``WorkerPool.watch``) when work waits behind workers
that are all busy with long requests.

States of a connection (``_Conn.state``), and who moves it::

    ACTIVE --(worker: nothing ready)--> PARKED --(worker: readable)--> ACTIVE
    ACTIVE --(worker: done)--> LINGERING --(reactor: EOF / 5 s / 64 MiB)--> closed
    PARKED --(reactor: deadline, or stopping)--> closed

A connection leaves PARKED only through ``_claim``, under a lock, so a
readiness event and a deadline can never both act on it.

Stopping (:meth:`WSGIServer.stop`): the listeners close at once, parked
connections close at once, requests in flight finish and their responses
say ``Connection: close``; after ``graceful_timeout`` the remaining sockets
are shut down under their threads.  Nothing polls: every wait is on an event
or a condition, so an idle server stops in milliseconds.  Only ``serve()``
installs signal handlers; a server made with ``make_server`` never touches
the host program's signals.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import select
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from .._types import WSGIApp
from ..accesslog import AccessLogFormat, AccessRecord, open_sink
from ..config import Config
from ..errors import ConfigError, HTTPError, IncompleteMessage
from ..http.forwarded import MAX_PROXY_LINE, TrustedProxies, parse_proxy_v1
from ..http.response import error_message
from .handler import WSGIRequestHandler
from .listen import (
    close_listener,
    listener_address,
    open_bind,
    parse_bind,
    systemd_listeners,
)
from .pool import WorkerPool
from .readiness import EpollSource, QueueSource
from .tls import PLAIN_HTTP_MESSAGE, handshake, looks_like_plain_http, make_ssl_context

log = logging.getLogger("wsgibridge.server")

# After a refusal (or a body we would not read), how long and how much of
# the client's remaining upload is read and discarded before closing, so the
# kernel does not answer those bytes with a RST that destroys our response
# (nginx's lingering_close; a proxy in front may be mid-way through a large
# buffered upload).  Read in slices, so one fast sender cannot hog the reactor.
CLOSE_LINGER_SECONDS = 5.0
CLOSE_LINGER_BYTES = 64 * 1024 * 1024
LINGER_SLICE = 256 * 1024
# After the sockets of requests still running past the graceful timeout are
# shut down, how long their threads get to notice before stop returns.
THREAD_MARGIN = 0.1
# How soon the main thread notices a signal while it waits for requests in flight.
SIGNAL_LATENCY = 0.05
# New connections accepted per readiness event of a listener (fairness).
ACCEPT_BATCH = 64
# Pause before accepting again when the process is out of file descriptors.
ACCEPT_BACKOFF = 0.1

ACTIVE, PARKED, LINGERING, CLOSED = "active", "parked", "lingering", "closed"
# epoll where there is one (Linux); elsewhere poll() in the reactor, which hands
# ready parked connections to the workers (tests switch it off to cover that).
USE_EPOLL = hasattr(select, "epoll")
# Attempts of _open on the bytes at hand before the connection is parked.
OPEN_STEPS = 8


def _readable(sock: socket.socket, timeout: float) -> bool:
    """True if ``sock`` has bytes (or TLS bytes already decrypted) within ``timeout`` s."""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class _Conn:
    """The server's record of one connection (the handler holds the HTTP state)."""

    __slots__ = (
        "accepted_at",
        "address",
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
        # The PROXY line received so far; None when none is expected (any more).
        self.proxy_line: bytes | None = b"" if expect_proxy_line else None
        self.proxy_peer: Any = None  # the proxy's own address, once a PROXY line named the client
        self.handler: WSGIRequestHandler | None = None
        self.state = ACTIVE
        self.generation = 0  # bumped on every park, so a stale deadline is ignored
        self.registered = False  # in the reactor's poller
        self.in_source = False  # in the workers' EpollSource
        self.linger_bytes = 0


class _Poller:
    """The reactor's readiness: listeners, the wake-up socket, lingering connections.

    Connections are armed one-shot (epoll ``EPOLLONESHOT``) from any thread: a
    worker arms one when it closes it lingeringly, the reactor again after
    each slice it discards.  Without epoll the parked connections are here
    too, and arming goes through the reactor (``wake``), which polls.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._epoll = select.epoll() if USE_EPOLL else None
        self._poll = None if self._epoll is not None else select.poll()
        self._pending: list[tuple[int, bool]] = []
        self._wake = wake
        self._lock = threading.Lock()

    def add_listener(self, fd: int) -> None:
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN)
        else:
            # Queued like every other change, so that a removal still queued
            # cannot undo it.
            with self._lock:
                self._pending.append((fd, True))

    def remove(self, fd: int) -> None:
        try:
            if self._epoll is not None:
                self._epoll.unregister(fd)
            else:
                with self._lock:
                    self._pending.append((fd, False))
                self._wake()
        except (OSError, ValueError, KeyError):
            pass

    def arm(self, conn: _Conn) -> None:
        """Report ``conn`` once when it becomes readable (or hangs up)."""
        if self._epoll is not None:
            events = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT
            if conn.registered:
                self._epoll.modify(conn.fd, events)
            else:
                # Marked first: the event can fire, and the reactor re-arm the
                # connection, before register() has even returned here.
                conn.registered = True
                try:
                    self._epoll.register(conn.fd, events)
                except BaseException:
                    conn.registered = False
                    raise
            return
        with self._lock:
            self._pending.append((conn.fd, True))
        conn.registered = True
        self._wake()

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        if self._epoll is not None:
            return self._epoll.poll(-1 if timeout is None else timeout)
        assert self._poll is not None
        with self._lock:
            pending, self._pending = self._pending, []
        for fd, arm in pending:
            if arm:
                self._poll.register(fd, select.POLLIN)
            else:
                try:
                    self._poll.unregister(fd)
                except KeyError:
                    pass
        events = self._poll.poll(None if timeout is None else timeout * 1000)
        return events

    def disarm_fired(self, fd: int) -> None:
        """After an event on a connection (poll() is level-triggered, epoll is one-shot)."""
        if self._poll is not None:
            try:
                self._poll.unregister(fd)
            except KeyError:
                pass

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


class WSGIServer:
    """A bound HTTP server that runs ``app`` for each request; serve with ``serve_forever``.

    ``sockets`` are pre-bound listening sockets to serve instead of
    ``config.binds`` (and are closed, never unlinked, when the server stops);
    ``ssl_context`` serves HTTPS with a context of your own instead of one
    made from ``config.certfile``.
    """

    multithread = True

    def __init__(
        self,
        app: WSGIApp,
        config: Config | None = None,
        handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
        *,
        sockets: Iterable[socket.socket] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config = config if config is not None else Config()
        if config.lint:
            from ..lint import LintMiddleware, log_report  # only then: a development tool

            app = LintMiddleware(app, report=log_report)
        self.app = app
        self.limits = config.limits
        self.handler_class = handler_class
        self.multiprocess = config.workers > 1
        if ssl_context is None and config.certfile:
            ssl_context = tls_context(config)
        self.ssl_context = ssl_context
        self.url_scheme = config.url_scheme or ("https" if ssl_context else "http")
        self.trusted_proxies = TrustedProxies(config.forwarded_allow_ips)
        self.access_format = AccessLogFormat(config.access_log_format)
        # Called with an AccessRecord after every request (the pytest plugin's
        # request log uses this); add before serving, from any thread.
        self.observers: list[Callable[[AccessRecord], None]] = []
        # Requests begun, counted only while there are observers: a request's
        # record is made after its response is sent, so an observer that is
        # read by the client (the plugin's request log) waits for this count.
        self.requests_begun = 0
        self._begun_lock = threading.Lock()
        # A plain flag, not an Event: it is set from signal handlers, which
        # must take no lock (the interrupted code may hold it).
        self._stopping = False
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._loop_thread: int | None = None
        # Set once serve_forever is accepting (for code that starts it in a thread).
        self.serving = threading.Event()
        self._closed = False  # released for good (set at the end of server_close)
        self._cut_at = float("inf")  # when server_close stops waiting for requests
        self._cut = False  # cut_short(): stop waiting now
        self._lock = threading.Condition()
        self._conns: dict[int, _Conn] = {}
        self._timers: list[tuple[float, int, int, _Conn]] = []  # the reactor's heap
        self._posted: collections.deque[tuple[float, int, int, _Conn]] = collections.deque()
        self._sequence = itertools.count()
        self._next_wake = float("inf")
        self._accepting = True
        self._resume_accepting_at = 0.0
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        try:
            self.listeners = list(sockets) if sockets is not None else open_listeners(config)
        except BaseException:
            self._wake_r.close()
            self._wake_w.close()
            raise
        for listener in self.listeners:
            listener.setblocking(False)
        # Remembered now: they stay true after the listeners close.
        self.addresses = [listener_address(listener) for listener in self.listeners]
        tcp = [
            listener.getsockname()[:2]
            for listener in self.listeners
            if listener.family in (socket.AF_INET, socket.AF_INET6)
        ]
        self.host: str = str(tcp[0][0]) if tcp else ""
        self.port: int = int(tcp[0][1]) if tcp else 0
        self._listener_fds = {listener.fileno(): listener for listener in self.listeners}
        self._listener_lock = threading.RLock()  # re-entered by a signal handler
        self._poller = _Poller(self._wake)
        # Parked connections: in an epoll the workers wait on themselves, or
        # (without epoll) in the reactor's poller, which hands them over.
        self._source: EpollSource | QueueSource = EpollSource() if USE_EPOLL else QueueSource()
        # Taken for every change of a parked connection's state: a worker
        # woken for it and the reactor expiring it may both try.
        self._state_lock = threading.Lock()
        self._pool = WorkerPool(config.threads, self._source, self._serve_fd, self._wake)

    # -- facts -----------------------------------------------------------------------

    @property
    def server_name(self) -> str:
        """socketserver's name for :attr:`host`."""
        return self.host

    @property
    def server_port(self) -> int:
        """socketserver's name for :attr:`port`."""
        return self.port

    @property
    def url(self) -> str:
        """``http(s)://host:port/`` for the first TCP listener (IPv6 in brackets)."""
        host = self.host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.url_scheme}://{host}:{self.port}/"

    @property
    def wakeup_fd(self) -> int:
        """A descriptor whose writes wake the reactor (for ``signal.set_wakeup_fd``)."""
        return self._wake_w.fileno()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def local_address(self, sock: socket.socket) -> tuple[str, str]:
        """(SERVER_NAME, SERVER_PORT) for a connection: the address it came in on."""
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            name, port = sock.getsockname()[:2]
            return str(name), str(port)
        return "localhost", "443" if self.ssl_context else "80"

    def note_request(self) -> None:
        """Count a request that will be recorded (called by the handler, with observers only)."""
        with self._begun_lock:
            self.requests_begun += 1

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # -- the reactor -------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept and dispatch connections until :meth:`shutdown` (``poll_interval`` is unused)."""
        if self._closed or self._stopping:
            return
        self._loop_done.clear()
        self._loop_thread = threading.get_ident()
        try:
            if self._closed or self._stopping:
                return  # stopped while we were starting
            self._pool.start()
            poller = self._poller
            wake_fd = self._wake_r.fileno()
            if wake_fd < 0:
                return  # closed under us by a concurrent server_close
            poller.add_listener(wake_fd)
            for fd in self._listener_fds:
                poller.add_listener(fd)
            conns = self._conns
            self.serving.set()
            while not self._stopping:
                timeout = self._until_next_timer()
                for fd, _ in poller.poll(timeout):
                    try:
                        if fd == wake_fd:
                            self._drain_wake()
                        elif fd in self._listener_fds:
                            self._accept(self._listener_fds[fd])
                        else:
                            conn = conns.get(fd)
                            if conn is None:
                                continue
                            poller.disarm_fired(fd)
                            if conn.state == PARKED and isinstance(self._source, QueueSource):
                                self._source.put(fd)  # a worker claims it
                            elif conn.state == LINGERING:
                                self._discard(conn)
                    except Exception:
                        # One connection's trouble must never stop the reactor.
                        log.exception("unexpected error in the reactor (fd %d)", fd)
                        self._drop(conns.get(fd))
                self._run_timers()
        finally:
            try:
                self._close_listeners()
                self._close_idle()
            finally:
                self._loop_thread = None
                self._loop_done.set()

    def _until_next_timer(self) -> float | None:
        """Take in the deadlines workers posted; seconds until the next one (None: none)."""
        # "Computing": a deadline posted from now on always wakes the reactor,
        # so none can slip in between the drain below and the sleep.
        self._next_wake = -float("inf")
        timers = self._timers
        posted = self._posted
        while posted:
            heapq.heappush(timers, posted.popleft())
        if len(timers) > 2 * len(self._conns) + 256:
            # Entries of connections parked again or closed since: drop them.
            self._timers = timers = [
                t for t in timers if t[3].generation == t[2] and t[3].state != CLOSED
            ]
            heapq.heapify(timers)
        if (
            not self._accepting
            and not self._resume_accepting_at
            and len(self._conns) < self.config.connection_limit
            and not self._stopping
        ):
            self._start_accepting()  # only the reactor changes the listeners
        wake = timers[0][0] if timers else float("inf")
        if not self._accepting and self._resume_accepting_at:
            wake = min(wake, self._resume_accepting_at)
        watch = self._pool.watch()  # wakes a worker for work stuck behind busy ones
        if watch is not None:
            wake = min(wake, time.monotonic() + watch)
        self._next_wake = wake
        if wake == float("inf"):
            return None
        return max(wake - time.monotonic(), 0.0)

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, generation, conn = heapq.heappop(timers)
            if conn.generation != generation:
                continue  # parked again since, with a later deadline
            try:
                if conn.state == PARKED and self._claim(conn, generation):
                    self._expire(conn)
                elif conn.state == LINGERING:
                    self._forget(conn)
            except Exception:
                log.exception("unexpected error expiring the connection from %s", conn.address)
                self._drop(conn)
        if not self._accepting and self._resume_accepting_at and now >= self._resume_accepting_at:
            self._resume_accepting_at = 0.0
            self._start_accepting()

    def _add_timer(self, deadline: float, conn: _Conn) -> None:
        """Post a deadline for the reactor (from any thread; only the reactor owns the heap)."""
        self._posted.append((deadline, next(self._sequence), conn.generation, conn))
        if deadline < self._next_wake and threading.get_ident() != self._loop_thread:
            # The reactor would sleep past it, or is computing: tell it.  (The
            # reactor itself takes the deadline in before it next sleeps.)
            self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # the buffer is full (a wake-up is pending anyway) or we are closed

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    # -- accepting -------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        limit = self.config.connection_limit
        # Pre-forked workers share the listener: taking one connection per
        # wake-up lets the others take theirs, instead of one process grabbing
        # a whole burst of new clients.
        for _ in range(1 if self.multiprocess else ACCEPT_BATCH):
            if len(self._conns) >= limit:
                # Further clients wait in the kernel's backlog until one closes.
                self._stop_accepting()
                return
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop asking for a moment instead of
                    # spinning on a listener that stays readable.
                    log.warning("cannot accept connections: %s; pausing", exc)
                    self._stop_accepting()
                    self._resume_accepting_at = time.monotonic() + ACCEPT_BACKOFF
                # Otherwise the client gave up before we accepted (ECONNABORTED …).
                return
            # With --proxy-protocol, a trusted peer (the proxy) must start with a
            # PROXY line naming the real client; nobody else may.
            peer = str(address[0]) if isinstance(address, tuple) else ""
            proxied = self.config.proxy_protocol and peer in self.trusted_proxies
            conn = _Conn(sock, address, proxied)
            self._conns[conn.fd] = conn
            # A worker takes it when its first bytes arrive.
            self._park(conn, conn.accepted_at + self.config.header_timeout)

    def _stop_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            for fd in self._listener_fds:
                self._poller.remove(fd)

    def _start_accepting(self) -> None:
        if not self._accepting and not self._stopping:
            self._accepting = True
            for fd in self._listener_fds:
                try:
                    self._poller.add_listener(fd)
                except (OSError, ValueError):
                    pass

    # -- serving a connection (in a worker) ------------------------------------------------

    def _claim(self, conn: _Conn, generation: int | None = None) -> bool:
        """Take a parked connection (PARKED -> ACTIVE); False if someone else did first."""
        with self._state_lock:
            if conn.state != PARKED or (generation is not None and conn.generation != generation):
                return False
            conn.state = ACTIVE
            return True

    def _serve_fd(self, fd: int) -> None:
        """A worker's job: the parked connection on ``fd`` has become readable."""
        conn = self._conns.get(fd)
        if conn is not None and self._claim(conn):
            self._serve(conn)

    def _serve(self, conn: _Conn) -> None:
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
            self._close(conn)
            return
        if handler.close_connection or self._stopping:
            self._close(conn, linger=handler.linger_on_close)
        else:
            self._park(conn, handler.deadline())

    # -- before HTTP: the PROXY line and the TLS handshake ---------------------------------

    def _open(self, conn: _Conn) -> WSGIRequestHandler | None:
        """Take a new connection through its PROXY line and TLS handshake; then its handler.

        Only as far as the bytes that have arrived allow, never blocking on the
        client: without the bytes it needs, the connection is parked (holding
        no thread) until more arrive or ``header_timeout`` after the accept.
        Returns None when it parked or closed the connection.
        """
        deadline = conn.accepted_at + self.config.header_timeout
        for _ in range(OPEN_STEPS):
            try:
                done = (conn.proxy_line is None or self._take_proxy_line(conn)) and (
                    self.ssl_context is None or self._tls_step(conn, deadline)
                )
            except HTTPError as exc:
                log.warning("%s: %d %s (%s)", conn.address, exc.status, exc.status.phrase, exc)
                self._refuse(conn, exc)
                return None
            except (OSError, ValueError) as exc:
                self._tls_failed(conn, exc)
                return None
            if done:
                handler = self.handler_class(conn.sock, conn.address, self)
                handler.proxy_peer = conn.proxy_peer
                handler.connected(conn.accepted_at)
                return handler
            if not _readable(conn.sock, 0.0):
                break
        self._park(conn, deadline)
        return None

    def _take_proxy_line(self, conn: _Conn) -> bool:
        """Consume the PROXY protocol v1 line, byte-exact (nothing after it is read).

        True once it is complete: the client is then the address it names.
        """
        assert conn.proxy_line is not None
        sock = conn.sock
        try:
            data = sock.recv(MAX_PROXY_LINE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        if not data:
            raise IncompleteMessage("the connection closed before its PROXY line")
        end = data.find(b"\n")
        # Everything before the first LF belongs to the line, so it may be taken
        # even if the line is not complete yet; the request after it is left
        # in the kernel for the handler (or the TLS layer) to read.
        line = conn.proxy_line + sock.recv(len(data) if end < 0 else end + 1)
        if end < 0:
            conn.proxy_line = line
            if len(line) >= MAX_PROXY_LINE:
                parse_proxy_v1(line)  # raises: no CRLF within the 107 bytes
            return False
        header = parse_proxy_v1(line)
        conn.proxy_line = None
        if header.source is not None and header.source_port is not None:
            # "the receiver ... MUST use the information from the PROXY header
            # as the connection's source" (haproxy proxy-protocol.txt, 2.1).
            conn.proxy_peer = conn.address
            conn.address = (header.source, header.source_port)
        return True

    def _tls_step(self, conn: _Conn, deadline: float) -> bool:
        """Advance the TLS handshake with the bytes that have arrived; True once it is done."""
        assert self.ssl_context is not None
        sock = conn.sock
        if not isinstance(sock, ssl.SSLSocket):
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
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

    def _tls_failed(self, conn: _Conn, exc: BaseException) -> None:
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
            self._close(conn, linger=True)
            return
        log.info("TLS handshake with %s failed: %s", conn.address, exc)
        self._close(conn)

    def _refuse(self, conn: _Conn, exc: HTTPError) -> None:
        """Answer a bad PROXY line with its 4xx (in clear text only) and close."""
        if self.ssl_context is None:
            handler = self.handler_class(conn.sock, conn.address, self)
            conn.handler = handler
            handler.reject(exc)
            self._close(conn, linger=True)
        else:
            self._close(conn)

    def _park(self, conn: _Conn, deadline: float) -> None:
        """Wait, holding no thread, for bytes on ``conn`` (a worker takes it) or ``deadline``."""
        conn.generation += 1
        conn.state = PARKED
        self._add_timer(deadline, conn)
        try:
            source = self._source
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
                self._poller.arm(conn)
        except (OSError, ValueError):
            if self._claim(conn):
                self._close(conn)
            return
        if self._stopping and self._claim(conn):
            # Parked while the reactor was closing the idle ones: close it here.
            self._close(conn)

    def _expire(self, conn: _Conn) -> None:
        """A parked connection's deadline passed (in the reactor, which has claimed it).

        Bytes waiting in the socket mean the client did its part and the
        workers were all busy: the request may well be complete, so the
        connection waits on for a worker, which refuses the head with 408 if
        it turns out incomplete.  Otherwise a partial head gets its 408 here,
        and the connection closes lingeringly so no reset destroys the answer.
        """
        if not self._stopping and _readable(conn.sock, 0.0):
            self._park(conn, time.monotonic() + self.config.header_timeout)
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
        conn.state = ACTIVE
        self._close(conn, linger=linger)

    # -- closing -----------------------------------------------------------------------

    def _close(self, conn: _Conn, linger: bool = False) -> None:
        """Close a connection that no one else holds (a worker's, or the reactor's)."""
        if self._stopping:
            # Before a client can see its connection closed by the stop, the
            # listeners are: reconnecting is refused, never left to hang.
            self._close_listeners()
        handler = conn.handler
        if handler is not None:
            try:
                handler.finish()
            except Exception:
                log.exception("error finishing the connection from %s", conn.address)
        if linger and not self._stopping:
            try:
                conn.sock.shutdown(socket.SHUT_WR)
                conn.sock.setblocking(False)
            except OSError:
                pass
            else:
                if conn.in_source:
                    # From now on the reactor reads it, in its own poller.
                    self._source.remove(conn.fd)
                    conn.in_source = False
                conn.generation += 1
                conn.state = LINGERING
                self._add_timer(time.monotonic() + CLOSE_LINGER_SECONDS, conn)
                try:
                    self._poller.arm(conn)
                except (OSError, ValueError):
                    pass
                else:
                    if not self._stopping:
                        return
                    # The reactor may have stopped (and closed the lingering
                    # ones) before this one became LINGERING: close it here.
        self._forget(conn)

    def _discard(self, conn: _Conn) -> None:
        """Read and drop what a lingering client still sends (in the reactor)."""
        try:
            stop_at = min(conn.linger_bytes + LINGER_SLICE, CLOSE_LINGER_BYTES)
            while conn.linger_bytes < stop_at:
                data = conn.sock.recv(65536)
                if not data:
                    self._forget(conn)  # the client is done: close
                    return
                conn.linger_bytes += len(data)
            if conn.linger_bytes >= CLOSE_LINGER_BYTES:
                self._forget(conn)
                return
            raise BlockingIOError  # a slice read: let the others have a turn
        except (BlockingIOError, InterruptedError):
            try:
                self._poller.arm(conn)
                return
            except (OSError, ValueError):
                pass
        except OSError:
            pass
        self._forget(conn)

    def _forget(self, conn: _Conn) -> None:
        """Close and drop a connection; safe to call twice, from two threads."""
        with self._lock:
            if conn.state == CLOSED:
                return
            conn.state = CLOSED
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
            self._lock.notify_all()
        if conn.registered:
            self._poller.remove(conn.fd)
        # (An fd in the workers' epoll leaves it when the socket closes below:
        # the descriptor is never duplicated.)
        conn.handler = None  # a stale timer entry must not keep the request alive
        try:
            conn.sock.close()
        except OSError:
            pass
        if not self._accepting:
            self._wake()  # below the limit again? The reactor decides, and resumes accepting.

    def _drop(self, conn: _Conn | None) -> None:
        """Close a connection the reactor holds after an unexpected error on it."""
        if conn is None:
            return
        if conn.state == LINGERING or self._claim(conn):
            self._forget(conn)

    def _close_idle(self) -> None:
        """Close every parked and lingering connection (the reactor, when it stops)."""
        for conn in list(self._conns.values()):
            if conn.state == LINGERING or self._claim(conn):
                self._forget(conn)

    # -- stopping --------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Ask the server to stop, without waiting: safe from a signal handler.

        It only sets a flag and wakes the reactor (no lock is taken: the code a
        signal interrupts may hold one).  Whoever notices the stop first - the
        reactor, or a worker about to close a connection because of it -
        closes the listeners, so new clients are refused from then on.
        """
        self._stopping = True
        self._wake()

    def cut_short(self) -> None:
        """Stop waiting for requests in flight (a second Ctrl-C): safe from a signal handler."""
        self._cut = True  # a flag of its own: server_close may be assigning _cut_at
        self._wake()
        # Waking the thread waiting in server_close takes the condition's lock,
        # which a signal handler must not: a short-lived thread does it.
        threading.Thread(target=self._notify_waiters, name="wsgibridge-stop", daemon=True).start()

    def _notify_waiters(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def shutdown(self) -> None:
        """Stop the reactor and wait until ``serve_forever`` has returned."""
        self.request_shutdown()
        self._close_listeners()
        self._loop_done.wait()

    def server_close(self, timeout: float | None = None) -> None:
        """Finish in-flight requests (up to ``timeout`` s, default ``graceful_timeout``), close all.

        Safe to call from any thread, several times, with or without a
        running ``serve_forever``.
        """
        if self._closed:
            return
        grace = self.config.graceful_timeout if timeout is None else timeout
        with self._lock:
            # A call with a shorter timeout (from another thread) cuts the wait
            # of an earlier one short.
            self._cut_at = min(self._cut_at, time.monotonic() + grace)
            self._lock.notify_all()
        self.request_shutdown()
        self._close_listeners()
        if self._loop_thread != threading.get_ident():
            # (In the loop's own thread the loop is over: serve_forever was left,
            # perhaps by an exception before it could say so.)
            self._loop_done.wait()
        self._close_idle()
        # Python runs signal handlers in the main thread only when it executes
        # bytecode; a signal arriving while it blocks in a lock would wait for
        # the lock.  So the main thread waits in short slices (a second Ctrl-C
        # is acted on within SIGNAL_LATENCY); completions still wake it at once.
        slice_ = SIGNAL_LATENCY if threading.current_thread() is threading.main_thread() else None
        with self._lock:
            waited = len(self._conns)
            if waited:
                log.info("stopping: waiting up to %gs for %d request(s) in flight", grace, waited)
            while self._conns and not self._cut and time.monotonic() < self._cut_at:
                left = self._cut_at - time.monotonic()
                self._lock.wait(left if slice_ is None else min(left, slice_))
            deadline = time.monotonic() if self._cut else self._cut_at
            busy = list(self._conns.values())
        if busy and self._cut:
            log.warning("second signal: not waiting for %d request(s) in flight", len(busy))
        elif busy:
            log.warning(
                "graceful timeout (%gs) passed: cutting off %d request(s)", grace, len(busy)
            )
        elif waited:
            log.info("stopped: the %d request(s) in flight finished", waited)
        for conn in busy:
            # Past the grace period: wake the threads blocked on these sockets.
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # Threads blocked on those sockets return at once; one stuck in the
        # app is left behind (a daemon thread) after a short last wait.
        self._pool.stop(timeout=max(deadline - time.monotonic(), 0.0) + THREAD_MARGIN)
        for conn in busy:
            # A request stuck in the app never writes its access line: written here,
            # with what was sent (a thread that returned wrote its own).
            handler = conn.handler
            if handler is not None:
                handler.log_cut_off()
        for conn in list(self._conns.values()):
            # Whatever is left is closed, never leaked (a thread still stuck in the
            # app gets EBADF from the closed socket object, not someone else's fd).
            self._forget(conn)
        self._close_listeners()
        self._poller.close()
        self._source.close()
        self._wake_r.close()
        self._wake_w.close()
        self._closed = True

    def stop(self, timeout: float | None = None) -> None:
        """Stop gracefully and release everything: ``shutdown()`` then ``server_close()``."""
        self.server_close(timeout)

    def _close_listeners(self) -> None:
        """Stop listening, once: out of the poller first, then closed (unix files unlinked)."""
        with self._listener_lock:
            listeners, self._listener_fds = self._listener_fds, {}
            for fd in listeners:
                self._poller.remove(fd)
            for listener in listeners.values():
                try:
                    close_listener(listener)
                except OSError:
                    pass

    def __enter__(self) -> WSGIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server_close()


def tls_context(config: Config) -> ssl.SSLContext:
    """The server's ``SSLContext`` from ``config``'s files; a :class:`ConfigError` says why not."""
    assert config.certfile, "tls_context needs a certfile"
    try:
        return make_ssl_context(
            config.certfile,
            config.keyfile,
            ca_certs=config.ca_certs,
            require_client_cert=config.require_client_cert,
        )
    except OSError as exc:
        # _check_readable names the setting: "certfile: No such file or directory".
        what, _, reason = str(exc.strerror).partition(": ")
        if what in ("certfile", "keyfile", "ca_certs") and reason:
            raise ConfigError(f"cannot read the {what} {exc.filename!r}: {reason}") from exc
        raise ConfigError(f"cannot read the TLS files: {exc}") from exc
    except ValueError as exc:
        hint = ""
        if str(exc).startswith("cannot load the certificate"):
            hint = (
                " (certfile must be a PEM certificate chain, leaf first, with its private"
                " key in the same file or in keyfile)"
            )
        raise ConfigError(f"{exc}{hint}") from exc


def open_listeners(config: Config) -> list[socket.socket]:
    """The listening sockets for ``config``: systemd's, if it passed us some, else ``binds``.

    With socket activation (``LISTEN_FDS``/``LISTEN_PID`` naming this
    process) the sockets systemd opened are served and ``bind``/``host``/
    ``port`` are ignored.
    """
    activated = systemd_listeners()
    if activated:
        log.info("serving the %d socket(s) passed by systemd", len(activated))
        return activated
    listeners: list[socket.socket] = []
    try:
        for spec in config.binds:
            bind = parse_bind(spec)
            opened = open_bind(bind, backlog=config.backlog, unix_mode=config.unix_socket_mode)
            if bind.is_name:
                log.info(
                    "%s: listening on %s", spec, ", ".join(listener_address(s) for s in opened)
                )
            listeners.extend(opened)
    except BaseException:
        for listener in listeners:
            close_listener(listener)
        raise
    return listeners


def make_server(
    app: WSGIApp,
    host: str | None = None,
    port: int | None = None,
    *,
    config: Config | None = None,
    handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
    sockets: Iterable[socket.socket] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **options: Any,
) -> WSGIServer:
    """A server bound and listening on ``host:port`` (port 0 picks one), not yet serving.

    Options are :class:`~wsgibridge.config.Config` fields (``threads=16``,
    ``bind=("unix:/run/app.sock",)`` …).  Call ``serve_forever()`` to serve,
    then ``stop()`` (from another thread, or after ``shutdown()``).
    """
    config = _config(config, host, port, options)
    return WSGIServer(app, config, handler_class, sockets=sockets, ssl_context=ssl_context)


def _config(config: Config | None, host: str | None, port: int | None, options: Any) -> Config:
    """``config`` (or the defaults) with ``host``, ``port`` and other fields replaced."""
    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    base = config or Config()
    return base.replace(**options) if options else base


# Descriptors a process needs beyond its connections (listeners, epolls,
# wake-up sockets, log files, the app's own files and database sockets).
SPARE_DESCRIPTORS = 256


def raise_descriptor_limit(connections: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard one, so ``connections`` fit (``serve`` only).

    Many systems start processes with a soft limit of 1024, fewer than the
    default connection limit; like nginx's ``worker_rlimit_nofile``, the
    command line asks for what it needs.  Embedded servers leave the host
    program's limits alone.
    """
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + SPARE_DESCRIPTORS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (OSError, ValueError):
            log.warning("cannot raise the open file limit from %d to %d", soft, new)


def configure_logging(level: str, access_log_file: str = "stderr") -> None:
    """Error and lifecycle messages with a level prefix on stderr; access lines to their sink.

    For a process that serves (the CLI, ``serve()``), never for an embedded
    server: loggers that already have handlers are left alone.
    """
    numeric = getattr(logging, level.upper())
    root = logging.getLogger("wsgibridge")
    root.setLevel(numeric)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    access = logging.getLogger("wsgibridge.access")
    if not access.handlers:
        access.addHandler(open_sink(access_log_file))
        access.propagate = False


def _logging_configured() -> bool:
    """True if the host program (or the CLI) has set up logging for wsgibridge's messages."""
    return bool(logging.getLogger().handlers or logging.getLogger("wsgibridge").handlers)


def serve(
    app: WSGIApp,
    host: str | None = None,
    port: int | None = None,
    *,
    config: Config | None = None,
    handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
    ready: Callable[[WSGIServer], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` until SIGINT (Ctrl-C) or SIGTERM, then stop gracefully.

    Signal handlers are installed only when called from the main thread, and the
    previous handlers are restored on return.  A second signal during the
    graceful stop cuts it short.  With ``workers > 1`` (main thread only) the
    app is served by pre-forked processes (``prefork.py``; ``ready`` is not
    called).
    """
    config = _config(config, host, port, options)
    if not _logging_configured():
        # A script calling serve() sees what the command line shows: the start,
        # the access lines, the stop.  A program with its own logging keeps it.
        configure_logging(config.log_level, config.access_log_file)
    raise_descriptor_limit(config.connection_limit)
    if config.workers > 1:
        from .prefork import serve_prefork

        if serve_prefork(app, config, handler_class) != 0:
            raise RuntimeError("the worker processes could not start")
        return
    server = WSGIServer(app, config, handler_class)
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No exception is raised and no lock taken here: raising KeyboardInterrupt
        # into whatever the main thread was doing can leave a lock held forever.
        if server.stopping:
            server.cut_short()  # a second signal: stop waiting for requests in flight
        else:
            server.request_shutdown()
            log.info("received %s, stopping", signal.Signals(signum).name)

    previous_wakeup = None
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
        # Every signal also writes a byte to the reactor's wake-up socket, so
        # the reactor returns to Python (and the handler runs) whichever thread
        # the kernel delivered the signal to.
        previous_wakeup = signal.set_wakeup_fd(server.wakeup_fd, warn_on_full_buffer=False)
    try:
        log.info("serving on %s", ", ".join(server.addresses))
        if ready is not None:
            ready(server)
        try:
            server.serve_forever()
        finally:
            # Before server_close closes the socket that descriptor belongs to.
            if previous_wakeup is not None:
                signal.set_wakeup_fd(previous_wakeup)
        server.server_close()
    except KeyboardInterrupt:
        server.server_close(timeout=0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.server_close(timeout=0)
