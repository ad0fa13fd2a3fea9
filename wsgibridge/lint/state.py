"""One request as the lint sees it: what it knows so far, and the violations found.

Rule: a violation is flagged into the request's :class:`_Request` (once per rule
and key), and delivered to ``report`` only by :meth:`_Request.deliver`, outside
any :func:`_checking` guard - so a failing check is a logged lint bug, while an
exception from ``report`` reaches the code that made the mistake.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from .describe import _show
from .rules import RULES, LintViolation

log = logging.getLogger("wsgibridge.lint")  # the package's logger, whatever the module

_NO_BODY = (204, 304)


@contextlib.contextmanager
def _checking(what: str) -> Iterator[None]:
    """Run checks; a check that fails is a bug in the lint, logged and skipped."""
    try:
        yield
    except Exception:
        log.exception("lint: checking %s failed (a bug in wsgibridge.lint, not in the app)", what)


class _Request:
    """What the lint knows about one request, and the violations found in it."""

    def __init__(
        self, report: Callable[[LintViolation], None], request: str, upstream: str, app: str
    ) -> None:
        self.report = report
        self.request = request
        self.upstream = upstream  # who called the lint: the server or a middleware
        self.app = app
        self.seen: set[tuple[str, object]] = set()
        self.pending: list[LintViolation] = []
        self.lock = threading.Lock()
        self.method = ""
        self.start_calls = 0
        self.status_code: int | None = None
        self.declared: int | None = None  # the Content-Length of the current headers
        self.produced = 0  # body bytes produced (write() and the iterable)
        self.returned = False  # the application callable has returned
        self.raised_exc_info = False  # start_response(..., exc_info) raised into the app

    def flag(self, rule: str, message: str, key: object = None) -> None:
        """Note a violation (once per rule and key per request); delivered by :meth:`deliver`."""
        with self.lock:
            if (rule, key) in self.seen:
                return
            self.seen.add((rule, key))
            spec = RULES[rule]
            self.pending.append(
                LintViolation(rule, message, spec.fix, spec.reference, self.request)
            )

    def deliver(self) -> None:
        """Hand the pending violations to ``report`` (outside any check guard)."""
        while True:
            with self.lock:
                if not self.pending:
                    return
                violation = self.pending.pop(0)
            self.report(violation)

    # -- the body, from write() and the iterable --

    def body(self, data: bytes, via: str) -> None:
        size = len(data)
        if not size:
            return
        self.produced += size
        code = self.status_code
        if code in _NO_BODY:
            self.flag(
                "body-forbidden",
                f"{via} produced body bytes ({_show(data)}) for a {code} response, which has no"
                " body; the server drops them.",
            )
        elif (
            self.declared is not None
            and self.method != "HEAD"
            and code is not None
            and code >= 200
            and self.produced > self.declared
        ):
            self.flag(
                "content-length-exceeded",
                f"the headers say Content-Length: {self.declared} but {via} produced"
                f" {self.produced} bytes so far; the bytes past the length are lost and a client"
                " may take them for the next response.",
            )

    def end(self, via: str) -> None:
        """The body is complete (the iterable is exhausted, or a list was returned)."""
        if self.start_calls == 0:
            self.flag(
                "start-response-missing",
                f"{via} ended without start_response ever being called, so there is no status"
                " to send.",
            )
            return
        code = self.status_code
        if (
            self.declared is not None
            and self.method != "HEAD"
            and code is not None
            and code >= 200
            and code not in _NO_BODY
            and self.produced < self.declared
        ):
            self.flag(
                "content-length-short",
                f"the headers say Content-Length: {self.declared} but the body ended after"
                f" {self.produced} bytes; the client waits for the rest until the connection"
                " closes.",
            )

    def trapped(self, how: str) -> None:
        if self.raised_exc_info:
            self.flag(
                "exc-info-trapped",
                "start_response(status, headers, exc_info) raised (the headers were already"
                f" sent), and the application caught the exception and {how}.",
            )
