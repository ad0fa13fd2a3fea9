"""``LiveServer``: a background server that lints the app and records its requests.

Rule: what every test server of the package adds to a plain
:class:`~wsgibridge.BackgroundServer` - PEP 3333 lint (on unless
``lint=False``), a :class:`RequestLog` (bodies kept up to a cap) and
:class:`~wsgibridge.testing.Faults` on request - and nothing else; no test
framework is imported here (the pytest plugin and the Django live-server
thread both build on it).
"""

from __future__ import annotations

from typing import Any

from .._types import WSGIApp
from ..accesslog import AccessRecord
from ..serving.background import BackgroundServer
from .faults import Faults
from .faultyhandler import RECORD_BODY_LIMIT, handler_for, recorded_body
from .requestlog import RecordedRequest, RequestLog


class LiveServer(BackgroundServer):
    """A background server that records what it saw (and what the lint found), and
    misbehaves on request (``.faults``, a :class:`~wsgibridge.testing.Faults`)."""

    def __init__(
        self,
        app: WSGIApp,
        *args: Any,
        lint: bool = True,
        record_body_limit: int = RECORD_BODY_LIMIT,
        **options: Any,
    ) -> None:
        self.lint_violations: list[Any] = []
        self.lint: Any = None
        if lint:
            from ..lint import LintMiddleware

            app = self.lint = LintMiddleware(app, report=self.lint_violations.append)
        self.faults = Faults()
        options.setdefault("handler_class", handler_for(self.faults, record_body_limit))
        super().__init__(app, *args, **options)
        server = self.server
        self.requests = RequestLog(lambda: server.requests_begun)
        server.observers.append(self._record)
        self.ca_file: str | None = None

    def _record(self, record: AccessRecord) -> None:
        tee = recorded_body()
        request = RecordedRequest.from_record(record)
        if tee is not None:
            request = RecordedRequest.from_record(record, tee.data, tee.truncated)
        self.requests.add(request, record.timestamp - record.duration)

    def stop(self, timeout: float | None = None, *, delay: float = 0.0) -> float:
        """Clear the faults (waking requests asleep on one), then stop."""
        self.faults.clear()
        return super().stop(timeout, delay=delay)

    def lint_report(self, skip: int = 0) -> str:
        """The lint's findings (past the first ``skip``) as one message; "" when none."""
        return lint_report([self], skip)


def lint_report(servers: list[LiveServer], skip: int = 0) -> str:
    violations = [v for server in servers for v in server.lint_violations][skip:]
    if not violations:
        return ""
    return "PEP 3333 lint found {} problem(s):\n\n{}".format(
        len(violations), "\n\n".join(str(v) for v in violations)
    )
