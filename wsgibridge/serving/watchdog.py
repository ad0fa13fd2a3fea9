"""The request watchdog: a request still running after ``request_deadline`` is logged, once.

Rule: the watchdog only looks; nothing here stops, interrupts or kills a
thread (Python cannot stop one safely, and a request stuck in a lock or a
driver would leave that state broken).  A worker thread writes one entry,
its own, into :attr:`RequestWatchdog.requests` while it runs a request
(the handler: thread ident -> handler, set before the app runs, removed
after the response); the reactor calls :meth:`RequestWatchdog.check` from
its loop, and at most every ``deadline / 4`` (bounded) the check copies the
table, and for each request older than the deadline and not yet reported
logs one warning: the request line, the client, the time it has been
running and the Python stack of the thread running it
(``sys._current_frames()``), so the log says where the app is stuck.  Then
``on_deadline`` (if any) is called: with ``--deadline-action recycle`` the
worker process asks the arbiter for a replacement, as ``--max-requests``
does (``workerprocess.Control``): a new worker first, then this one retires.

Cost: with the deadline 0 (the default) there is no watchdog, and a request
pays one attribute test (the handler finds no table); with it on, a request
pays a ``get_ident()`` and one dict store and delete, and the reactor wakes
once a period to look.  The ages come from the request's own start
(``Exchange.started``, the access log's clock), so no clock is read per
request for the watchdog.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType

from .exchange import Exchange
from .handler import WSGIRequestHandler

error_log = logging.getLogger("wsgibridge.error")
log = logging.getLogger("wsgibridge.server")

# How often the table is looked at: a quarter of the deadline, within these bounds.
MIN_PERIOD = 0.05
MAX_PERIOD = 5.0


def check_period(deadline: float) -> float:
    """Seconds between two looks at the table for ``deadline`` (a report is at most that late)."""
    return min(max(deadline / 4, MIN_PERIOD), MAX_PERIOD)


def format_thread_stack(frame: FrameType) -> str:
    """A thread's stack as ``traceback`` prints it, outermost first, without
    ``threading``'s own bootstrap frames."""
    frames = traceback.extract_stack(frame)
    start = 0
    while start < len(frames) - 1 and frames[start].filename == threading.__file__:
        start += 1
    return "".join(traceback.format_list(frames[start:])).rstrip("\n")


class RequestWatchdog:
    """Finds requests running longer than ``deadline`` seconds and reports each once.

    ``requests`` is the table the handlers write: thread ident -> the handler
    whose request that thread runs (each thread writes only its own key).
    ``on_deadline`` is called, from the reactor, after a request was reported.
    """

    def __init__(self, deadline: float, on_deadline: Callable[[], None] | None = None) -> None:
        if not deadline > 0:
            raise ValueError(f"the request deadline must be positive, not {deadline}")
        self.deadline = deadline
        self.period = check_period(deadline)
        self.on_deadline = on_deadline
        self.requests: dict[int, WSGIRequestHandler] = {}
        # Thread ident -> the Exchange reported on it: held, so that its id
        # cannot pass to the next request's, and compared with ``is``.
        self._reported: dict[int, Exchange] = {}
        self._due = 0.0  # time.monotonic() of the next look

    def check(self) -> float:
        """Look if it is time; returns when to look next (``time.monotonic``). The reactor's."""
        now = time.monotonic()
        if now < self._due:
            return self._due
        self._due = now + self.period
        try:
            self._look()
        except Exception:
            log.exception("unexpected error in the request watchdog")
        return self._due

    def _look(self) -> None:
        requests = self.requests
        if not requests and not self._reported:
            return
        table = requests.copy()  # one C call under the GIL: a consistent snapshot
        reported = self._reported
        # Forget the reports of requests that have ended.
        for ident in [i for i, ex in reported.items() if _exchange(table.get(i)) is not ex]:
            del reported[ident]
        now = time.perf_counter()  # the clock of Exchange.started
        overdue = [
            (ident, handler, exchange)
            for ident, handler in table.items()
            if (exchange := _exchange(handler)) is not None
            and reported.get(ident) is not exchange
            and now - exchange.started >= self.deadline
        ]
        if not overdue:
            return
        frames = sys._current_frames()
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        for ident, handler, exchange in overdue:
            frame = frames.get(ident)
            stack = format_thread_stack(frame) if frame is not None else "  (no stack)"
            if requests.get(ident) is not handler or handler.exchange is not exchange:
                continue  # it ended while we looked: the stack is someone else's
            reported[ident] = exchange
            error_log.warning(
                "%s: still running after %.2f s (request deadline %g s), in thread %s;"
                " its stack, most recent call last:\n%s",
                handler.describe_request(),
                time.perf_counter() - exchange.started,
                self.deadline,
                names.get(ident, ident),
                stack,
            )
            if self.on_deadline is not None:
                self.on_deadline()


def _exchange(handler: WSGIRequestHandler | None) -> Exchange | None:
    """The handler's current Exchange (None for no handler)."""
    return None if handler is None else handler.exchange
