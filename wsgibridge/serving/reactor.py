"""The reactor: the one thread that accepts, keeps the deadlines and watches lingering sockets.

Rule: the reactor never serves a request and never waits on a client.  It
runs one poll loop (``serve_forever``'s thread) over the listening sockets,
a wake-up socket and the lingering connections (and, without epoll, the
parked ones); it accepts new connections and parks them, keeps the heap of
deadlines that any thread may post to (only the reactor pops it), expires
parked connections whose deadline passed, and asks the worker pool to wake a
sleeping worker when work waits behind busy ones.  Nothing polls: an idle
reactor sleeps until an event or its next deadline.
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import logging
import socket
import threading
import time
from typing import Protocol

from ..config import Config
from ..http.trusted import TrustedProxies
from .connection import CLOSED, LINGERING, PARKED, Connection, Connections
from .listen import close_listener
from .pool import WorkerPool
from .readiness import QueueSource, ReactorPoller, Waker

log = logging.getLogger("wsgibridge.server")

# New connections accepted per readiness event of a listener (fairness).
ACCEPT_BATCH = 64
# Pause before accepting again when the process is out of file descriptors.
ACCEPT_BACKOFF = 0.1

Timer = tuple[float, int, int, Connection]  # deadline, sequence, generation, connection


class Owner(Protocol):
    """What the reactor needs of its server (``WSGIServer`` is one)."""

    config: Config
    trusted_proxies: TrustedProxies
    multiprocess: bool
    serving: threading.Event

    @property
    def stopping(self) -> bool: ...


class Reactor:
    """The poll loop, the deadline heap and the listeners of one server."""

    connections: Connections  # given by attach(), with the pool
    pool: WorkerPool

    def __init__(self, owner: Owner, listeners: list[socket.socket], use_epoll: bool) -> None:
        self.owner = owner
        self.config = owner.config
        self.waker = Waker()
        self.poller = ReactorPoller(self.waker.wake, use_epoll)
        self.timers: list[Timer] = []  # the heap; the reactor's own
        self.posted: collections.deque[Timer] = collections.deque()  # from other threads
        self._sequence = itertools.count()
        self._next_wake = float("inf")
        self._accepting = True
        self._resume_accepting_at = 0.0
        self._listener_fds = {listener.fileno(): listener for listener in listeners}
        self._listener_lock = threading.RLock()  # re-entered by a signal handler
        self.loop_done = threading.Event()
        self.loop_done.set()
        self.loop_thread: int | None = None

    def attach(self, connections: Connections, pool: WorkerPool) -> None:
        """The connections it parks and expires, and the pool it watches (made after it)."""
        self.connections = connections
        self.pool = pool

    @property
    def accepting(self) -> bool:
        return self._accepting

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Accept and dispatch until the owner is stopping; then close the idle connections."""
        owner = self.owner
        if owner.stopping:
            return
        self.loop_done.clear()
        self.loop_thread = threading.get_ident()
        try:
            if owner.stopping:
                return  # stopped while we were starting
            self.pool.start()
            poller = self.poller
            wake_fd = self.waker.fileno()
            if wake_fd < 0:
                return  # closed under us by a concurrent server_close
            poller.add_listener(wake_fd)
            for fd in self._listener_fds:
                poller.add_listener(fd)
            connections = self.connections
            table = connections.table
            source = connections.source
            owner.serving.set()
            while not owner.stopping:
                timeout = self._until_next_timer()
                for fd, _ in poller.poll(timeout):
                    try:
                        if fd == wake_fd:
                            self.waker.drain()
                        elif fd in self._listener_fds:
                            self._accept(self._listener_fds[fd])
                        else:
                            conn = table.get(fd)
                            if conn is None:
                                continue
                            poller.disarm_fired(fd)
                            if conn.state == PARKED and isinstance(source, QueueSource):
                                source.put(fd)  # a worker claims it
                            elif conn.state == LINGERING:
                                connections.discard(conn)
                    except Exception:
                        # One connection's trouble must never stop the reactor.
                        log.exception("unexpected error in the reactor (fd %d)", fd)
                        connections.drop(table.get(fd))
                self._run_timers()
        finally:
            try:
                self.close_listeners()
                self.connections.close_idle()
            finally:
                self.loop_thread = None
                self.loop_done.set()

    def wake(self) -> None:
        """Make the loop go round once (from any thread, or a signal handler)."""
        self.waker.wake()

    # -- deadlines ---------------------------------------------------------------------

    def add_timer(self, deadline: float, conn: Connection) -> None:
        """Post a deadline for the reactor (from any thread; only the reactor owns the heap)."""
        self.posted.append((deadline, next(self._sequence), conn.generation, conn))
        if deadline < self._next_wake and threading.get_ident() != self.loop_thread:
            # The reactor would sleep past it, or is computing: tell it.  (The
            # reactor itself takes the deadline in before it next sleeps.)
            self.waker.wake()

    def _until_next_timer(self) -> float | None:
        """Take in the deadlines workers posted; seconds until the next one (None: none)."""
        # "Computing": a deadline posted from now on always wakes the reactor,
        # so none can slip in between the drain below and the sleep.
        self._next_wake = -float("inf")
        timers = self.timers
        posted = self.posted
        while posted:
            heapq.heappush(timers, posted.popleft())
        open_count = len(self.connections)
        if len(timers) > 2 * open_count + 256:
            # Entries of connections parked again or closed since: drop them.
            self.timers = timers = [
                t for t in timers if t[3].generation == t[2] and t[3].state != CLOSED
            ]
            heapq.heapify(timers)
        if (
            not self._accepting
            and not self._resume_accepting_at
            and open_count < self.config.connection_limit
            and not self.owner.stopping
        ):
            self._start_accepting()  # only the reactor changes the listeners
        wake = timers[0][0] if timers else float("inf")
        if not self._accepting and self._resume_accepting_at:
            wake = min(wake, self._resume_accepting_at)
        watch = self.pool.watch()  # wakes a worker for work stuck behind busy ones
        if watch is not None:
            wake = min(wake, time.monotonic() + watch)
        self._next_wake = wake
        if wake == float("inf"):
            return None
        return max(wake - time.monotonic(), 0.0)

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self.timers
        connections = self.connections
        while timers and timers[0][0] <= now:
            _, _, generation, conn = heapq.heappop(timers)
            if conn.generation != generation:
                continue  # parked again since, with a later deadline
            try:
                if conn.state == PARKED and connections.claim(conn, generation):
                    connections.expire(conn)
                elif conn.state == LINGERING:
                    connections.forget(conn)
            except Exception:
                log.exception("unexpected error expiring the connection from %s", conn.address)
                connections.drop(conn)
        if not self._accepting and self._resume_accepting_at and now >= self._resume_accepting_at:
            self._resume_accepting_at = 0.0
            self._start_accepting()

    # -- accepting -------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        limit = self.config.connection_limit
        connections = self.connections
        trusted = self.owner.trusted_proxies
        # Pre-forked workers share the listener: taking one connection per
        # wake-up lets the others take theirs, instead of one process grabbing
        # a whole burst of new clients.
        for _ in range(1 if self.owner.multiprocess else ACCEPT_BATCH):
            if len(connections) >= limit:
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
            proxied = self.config.proxy_protocol and peer in trusted
            connections.add(Connection(sock, address, proxied))

    def _stop_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            for fd in self._listener_fds:
                self.poller.remove(fd)

    def _start_accepting(self) -> None:
        if not self._accepting and not self.owner.stopping:
            self._accepting = True
            for fd in self._listener_fds:
                try:
                    self.poller.add_listener(fd)
                except (OSError, ValueError):
                    pass

    def close_listeners(self) -> None:
        """Stop listening, once: out of the poller first, then closed (unix files unlinked)."""
        with self._listener_lock:
            listeners, self._listener_fds = self._listener_fds, {}
            for fd in listeners:
                self.poller.remove(fd)
            for listener in listeners.values():
                try:
                    close_listener(listener)
                except OSError:
                    pass

    def close(self) -> None:
        """Release the poller and the wake-up socket (after the loop is over)."""
        self.poller.close()
        self.waker.close()
