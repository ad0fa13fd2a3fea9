"""``LiveServer``: a background server that lints the app and records its requests.

Rule: what every test server of the package adds to a plain
:class:`~wsgibridge.BackgroundServer` - PEP 3333 lint (on unless
``lint=False``) and a :class:`RequestLog` - and nothing else; no test
framework is imported here (the pytest plugin and the Django live-server
thread both build on it).
"""

from __future__ import annotations

from typing import Any

from .._types import WSGIApp
from ..serving.background import BackgroundServer
from .requestlog import RequestLog


class LiveServer(BackgroundServer):
    """A background server that records what it saw (and what the lint found)."""

    def __init__(self, app: WSGIApp, *args: Any, lint: bool = True, **options: Any) -> None:
        self.lint_violations: list[Any] = []
        self.lint: Any = None
        if lint:
            from ..lint import LintMiddleware

            app = self.lint = LintMiddleware(app, report=self.lint_violations.append)
        super().__init__(app, *args, **options)
        server = self.server
        self.requests = RequestLog(lambda: server.requests_begun)
        server.observers.append(self.requests)
        self.ca_file: str | None = None

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
