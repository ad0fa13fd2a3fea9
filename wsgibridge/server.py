"""The listening server: bind, accept, hand connections to a capped set of threads, stop.

Strategy: ``make_server`` binds and listens before it returns, so port 0 gives a
real port at once.  ``serve_forever`` waits on the listening socket *and* a
wake-up socket, so ``shutdown`` returns as soon as the loop has seen it (no
0.5 s poll as in ``socketserver``).  At most ``config.threads`` connections are
served at once; the accept loop stops accepting while all threads are busy, so
further clients wait in the kernel's listen backlog.

Stopping (``server_close``): the listener is closed, idle keep-alive
connections are shut down at once, connections with a request in flight get
``config.graceful_timeout`` seconds to finish, then the rest are cut.  Only
``serve()`` installs signal handlers; a server made with ``make_server`` never
touches the host program's signals.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

from .config import Config
from .handler import WSGIRequestHandler
from .response import WSGIApp

log = logging.getLogger("wsgibridge.server")


class WSGIServer(socketserver.TCPServer):
    """A bound, listening HTTP server that runs ``app`` for each request."""

    allow_reuse_address = True
    multithread = True

    def __init__(
        self,
        app: WSGIApp,
        config: Config | None = None,
        handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
    ) -> None:
        self.app = app
        self.config = config = config if config is not None else Config()
        self.limits = config.limits
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.request_queue_size = config.backlog
        self._lock = threading.Condition()
        self._active = 0  # connections handed to a thread and not yet finished
        self._connections: dict[socket.socket, bool] = {}  # socket -> idle?
        self._stopping = threading.Event()
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._closed = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__((config.host, config.port), handler_class, bind_and_activate=False)
        try:
            self.server_bind()
            self.server_activate()
        except BaseException:
            self.socket.close()
            self._wake_r.close()
            self._wake_w.close()
            raise
        self._pool = ThreadPoolExecutor(
            max_workers=config.threads, thread_name_prefix="wsgibridge-worker"
        )

    def server_bind(self) -> None:
        """Bind without ``HTTPServer``'s reverse-DNS lookup of the host name."""
        if self.address_family == socket.AF_INET6:
            # "::" serves IPv4 too where the OS allows it (dual stack).
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
        address = self.socket.getsockname()
        self.server_name: str = str(address[0])
        self.server_port: int = int(address[1])

    # -- facts -----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.server_name

    @property
    def port(self) -> int:
        return self.server_port

    @property
    def url(self) -> str:
        """``http://host:port/`` for the bound address (IPv6 in brackets)."""
        host = self.server_name
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.server_port}/"

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- the accept loop ---------------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Accept and dispatch connections until :meth:`shutdown` (``poll_interval`` is unused)."""
        self._loop_done.clear()
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self.socket, selectors.EVENT_READ)
                selector.register(self._wake_r, selectors.EVENT_READ)
                while not self._stopping.is_set():
                    with self._lock:
                        while self._active >= self.config.threads and not self._stopping.is_set():
                            self._lock.wait()
                    if self._stopping.is_set():
                        break
                    ready = selector.select()
                    if self._stopping.is_set():
                        break
                    if any(key.fileobj is self.socket for key, _ in ready):
                        self._accept()
        finally:
            self._loop_done.set()

    def _accept(self) -> None:
        try:
            sock, address = self.socket.accept()
        except OSError:
            # The client gave up before we accepted (ECONNABORTED and friends);
            # nothing to clean up, keep serving.
            return
        with self._lock:
            self._active += 1
            self._connections[sock] = False
        try:
            self._pool.submit(self._serve_connection, sock, address)
        except RuntimeError:  # the pool was shut down under us
            self._forget(sock)
            sock.close()

    def _serve_connection(self, sock: socket.socket, address: Any) -> None:
        try:
            self.finish_request(sock, address)
        except Exception:
            log.exception("unexpected error serving %s", address)
        finally:
            self._forget(sock)
            self.shutdown_request(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.pop(sock, None)
            self._active -= 1
            self._lock.notify_all()

    def mark_idle(self, sock: socket.socket, idle: bool) -> None:
        """Called by the handler around its wait for the next keep-alive request."""
        with self._lock:
            if sock in self._connections:
                self._connections[sock] = idle
        if idle and self._stopping.is_set():
            _shutdown_socket(sock)

    # -- stopping --------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Ask the accept loop to stop, without waiting (safe from a signal handler)."""
        self._stopping.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        with self._lock:
            self._lock.notify_all()

    def shutdown(self) -> None:
        """Stop the accept loop and wait until it has returned."""
        self.request_shutdown()
        self._loop_done.wait()

    def server_close(self, timeout: float | None = None) -> None:
        """Close the listener and every connection; requests in flight may finish first.

        ``timeout`` overrides ``config.graceful_timeout``.
        """
        if self._closed:
            return
        self._closed = True
        self.request_shutdown()
        self._loop_done.wait()
        super().server_close()
        grace = self.config.graceful_timeout if timeout is None else timeout
        deadline = time.monotonic() + grace
        with self._lock:
            for sock, idle in list(self._connections.items()):
                if idle:
                    _shutdown_socket(sock)
            while self._active > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            for sock in list(self._connections):
                _shutdown_socket(sock)
        self._pool.shutdown(wait=True)
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> WSGIServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server_close()


def _shutdown_socket(sock: socket.socket) -> None:
    """Wake any thread blocked on ``sock`` by shutting it down (never ``close`` across threads)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def make_server(
    app: WSGIApp,
    host: str | None = None,
    port: int | None = None,
    *,
    config: Config | None = None,
    handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
    **options: Any,
) -> WSGIServer:
    """A server bound and listening on ``host:port`` (port 0 picks one), not yet serving.

    Options are :class:`~wsgibridge.config.Config` fields (``threads=16``,
    ``timeout=10`` …).  Call ``serve_forever()`` to serve, ``shutdown()`` from
    another thread to stop, then ``server_close()``.
    """
    if host is not None:
        options["host"] = host
    if port is not None:
        options["port"] = port
    config = (config or Config()).replace(**options) if options else (config or Config())
    return WSGIServer(app, config, handler_class)


def serve(
    app: WSGIApp,
    host: str | None = None,
    port: int | None = None,
    *,
    config: Config | None = None,
    ready: Callable[[WSGIServer], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` until SIGINT (Ctrl-C) or SIGTERM, then stop gracefully.

    Signal handlers are installed only when called from the main thread, and the
    previous handlers are restored on return.  A second signal during the
    graceful stop cuts it short.
    """
    server = make_server(app, host, port, config=config, **options)
    previous: dict[signal.Signals, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if server.stopping:
            raise KeyboardInterrupt
        log.info("received %s, stopping", signal.Signals(signum).name)
        server.request_shutdown()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        log.info("serving on %s", server.url)
        if ready is not None:
            ready(server)
        server.serve_forever()
        server.server_close()
    except KeyboardInterrupt:
        server.server_close(timeout=0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.server_close(timeout=0)
