"""The process entry point: ``serve()`` - logging, signals, the descriptor limit, prefork.

Rule: this is the only module that changes the process (signal handlers,
``RLIMIT_NOFILE``, logging when the program set up none or a ``log_config``
file is given (``logconfig.py``), and through
``process.py`` the directory, pid file, user and group); a server made with
``make_server`` or ``serve_in_thread`` never does.  One process serves with a
:class:`~wsgibridge.serving.server.WSGIServer` in the main thread;
``workers > 1`` hands the work to :mod:`~wsgibridge.serving.prefork`.
"""

from __future__ import annotations

import functools
import logging
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .._types import WSGIApp
from ..config import Config
from .accesssink import open_sink
from .certificates import reload_context, tls_context
from .handler import WSGIRequestHandler
from .listen import close_listener
from .logconfig import apply_log_config
from .notify import Notifier
from .prefork import serve_prefork
from .process import after_binding, before_binding, enter_directory, remove_pid_file
from .scrape import open_metrics_listeners
from .server import WSGIServer, build_config, open_listeners
from .staticfiles import StaticFiles

log = logging.getLogger("wsgibridge.server")


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


def uses_arbiter(config: Config) -> bool:
    """Whether ``serve`` runs pre-forked workers under an arbiter (even just one)."""
    return bool(
        config.workers > 1
        or config.max_requests
        or config.max_worker_memory
        or config.reload
        or (config.request_deadline and config.deadline_action == "recycle")
    )


def serve(
    app: WSGIApp,
    host: str | None = None,
    port: int | None = None,
    *,
    config: Config | None = None,
    handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
    ready: Callable[[WSGIServer], None] | None = None,
    loader: Callable[[], WSGIApp] | None = None,
    **options: Any,
) -> None:
    """Serve ``app`` until SIGINT (Ctrl-C) or SIGTERM, then stop gracefully.

    Signal handlers are installed only when called from the main thread, and the
    previous handlers are restored on return.  A second signal during the
    graceful stop cuts it short.  With ``workers > 1`` (main thread only) the
    app is served by pre-forked processes (``prefork.py``; ``ready`` is not
    called), and so it is with one worker when recycling (``max_requests``,
    ``max_worker_memory``) or ``reload`` is asked for.  ``loader`` imports
    the app anew (the command line passes one for its ``module:app``): after
    a reload (SIGHUP, or a changed file with ``reload=True``, which needs
    it) every new worker calls it, so it runs the new code.  With
    ``shutdown_delay``, the first signal drains
    (:meth:`~wsgibridge.serving.server.WSGIServer.drain`) for that long before
    the stop; under systemd (``NOTIFY_SOCKET``) the process says ``READY=1``,
    ``STOPPING=1`` and, with ``WatchdogSec=``, ``WATCHDOG=1`` (``notify.py``).
    With ``certfile``, SIGHUP also re-reads the TLS certificate and key (and
    ``ca_certs``) for the connections that come after: in the one process
    (:meth:`~wsgibridge.serving.server.WSGIServer.reload_tls`, called from
    the reactor's loop), or in the arbiter before it forks the new workers.
    A file that cannot be used is one logged line; the old certificate
    serves on.
    """
    config = build_config(config, host, port, options)
    config = enter_directory(config)  # --chdir (the CLI did it before importing the app)
    StaticFiles.from_config(config)  # a missing --static directory: said before anything binds
    if config.reload and loader is None:
        raise ValueError(
            "reload imports the app anew in each new worker: give it as module:app"
            " on the command line, or pass loader= to serve()"
        )
    if config.log_config:
        # Asked for by name: applied whatever was set up before (the CLI then
        # sets up nothing of its own).
        apply_log_config(config.log_config)
    elif not _logging_configured():
        # A script calling serve() sees what the command line shows: the start,
        # the access lines, the stop.  A program with its own logging keeps it.
        configure_logging(config.log_level, config.access_log_file)
    identity = before_binding(config)  # the user, group and pid file: checked, nothing bound
    raise_descriptor_limit(config.connection_limit)
    if uses_arbiter(config):
        if threading.current_thread() is not threading.main_thread():
            # Checked before a socket is bound: none is left behind.
            raise RuntimeError("workers > 1 needs the main thread (signals and fork)")

        # The TLS context is made here, before the forks, and made anew by the
        # arbiter as a reload begins: a broken certificate is found (and
        # logged) once, and every worker forked after gets the last good one.
        tls = [tls_context(config) if config.certfile else None]

        # The app was imported once, here, before the fork: workers share its
        # pages (after a reload, each new worker imports it with the loader).
        # --deadline-action recycle: the worker asks the arbiter for a
        # replacement (workerprocess.Control), as --max-requests does.
        def make_worker(worker_app: WSGIApp, sockets: list[socket.socket]) -> WSGIServer:
            # --metrics-bind: a worker counts; the arbiter serves the sum (prefork.py).
            server = WSGIServer(
                worker_app,
                config,
                handler_class,
                sockets=sockets,
                ssl_context=tls[0],
                metrics_sockets=(),
            )
            server.multiprocess = True  # a replacement overlaps the worker it replaces
            return server

        def use_context(context: ssl.SSLContext) -> None:
            tls[0] = context

        listeners = open_listeners(config)
        metrics_listeners: list[socket.socket] = []
        try:
            metrics_listeners = open_metrics_listeners(config)
            # Before the fork: every worker has it.
            after_binding(config, identity, [*listeners, *metrics_listeners])
        except BaseException:
            for listener in [*listeners, *metrics_listeners]:
                close_listener(listener)
            raise
        try:
            code = serve_prefork(
                config,
                app,
                make_worker,
                listeners,
                loader,
                Notifier(),
                functools.partial(reload_context, config, use_context) if config.certfile else None,
                metrics_listeners,
            )
        finally:
            remove_pid_file(config.pid_file)
        if code != 0:
            raise RuntimeError("the worker processes could not start")
        return
    server = WSGIServer(app, config, handler_class)
    try:
        # The pid file, then user and group.
        after_binding(config, identity, [*server.listeners, *server.metrics_listeners])
    except BaseException:
        server.server_close(timeout=0)
        raise
    notifier = Notifier()
    previous: dict[signal.Signals, Any] = {}
    signalled: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # No exception is raised and no lock taken here: raising KeyboardInterrupt
        # into whatever the main thread was doing can leave a lock held forever.
        if server.stop_announced:
            # A second signal: no more delay, no more waiting for requests in flight.
            server.request_shutdown()
            server.cut_short()
            return
        signalled.append(signum)
        name = signal.Signals(signum).name
        delay = config.shutdown_delay
        server.drain(delay)  # the health path fails from now on
        notifier.stopping(stop_status(delay, config.graceful_timeout))
        if delay > 0:
            log.info("received %s, health check failing; stopping in %gs", name, delay)
        else:
            log.info("received %s, stopping", name)

    def reload_certificate() -> None:
        log.info("received SIGHUP: re-reading the TLS certificate (the app is not reloaded)")
        server.reload_tls()

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        # SIGHUP's default action ends the process: `systemctl reload` must not.
        if config.certfile:
            # Files read and lines logged by the reactor's loop, not in this frame
            # (the code it interrupted may hold a lock they need).
            server.reactor.call_soon(reload_certificate)
            return
        log.warning(
            "received SIGHUP: one process has no workers to replace; serving on (for a"
            " rolling reload, run under the arbiter: --workers N, --max-requests or --reload)"
        )

    previous_wakeup = None
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
        if hasattr(signal, "SIGHUP"):
            previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
        # Every signal also writes a byte to the reactor's wake-up socket, so
        # the reactor returns to Python (and the handler runs) whichever thread
        # the kernel delivered the signal to.
        previous_wakeup = signal.set_wakeup_fd(server.wakeup_fd, warn_on_full_buffer=False)
    try:
        log.info("serving on %s", ", ".join(server.addresses))
        if notifier.watchdog_interval is not None:
            # From the reactor's thread: if the loop wedges, the pings stop.
            server.reactor.set_heartbeat(notifier.watchdog_interval, notifier.watchdog)
        notifier.ready(f"serving on {', '.join(server.addresses)}, {config.threads} threads")
        if ready is not None:
            ready(server)
        try:
            server.serve_forever()
            if not signalled:  # stopped by the app or another thread: systemd still hears it
                notifier.stopping(stop_status(0, config.graceful_timeout))
        finally:
            # Before server_close closes the socket that descriptor belongs to.
            if previous_wakeup is not None:
                signal.set_wakeup_fd(previous_wakeup)
        server.server_close()
    except KeyboardInterrupt:
        notifier.stopping("stopping")
        server.server_close(timeout=0)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        server.server_close(timeout=0)
        remove_pid_file(config.pid_file)


def stop_status(delay: float, grace: float) -> str:
    """The ``STATUS=`` text of a stop that begins now."""
    if delay > 0:
        return f"stopping: draining for {delay:g}s, then up to {grace:g}s for requests in flight"
    return f"stopping: up to {grace:g}s for requests in flight"
