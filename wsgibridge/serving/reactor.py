"""The reactor: the one thread that keeps the deadlines, rules accepting and watches lingerers.

Rule: the reactor never serves a request and never waits on a client.  It
runs one poll loop (``serve_forever``'s thread) over a wake-up socket and
the lingering connections; it keeps the heap of deadlines that any thread
may post to (only the reactor pops it), expires parked connections whose
deadline passed, and asks the worker pool to wake a sleeping worker when
work waits behind busy ones.  Nothing polls: an idle reactor sleeps until an
event or its next deadline.

It owns the listeners and decides when the server accepts (the connection
limit, a pause when out of descriptors, the stop), but on Linux it does not
accept: the listeners sit in the workers' epoll, and the waiting worker
takes the new connection itself (:meth:`Reactor.accept`) and serves its
first request at once - no hand-over, no ``epoll_ctl``, no thread switch
between the accept and the first byte read.  Without epoll the reactor
polls the listeners (and the parked connections) and accepts itself.
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
from collections.abc import Callable
from typing import Protocol

from ..config import Config
from ..http.trusted import TrustedProxies
from .connection import CLOSED, LINGERING, PARKED, Connection, Connections
from .listen import close_listener
from .metrics import ServerMetrics
from .pool import WorkerPool
from .readiness import EpollSource, QueueSource, ReactorPoller, Waker
from .watchdog import RequestWatchdog

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
    metrics: ServerMetrics | None

    @property
    def stopping(self) -> bool: ...

    def request_shutdown(self) -> None: ...


class Reactor:
    """The poll loop, the deadline heap and the listeners of one server."""

    connections: Connections  # given by attach(), with the pool
    pool: WorkerPool
    watchdog: RequestWatchdog | None = None

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
        self._retired = False  # stop_listening(): never accept again
        self._listener_fds = {listener.fileno(): listener for listener in listeners}
        self._listener_lock = threading.RLock()  # re-entered by a signal handler
        self.loop_done = threading.Event()
        self.loop_done.set()
        self.loop_thread: int | None = None
        # Where the listeners are watched: the reactor's poller, or (epoll) the
        # workers' source, who then accept (see attach()).
        self._listen: ReactorPoller | EpollSource = self.poller
        # When the owner's stop begins (drain(delay) sets it; a float, so a
        # signal handler may assign it).
        self.stop_at = float("inf")
        # A callable run every so many seconds from this thread (systemd's
        # watchdog ping: a wedged reactor stops sending it).
        self._heartbeat: tuple[float, Callable[[], object]] | None = None
        self._beat_at = float("inf")
        # What call_soon handed over, run by the loop (append takes no lock).
        self.calls: collections.deque[Callable[[], object]] = collections.deque()

    def attach(
        self, connections: Connections, pool: WorkerPool, watchdog: RequestWatchdog | None = None
    ) -> None:
        """The connections it parks and expires, the pool it watches (made after it), and
        the request watchdog whose check it runs (None: none)."""
        self.connections = connections
        self.pool = pool
        self.watchdog = watchdog
        if isinstance(connections.source, EpollSource):
            self._listen = connections.source

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
            with self._listener_lock:
                for fd in self._listener_fds:
                    self._listen.add_listener(fd)
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
                if self.calls:
                    self._run_calls()
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

    def set_heartbeat(self, interval: float, beat: Callable[[], object]) -> None:
        """Call ``beat`` now and every ``interval`` seconds from the loop (before ``run``)."""
        self._heartbeat = (interval, beat)
        self._beat_at = 0.0

    def call_soon(self, call: Callable[[], object]) -> None:
        """Run ``call`` in the loop's thread, next time round: safe from a signal handler.

        For work a signal asks for that must not run in the handler (it reads
        files, takes locks, logs): the handler only appends and wakes.  A call
        handed over after the loop ended is never run.
        """
        self.calls.append(call)
        self.waker.wake()

    def _run_calls(self) -> None:
        calls = self.calls
        while calls:
            call = calls.popleft()
            try:
                call()
            except Exception:
                log.exception("unexpected error in a call the reactor was handed")

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
            self._start_accepting()  # only the reactor resumes accepting
        wake = min(timers[0][0] if timers else float("inf"), self.stop_at, self._beat_at)
        if not self._accepting and self._resume_accepting_at:
            wake = min(wake, self._resume_accepting_at)
        watch = self.pool.watch()  # wakes a worker for work stuck behind busy ones
        if watch is not None:
            wake = min(wake, time.monotonic() + watch)
        watchdog = self.watchdog
        if watchdog is not None:
            wake = min(wake, watchdog.check())  # logs requests past their deadline
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
        if now >= self._beat_at and self._heartbeat is not None:
            interval, beat = self._heartbeat
            self._beat_at = now + interval
            try:
                beat()
            except Exception:
                log.exception("unexpected error in the reactor's heartbeat")
        if now >= self.stop_at:
            self.stop_at = float("inf")
            self.owner.request_shutdown()  # the drain's delay is over

    # -- accepting -------------------------------------------------------------------

    def accept(self, fd: int) -> Connection | None:
        """A worker's turn at the listener on ``fd``: one new connection, or None.

        None when no connection waits (another worker or process took it), the
        server is stopping or full, or ``fd`` is no longer a listener.
        """
        listener = self._listener_fds.get(fd)
        if listener is None or self.owner.stopping:
            return None
        return self._take(listener)

    def _accept(self, listener: socket.socket) -> None:
        """The reactor's turn (without epoll): accept a batch, park each connection."""
        # Pre-forked workers share the listener: taking one connection per
        # wake-up lets the others take theirs, instead of one process grabbing
        # a whole burst of new clients.
        connections = self.connections
        for _ in range(1 if self.owner.multiprocess else ACCEPT_BATCH):
            conn = self._take(listener)
            if conn is None:
                return
            connections.add(conn)

    def _take(self, listener: socket.socket) -> Connection | None:
        """One new connection from ``listener`` (in the reactor or a worker), or None."""
        if len(self.connections) >= self.config.connection_limit:
            # Further clients wait in the kernel's backlog until one closes.
            self._stop_accepting(at_limit=True)
            return None
        try:
            sock, address = listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: stop asking for a moment instead of
                # spinning on a listener that stays readable.
                log.warning("cannot accept connections: %s; pausing", exc)
                # The resume time first: a reactor that saw accepting stopped
                # without it would resume at once.
                self._resume_accepting_at = time.monotonic() + ACCEPT_BACKOFF
                self._stop_accepting()
                if threading.get_ident() != self.loop_thread:
                    self.waker.wake()  # its timer is the reactor's
            # Otherwise the client gave up before we accepted (ECONNABORTED …),
            # or the listener closed under a worker (the stop).
            return None
        # With --proxy-protocol, a trusted peer (the proxy) must start with a
        # PROXY header (v1 or v2) naming the real client; nobody else may.
        peer = str(address[0]) if isinstance(address, tuple) else ""
        proxied = self.config.proxy_protocol and peer in self.owner.trusted_proxies
        return Connection(sock, address, proxied)

    def _stop_accepting(self, at_limit: bool = False) -> None:
        with self._listener_lock:  # workers may stop it, the reactor resumes it
            if self._accepting:
                self._accepting = False
                metrics = self.owner.metrics
                if at_limit and metrics is not None:
                    metrics.refused("connection_limit")
                for fd in self._listener_fds:
                    self._listen.remove(fd)

    def _start_accepting(self) -> None:
        with self._listener_lock:
            if not self._accepting and not self.owner.stopping and not self._retired:
                self._accepting = True
                for fd in self._listener_fds:
                    try:
                        self._listen.add_listener(fd)
                    except (OSError, ValueError):
                        pass

    def stop_listening(self) -> None:
        """Wait for no new connection from now on; the listeners stay open until they close.

        For a process leaving shared listeners to the others: out of the poller,
        the kernel gives each new client to a process still waiting in accept.
        A worker woken for one just before still takes it (the listener is not
        closed under it), rather than strand it in the shared queue.
        """
        with self._listener_lock:
            self._retired = True
            self._stop_accepting()

    def take_waiting(self) -> list[Connection]:
        """After :meth:`stop_listening`: a client waiting on each listener now, if any.

        The kernel wakes one process per new connection on a shared listener
        (``EPOLLEXCLUSIVE``); a wake-up it gave this one just before the
        listener left the poller is lost with it, and that client would wait
        for the next one to arrive.  The retiring server takes such clients
        itself; one the others were about to take is simply not there.
        """
        with self._listener_lock:
            listeners = list(self._listener_fds.values())
        taken = []
        for listener in listeners:
            conn = self._take(listener)
            if conn is not None:
                taken.append(conn)
        return taken

    def close_listeners(self) -> None:
        """Stop listening, once: out of the poller first, then the backlog served, then closed.

        The clients already waiting in a listener's backlog (their handshake
        done, their request most likely sent) are not reset: each is accepted
        until ``accept`` says none is left, and handed to the workers, which
        serve its one request with ``Connection: close``.  A client that
        connects after that finds the listener closed (refused), never a
        queue nobody accepts from.
        """
        with self._listener_lock:
            listeners, self._listener_fds = self._listener_fds, {}
            for fd in listeners:
                # Out of the epoll before closed: a listener shared with other
                # processes stays open in them, and epoll would go on reporting it.
                self._listen.remove(fd)
            for listener in listeners.values():
                try:
                    self._serve_backlog(listener)
                finally:
                    try:
                        close_listener(listener)
                    except OSError:
                        pass

    def _serve_backlog(self, listener: socket.socket) -> None:
        """Accept what waits on ``listener`` now (never blocking); the workers serve it."""
        if not self.owner.serving.is_set():
            return  # never served: no worker would answer them
        proxy_protocol = self.config.proxy_protocol
        trusted = self.owner.trusted_proxies
        taken = 0
        # Bounded: what a backlog can hold, so a flood cannot keep the stop here.
        while taken <= self.config.backlog:
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                break  # the backlog is empty
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # that client gave up; the next may not have
                break  # out of descriptors, or closed: the rest cannot be taken
            taken += 1
            peer = str(address[0]) if isinstance(address, tuple) else ""
            conn = Connection(sock, address, proxy_protocol and peer in trusted)
            self.connections.adopt(conn)
        if taken:
            log.info("stopping: serving %d connection(s) from the listen backlog", taken)

    def close(self) -> None:
        """Release the poller and the wake-up socket (after the loop is over)."""
        self.poller.close()
        self.waker.close()
