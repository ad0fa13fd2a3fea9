"""``WorkerPool``: a fixed number of named threads running jobs from one queue.

Rule: the pool knows nothing about HTTP.  The server submits "serve this
connection" jobs; a worker runs one job at a time, and a job returns as soon
as its connection has nothing more to do right now (the server then parks
the connection in its selector, holding no thread).  The only question the
pool answers for the server's hot path is :meth:`has_waiting_work`: whether
a worker that just finished a response should linger on its connection for
the next request, or let queued work go first.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("wsgibridge.server")

Job = tuple[Callable[[Any], None], Any]


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
    """``size`` threads named ``{name}-1`` … ``{name}-N``, started by :meth:`start`."""

    def __init__(self, size: int, name: str = "wsgibridge-worker") -> None:
        if size < 1:
            raise ValueError(f"a pool needs at least one thread, not {size}")
        self.size = size
        self.name = name
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._busy = 0
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
                        target=self._work, name=f"{self.name}-{number}", daemon=True
                    )
                    thread.start()
                    self._threads.append(thread)
            finally:
                _restore_signals(masked)

    def submit(self, function: Callable[[Any], None], argument: Any) -> None:
        """Run ``function(argument)`` on the next free worker."""
        self._queue.put((function, argument))

    def has_waiting_work(self) -> bool:
        """True if a job is queued that no worker has taken yet."""
        return not self._queue.empty()

    @property
    def busy(self) -> int:
        """Workers running a job now."""
        return self._busy

    def _work(self) -> None:
        get = self._queue.get
        lock = self._lock
        while True:
            job = get()
            if job is None:
                return
            function, argument = job
            with lock:
                self._busy += 1
            try:
                function(argument)
            except Exception:
                log.exception("unexpected error in %s", threading.current_thread().name)
            finally:
                with lock:
                    self._busy -= 1

    def stop(self, timeout: float) -> bool:
        """Let queued jobs finish, end the threads; True if all ended within ``timeout`` s.

        A thread still running a job after the deadline (an application that
        never returns) is left behind; it is a daemon thread, so it cannot
        keep the process alive.
        """
        with self._lock:
            self._stopped = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + max(timeout, 0.0)
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            log.warning("worker threads still running after the stop: %s", ", ".join(alive))
        return not alive
