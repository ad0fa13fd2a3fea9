"""``ServerMetrics``: what a server counts while ``metrics_bind`` is set, and its snapshot.

Rule: a request costs a few integer operations on its thread's own
:class:`~wsgibridge.metrics.Recorder` (found through a ``threading.local``)
and takes no lock; everything that is a state rather than an event - requests
in flight, connections by state, busy threads - is read from the server's
parts when a scrape asks, never counted per request.  Refusals are rare and
come from several threads (workers, the reactor): they are counted under a
lock.  A server without ``metrics_bind`` has no ``ServerMetrics`` at all
(``server.metrics is None``: one attribute check per request).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .._mypyc import compiled
from .._version import __version__
from ..metrics import CONNECTION_STATES, Recorder, Snapshot, merge, render

__all__ = ["Pool", "ServerMetrics", "Watched", "exposition", "gauges"]


class Pool(Protocol):
    """What the gauges read of the worker pool (``WorkerPool`` is one)."""

    size: int

    @property
    def busy(self) -> int: ...


class Watched(Protocol):
    """A connection as the gauges read it (``connection.Connection`` is one)."""

    @property
    def state(self) -> str: ...

    @property
    def handler(self) -> Any: ...


class ServerMetrics:
    """One server's recorders (one per thread that served a request) and refusal counts."""

    def __init__(self) -> None:
        self._local = threading.local()
        # Every recorder ever made: a thread that ends leaves its counts here.
        self._recorders: list[Recorder] = []
        self._lock = threading.Lock()
        self._refused: dict[str, int] = {}

    def request(self, method: str, status: int, duration: float, sent: int, received: int) -> None:
        """Count one answered request on the calling thread's recorder (no lock)."""
        try:
            recorder: Recorder = self._local.recorder
        except AttributeError:
            recorder = self._new_recorder()
        recorder.request(method, status, duration, sent, received)

    def _new_recorder(self) -> Recorder:
        recorder = self._local.recorder = Recorder()
        with self._lock:
            self._recorders.append(recorder)
        return recorder

    def refused(self, reason: str) -> None:
        """Count a refusal: a status code (``"400"``) or ``"connection_limit"``."""
        with self._lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    def snapshot(
        self, table: Mapping[int, Watched] | None = None, pool: Pool | None = None
    ) -> Snapshot:
        """Every count so far, and (given the server's connection table and pool) its
        gauges now."""
        with self._lock:
            recorders = list(self._recorders)
            refused = dict(self._refused)
        snapshot = merge(recorder.snapshot() for recorder in recorders)
        snapshot["counters"]["refused"] = refused
        snapshot["gauges"]["processes"] = 1
        if table is not None and pool is not None:
            snapshot["gauges"].update(gauges(table.values(), pool))
        return snapshot


def gauges(connections: Iterable[Watched], pool: Pool) -> dict[str, Any]:
    """Requests in flight, connections by state and the busy threads, read now."""
    states = dict.fromkeys(CONNECTION_STATES, 0)
    in_flight = 0
    for conn in list(connections):  # a copy: workers change the table meanwhile
        state = conn.state
        if state in states:
            states[state] += 1
        handler = conn.handler
        if state == "active" and handler is not None:
            exchange = handler.exchange
            # Its head is read and its access line (the end of it) not written yet.
            if exchange.head is not None and exchange.unlogged:
                in_flight += 1
    return {
        "in_flight": in_flight,
        "connections": states,
        "threads_busy": pool.busy,
        "threads": pool.size,
    }


def exposition(snapshot: Snapshot, start_time: float) -> str:
    """``snapshot`` as ``GET /metrics`` answers it: with this version and build."""
    build = "compiled" if compiled else "pure"
    return render(snapshot, version=__version__, build=build, start_time=start_time)
