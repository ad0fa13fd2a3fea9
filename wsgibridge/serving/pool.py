"""``WorkerPool``: threads that take ready work themselves, one of them waiting at a time.

Rule: the pool knows nothing about HTTP.  Work is a file descriptor that a
:class:`ReadySource` reports ready (the server's parked connections); the
pool calls ``serve(fd)`` for it on one of its threads, and ``serve``
returns as soon as the connection has nothing more to do right now.

Why not N threads waiting on one queue: under CPython's GIL, a thread woken
for every request spends more time handing the GIL to and fro than serving
(it was most of the cost of a small keep-alive request).  So:

* at most one idle worker, the *leader*, waits on the source; the other idle
  workers sleep, each on a lock of its own;
* a worker that finishes a job takes the next ready descriptor itself,
  without blocking, so a stream of small requests on many connections is
  served by one thread back to back, with no thread switch at all;
* work must not wait behind busy workers while the CPU has time to spare:
  while any worker is busy, the server's reactor calls :meth:`watch` every
  :data:`STUCK_AFTER` seconds, and if work is waiting and nobody leads, one
  sleeping worker is woken - at once if the process is not using most of a
  CPU (the busy workers wait on sockets, a database…), else once no job has
  started for that long.  Workers blocked in slow applications or slow
  clients thus gain company within a millisecond each, up to the pool's
  size;
* and extra workers go back to sleep when they only compete for the GIL: a
  worker whose job was short goes to sleep while another worker is awake
  and the process is already using most of a CPU (``watch`` measures it).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("wsgibridge.server")

# How long waiting work may go untaken while every worker is busy before a
# sleeping worker is woken for it (see the module docstring).
STUCK_AFTER = 0.001
# The process counts as CPU-bound above this share of one CPU, measured over
# windows of at least CPU_WINDOW seconds.
CPU_BOUND_SHARE = 0.7
CPU_WINDOW = 0.01
# After the last job started, how long watch() goes on being called (so a busy
# but not saturated server does not wake the reactor for every request).
WATCH_GRACE = 0.1
# How often watch() looks while the process is CPU-bound: another thread would
# only share the GIL then, so a long job is given more time before company
# (as long as CPython's own switch interval), and the looking costs less.
CPU_BOUND_WATCH = 0.005


class ReadySource(Protocol):
    """Where ready descriptors come from (the server's parked connections)."""

    def poll(self, timeout: float | None) -> int | None:
        """One ready descriptor, waiting up to ``timeout`` s (None: until one, or interrupted).

        One at a time: what no worker has taken stays in the source, where the
        leader and :meth:`pending` see it, never stranded in a busy worker's hands.
        """

    def pending(self) -> bool:
        """True if a descriptor is ready now (nothing is taken)."""

    def interrupt(self) -> None:
        """Make every ``poll``, present and future, return at once (the pool is stopping)."""


_ASYNC_SIGNALS = {
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGCHLD")
    if hasattr(signal, name)
}


def _block_signals() -> set[int] | None:
    if not hasattr(signal, "pthread_sigmask"):
        return None
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS))


def _restore_signals(previous: set[int] | None) -> None:
    if previous is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class WorkerPool:
    """``size`` threads named ``{name}-1`` … ``{name}-N``, started by :meth:`start`.

    ``wake_watcher`` is called (from a worker) when work may now be stranded
    and nobody is calling :meth:`watch`: the server wakes its reactor.
    """

    def __init__(
        self,
        size: int,
        source: ReadySource,
        serve: Callable[[int], None],
        wake_watcher: Callable[[], None],
        name: str = "wsgibridge-worker",
    ) -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one thread, not {size}")
        self.size = size
        self.name = name
        self._source = source
        self._serve = serve
        self._wake_watcher = wake_watcher
        # Per worker: when its current job started (0.0: idle).  Each worker
        # writes only its own slot, so no lock is needed.
        self._since = [0.0] * size
        self._last_start = 0.0  # the latest job start, by any worker
        self._lock = threading.Lock()
        self._leading = False  # a worker waits on the source
        self._watched = False  # the reactor calls watch() within STUCK_AFTER
        self._sleepers: list[threading.Lock] = []  # held locks of sleeping workers
        self._cpu_bound = False  # updated by watch()
        self._window = (0.0, 0.0)  # (wall, process CPU) at the start of watch()'s window
        self._threads: list[threading.Thread] = []
        self._stopped = False

    def start(self) -> None:
        """Start the threads (once), with the asynchronous signals blocked in them.

        A thread inherits its creator's signal mask.  With these signals
        blocked in the workers, the kernel delivers SIGINT, SIGTERM … to a
        thread that can act on them (Python runs handlers in the main thread),
        so a wait there is interrupted at once instead of whenever it ends.
        """
        with self._lock:
            if self._threads or self._stopped:
                return
            masked = _block_signals()
            try:
                for number in range(1, self.size + 1):
                    thread = threading.Thread(
                        target=self._work,
                        args=(number - 1,),
                        name=f"{self.name}-{number}",
                        daemon=True,
                    )
                    thread.start()
                    self._threads.append(thread)
            finally:
                _restore_signals(masked)

    @property
    def busy(self) -> int:
        """Workers running a job now."""
        return sum(1 for since in self._since if since)

    # -- the workers -----------------------------------------------------------------

    def _work(self, index: int) -> None:
        since = self._since
        serve = self._serve
        monotonic = time.monotonic
        while True:
            fd = self._take()
            if fd is None:
                return
            start = since[index] = self._last_start = monotonic()
            try:
                serve(fd)
            except Exception:
                log.exception("unexpected error in %s", threading.current_thread().name)
            finally:
                since[index] = 0.0
            if (
                self._cpu_bound
                and len(self._sleepers) < self.size - 1
                and monotonic() - start < STUCK_AFTER
            ):
                self._retire()

    def _retire(self) -> None:
        """Sleep until woken, if another worker is awake (it serves what comes)."""
        with self._lock:
            if self._stopped or len(self._sleepers) >= self.size - 1:
                return
            sleeper = threading.Lock()
            sleeper.acquire()
            self._sleepers.append(sleeper)
        sleeper.acquire()

    def _take(self) -> int | None:
        """The next ready descriptor, waiting as leader or sleeping as needed; None: stop."""
        source = self._source
        while not self._stopped:
            fd = source.poll(0.0)
            if fd is not None:
                return fd
            with self._lock:
                if self._stopped:
                    return None
                lead = not self._leading
                if lead:
                    self._leading = True
                else:
                    sleeper = threading.Lock()
                    sleeper.acquire()
                    self._sleepers.append(sleeper)
            if not lead:
                sleeper.acquire()  # until watch() or stop() releases it
                continue
            try:
                fd = source.poll(None)
            finally:
                with self._lock:
                    self._leading = False
                    # About to serve with nobody waiting on the source: make
                    # sure someone notices if this job turns out to be long.
                    wake = not self._watched and bool(self._sleepers)
            if wake:
                self._wake_watcher()
            if fd is not None:
                return fd
        return None

    # -- the reactor's side ------------------------------------------------------------

    def watch(self) -> float | None:
        """Wake a sleeping worker if work is stranded; seconds until the next call (None: none).

        Called by the server's reactor, from one thread only.
        """
        now = time.monotonic()
        with self._lock:
            busy = any(self._since)
            idle = self._leading and not busy and now - self._last_start >= WATCH_GRACE
            if self._stopped or idle:
                self._watched = False
                self._cpu_bound = False
                self._window = (0.0, 0.0)
                return None  # idle: the leader will see whatever comes
            self._watched = True
            started, cpu_then = self._window
            if now - started >= CPU_WINDOW:
                cpu = time.process_time()
                if started:
                    self._cpu_bound = cpu - cpu_then >= CPU_BOUND_SHARE * (now - started)
                self._window = (now, cpu)
            # Work waits and nobody leads: another worker helps if the process
            # has CPU to spare (the busy ones wait on sockets, a database…),
            # or, CPU-bound, once no job has started for STUCK_AFTER.
            stranded = (
                not self._leading
                and self._sleepers
                and (not self._cpu_bound or now - self._last_start >= STUCK_AFTER)
                and self._source.pending()
            )
            if stranded:
                self._sleepers.pop().release()
            return CPU_BOUND_WATCH if self._cpu_bound else STUCK_AFTER

    def stop(self, timeout: float) -> bool:
        """End the threads once their jobs are done; True if all ended within ``timeout`` s.

        A thread still running a job after the deadline (an application that
        never returns) is left behind; it is a daemon thread, so it cannot
        keep the process alive.
        """
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
            sleepers, self._sleepers = self._sleepers, []
        self._source.interrupt()
        for sleeper in sleepers:
            sleeper.release()
        deadline = time.monotonic() + max(timeout, 0.0)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("worker threads still running after the stop: %s", ", ".join(alive))
        return not alive
