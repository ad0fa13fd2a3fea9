"""Every poll and epoll object: the reactor's poller and where workers find ready connections.

Rule: this module owns readiness - which descriptor can be read now - and
nothing else: it never reads a byte or changes a connection's state.

The workers' side, two implementations of :class:`~wsgibridge.serving.pool.ReadySource`:

* :class:`EpollSource` (Linux): the parked connections are registered in an
  epoll of their own with ``EPOLLONESHOT``, and workers wait on it directly,
  so a request wakes the worker that will serve it and nothing else.  The
  kernel disarms a connection when it fires, so each readiness event goes
  to exactly one worker; a worker arms it again when it parks it.  The
  listeners are in it too (level-triggered): the waiting worker accepts a
  new connection itself and serves its first request at once, with no
  hand-over from the reactor.
* :class:`QueueSource` (elsewhere): the reactor polls the parked
  connections along with everything else and puts the ready ones here.

A descriptor reported ready is only a hint: the connection it named may have
been closed, and the number reused, since.  The server claims the
connection under a lock before serving it, and never blocks reading a head,
so a stale or spurious report costs nothing.

The reactor's side: :class:`ReactorPoller` (the listeners, the wake-up
socket and lingering connections, plus the parked ones without epoll),
:class:`Waker` (the wake-up socket) and :func:`readable` (one descriptor,
now or within a timeout, TLS bytes already decrypted included).
"""

from __future__ import annotations

import queue
import select
import socket
import threading
from collections.abc import Callable
from typing import Protocol

# epoll where there is one (Linux); elsewhere poll() in the reactor, which hands
# ready parked connections to the workers.  A server can be made to use either.
HAS_EPOLL = hasattr(select, "epoll")

_ONESHOT_IN = sum(getattr(select, name, 0) for name in ("EPOLLIN", "EPOLLRDHUP", "EPOLLONESHOT"))
# A listener shared by pre-forked processes wakes one of their epolls per new
# connection, not all of them (Linux 4.5; without it, all wake and one wins).
_LISTENER_IN = getattr(select, "EPOLLIN", 0) | getattr(select, "EPOLLEXCLUSIVE", 0)


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

    def add_listener(self, fd: int) -> None:
        """Report ``fd`` whenever a connection waits on it (level-triggered, never disarmed)."""
        self._epoll.register(fd, _LISTENER_IN)

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


def ready_source(use_epoll: bool) -> EpollSource | QueueSource:
    """Where a server's workers wait for parked connections."""
    return EpollSource() if use_epoll else QueueSource()


def readable(sock: socket.socket, timeout: float) -> bool:
    """True if ``sock`` has bytes (or TLS bytes already decrypted) within ``timeout`` s."""
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class Waker:
    """A socket pair whose writes wake the reactor from its poll (any thread, signals too)."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)

    def fileno(self) -> int:
        """The end the reactor polls."""
        return self._r.fileno()

    @property
    def write_fd(self) -> int:
        """The end to write to (``signal.set_wakeup_fd``)."""
        return self._w.fileno()

    def wake(self) -> None:
        try:
            self._w.send(b"x")
        except OSError:
            pass  # the buffer is full (a wake-up is pending anyway) or we are closed

    def drain(self) -> None:
        try:
            while self._r.recv(4096):
                pass
        except OSError:
            pass

    def close(self) -> None:
        self._r.close()
        self._w.close()


class Watched(Protocol):
    """A connection as the reactor's poller sees it: its descriptor, and whether registered."""

    fd: int
    registered: bool


class ReactorPoller:
    """The reactor's readiness: listeners, the wake-up socket, lingering connections.

    Connections are armed one-shot (epoll ``EPOLLONESHOT``) from any thread: a
    worker arms one when it closes it lingeringly, the reactor again after
    each slice it discards.  Without epoll the parked connections are here
    too, and arming goes through the reactor (``wake``), which polls.
    """

    def __init__(self, wake: Callable[[], None], use_epoll: bool) -> None:
        self._epoll = select.epoll() if use_epoll else None
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

    def arm(self, conn: Watched) -> None:
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
