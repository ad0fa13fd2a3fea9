"""``LintMiddleware``: the WSGI middleware that puts the checks and proxies in place,
and the two ready-made ``report`` callables.

Rule: one call of the middleware is one request: it checks the environ, swaps in
the checked streams and ``start_response``, calls the app, and checks what the
app returned - raising only what the app (or ``report``) raised.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from .checks import _check_environ, _content_length, _iterable
from .describe import _describe, _request_line, _show, _where
from .rules import LintViolation, WSGILintWarning
from .state import _checking, _Request
from .wrappers import _Errors, _Input, _Result, _StartResponse

log = logging.getLogger("wsgibridge.lint")  # the package's logger, whatever the module

# -- the report callables --------------------------------------------------------------------


def default_report(violation: LintViolation) -> None:
    """Log a WARNING on the ``wsgibridge.lint`` logger and ``warnings.warn`` a
    :class:`WSGILintWarning` (in that order, so the log line is written even when
    warnings are errors)."""
    log.warning("%s", violation.summary())
    warnings.warn(WSGILintWarning(str(violation)), stacklevel=2)


def log_report(violation: LintViolation) -> None:
    """Log the violation once, in full (rule, request, problem, reference, fix), as a
    WARNING on the ``wsgibridge.lint`` logger: what the server's ``--lint`` uses."""
    log.warning("%s", violation)


# -- the middleware --------------------------------------------------------------------------


class LintMiddleware:
    """Wrap a WSGI app; check it (and whatever it wraps) against PEP 3333 as requests run.

    Each violation goes to ``report`` (default :func:`default_report`: a log line and a
    :class:`WSGILintWarning`), once per rule (and header, key...) per request.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        report: Callable[[LintViolation], None] = default_report,
    ) -> None:
        self.app = app
        self.report = report
        self._live: weakref.WeakSet[_Result] = weakref.WeakSet()
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        frame = sys._getframe(1)
        state = _Request(self.report, _request_line(environ), _where(frame), _describe(self.app))
        del frame
        file_wrapper: Any = None
        with _checking("the environ"):
            _check_environ(state, environ)
            if isinstance(environ, MutableMapping):
                method = environ.get("REQUEST_METHOD")
                state.method = method if isinstance(method, str) else ""
                file_wrapper = environ.get("wsgi.file_wrapper")
                stream = environ.get("wsgi.input")
                if stream is not None:
                    terminated = bool(environ.get("wsgi.input_terminated"))
                    declared = _content_length(environ.get("CONTENT_LENGTH"))
                    environ["wsgi.input"] = _Input(stream, state, declared, terminated)
                errors = environ.get("wsgi.errors")
                if errors is not None:
                    environ["wsgi.errors"] = _Errors(errors, state)
        state.deliver()
        result = self.app(environ, _StartResponse(start_response, state))
        state.returned = True
        proxy: _Result | None = None
        with _checking("the application's return value"):
            proxy = self._returned(state, result, file_wrapper)
        state.deliver()
        if proxy is None:
            return result  # type: ignore[no-any-return]
        with self._lock:
            self._live.add(proxy)
        return proxy

    def _returned(self, state: _Request, result: Any, file_wrapper: Any) -> _Result | None:
        """Check what the app returned; the proxy to return, or None for the result itself."""
        state.trapped("returned normally")
        app = state.app
        if isinstance(result, (str, bytes, bytearray, memoryview)):
            state.flag(
                "result-is-string",
                f"{app} returned a {type(result).__qualname__} ({_show(result)}), which iterates"
                " one character or one int at a time.",
            )
            return None
        if result is None or not _iterable(result):
            state.flag(
                "result-not-iterable",
                f"{app} returned {_show(result)}, which is not iterable.",
            )
            return None
        if type(result) in (list, tuple):
            # Nothing can run later: check it all now and keep the server's fast path.
            for item in result:
                if isinstance(item, bytes):
                    state.body(item, f"the {type(result).__name__} returned by {app}")
                else:
                    state.flag(
                        "body-not-bytes",
                        f"{app} returned a {type(result).__name__} holding a"
                        f" {type(item).__qualname__}: {_show(item)}.",
                    )
            state.end(f"the {type(result).__name__} returned by {app}")
            return None
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            if state.start_calls == 0:
                state.end(f"the wsgi.file_wrapper returned by {app}")
            return None  # the server may send it with sendfile: pass it through
        return _Result(result, state)

    def check_closed(self) -> int:
        """Report ``close-not-called`` for every iterable still alive and not closed.

        Call it when no request is in flight (an iterable being sent is not closed
        yet). Returns the number of violations reported.
        """
        with self._lock:
            live = list(self._live)
        return sum(proxy._report_unclosed() for proxy in live)

    def __repr__(self) -> str:
        return f"LintMiddleware({self.app!r})"
