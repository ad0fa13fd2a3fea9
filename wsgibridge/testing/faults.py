"""Faults a live test server injects on its side of the wire: ``Faults`` and ``Fault``.

Rule: a schedule, and nothing else - which misbehaviour applies to the next
request (or connection), decided once when the request head has arrived
and the app is to answer it (the server's own answers - the health path,
``--static`` files, refusals - are never faulted); the handler in
``faultyhandler.py`` carries it out.  Every fault is
bounded: a delay is at most :data:`MAX_DELAY` seconds, and :meth:`Faults.clear`
(called when the test ends) removes them all and wakes every request that is
sleeping on one, so a server stops in milliseconds whatever was scheduled.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

MAX_DELAY = 60.0  # seconds: the longest delay or hold a fault may ask for

# Status lines a client must refuse, by name (``malformed_status("bad-code")``).
# RFC 9112 §4: status-line = HTTP-version SP status-code SP [ reason-phrase ],
# and status-code = 3DIGIT.
MALFORMED_STATUS = {
    "bad-code": b"HTTP/1.1 2OO OK",
    "bad-version": b"HTTP/9 200 OK",
    "no-code": b"HTTP/1.1 OK",
    "garbage": b"\x00\x01 not http",
}

# ``bad_framing`` kinds: the body ends before its framing says (then the
# connection closes), more bytes follow it than its framing accounts for, or a
# chunk-size line is not hex.
FRAMINGS = ("short", "long", "bad-chunk")


@dataclass
class Fault:
    """One scheduled misbehaviour: what, for which paths, how many more times."""

    kind: str
    value: Any = None
    path: str | None = None  # only requests whose path (before "?") is this one
    times: int | None = None  # requests (or connections) left; None: until cleared
    until: float | None = None  # time.monotonic() after which it no longer applies
    reset: bool = False  # cut_after: a TCP reset instead of a FIN
    hits: int = field(default=0)  # how many requests (connections) it applied to

    def live(self, now: float) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        return self.until is None or now < self.until

    def take(self) -> None:
        self.hits += 1
        if self.times is not None:
            self.times -= 1


@dataclass
class Plan:
    """What the faults scheduled for one request (None fields: behave)."""

    delay_response: float | None = None
    delay_first_byte: float | None = None
    read_rate: int | None = None  # bytes per second
    stop_reading: float | None = None  # seconds the body is left unread
    cut_after: int | None = None
    cut_reset: bool = False
    status_line: bytes | None = None
    framing: str | None = None


def _delay(seconds: float) -> float:
    seconds = float(seconds)
    if not 0 <= seconds <= MAX_DELAY:
        raise ValueError(f"a delay is between 0 and {MAX_DELAY} seconds, not {seconds}")
    return seconds


def _times(times: int | None) -> int | None:
    if times is not None and times < 1:
        raise ValueError(f"times is a positive count (or None: until cleared), not {times}")
    return times


class Faults:
    """The faults a live server injects, per test (``server.faults``); thread-safe.

    Each method schedules one fault and returns its :class:`Fault` (``.hits``
    counts the requests it applied to).  ``times=N`` limits it to the next N
    matching requests, ``path="/x"`` to requests for that path; without
    ``times`` it applies until :meth:`clear`.  Faults of different kinds
    combine on one request; of two of the same kind, the first scheduled wins.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._refusals: list[Fault] = []
        self._wake = threading.Event()
        self.refused = 0  # connections refused (reset) so far
        # Read without the lock on every request: True while any fault is scheduled.
        self.active = False

    # -- scheduling -----------------------------------------------------------------

    def delay_response(
        self, seconds: float, *, path: str | None = None, times: int | None = None
    ) -> Fault:
        """Wait ``seconds`` after the app answered, before the status line goes out."""
        return self._add(Fault("delay_response", _delay(seconds), path, _times(times)))

    def delay_first_byte(
        self, seconds: float, *, path: str | None = None, times: int | None = None
    ) -> Fault:
        """Send the head at once, then wait ``seconds`` before the first body byte."""
        return self._add(Fault("delay_first_byte", _delay(seconds), path, _times(times)))

    def slow_read(
        self, bytes_per_second: int, *, path: str | None = None, times: int | None = None
    ) -> Fault:
        """Read the request body from the socket at about ``bytes_per_second``."""
        if bytes_per_second < 1:
            raise ValueError("slow_read needs a rate of at least 1 byte per second")
        return self._add(Fault("slow_read", int(bytes_per_second), path, _times(times)))

    def stop_reading(
        self, seconds: float = MAX_DELAY, *, path: str | None = None, times: int | None = None
    ) -> Fault:
        """Never read the request body: the app's first read waits ``seconds`` (or until
        :meth:`clear`), then the body ends as if the client had gone (no response)."""
        return self._add(Fault("stop_reading", _delay(seconds), path, _times(times)))

    def cut_after(
        self,
        nbytes: int,
        *,
        reset: bool = False,
        path: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Close the connection after ``nbytes`` of the response (head included: 0 sends
        nothing); a FIN, or a TCP reset with ``reset=True``."""
        if nbytes < 0:
            raise ValueError("cut_after needs a count of bytes >= 0")
        fault = Fault("cut_after", int(nbytes), path, _times(times), reset=reset)
        return self._add(fault)

    def malformed_status(
        self, line: bytes | str = "bad-code", *, path: str | None = None, times: int | None = None
    ) -> Fault:
        """Send ``line`` (bytes, without CRLF) as the status line, or a named one
        (:data:`MALFORMED_STATUS`: ``bad-code``, ``bad-version``, ``no-code``, ``garbage``)."""
        if isinstance(line, str):
            if line not in MALFORMED_STATUS:
                raise ValueError(f"no malformed status line named {line!r}: {MALFORMED_STATUS}")
            line = MALFORMED_STATUS[line]
        if b"\r" in line or b"\n" in line:
            raise ValueError("the status line is given without its CRLF")
        return self._add(Fault("malformed_status", bytes(line), path, _times(times)))

    def bad_framing(self, kind: str, *, path: str | None = None, times: int | None = None) -> Fault:
        """Frame the response body wrongly, then close the connection: ``"short"`` (the
        body ends before its Content-Length or last chunk), ``"long"`` (bytes follow it
        that no framing accounts for), ``"bad-chunk"`` (chunked, a size line not hex)."""
        if kind not in FRAMINGS:
            raise ValueError(f"bad_framing is one of {FRAMINGS}, not {kind!r}")
        return self._add(Fault("bad_framing", kind, path, _times(times)))

    def refuse_connections(
        self, seconds: float | None = None, *, times: int | None = None
    ) -> Fault:
        """Reset new connections (accepted, then closed with a TCP RST before a byte is
        read) for ``seconds``, or the next ``times`` of them; kept-alive ones are served."""
        if (seconds is None) == (times is None):
            raise ValueError("refuse_connections takes seconds or times")
        until = None if seconds is None else time.monotonic() + _delay(seconds)
        fault = Fault("refuse_connections", None, None, _times(times), until)
        with self._lock:
            self._refusals.append(fault)
            self.active = True
        return fault

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
            self.active = True
        return fault

    def clear(self) -> None:
        """Remove every fault, and wake requests sleeping on one (they go on at once)."""
        with self._lock:
            self._faults.clear()
            self._refusals.clear()
            self.active = False
            wake, self._wake = self._wake, threading.Event()
        wake.set()

    # -- for the handler ----------------------------------------------------------------

    def refuse(self) -> bool:
        """True to reset the connection just accepted (counted in ``refused``)."""
        now = time.monotonic()
        with self._lock:
            for fault in self._refusals:
                if fault.live(now):
                    fault.take()
                    self.refused += 1
                    return True
        return False

    def plan(self, path: str) -> Plan | None:
        """The faults that apply to a request for ``path`` (each taken once), or None."""
        now = time.monotonic()
        plan = None
        seen: set[str] = set()
        with self._lock:
            for fault in self._faults:
                kind = fault.kind
                if kind in seen or not fault.live(now):
                    continue
                if fault.path is not None and fault.path != path:
                    continue
                seen.add(kind)
                fault.take()
                if plan is None:
                    plan = Plan()
                _apply(plan, fault)
        return plan

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False when :meth:`clear` cut the wait short."""
        return not self._wake.wait(min(seconds, MAX_DELAY))

    def __repr__(self) -> str:
        with self._lock:
            kinds = [f.kind for f in self._refusals + self._faults]
        return f"<Faults {kinds}>"


def _apply(plan: Plan, fault: Fault) -> None:
    kind, value = fault.kind, fault.value
    if kind == "delay_response":
        plan.delay_response = float(value)
    elif kind == "delay_first_byte":
        plan.delay_first_byte = float(value)
    elif kind == "slow_read":
        plan.read_rate = int(value)
    elif kind == "stop_reading":
        plan.stop_reading = float(value)
    elif kind == "cut_after":
        plan.cut_after = int(value)
        plan.cut_reset = fault.reset
    elif kind == "malformed_status":
        plan.status_line = bytes(value)
    elif kind == "bad_framing":
        plan.framing = str(value)
