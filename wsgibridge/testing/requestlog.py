"""Requests a test server answered, as it saw them: ``RecordedRequest`` and ``RequestLog``.

Rule: an observer of the server's access records (``WSGIServer.observers``),
thread-safe, in the order requests began; it never changes what is served.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..accesslog import AccessRecord


@dataclass(frozen=True)
class RecordedRequest:
    """One request a test server answered, as the server saw it."""

    method: str
    path: str  # undecoded, without the query
    query: str
    headers: Sequence[tuple[str, str]] = field(repr=False)
    body_size: int  # request body bytes received
    status: int  # the status sent
    # The body as the app read it from wsgi.input (de-chunked), its first
    # ``record_body_limit`` bytes; ``body_truncated`` when the app read more.
    # What the app left unread is not kept (``body_size`` counts it).
    body: bytes = field(default=b"", repr=False)
    body_truncated: bool = False

    @classmethod
    def from_record(
        cls, record: AccessRecord, body: bytes = b"", body_truncated: bool = False
    ) -> RecordedRequest:
        return cls(
            method=record.method,
            path=record.path,
            query=record.query,
            headers=tuple(record.request_headers),
            body_size=record.bytes_received,
            status=record.status,
            body=body,
            body_truncated=body_truncated,
        )

    def header(self, name: str, default: str | None = None) -> str | None:
        """A request header by name (case-insensitive; repeats joined with ", ")."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else default


# How long reading a RequestLog waits for requests already begun to be recorded.
SETTLE_TIMEOUT = 1.0


class RequestLog:
    """The requests a server answered, in the order they began (thread-safe; an observer).

    A request is recorded just after its response is sent, so a client can
    have its response before the record exists.  With ``begun`` (the
    server's count of requests begun), reading the log first waits, up to
    :data:`SETTLE_TIMEOUT`, until every request begun is recorded.
    """

    def __init__(self, begun: Callable[[], int] | None = None) -> None:
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._began: list[float] = []  # when each recorded request began (sorted)
        self._begun = begun
        self._cleared = 0  # records dropped by clear(), still counted as begun

    def __call__(self, record: AccessRecord) -> None:
        self.add(RecordedRequest.from_record(record), record.timestamp - record.duration)

    def add(self, request: RecordedRequest, began: float) -> None:
        """Record ``request``, which began at ``began`` (``time.time()``)."""
        # In the order the requests began: two clients' requests can finish
        # (and be recorded) in the other order.
        with self._lock:
            at = bisect.bisect(self._began, began)
            self._began.insert(at, began)
            self._requests.insert(at, request)

    def __iter__(self) -> Any:
        return iter(self.snapshot())

    def __len__(self) -> int:
        return len(self.snapshot())

    def __getitem__(self, index: int) -> RecordedRequest:
        return self.snapshot()[index]

    def snapshot(self) -> list[RecordedRequest]:
        begun = self._begun
        if begun is not None:
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while len(self._requests) + self._cleared < begun() and time.monotonic() < deadline:
                time.sleep(0.001)
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._cleared += len(self._requests)
            self._requests.clear()
            self._began.clear()
