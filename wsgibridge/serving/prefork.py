"""``--workers N``: pre-forked processes serving the same listening sockets.

Strategy: the parent (the *arbiter*) binds the listening sockets once and
forks N workers, which inherit them; the kernel hands each new connection to
one of the processes waiting in ``accept``, so every core serves.  Each
worker is an ordinary server over the inherited sockets, with its own
thread pool, made by the callable the arbiter is given (it never imports
the server module); what runs in a worker is in ``workerprocess``.  The
arbiter serves nothing: it replaces a worker that dies, and on SIGTERM or
SIGINT it asks every worker to stop gracefully (they finish their requests
in flight), waits for them up to ``graceful_timeout`` plus a margin, then
kills what is left.

Replacing a worker that is alive (recycling after ``--max-requests`` or
past ``--max-worker-memory``, a reload) never leaves fewer than N workers
accepting and never resets a connection: the replacement is forked first;
only once it says it accepts is the old one told to retire - it stops
accepting (the shared listeners stay open in the others, so nothing queued
is lost), answers what still comes on its open connections with
``Connection: close``, and exits when they are done.

SIGHUP (or, with ``--reload``, a changed file of the app) replaces every
worker that way, one at a time; after the first reload, every worker forked
imports the app anew from its files (``reloader.fresh_import``), so the new
code is read.  The TLS certificate is re-read once, by the arbiter, as the
reload begins (the ``on_reload`` callable ``serve`` gives it), and the new
workers inherit the context; a certificate that cannot be used is logged
there once and the new workers get the one loaded before - the reload of
the code goes on.  A new worker that fails (the new code does not import)
ends the reload: the old workers keep serving.
SIGTTIN adds a worker, SIGTTOU retires one (never the last).

The app is imported once, in the arbiter, before the first fork, so workers
share its memory pages until they write to them.  Only the main thread of a
process without other threads may fork safely; ``serve`` checks the first,
and the arbiter starts no threads (the ``--reload`` watcher is polled from
its loop).

With ``--metrics-bind`` the arbiter polls the metrics listener in its loop
too and answers a scrape with the sum of the workers' figures, asked for
over their channels (up to ``METRICS_WAIT``; a late or retiring worker counts
with the last figures it sent, and a late one is not waited for again until
it answers; an exited one counts with its final ones: counters never go down
as workers come and go).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

from .._types import WSGIApp
from ..config import Config
from ..metrics import Snapshot, Totals
from .accesssink import flush_all
from .listen import close_listener, listener_address
from .metrics import exposition
from .notify import Notifier
from .reloader import POLL_INTERVAL, Watcher, app_modules
from .scrape import MetricsEndpoint
from .workerprocess import (
    EXIT_IMPORT_FAILED,
    FILES,
    METRICS,
    READY,
    RECYCLE,
    RETIRE,
    ServerFactory,
    WorkerServer,
    run_worker,
    send_line,
)

__all__ = ["Arbiter", "ServerFactory", "WorkerServer", "serve_prefork"]

log = logging.getLogger("wsgibridge.server")

# A worker that dies this soon after it started did not boot; after
# MAX_BOOT_FAILURES of those in a row the arbiter gives up.
BOOT_SECONDS = 2.0
MAX_BOOT_FAILURES = 5
# A worker that has not said it accepts within this long is killed.
READY_TIMEOUT = 60.0
# After a replacement failed to start, how long before a recycle is tried again.
RECYCLE_RETRY = 5.0
# Blocked across a fork (see Arbiter._spawn).
WORKER_SIGNALS = {
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGCHLD,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
}
# Time beyond graceful_timeout a worker gets to exit before it is killed.
KILL_MARGIN = 5.0
# How long a scrape waits for the workers' figures.
METRICS_WAIT = 1.0


@dataclass(eq=False)
class Worker:
    """The arbiter's record of one worker process."""

    pid: int
    channel: socket.socket | None  # the arbiter's end; None once the worker closed its own
    started: float
    generation: int  # the reload it was forked for
    ready: bool = False  # it said it accepts
    retiring: bool = False  # told to retire (or to stop)
    replaced_by: int = 0  # the pid of the replacement booting for it
    replaces: int = 0  # the pid it replaces once ready
    for_reload: bool = False  # forked to replace an older generation
    recycle: str = ""  # why it asked to be replaced (not yet done)
    retry_at: float = 0.0  # no new replacement before this time
    pending: bytes = b""  # an incomplete line from the channel
    asked: bool = False  # asked for its metrics figures, no answer yet

    @property
    def kept(self) -> bool:
        """Counted among the N: neither retiring nor about to be replaced."""
        return not self.retiring and not self.replaced_by


class Arbiter:
    """Fork ``config.workers`` servers over shared sockets and keep them running."""

    def __init__(
        self,
        config: Config,
        app: WSGIApp,
        make_server: ServerFactory,
        sockets: list[socket.socket],
        loader: Callable[[], WSGIApp] | None = None,
        notifier: Notifier | None = None,
        on_reload: Callable[[], object] | None = None,
        metrics_sockets: Sequence[socket.socket] = (),
    ) -> None:
        self.config = config
        # Called from the loop when a reload begins, before its first fork
        # (serve() re-reads the TLS certificate there); it must not raise.
        self.on_reload = on_reload
        # systemd talks to the arbiter (its main process), never to the workers.
        self.notifier = notifier if notifier is not None else Notifier({})
        self._announced = False  # READY=1 sent
        self.app = app
        self.make_server = make_server
        self.loader = loader
        self.listeners = sockets
        # Named now: the arbiter closes its copies of the listeners at the stop.
        self.addresses = [listener_address(listener) for listener in sockets]
        self.workers: dict[int, Worker] = {}
        self.target = config.workers
        self.generation = 0  # bumped by every reload
        self.fresh = False  # workers import the app anew (after a reload, with a loader)
        self._failed_generation = -1  # a reload whose new workers could not start
        self._stopping = False
        self._boot_failures = 0
        self._hups = self._ttins = self._ttous = 0  # counted by the signal handler
        self._signal_r, self._signal_w = os.pipe()
        os.set_blocking(self._signal_r, False)
        os.set_blocking(self._signal_w, False)
        self.watcher: Watcher | None = None
        if config.reload:
            self.watcher = Watcher(app_modules().values(), config.reload_extra)
        # --metrics-bind: the listener, and the workers' last figures by pid.
        self.started_at = time.time()
        self.metrics: MetricsEndpoint | None = None
        if metrics_sockets:
            self.metrics = MetricsEndpoint(metrics_sockets, self.metrics_text)
        self.figures = Totals()

    # -- the arbiter's loop --------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code (1 if workers cannot boot)."""
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        for signum in (signal.SIGTTIN, signal.SIGTTOU):
            previous[signum] = signal.signal(signum, self._on_signal)
        code = 0
        try:
            plural = "es" if self.target != 1 else ""
            log.info(
                "serving on %s with %d worker process%s",
                ", ".join(self.addresses),
                self.target,
                plural,
            )
            if self.watcher is not None:
                log.info("reload: watching %d files for changes", len(self.watcher))
            if self.metrics is not None:
                log.info("metrics: GET /metrics on %s", ", ".join(self.metrics.addresses))
            self._balance()
            next_poll = time.monotonic() + POLL_INTERVAL
            beat = self.notifier.watchdog_interval
            next_beat = time.monotonic()
            while not self._stopping:
                timeout = self._timeout()
                if self.watcher is not None:
                    until_poll = max(next_poll - time.monotonic(), 0.0)
                    timeout = until_poll if timeout is None else min(timeout, until_poll)
                if beat is not None and self._announced:  # once started (READY=1)
                    if time.monotonic() >= next_beat:
                        self.notifier.watchdog()  # from this loop: a wedged arbiter stops them
                        next_beat = time.monotonic() + beat
                    until_beat = max(next_beat - time.monotonic(), 0.0)
                    timeout = until_beat if timeout is None else min(timeout, until_beat)
                self._wait(timeout)
                self._reap()
                if self._boot_failures >= MAX_BOOT_FAILURES:
                    log.error("workers keep dying at start; giving up")
                    code = 1
                    break
                if self._stopping:
                    break
                self._take_signals()
                if self.watcher is not None and time.monotonic() >= next_poll:
                    next_poll = time.monotonic() + POLL_INTERVAL
                    self._look_for_changes(self.watcher)
                self._check_boot_times()
                self._balance()
        finally:
            if self.metrics is not None:
                self.metrics.close()
            self._stop_workers()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in (self._signal_r, self._signal_w):
                try:
                    os.close(fd)
                except OSError:
                    pass
        return code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only flags and counters here: the loop acts on them.
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
        elif signum == signal.SIGHUP:
            self._hups += 1
        elif signum == signal.SIGTTIN:
            self._ttins += 1
        elif signum == signal.SIGTTOU:
            self._ttous += 1
        try:
            os.write(self._signal_w, b"x")
        except OSError:
            pass

    def _take_signals(self) -> None:
        hups, self._hups = self._hups, 0
        ttins, self._ttins = self._ttins, 0
        ttous, self._ttous = self._ttous, 0
        if ttins or ttous:
            self.target = max(1, self.target + ttins - ttous)
            name = "SIGTTIN" if ttins >= ttous else "SIGTTOU"
            log.info("received %s: %d worker process(es) from now on", name, self.target)
        if hups:
            self.reload("received SIGHUP")

    def reload(self, why: str) -> None:
        """Replace every worker, one at a time (the app imported anew if there is a loader)."""
        self.generation += 1
        if self.loader is not None:
            self.fresh = True
            how = "with the app imported anew"
        else:
            how = "with the same app object (give the app as module:app to reload its code)"
        log.info("%s: replacing the workers one at a time, %s", why, how)
        if self.on_reload is not None:
            try:
                self.on_reload()
            except Exception:  # a reload goes on: the old state serves the new workers
                log.exception("unexpected error preparing the reload")

    def _look_for_changes(self, watcher: Watcher) -> None:
        changed = watcher.poll()
        if changed:
            more = f" and {len(changed) - 1} more" if len(changed) > 1 else ""
            self.reload(f"reload: {changed[0]}{more} changed")

    def _timeout(self) -> float | None:
        """How long the loop may sleep: until a worker's boot deadline, a recycle retry or
        a scrape's deadline."""
        now = time.monotonic()
        booting = (w for w in self.workers.values() if not w.ready and not w.retiring)
        wake = [w.started + READY_TIMEOUT for w in booting]
        wake += [w.retry_at for w in self.workers.values() if w.recycle and w.retry_at > now]
        if self.metrics is not None and (scrape := self.metrics.timeout()) is not None:
            wake.append(now + scrape)
        return max(min(wake) - now, 0.0) if wake else None

    def _wait(self, timeout: float | None, scrapes: bool = True) -> None:
        """Sleep until a signal, a message from a worker, a scrape or ``timeout``; read what
        came (``scrapes`` False: leave the metrics listener alone)."""
        channels = {w.channel.fileno(): w for w in self.workers.values() if w.channel is not None}
        metrics = self.metrics if scrapes else None
        watched = [self._signal_r, *channels, *(metrics.fds() if metrics is not None else ())]
        try:
            readable, _, _ = select.select(watched, [], [], timeout)
        except InterruptedError:
            return
        scrapes_ready = []
        for fd in readable:
            if fd == self._signal_r:
                try:
                    while os.read(self._signal_r, 512):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
            elif fd in channels:
                channel = channels[fd].channel
                # (A scrape before it may have read it, and closed it at EOF.)
                if channel is not None and channel.fileno() == fd:
                    self._read_channel(channels[fd])
            else:
                scrapes_ready.append(fd)
        if metrics is not None:
            try:
                metrics.ready(scrapes_ready)  # a scrape: collect_figures() asks the workers
            except Exception:
                log.exception("unexpected error serving the metrics")
            metrics.expire()

    def _read_channel(self, worker: Worker) -> None:
        assert worker.channel is not None
        try:
            data = worker.channel.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the worker is exiting; SIGCHLD follows
            worker.channel.close()
            worker.channel = None
            worker.asked = False
            return
        *lines, worker.pending = (worker.pending + data).split(b"\n")
        for line in lines:
            kind, _, text = line.decode("utf-8", "surrogateescape").partition(" ")
            if kind == METRICS:
                self._take_figures(worker, text)
            elif kind == READY:
                self._ready(worker)
            elif kind == RECYCLE and not worker.retiring:
                worker.recycle = text or "asked to be replaced"
            elif kind == FILES and self.watcher is not None:
                try:
                    self.watcher.add(str(path) for path in json.loads(text))
                except ValueError:
                    pass

    # -- metrics ------------------------------------------------------------------------

    def _take_figures(self, worker: Worker, text: str) -> None:
        worker.asked = False
        try:
            self.figures.update(worker.pid, json.loads(text))
        except ValueError:  # (its last good figures stay)
            log.warning("worker %d sent figures that do not add up", worker.pid)

    def _last_words(self, worker: Worker) -> None:
        """An exited worker's final figures (its last line, perhaps unread) join the sum."""
        data = worker.pending
        try:
            while worker.channel is not None and (chunk := worker.channel.recv(65536)):
                data += chunk
        except OSError:
            pass  # nothing more (BlockingIOError), or reset
        for line in data.decode("utf-8", "surrogateescape").split("\n"):
            if line.startswith(f"{METRICS} "):
                self._take_figures(worker, line[len(METRICS) + 1 :])
        self.figures.end(worker.pid)

    def collect_figures(self) -> Snapshot:
        """The sum of every worker's figures (asked for now) and those of the workers gone."""
        # A worker still silent since the last ask is not asked or waited for again
        # (its last figures count, its answer comes when it can): a stuck worker
        # delays one scrape, not every one.
        asked = [
            w
            for w in self.workers.values()
            if w.ready and not w.retiring and w.channel and not w.asked
        ]
        for worker in asked:
            worker.asked = worker.channel is not None and send_line(worker.channel, METRICS)
        deadline = time.monotonic() + METRICS_WAIT
        while any(w.asked for w in asked):
            left = deadline - time.monotonic()
            if left <= 0:
                late = [w.pid for w in asked if w.asked]
                log.warning("metrics: no figures from worker(s) %s within %gs", late, METRICS_WAIT)
                break
            self._wait(left, scrapes=False)
        return self.figures.total()

    def metrics_text(self) -> str:
        """What ``GET /metrics`` answers: the figures summed over the workers."""
        return exposition(self.collect_figures(), self.started_at)

    def _ready(self, worker: Worker) -> None:
        worker.ready = True
        if not self._announced and not self._stopping:
            accepting = sum(1 for w in self.workers.values() if w.ready and w.kept)
            if accepting >= self.target:
                # The sockets listen, the app is imported, every worker accepts.
                self._announced = True
                self.notifier.ready(
                    f"serving on {', '.join(self.addresses)} with {self.target} workers,"
                    f" {self.config.threads} threads each"
                )
        old = self.workers.get(worker.replaces)
        if old is None or old.retiring:
            return
        why = "reload" if worker.for_reload else old.recycle
        log.info("worker %d accepts; worker %d retires (%s)", worker.pid, old.pid, why)
        self._retire(old)

    def _retire(self, worker: Worker) -> None:
        worker.retiring = True
        if worker.channel is None or not send_line(worker.channel, RETIRE):
            _kill(worker.pid, signal.SIGTERM)

    def _balance(self) -> None:
        """Start or retire workers until N are kept; go on with recycles and the reload."""
        if self._stopping:
            return
        kept = [w for w in self.workers.values() if w.kept]
        for _ in range(self.target - len(kept)):
            self._spawn()
        ready = sorted((w for w in kept if w.ready), key=lambda w: w.started)
        while len(kept) > self.target and len(ready) > self.target:
            # SIGTTOU: the oldest goes, once the others accept.
            worker = ready.pop(0)
            kept.remove(worker)
            log.info("worker %d retires (one worker process fewer)", worker.pid)
            self._retire(worker)
        if any(not w.ready for w in self.workers.values() if not w.retiring):
            return  # one worker boots at a time (the others may wait a moment)
        now = time.monotonic()
        for worker in ready:
            if worker.recycle and worker.retry_at <= now:
                self._spawn(replacing=worker)
                return
        if self.generation != self._failed_generation:
            for worker in ready:
                if worker.generation < self.generation:
                    self._spawn(replacing=worker, for_reload=True)
                    return

    def _check_boot_times(self) -> None:
        now = time.monotonic()
        for worker in self.workers.values():
            if not worker.ready and not worker.retiring and now - worker.started > READY_TIMEOUT:
                log.error(
                    "worker %d did not start within %gs; killing it", worker.pid, READY_TIMEOUT
                )
                worker.retiring = True
                _kill(worker.pid, signal.SIGKILL)

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
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self._last_words(worker)
            if worker.channel is not None:
                worker.channel.close()
            if self._stopping:
                continue
            code = os.waitstatus_to_exitcode(status)
            if worker.retiring and worker.ready:
                log.info("worker %d retired (%s)", pid, _describe(code))
                continue
            old = self.workers.get(worker.replaces)
            if old is not None and not worker.ready:
                self._replacement_failed(worker, old, code)
                continue
            if worker.replaced_by:
                # Its replacement is booting: it takes this one's place.
                log.warning(
                    "worker %d exited (%s) while its replacement started", pid, _describe(code)
                )
                continue
            log.warning("worker %d exited (%s); starting another", pid, _describe(code))
            if not worker.ready and time.monotonic() - worker.started < BOOT_SECONDS:
                # Died before it accepted: the app may not start at all.  (One
                # that served and then crashed - a C extension, the OOM killer -
                # is simply replaced: it says nothing about the next one.)
                self._boot_failures += 1
                booting_died = True
            else:
                self._boot_failures = 0
        if booting_died and self._boot_failures < MAX_BOOT_FAILURES:
            # Don't spin if the app cannot start (the delay is after the
            # collection, so it cannot make a boot failure look like a boot).
            time.sleep(min(0.1 * 2**self._boot_failures, 2.0))

    def _replacement_failed(self, worker: Worker, old: Worker, code: int) -> None:
        """A replacement died before it accepted: the old worker serves on."""
        old.replaced_by = 0
        why = "the app failed to import" if code == EXIT_IMPORT_FAILED else _describe(code)
        if not worker.for_reload:
            old.retry_at = time.monotonic() + RECYCLE_RETRY
            log.error(
                "worker %d, replacing worker %d, could not start (%s); worker %d serves on,"
                " trying again in %gs",
                worker.pid,
                old.pid,
                why,
                old.pid,
                RECYCLE_RETRY,
            )
        else:
            self._failed_generation = self.generation
            log.error(
                "reload failed: worker %d could not start (%s); the old workers keep serving"
                " (a worker started before the next reload runs the code imported at start)",
                worker.pid,
                why,
            )

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
            self._wait(min(deadline - time.monotonic(), 0.5))
            self._reap()
        for pid in list(self.workers):
            log.warning("worker %d did not stop in time; killing it", pid)
            _kill(pid, signal.SIGKILL)
        while self.workers:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            worker = self.workers.pop(pid, None)
            if worker is not None and worker.channel is not None:
                worker.channel.close()

    # -- a worker ------------------------------------------------------------------------

    def _spawn(self, replacing: Worker | None = None, for_reload: bool = False) -> None:
        ours, theirs = socket.socketpair()
        # Signals stay blocked across the fork until each side has its own
        # handlers: a SIGTERM for a just-forked worker must not run the
        # arbiter's handler there (and be lost).
        masked = signal.pthread_sigmask(signal.SIG_BLOCK, WORKER_SIGNALS)
        pid = os.fork()
        if pid:
            theirs.close()
            ours.setblocking(False)
            worker = Worker(pid, ours, time.monotonic(), self.generation)
            if replacing is not None:
                worker.replaces = replacing.pid
                worker.for_reload = for_reload
                replacing.replaced_by = pid
            self.workers[pid] = worker
            signal.pthread_sigmask(signal.SIG_SETMASK, masked)
            return
        code = 1
        try:
            ours.close()
            os.close(self._signal_r)
            os.close(self._signal_w)
            if self.metrics is not None:
                self.metrics.close()  # the arbiter's (a socket file stays: not ours here)
            for other in self.workers.values():
                if other.channel is not None:
                    other.channel.close()  # its EOF must tell only the arbiter's death
            # After a reload that failed, the app's files do not import: a
            # worker started meanwhile (a crash, SIGTTIN, recycling) runs the
            # code imported at start rather than not at all.
            fresh = self.fresh and self.generation != self._failed_generation
            app = None if fresh else self.app
            code = run_worker(
                self.config, self.make_server, app, self.loader, self.listeners, theirs, masked
            )
        except BaseException:
            log.exception("worker %d failed", os.getpid())
        finally:
            try:
                flush_all()  # os._exit skips logging.shutdown(): write the last access lines
            finally:
                os._exit(code)  # whatever happens, the child never returns into the arbiter


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
    app: WSGIApp,
    make_server: ServerFactory,
    sockets: list[socket.socket],
    loader: Callable[[], WSGIApp] | None = None,
    notifier: Notifier | None = None,
    on_reload: Callable[[], object] | None = None,
    metrics_sockets: Sequence[socket.socket] = (),
) -> int:
    """Run an :class:`Arbiter` in the main thread; returns its exit code."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("workers > 1 needs the main thread (signals and fork)")
    return Arbiter(
        config, app, make_server, sockets, loader, notifier, on_reload, metrics_sockets
    ).run()
