"""``--workers N``: pre-forked processes serving the same listening sockets.

Strategy: the parent (the *arbiter*) binds the listening sockets once and
forks N workers, which inherit them; the kernel hands each new connection to
one of the processes waiting in ``accept``, so every core serves.  Each
worker is an ordinary server over the inherited sockets, with its own
thread pool, made by the callable the arbiter is given (it never imports
the server module).  The arbiter serves nothing: it
replaces a worker that dies, and on SIGTERM or SIGINT it asks every worker
to stop gracefully (they finish their requests in flight), waits for them
up to ``graceful_timeout`` plus a margin, then kills what is left.

The app is imported once, in the arbiter, before the fork, so workers share
its memory pages until they write to them.  A worker notices the arbiter's
death through a pipe (no polling): when the arbiter is gone, the pipe's
write end closes and the worker stops.

Only the main thread of a process without other threads may fork safely;
``serve`` checks the first, and the arbiter starts no threads.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from ..config import Config
from .accesssink import flush_all
from .listen import close_listener, listener_address
from .notify import Notifier

log = logging.getLogger("wsgibridge.server")

# A worker that dies this soon after it started did not boot; after
# MAX_BOOT_FAILURES of those in a row the arbiter gives up.
BOOT_SECONDS = 2.0
MAX_BOOT_FAILURES = 5
# Blocked across a fork (see Arbiter._spawn).
WORKER_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD}
# Time beyond graceful_timeout a worker gets to exit before it is killed.
KILL_MARGIN = 5.0


class WorkerServer(Protocol):
    """What a worker process runs (``WSGIServer`` is one)."""

    @property
    def stopping(self) -> bool: ...

    @property
    def wakeup_fd(self) -> int: ...

    def serve_forever(self) -> None: ...

    def request_shutdown(self) -> None: ...

    def drain(self, delay: float | None = None) -> None: ...

    def cut_short(self) -> None: ...

    def server_close(self) -> None: ...


# Makes a worker's server over the inherited listening sockets (in the child).
ServerFactory = Callable[[list[socket.socket]], WorkerServer]


class Arbiter:
    """Fork ``config.workers`` servers over shared sockets and keep them running."""

    def __init__(
        self,
        config: Config,
        make_server: ServerFactory,
        sockets: list[socket.socket],
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        # systemd talks to the arbiter (its main process), never to the workers.
        self.notifier = notifier if notifier is not None else Notifier({})
        self.make_server = make_server
        self.listeners = sockets
        self.workers: dict[int, float] = {}  # pid -> start time
        self._stopping = False
        self._boot_failures = 0
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)
        # Workers read this pipe: end-of-file means the arbiter is gone.
        self._alive_r, self._alive_w = os.pipe()

    @property
    def addresses(self) -> list[str]:
        return [listener_address(listener) for listener in self.listeners]

    # -- the arbiter's loop --------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code (1 if workers cannot boot)."""
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        }
        code = 0
        try:
            log.info(
                "serving on %s with %d worker processes",
                ", ".join(self.addresses),
                self.config.workers,
            )
            for _ in range(self.config.workers):
                self._spawn()
            # The sockets listen, the app is imported, every worker is forked.
            self.notifier.ready(
                f"serving on {', '.join(self.addresses)} with {self.config.workers} workers,"
                f" {self.config.threads} threads each"
            )
            beat = self.notifier.watchdog_interval
            while not self._stopping:
                self._wait_for_signal(beat)
                if beat is not None:
                    self.notifier.watchdog()  # from this loop: a wedged arbiter stops them
                self._reap()
                if self._boot_failures >= MAX_BOOT_FAILURES:
                    log.error("workers keep dying at start; giving up")
                    code = 1
                    break
                while not self._stopping and len(self.workers) < self.config.workers:
                    self._spawn()
        finally:
            self._stop_workers()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in (self._signal_r, self._signal_w, self._alive_r, self._alive_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            if self._stopping:
                # A second signal: the workers stop waiting for requests in flight.
                for pid in list(self.workers):
                    _kill(pid, signal.SIGQUIT)
            else:
                self._stopping = True
                log.info("received %s, stopping the workers", signal.Signals(signum).name)
                delay = self.config.shutdown_delay
                draining = f", draining for {delay:g}s" if delay > 0 else ""
                self.notifier.stopping(f"stopping {len(self.workers)} workers{draining}")
        try:
            os.write(self._signal_w, b"x")
        except OSError:
            pass

    def _wait_for_signal(self, timeout: float | None) -> None:
        try:
            select.select([self._signal_r], [], [], timeout)
            while os.read(self._signal_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _reap(self) -> None:
        """Collect exited workers; count the ones that died while booting."""
        booting_died = False
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.workers.clear()
                break
            if pid == 0:
                break
            started = self.workers.pop(pid, None)
            if started is None or self._stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            log.warning("worker %d exited (%s); starting another", pid, _describe(code))
            if time.monotonic() - started < BOOT_SECONDS:
                self._boot_failures += 1
                booting_died = True
            else:
                self._boot_failures = 0
        if booting_died and self._boot_failures < MAX_BOOT_FAILURES:
            # Don't spin if the app cannot start (the delay is after the
            # collection, so it cannot make a boot failure look like a boot).
            time.sleep(min(0.1 * 2**self._boot_failures, 2.0))

    def _stop_workers(self) -> None:
        # Our copies of the listeners go first: once the workers close theirs,
        # new clients are refused instead of queueing where nobody accepts.
        for listener in self.listeners:
            close_listener(listener)
        for pid in self.workers:
            _kill(pid, signal.SIGTERM)
        config = self.config
        deadline = time.monotonic() + config.shutdown_delay + config.graceful_timeout + KILL_MARGIN
        while self.workers and time.monotonic() < deadline:
            self._wait_for_signal(min(deadline - time.monotonic(), 0.5))
            self._reap()
        for pid in list(self.workers):
            log.warning("worker %d did not stop in time; killing it", pid)
            _kill(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.workers.pop(pid, None)

    # -- a worker ------------------------------------------------------------------------

    def _spawn(self) -> None:
        # Signals stay blocked across the fork until each side has its own
        # handlers: a SIGTERM for a just-forked worker must not run the
        # arbiter's handler there (and be lost).
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        pid = os.fork()
        if pid:
            self.workers[pid] = time.monotonic()
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)
            return
        code = 1
        try:
            code = self._worker(masked)
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            try:
                flush_all()  # os._exit skips logging.shutdown(): write the last access lines
            finally:
                os._exit(code)  # whatever happens, the child never returns into the arbiter

    def _worker(self, masked: set[int | signal.Signals]) -> int:
        """In the child: serve the inherited sockets until told to stop.

        SIGTERM stops it gracefully (again and again: systemd and a terminal
        signal the whole process group, and the arbiter relays the same
        signal); SIGQUIT, which only the arbiter sends, cuts the wait short;
        SIGINT is the arbiter's to relay (Ctrl-C reaches every process).
        """
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.close(self._signal_r)
        os.close(self._signal_w)
        os.close(self._alive_w)  # only the arbiter holds the write end
        server = self.make_server(list(self.listeners))

        def stop(signum: int, frame: FrameType | None) -> None:
            # --shutdown-delay: the health path says 503 for that long first (a
            # second SIGTERM, relayed or group-wide, never postpones it).
            server.drain(self.config.shutdown_delay)

        def cut(signum: int, frame: FrameType | None) -> None:
            server.request_shutdown()
            server.cut_short()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGQUIT, cut)
        signal.set_wakeup_fd(server.wakeup_fd, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_SETMASK, masked)
        threading.Thread(
            target=self._watch_arbiter, args=(server,), name="wsgibridge-arbiter-watch", daemon=True
        ).start()
        try:
            server.serve_forever()
        finally:
            signal.set_wakeup_fd(-1)  # before server_close closes that socket
        server.server_close()
        return 0

    def _watch_arbiter(self, server: WorkerServer) -> None:
        """Stop the worker when the arbiter dies (its end of the pipe closes)."""
        try:
            while os.read(self._alive_r, 1):
                pass
        except OSError:
            pass
        if not server.stopping:
            log.warning("the arbiter is gone; worker %d stopping", os.getpid())
            server.request_shutdown()


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def serve_prefork(
    config: Config,
    make_server: ServerFactory,
    sockets: list[socket.socket],
    notifier: Notifier | None = None,
) -> int:
    """Run an :class:`Arbiter` in the main thread; returns its exit code."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("workers > 1 needs the main thread (signals and fork)")
    return Arbiter(config, make_server, sockets, notifier).run()
