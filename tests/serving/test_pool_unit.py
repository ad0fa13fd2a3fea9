"""``WorkerPool`` on its own, without HTTP: who serves what, when company is woken, stopping.

The pool is fed through a ``QueueSource`` (what the server uses where there is no
epoll), so each test decides exactly which descriptors become ready and when.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from wsgibridge.serving.pool import STUCK_AFTER, WorkerPool
from wsgibridge.serving.readiness import QueueSource

TIMEOUT = 5.0


class Recorder:
    """A ``serve`` that records which thread served each descriptor; some may block."""

    def __init__(self) -> None:
        self.served: dict[int, str] = {}
        self.blocking: dict[int, threading.Event] = {}
        self.done = threading.Condition()

    def __call__(self, fd: int) -> None:
        gate = self.blocking.get(fd)
        if gate is not None:
            gate.wait(TIMEOUT)
        with self.done:
            self.served[fd] = threading.current_thread().name
            self.done.notify_all()

    def wait_for(self, *fds: int) -> None:
        with self.done:
            assert self.done.wait_for(lambda: all(fd in self.served for fd in fds), TIMEOUT), (
                f"not served in time: {sorted(set(fds) - set(self.served))}"
            )


@pytest.fixture
def pool_parts() -> Iterator[tuple[WorkerPool, QueueSource, Recorder]]:
    source = QueueSource()
    recorder = Recorder()
    pool = WorkerPool(4, source, recorder, lambda: None, name="unit-worker")
    pool.start()
    try:
        yield pool, source, recorder
    finally:
        for gate in recorder.blocking.values():
            gate.set()
        assert pool.stop(TIMEOUT)


def watch_until(pool: WorkerPool, done: threading.Event, limit: float = TIMEOUT) -> None:
    """Call ``watch`` as the reactor would, until ``done`` or ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not done.is_set() and time.monotonic() < deadline:
        interval = pool.watch()
        time.sleep(interval if interval is not None else STUCK_AFTER)


def test_a_burst_of_short_jobs_is_served_by_one_thread(
    pool_parts: tuple[WorkerPool, QueueSource, Recorder],
) -> None:
    """Nobody calls watch(): no job is long, so no second thread is ever needed."""
    _, source, recorder = pool_parts
    for fd in range(100, 150):
        source.put(fd)
    recorder.wait_for(*range(100, 150))
    assert len(set(recorder.served.values())) == 1, recorder.served


def test_work_behind_a_blocked_job_gets_another_worker(
    pool_parts: tuple[WorkerPool, QueueSource, Recorder],
) -> None:
    """A job that blocks (an app waiting on a database) must not strand the next one."""
    pool, source, recorder = pool_parts
    gate = recorder.blocking[1] = threading.Event()
    source.put(1)
    deadline = time.monotonic() + TIMEOUT
    while pool.busy == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    source.put(2)
    served = threading.Event()
    watcher = threading.Thread(target=watch_until, args=(pool, served))
    watcher.start()
    try:
        recorder.wait_for(2)
    finally:
        served.set()
        gate.set()
        watcher.join(TIMEOUT)
    recorder.wait_for(1)
    assert recorder.served[1] != recorder.served[2]


def test_blocked_jobs_gain_company_up_to_the_pool_size(
    pool_parts: tuple[WorkerPool, QueueSource, Recorder],
) -> None:
    pool, source, recorder = pool_parts
    gates = {fd: threading.Event() for fd in (1, 2, 3, 4)}
    recorder.blocking.update(gates)
    for fd in gates:
        source.put(fd)
    started = threading.Event()
    watcher = threading.Thread(target=watch_until, args=(pool, started))
    watcher.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while pool.busy < 4 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert pool.busy == 4  # every worker in a blocked job: none left behind
    finally:
        started.set()
        for gate in gates.values():
            gate.set()
        watcher.join(TIMEOUT)
    recorder.wait_for(1, 2, 3, 4)


def test_an_idle_pool_needs_no_watching(
    pool_parts: tuple[WorkerPool, QueueSource, Recorder],
) -> None:
    """The reactor sleeps without a timeout when nothing runs (an idle server never ticks)."""
    pool, source, recorder = pool_parts
    source.put(7)
    recorder.wait_for(7)
    deadline = time.monotonic() + TIMEOUT
    while pool.watch() is not None and time.monotonic() < deadline:
        time.sleep(0.001)
    assert pool.watch() is None


def test_stop_ends_idle_threads_at_once() -> None:
    source = QueueSource()
    pool = WorkerPool(3, source, lambda fd: None, lambda: None, name="unit-stop")
    pool.start()
    deadline = time.monotonic() + TIMEOUT
    while len(pool._sleepers) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)  # until they have settled as one leader and two sleepers
    started = time.perf_counter()
    assert pool.stop(TIMEOUT)
    assert time.perf_counter() - started < 1.0
    assert not [t for t in threading.enumerate() if t.name.startswith("unit-stop")]


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        WorkerPool(0, QueueSource(), lambda fd: None, lambda: None)
