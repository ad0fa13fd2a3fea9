"""The lint tests' shared harness: an in-process server, environs, and small apps.

Rule: nothing here tests anything.  ``run`` serves one request through
:class:`LintMiddleware` the way PEP 3333's example gateway does (on a list,
recording what the server is given, never raising); the apps and middleware
below are the ones more than one test module uses.
"""

from __future__ import annotations

import gzip
import io
import wsgiref.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from wsgibridge._types import Environ as Environ
from wsgibridge.lint import LintMiddleware, LintViolation

StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Any]
Middleware = Callable[[App], App]
TEXT = [("Content-Type", "text/plain")]
TIMEOUT = 5.0


# -- the in-process harness --------------------------------------------------------------------


class Recorder:
    """The server side: PEP 3333's example gateway, recording what it is given, lenient."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.status: Any = None
        self.headers: Any = None
        self.headers_sent = False
        self.chunks: list[Any] = []

    def start_response(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
        self.calls.append((args, kwargs))
        exc_info = args[2] if len(args) > 2 else kwargs.get("exc_info")
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        self.status = args[0] if args else kwargs.get("status")
        self.headers = args[1] if len(args) > 1 else kwargs.get("response_headers")
        return self.write

    def write(self, data: Any) -> None:
        self.chunks.append(data)
        if data:
            self.headers_sent = True


@dataclass
class Outcome:
    violations: list[LintViolation]
    server: Recorder
    error: BaseException | None = None
    result_type: type | None = None  # of what the lint returned
    lint: LintMiddleware | None = field(default=None, repr=False)

    @property
    def rules(self) -> list[str]:
        return [v.rule for v in self.violations]

    @property
    def body(self) -> bytes:
        return b"".join(c for c in self.server.chunks if isinstance(c, bytes))

    def message(self, rule: str) -> str:
        return next(v.message for v in self.violations if v.rule == rule)


def make_environ(
    method: str = "GET",
    path: str = "/x",
    body: bytes | None = None,
    query: str = "",
    extra: dict[str, Any] | None = None,
) -> Environ:
    """A real environ: wsgiref.util.setup_testing_defaults plus a BytesIO wsgi.input."""
    environ: Environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body or b""),
    }
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(extra or {})
    return environ


def run(
    app: App,
    environ: Environ | None = None,
    *,
    above: Middleware | None = None,
    close: bool = True,
    **env: Any,
) -> Outcome:
    """Serve one request: ``above(LintMiddleware(app))``, iterate, close; never raises."""
    violations: list[LintViolation] = []
    server = Recorder()
    lint = LintMiddleware(app, report=violations.append)
    outer: App = above(lint) if above is not None else lint
    if environ is None:
        environ = make_environ(**env)
    outcome = Outcome(violations, server, lint=lint)
    result: Any = None
    try:
        result = outer(environ, server.start_response)
        outcome.result_type = type(result)
        for chunk in result:
            server.write(chunk)
    except Exception as exc:
        outcome.error = exc
    finally:
        if close and hasattr(result, "close"):
            try:
                result.close()
            except Exception as exc:
                outcome.error = outcome.error or exc
    del result
    return outcome


def rules_of(app: App, **kwargs: Any) -> list[str]:
    return run(app, **kwargs).rules


def simple(body: bytes = b"hello", headers: list[tuple[str, str]] | None = None) -> App:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [*TEXT, *(headers or [])])
        return [body]

    return app


def environ_changer(change: Callable[[Environ], None]) -> Middleware:
    """An upstream middleware that changes the environ before the lint sees it."""

    def wrap(app: App) -> App:
        def environ_rewriter(environ: Environ, start_response: StartResponse) -> Any:
            change(environ)
            return app(environ, start_response)

        return environ_rewriter

    return wrap


# -- apps and middleware that several test modules use -----------------------------------------


def lazy_generator(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", TEXT)  # on the first iteration: valid
    yield b"lazy"
    yield b""
    yield b" body"


def write_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    write = start_response("200 OK", [*TEXT, ("Content-Length", "6")])
    write(b"abc")
    write(b"def")
    return []


def reader(how: Callable[[Any], Any]) -> App:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        data = how(environ["wsgi.input"])
        start_response("200 OK", TEXT)
        return [data if isinstance(data, bytes) else b"".join(data)]

    return app


def footer(app: App) -> App:
    """A middleware that appends a footer and forgets the Content-Length."""

    def add_footer(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        result = app(environ, start_response)
        try:
            yield from result
            yield b"<!-- served by footer -->"
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return add_footer


def gzipper(app: App) -> App:
    """A gzip middleware that keeps the stale Content-Length of the uncompressed body."""

    def gzip_middleware(environ: Environ, start_response: StartResponse) -> list[bytes]:
        captured: list[Any] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, [*headers, ("Content-Encoding", "gzip")]]
            return lambda data: None

        result = app(environ, start)
        try:
            body = gzip.compress(b"".join(result))
        finally:
            if hasattr(result, "close"):
                result.close()
        start_response(*captured)
        return [body]

    return gzip_middleware


class Closing:
    """An app whose iterable has close(), counting the calls."""

    def __init__(self) -> None:
        self.closed = 0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        app = self

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"body"

            def close(self) -> None:
                app.closed += 1

        return Body()
