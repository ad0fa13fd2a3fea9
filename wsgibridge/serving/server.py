"""The server: a reactor thread, a worker pool and the connections between them, wired.

Rule: ``WSGIServer`` wires and answers; the work is done by its parts, each
owned by one kind of thread.  It binds every listening socket when it is
made (port 0 gives a real port at once); ``serve_forever`` runs the
:class:`~wsgibridge.serving.reactor.Reactor` in the calling thread;
:class:`~wsgibridge.serving.pool.WorkerPool` threads accept (with epoll)
and serve the connections that
:class:`~wsgibridge.serving.connection.Connections` parks (idle clients
hold a file descriptor, never a thread).  A stream of small requests
on many connections is so served by one thread back to back; the reactor
only steps in when work waits behind workers that are all busy.

Stopping (:meth:`WSGIServer.stop`): the listeners close at once (the
clients already in their backlog are accepted first and served), parked
connections close at once, requests in flight finish and their responses
say ``Connection: close``; after ``graceful_timeout`` the remaining sockets
are shut down under their threads.  :meth:`WSGIServer.drain` comes before
that for a load balancer: the health path answers 503 and responses close
their connections while the server goes on serving for ``delay`` seconds.
Nothing polls: every wait is on an event or a condition, so an idle server
stops in milliseconds.  Only
:func:`~wsgibridge.serving.run.serve` installs signal handlers; a server
made with ``make_server`` never touches the host program's signals.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .._types import WSGIApp
from ..accesslog import AccessLogFormat, AccessRecord
from ..config import Config
from ..http.trusted import TrustedProxies
from .accesssink import flush_all
from .binds import parse_bind
from .certificates import reload_context, tls_context
from .connection import Connections
from .handler import WSGIRequestHandler
from .listen import close_listener, listener_address, open_bind, systemd_listeners
from .metrics import ServerMetrics, exposition
from .pool import WorkerPool
from .reactor import Reactor
from .readiness import HAS_EPOLL, ready_source
from .scrape import MetricsEndpoint, MetricsThread, open_metrics_listeners
from .staticfiles import StaticFiles
from .stream import prepare_listener
from .watchdog import RequestWatchdog

log = logging.getLogger("wsgibridge.server")

# After the sockets of requests still running past the graceful timeout are
# shut down, how long their threads get to notice before stop returns.
THREAD_MARGIN = 0.1
# How soon the main thread notices a signal while it waits for requests in flight.
SIGNAL_LATENCY = 0.05
# How long a retiring server waits at least, so that a worker woken for a new
# client just before the listeners left its poller can still accept it; then
# it looks once for a client nobody else was woken for.
RETIRE_SETTLE = 0.05


class WSGIServer:
    """A bound HTTP server that runs ``app`` for each request; serve with ``serve_forever``.

    ``sockets`` are pre-bound listening sockets to serve instead of
    ``config.binds`` (and are closed, never unlinked, when the server stops);
    ``ssl_context`` serves HTTPS with a context of your own instead of one
    made from ``config.certfile``; ``use_epoll=False`` makes workers wait on
    parked connections through the reactor's poll() instead of an epoll of
    their own (the fallback where there is no epoll).  With
    ``config.metrics_bind`` the server counts its requests and serves
    ``GET /metrics`` on listeners of its own (``metrics_addresses``) from a
    thread of its own while it serves; ``metrics_sockets`` are pre-bound
    ones to serve instead (and closed when the server stops); an empty
    ``metrics_sockets`` with ``metrics_bind``: count, and let someone else
    serve the figures (``metrics_snapshot()``), as a ``--workers`` process does.
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
        use_epoll: bool | None = None,
        metrics_sockets: Iterable[socket.socket] | None = None,
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
        # Read by each new connection as its handshake begins: reload_tls() (or
        # code of your own) swaps it whole, the connections open keep theirs.
        self.ssl_context = ssl_context
        self._tls_lock = threading.Lock()  # one reload_tls at a time
        self.url_scheme = config.url_scheme or ("https" if ssl_context else "http")
        # --static: resolved now, before a socket is bound (a missing directory
        # is a ConfigError); the handlers answer under these prefixes themselves.
        self.static = StaticFiles.from_config(config)
        self.trusted_proxies = TrustedProxies(config.forwarded_allow_ips)
        self.access_format = AccessLogFormat(config.access_log_format, config.access_log_fields)
        # Called with an AccessRecord after every request (the pytest plugin's
        # request log uses this); add before serving, from any thread.
        self.observers: list[Callable[[AccessRecord], None]] = []
        # Requests begun, counted only while there are observers: a request's
        # record is made after its response is sent, so an observer that is
        # read by the client (the plugin's request log) waits for this count.
        self.requests_begun = 0
        self._begun_lock = threading.Lock()
        # With request_deadline, the watchdog logs each request that runs longer
        # (watchdog.py); the handlers write its table.  on_deadline is then called,
        # in the reactor, after each such request is logged (serve() sets it to
        # recycle a --workers process with deadline_action="recycle").
        self.on_deadline: Callable[[], None] | None = None
        self.watchdog: RequestWatchdog | None = None
        self.watched: dict[int, WSGIRequestHandler] | None = None
        if config.request_deadline:
            self.watchdog = RequestWatchdog(config.request_deadline, self._deadline_passed)
            self.watched = self.watchdog.requests
        # A plain flag, not an Event: it is set from signal handlers, which
        # must take no lock (the interrupted code may hold it).
        self._stopping = False
        # Every response closes its connection from now on: the stop is coming
        # (drain(), or under way), or this process hands its clients over to
        # the others (retire()).  Plain flags too.
        self.draining = False
        # The stop is coming: --health-path answers 503 (not while only
        # retiring: the processes that stay go on serving).
        self.stop_announced = False
        # Set once serve_forever is accepting (for code that starts it in a thread).
        self.serving = threading.Event()
        self._closed = False  # released for good (set at the end of server_close)
        self._cut_at = float("inf")  # when server_close stops waiting for requests
        self._cut = False  # cut_short(): stop waiting now
        self.listeners = list(sockets) if sockets is not None else open_listeners(config)
        # --metrics-bind: every request counted (metrics.py), the figures served
        # on listeners of their own by a thread of their own (scrape.py).
        self.started_at = time.time()
        self.metrics: ServerMetrics | None = None
        self.metrics_listeners: list[socket.socket] = []
        self._metrics_thread: MetricsThread | None = None
        if config.metrics_bind or metrics_sockets:
            self.metrics = ServerMetrics()
            if metrics_sockets is None:
                try:
                    metrics_sockets = open_metrics_listeners(config)
                except BaseException:
                    if sockets is None:
                        for listener in self.listeners:
                            close_listener(listener)
                    raise
            self.metrics_listeners = list(metrics_sockets)
            if self.metrics_listeners:
                endpoint = MetricsEndpoint(self.metrics_listeners, self.metrics_text)
                self._metrics_thread = MetricsThread(endpoint)
        self.metrics_addresses = [listener_address(s) for s in self.metrics_listeners]
        for listener in self.listeners:
            listener.setblocking(False)
        inherited = [prepare_listener(listener, config) for listener in self.listeners]
        self.socket_options_inherited = bool(inherited) and all(inherited)
        # Remembered now: they stay true after the listeners close.
        self.addresses = [listener_address(listener) for listener in self.listeners]
        tcp = [
            listener.getsockname()[:2]
            for listener in self.listeners
            if listener.family in (socket.AF_INET, socket.AF_INET6)
        ]
        self.host: str = str(tcp[0][0]) if tcp else ""
        self.port: int = int(tcp[0][1]) if tcp else 0
        # One listener on one address: every connection's local address is its
        # address (a wildcard one is asked per connection: any interface).
        self._fixed_local: tuple[str, str] | None = None
        if len(self.listeners) == 1 and len(tcp) == 1:
            address = ipaddress.ip_address(self.host.partition("%")[0])
            if not address.is_unspecified:
                self._fixed_local = (self.host, str(self.port))
        epoll = HAS_EPOLL if use_epoll is None else use_epoll
        self.reactor = Reactor(self, self.listeners, epoll)
        # Parked connections (and the listeners): in an epoll the workers wait
        # on themselves, or (without epoll) in the reactor's poller, which
        # accepts and hands them over.
        source = ready_source(epoll)
        self.connections = Connections(self, self.reactor.poller, source, self.reactor)
        self.pool = WorkerPool(config.threads, source, self.connections.serve_fd, self.reactor.wake)
        self.reactor.attach(self.connections, self.pool, self.watchdog)

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
        return self.reactor.waker.write_fd

    @property
    def stopping(self) -> bool:
        return self._stopping

    def local_address(self, sock: socket.socket) -> tuple[str, str]:
        """(SERVER_NAME, SERVER_PORT) for a connection: the address it came in on."""
        if self._fixed_local is not None:
            return self._fixed_local
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            name, port = sock.getsockname()[:2]
            return str(name), str(port)
        return "localhost", "443" if self.ssl_context else "80"

    @property
    def metrics_url(self) -> str:
        """``http://host:port/metrics`` for the first TCP metrics listener ("" if none)."""
        for address in self.metrics_addresses:
            if not address.startswith("unix:"):
                return f"http://{address}/metrics"
        return ""

    def metrics_snapshot(self) -> dict[str, Any]:
        """The figures now, as a mergeable snapshot (``metrics.merge``); metrics_bind only."""
        if self.metrics is None:
            raise RuntimeError("this server counts nothing: no metrics_bind")
        return self.metrics.snapshot(self.connections.table, self.pool)

    def metrics_text(self) -> str:
        """The figures now in the Prometheus text format (what ``GET /metrics`` answers)."""
        return exposition(self.metrics_snapshot(), self.started_at)

    def _deadline_passed(self) -> None:
        if self.on_deadline is not None:
            self.on_deadline()

    def note_request(self) -> None:
        """Count a request that will be recorded (called by the handler, with observers only)."""
        with self._begun_lock:
            self.requests_begun += 1

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    def reload_tls(self) -> bool:
        """Re-read ``certfile``, ``keyfile`` and ``ca_certs``: True once new connections use them.

        A new context is made from the files as they are now and swapped in
        whole; connections already open keep the one they began with.  A
        file that cannot be used (missing, unreadable, not PEM, a key that
        does not match the certificate) is logged as one line on
        ``wsgibridge.server`` and the context in use is kept: False.  Safe
        from any thread, never from a signal handler (it reads files and
        logs); :func:`~wsgibridge.serving.run.serve` calls it on SIGHUP.
        A server without ``config.certfile`` (plain HTTP, or an
        ``ssl_context`` of your own: assign a new one to
        :attr:`ssl_context` instead) raises ``RuntimeError``.
        """
        if not self.config.certfile:
            raise RuntimeError(
                "reload_tls re-reads config.certfile, and this server has none (a server"
                " given its own ssl_context takes a new one by assignment)"
            )
        with self._tls_lock:
            return reload_context(self.config, self._use_context)

    def _use_context(self, context: ssl.SSLContext) -> None:
        self.ssl_context = context

    # -- serving ---------------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept and dispatch connections until :meth:`shutdown` (``poll_interval`` is unused)."""
        if self._closed or self._stopping:
            return
        thread = self._metrics_thread
        if thread is not None and not thread.started:
            thread.start()
            log.info("metrics: GET /metrics on %s", ", ".join(self.metrics_addresses))
        self.reactor.run()

    # -- stopping --------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Ask the server to stop, without waiting: safe from a signal handler.

        It only sets a flag and wakes the reactor (no lock is taken: the code a
        signal interrupts may hold one).  Whoever notices the stop first - the
        reactor, or a worker about to close a connection because of it -
        closes the listeners, so new clients are refused from then on.
        """
        self.draining = self.stop_announced = True
        self._stopping = True
        self.reactor.wake()

    def retire(self, timeout: float | None = None) -> None:
        """Leave the listeners to the other processes sharing them, then stop: blocking.

        For a pre-forked worker being replaced (call it from a thread of its
        own, never a signal handler).  New clients go to the processes still
        accepting; the connections already open are served on, each response
        saying ``Connection: close``, so a keep-alive client is told before its
        connection ends instead of finding it closed; an idle one closes at
        its own keep-alive deadline, as it would have anyway.  Once none is
        open, or after ``timeout`` seconds (default: the keep-alive timeout),
        the server stops as on :meth:`request_shutdown`.
        """
        self.draining = True
        self.reactor.stop_listening()
        if timeout is None:
            # Not sooner: a client reusing an idle connection before its
            # keep-alive deadline would find it closed (a load balancer's 502).
            timeout = self.config.keepalive_timeout + RETIRE_SETTLE
        start = time.monotonic()
        deadline = start + timeout
        changed = self.connections.changed
        table = self.connections.table
        looked = False
        while not self._stopping:
            settled = time.monotonic() - start >= RETIRE_SETTLE
            if settled and not looked:
                # A client whose wake-up this process got just before it left
                # the poller would wait for the next arrival: served here.
                # Once: a client arriving later wakes a process still
                # accepting, and looking again would take clients from them.
                looked = True
                for conn in self.reactor.take_waiting():
                    self.connections.add(conn)
            with changed:
                left = deadline - time.monotonic()
                if (not table and settled) or left <= 0:
                    break
                changed.wait(min(left, RETIRE_SETTLE))
        self.request_shutdown()

    def drain(self, delay: float | None = None) -> None:
        """Announce the stop, then begin it after ``delay`` seconds: safe from a signal handler.

        At once, ``health_path`` answers 503 and every response says
        ``Connection: close`` (a keep-alive client moves to a new connection,
        which the load balancer sends elsewhere), while the server goes on
        accepting and serving; after ``delay`` (default ``shutdown_delay``)
        the reactor calls :meth:`request_shutdown`.  A later call never
        postpones the stop; ``delay`` 0 stops now.  The delay is kept by the
        reactor: it elapses only while ``serve_forever`` runs.
        """
        if delay is None:
            delay = self.config.shutdown_delay
        self.draining = self.stop_announced = True
        if delay <= 0 or self._stopping:
            self.request_shutdown()
            return
        reactor = self.reactor
        reactor.stop_at = min(reactor.stop_at, time.monotonic() + delay)
        reactor.wake()

    def cut_short(self) -> None:
        """Stop waiting for requests in flight (a second Ctrl-C): safe from a signal handler."""
        self._cut = True  # a flag of its own: server_close may be assigning _cut_at
        self.reactor.wake()
        # Waking the thread waiting in server_close takes the condition's lock,
        # which a signal handler must not: a short-lived thread does it.
        threading.Thread(target=self._notify_waiters, name="wsgibridge-stop", daemon=True).start()

    def _notify_waiters(self) -> None:
        changed = self.connections.changed
        with changed:
            changed.notify_all()

    def shutdown(self) -> None:
        """Stop the reactor and wait until ``serve_forever`` has returned."""
        self.request_shutdown()
        self.reactor.close_listeners()
        self.reactor.loop_done.wait()

    def server_close(self, timeout: float | None = None) -> None:
        """Finish in-flight requests (up to ``timeout`` s, default ``graceful_timeout``), close all.

        Safe to call from any thread, several times, with or without a
        running ``serve_forever``.
        """
        if self._closed:
            return
        grace = self.config.graceful_timeout if timeout is None else timeout
        changed = self.connections.changed
        table = self.connections.table
        with changed:
            # A call with a shorter timeout (from another thread) cuts the wait
            # of an earlier one short.
            self._cut_at = min(self._cut_at, time.monotonic() + grace)
            changed.notify_all()
        self.request_shutdown()
        self.reactor.close_listeners()
        if self.reactor.loop_thread != threading.get_ident():
            # (In the loop's own thread the loop is over: serve_forever was left,
            # perhaps by an exception before it could say so.)
            self.reactor.loop_done.wait()
        self.connections.close_idle()
        # Python runs signal handlers in the main thread only when it executes
        # bytecode; a signal arriving while it blocks in a lock would wait for
        # the lock.  So the main thread waits in short slices (a second Ctrl-C
        # is acted on within SIGNAL_LATENCY); completions still wake it at once.
        slice_ = SIGNAL_LATENCY if threading.current_thread() is threading.main_thread() else None
        with changed:
            waited = len(table)
            if waited:
                log.info("stopping: waiting up to %gs for %d request(s) in flight", grace, waited)
            while table and not self._cut and time.monotonic() < self._cut_at:
                left = self._cut_at - time.monotonic()
                changed.wait(left if slice_ is None else min(left, slice_))
            deadline = time.monotonic() if self._cut else self._cut_at
            busy = list(table.values())
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
        self.pool.stop(timeout=max(deadline - time.monotonic(), 0.0) + THREAD_MARGIN)
        for conn in busy:
            # A request stuck in the app never writes its access line: written here,
            # with what was sent (a thread that returned wrote its own).
            handler = conn.handler
            if handler is not None:
                handler.log_cut_off()
        for conn in list(table.values()):
            # Whatever is left is closed, never leaked (a thread still stuck in the
            # app gets EBADF from the closed socket object, not someone else's fd).
            self.connections.forget(conn)
        self.reactor.close_listeners()
        self.reactor.close()
        self.connections.source.close()
        flush_all()  # the access lines of the last requests, on disk when the stop returns
        if self._metrics_thread is not None:
            self._metrics_thread.stop()  # scraped until here: the stop's figures too
        self._closed = True

    def stop(self, timeout: float | None = None, *, delay: float = 0.0) -> None:
        """Stop gracefully and release everything: ``shutdown()`` then ``server_close()``.

        ``delay`` > 0: :meth:`drain` first and wait that long while
        ``serve_forever`` serves on (in another thread) with the health path
        answering 503 - the embedded form of ``--shutdown-delay``.
        """
        loop = self.reactor.loop_thread
        if delay > 0 and not self._closed and loop is not None and loop != threading.get_ident():
            self.drain(delay)
            # In slices in the main thread, so a signal handler there can run.
            while not self.reactor.loop_done.wait(SIGNAL_LATENCY):
                pass
        self.server_close(timeout)

    def __enter__(self) -> WSGIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server_close()


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
    use_epoll: bool | None = None,
    metrics_sockets: Iterable[socket.socket] | None = None,
    **options: Any,
) -> WSGIServer:
    """A server bound and listening on ``host:port`` (port 0 picks one), not yet serving.

    Options are :class:`~wsgibridge.config.Config` fields (``threads=16``,
    ``bind=("unix:/run/app.sock",)`` …).  Call ``serve_forever()`` to serve,
    then ``stop()`` (from another thread, or after ``shutdown()``).
    """
    config = build_config(config, host, port, options)
    return WSGIServer(
        app,
        config,
        handler_class,
        sockets=sockets,
        ssl_context=ssl_context,
        use_epoll=use_epoll,
        metrics_sockets=metrics_sockets,
    )


def build_config(config: Config | None, host: str | None, port: int | None, options: Any) -> Config:
    """``config`` (or the defaults) with ``host``, ``port`` and other fields replaced."""
    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    base = config or Config()
    return base.replace(**options) if options else base
