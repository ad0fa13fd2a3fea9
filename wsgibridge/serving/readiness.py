"""Where the workers find parked connections that have become readable (a ``ReadySource``).

Two implementations of :class:`~wsgibridge.pool.ReadySource`:

* :class:`EpollSource` (Linux): the parked connections are registered in an
  epoll of their own with ``EPOLLONESHOT``, and workers wait on it directly,
  so a request wakes the worker that will serve it and nothing else.  The
  kernel disarms a connection when it fires, so each readiness event goes
  to exactly one worker; a worker arms it again when it parks it.
* :class:`QueueSource` (elsewhere): the reactor polls the parked
  connections along with everything else and puts the ready ones here.

A descriptor reported ready is only a hint: the connection it named may have
been closed, and the number reused, since.  The server claims the
connection under a lock before serving it, and never blocks reading a head,
so a stale or spurious report costs nothing.
"""

from __future__ import annotations

import queue
import select
import socket

_ONESHOT_IN = sum(getattr(select, name, 0) for name in ("EPOLLIN", "EPOLLRDHUP", "EPOLLONESHOT"))


class EpollSource:
    """Parked connections in an epoll that workers wait on themselves."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        # Level-triggered and never drained: once written, every wait returns.
        self._stop_r, self._stop_w = socket.socketpair()
        self._stop_fd = self._stop_r.fileno()
        self._epoll.register(self._stop_fd, select.EPOLLIN)
        self._check = select.poll()  # used by the reactor's thread only
        self._check.register(self._epoll.fileno(), select.POLLIN)

    def arm(self, fd: int, registered: bool) -> None:
        """Report ``fd`` once when it becomes readable (or hangs up)."""
        if registered:
            self._epoll.modify(fd, _ONESHOT_IN)
        else:
            self._epoll.register(fd, _ONESHOT_IN)

    def remove(self, fd: int) -> None:
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError, KeyError):
            pass

    def poll(self, timeout: float | None) -> int | None:
        try:
            events = self._epoll.poll(-1 if timeout is None else timeout, 1)
        except (OSError, ValueError):
            return None  # closed under us: the pool is stopping
        if not events or events[0][0] == self._stop_fd:
            return None
        fd: int = events[0][0]
        return fd

    def pending(self) -> bool:
        try:
            return bool(self._check.poll(0))
        except (OSError, ValueError):
            return False

    def interrupt(self) -> None:
        try:
            self._stop_w.send(b"x")
        except OSError:
            pass

    def close(self) -> None:
        self._epoll.close()
        self._stop_r.close()
        self._stop_w.close()


class QueueSource:
    """Ready descriptors handed over by the reactor (where there is no epoll)."""

    _STOP = -1

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._stopped = False

    def remove(self, fd: int) -> None:
        """Nothing to do: the reactor's poller holds the descriptors."""

    def put(self, fd: int) -> None:
        self._queue.put(fd)

    def poll(self, timeout: float | None) -> int | None:
        if self._stopped:
            return None
        try:
            if timeout is not None and timeout <= 0:
                fd = self._queue.get_nowait()
            else:
                fd = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        return None if fd == self._STOP else fd

    def pending(self) -> bool:
        return not self._queue.empty()

    def interrupt(self) -> None:
        self._stopped = True
        self._queue.put(self._STOP)

    def close(self) -> None:
        pass
