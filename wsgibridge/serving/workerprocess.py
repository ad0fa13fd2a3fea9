"""One pre-forked worker process: its server, its line to the arbiter, when it asks to go.

Rule: what runs in a forked child lives here; the arbiter (``prefork``)
forks and calls :func:`run_worker`, which never returns into it.

Each worker talks to the arbiter over its own Unix socket pair, one line
per message.  The worker says ``ready`` once its server accepts (the
arbiter waits for it before it retires the worker a new one replaces),
``recycle REASON`` when it wants to be replaced (``--max-requests`` served,
``--max-worker-memory`` exceeded), and, with ``--reload``, ``files [...]``:
the files of the app's modules it has imported (the arbiter watches them).
With ``--metrics-bind`` the arbiter says ``metrics`` when it is scraped and
the worker answers ``metrics {JSON}``, its snapshot (``wsgibridge.metrics``)
on one line; and the worker sends that line once more, unasked, as the last
thing before it exits, so that no request it served is missing from the
sum.  The arbiter says ``retire``: the worker leaves the shared listeners to the
others, answers the requests still coming on its open connections with
``Connection: close``, and exits once they are done
(:meth:`~wsgibridge.serving.server.WSGIServer.retire`).  End-of-file on the
socket means the arbiter is gone: the worker stops.

A worker that is asked to go keeps serving (and accepting) until its
replacement accepts: the arbiter replaces it, it never leaves on its own.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import random
import select
import signal
import socket
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from .._types import WSGIApp
from ..accesslog import AccessRecord
from ..config import Config, MiB
from .reloader import app_modules, fresh_import

log = logging.getLogger("wsgibridge.server")

# The exit code of a worker whose fresh import of the app failed.
EXIT_IMPORT_FAILED = 3
# How often a worker looks at its memory (and, with --reload, its modules).
CHECK_INTERVAL = 1.0

READY, RECYCLE, FILES, RETIRE, METRICS = "ready", "recycle", "files", "retire", "metrics"


class WorkerServer(Protocol):
    """What a worker process runs (``WSGIServer`` is one)."""

    serving: threading.Event
    observers: list[Callable[[AccessRecord], None]]
    on_deadline: Callable[[], None] | None

    @property
    def stopping(self) -> bool: ...

    @property
    def wakeup_fd(self) -> int: ...

    def serve_forever(self) -> None: ...

    def request_shutdown(self) -> None: ...

    def drain(self, delay: float | None = None) -> None: ...

    def retire(self, timeout: float | None = None) -> None: ...

    def cut_short(self) -> None: ...

    def server_close(self) -> None: ...

    def metrics_snapshot(self) -> dict[str, Any]: ...


# Makes a worker's server for the app over the inherited listening sockets (in the child).
ServerFactory = Callable[[WSGIApp, list[socket.socket]], WorkerServer]


def send_line(sock: socket.socket, kind: str, text: str = "") -> bool:
    """One message on a channel; False if the other side is gone."""
    line = f"{kind} {text}" if text else kind
    try:
        sock.sendall(line.encode("utf-8", "surrogateescape") + b"\n")
    except OSError:
        return False
    return True


def resident_mib() -> float:
    """This process's resident memory in MiB (Linux: now; elsewhere: the peak so far)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MiB
    except (OSError, ValueError, IndexError):
        pass
    import resource  # POSIX; ru_maxrss is in KiB, in bytes on macOS

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MiB if sys.platform == "darwin" else 1024)


class Control:
    """The worker's side of its channel, and the limits after which it asks to be replaced."""

    def __init__(self, server: WorkerServer, channel: socket.socket, config: Config) -> None:
        self.server = server
        self.channel = channel
        self.memory_limit = config.max_worker_memory
        self.report_files = config.reload
        self.report_metrics = bool(config.metrics_bind)
        self.request_limit = 0
        if config.max_requests:
            self.request_limit = config.max_requests + random.randint(0, config.max_requests_jitter)
            server.observers.append(self.observe)
        self._served = itertools.count(1)  # next() is atomic: observers run in many threads
        self._asked = False
        self._send_lock = threading.Lock()
        self._reported: set[str] = set()
        self._modules_seen = 0

    def send(self, kind: str, text: str = "") -> None:
        with self._send_lock:
            send_line(self.channel, kind, text)

    def send_figures(self) -> None:
        """This worker's metrics snapshot, as one line of JSON (``--metrics-bind``)."""
        snapshot = self.server.metrics_snapshot()
        self.send(METRICS, json.dumps(snapshot, separators=(",", ":")))

    def observe(self, record: AccessRecord) -> None:
        """After every request (a server observer): past the limit, ask to be replaced."""
        if next(self._served) == self.request_limit:
            self.ask(f"served {self.request_limit} requests (--max-requests)")

    def ask(self, reason: str) -> None:
        if self._asked:
            return
        self._asked = True
        log.info("worker %d %s; asking to be replaced", os.getpid(), reason)
        self.send(RECYCLE, reason)

    def check(self) -> None:
        """The periodic looks: memory, and the modules imported since the last look."""
        if self.memory_limit and not self._asked:
            rss = resident_mib()
            if rss > self.memory_limit:
                self.ask(
                    f"uses {rss:.0f} MiB of resident memory (--max-worker-memory"
                    f" {self.memory_limit})"
                )
        if self.report_files and len(sys.modules) != self._modules_seen:
            self._modules_seen = len(sys.modules)
            files = set(app_modules().values()) - self._reported
            if files:
                self._reported |= files
                self.send(FILES, json.dumps(sorted(files)))

    def run(self) -> None:
        """The channel thread: say ready, then listen to the arbiter and check the limits."""
        server = self.server
        while not server.serving.wait(0.1):
            if server.stopping:
                return
        self.send(READY)
        periodic = bool(self.memory_limit or self.report_files)
        timeout = CHECK_INTERVAL if periodic else None
        if periodic:
            self.check()
        pending = b""
        while True:
            try:
                readable, _, _ = select.select([self.channel], [], [], timeout)
                data = self.channel.recv(4096) if readable else None
            except OSError:
                data = b""
            if data == b"":
                if not server.stopping:
                    log.warning("the arbiter is gone; worker %d stopping", os.getpid())
                    server.request_shutdown()
                return
            if data:
                pending += data
                *lines, pending = pending.split(b"\n")
                if self.report_metrics and METRICS.encode() in lines:
                    self.send_figures()
                if RETIRE.encode() in lines:
                    log.info("worker %d retiring: finishing its open connections", os.getpid())
                    server.retire()
                    return
            if periodic:
                self.check()


def run_worker(
    config: Config,
    make_server: ServerFactory,
    app: WSGIApp | None,
    loader: Callable[[], WSGIApp] | None,
    listeners: list[socket.socket],
    channel: socket.socket,
    masked: set[Any],
) -> int:
    """In the child: serve the inherited sockets until told to stop; the exit code.

    ``app`` None: import it anew with ``loader`` (after a reload).  SIGTERM
    stops it gracefully (again and again: systemd and a terminal signal the
    whole process group, and the arbiter relays the same signal); SIGQUIT,
    which only the arbiter sends, cuts the wait short; SIGINT, SIGHUP,
    SIGTTIN and SIGTTOU are the arbiter's to act on.
    """
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    if app is None:
        assert loader is not None, "a fresh import needs a loader"
        # An import may take a while: a stop meanwhile just ends the process.
        for signum in (signal.SIGTERM, signal.SIGQUIT):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, masked)
        try:
            app = fresh_import(loader)
        except Exception as exc:
            details = getattr(exc, "details", None)
            if isinstance(details, str):  # the CLI's AppImportError: one line, then the traceback
                tail = f"\n{details}" if details else ""
                log.error("worker %d cannot import the app: %s%s", os.getpid(), exc, tail)
            else:
                log.exception("worker %d cannot import the app", os.getpid())
            return EXIT_IMPORT_FAILED
    server = make_server(app, listeners)
    control = Control(server, channel, config)
    if config.request_deadline and config.deadline_action == "recycle":
        # After the watchdog's report: a replacement first, then this worker
        # retires once its other requests are done (nothing kills a thread).
        server.on_deadline = functools.partial(control.ask, "ran a request past the deadline")

    def stop(signum: int, frame: FrameType | None) -> None:
        # --shutdown-delay: the health path says 503 for that long first (a
        # second SIGTERM, relayed or group-wide, never postpones it).
        server.drain(config.shutdown_delay)

    def cut(signum: int, frame: FrameType | None) -> None:
        server.request_shutdown()
        server.cut_short()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGQUIT, cut)
    signal.set_wakeup_fd(server.wakeup_fd, warn_on_full_buffer=False)
    signal.pthread_sigmask(signal.SIG_SETMASK, masked)
    threading.Thread(target=control.run, name="wsgibridge-arbiter-channel", daemon=True).start()
    try:
        server.serve_forever()
    finally:
        signal.set_wakeup_fd(-1)  # before server_close closes that socket
    server.server_close()
    if control.report_metrics:
        control.send_figures()  # the last word: every request this worker served
    return 0
