"""Django's live-server tests on wsgibridge: ``LiveServerThread``.

Rule: a drop-in for ``django.test.testcases.LiveServerThread`` - the same
constructor, ``is_ready``, ``error``, ``port``, ``connections_override`` and
``terminate()`` - that serves what Django's thread serves (the test
case's ``static_handler`` around ``_MediaFilesHandler(WSGIHandler())``)
through a wsgibridge server: keep-alive, a thread pool, the pytest
plugin's PEP 3333 lint and request log, and a stop in milliseconds.  Only
Django's test module is imported here (to subclass its thread); settings
are read when the thread runs, never at import.

::

    from django.test import LiveServerTestCase
    from wsgibridge.testing.django import LiveServerThread

    class MyTests(LiveServerTestCase):
        server_thread_class = LiveServerThread
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from django.core.handlers.wsgi import WSGIHandler
from django.db import connections
from django.test import testcases

from .liveserver import LiveServer

__all__ = ["LiveServerThread"]


class _SharedConnections:
    """The app, run with the test's database connections in whichever worker thread.

    Django's own threaded test server puts ``connections_override`` (the
    test's in-memory SQLite connections) in every request thread and closes
    the thread's other connections when the request is done; wsgibridge's
    workers are pooled threads, so this does the same around each request.
    """

    def __init__(self, app: Callable[..., Any], override: Mapping[str, Any]) -> None:
        self.app = app
        self.override = dict(override)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        for alias, conn in self.override.items():
            connections[alias] = conn
        return _Closing(self.app(environ, start_response))


class _Closing:
    """A response that closes this thread's database connections after its own ``close()``
    (an in-memory SQLite connection ignores that: closing it would drop the database)."""

    def __init__(self, result: Iterable[bytes]) -> None:
        self.result = result

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.result)

    def close(self) -> None:
        try:
            close = getattr(self.result, "close", None)
            if close is not None:
                close()
        finally:
            connections.close_all()


class LiveServerThread(testcases.LiveServerThread):  # type: ignore[misc]
    """``LiveServerTestCase.server_thread_class`` (and pytest-django's) on wsgibridge.

    Class attributes tune it: ``lint`` (check the app against PEP 3333;
    its findings are logged, kept in ``lint_violations`` and raised as an
    ``AssertionError`` by :meth:`terminate`), ``options`` (
    :class:`~wsgibridge.Config` fields, e.g. ``{"threads": 4}``) and
    ``stop_timeout`` (seconds a stop waits for requests in flight).
    ``requests`` is the :class:`~wsgibridge.testing.RequestLog` of what the
    server answered; ``live_server`` the running
    :class:`~wsgibridge.testing.liveserver.LiveServer`.
    """

    lint: bool = True
    options: Mapping[str, Any] = {}
    stop_timeout: float = 2.0

    def __init__(
        self,
        host: str,
        static_handler: Callable[..., Any],
        connections_override: Mapping[str, Any] | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(host, static_handler, connections_override, port)
        self.host: str = host
        self.port: int = port
        self.live_server: LiveServer | None = None

    @classmethod
    def replacing(cls, thread: Any) -> LiveServerThread:
        """One of these with the arguments of an unstarted Django ``LiveServerThread``
        (how pytest-django's ``live_server`` is moved onto wsgibridge)."""
        replacement = cls(
            thread.host,
            thread.static_handler,
            connections_override=thread.connections_override,
            port=thread.port,
        )
        replacement.daemon = thread.daemon
        return replacement

    # -- what the test reads ---------------------------------------------------------

    @property
    def requests(self) -> Any:
        """What the server answered, in order (a ``RequestLog``; empty before it runs)."""
        server = self.live_server
        if server is None:
            from .requestlog import RequestLog

            return RequestLog()
        return server.requests

    @property
    def lint_violations(self) -> list[Any]:
        server = self.live_server
        return [] if server is None else server.lint_violations

    # -- Django's interface ----------------------------------------------------------

    def _create_server(self, connections_override: Mapping[str, Any] | None = None) -> LiveServer:
        """A bound, listening (not yet serving) wsgibridge server for Django's app."""
        app = self.static_handler(testcases._MediaFilesHandler(WSGIHandler()))
        if connections_override:
            app = _SharedConnections(app, connections_override)
        options = {"graceful_timeout": self.stop_timeout, **self.options}
        return LiveServer(app, self.host, self.port, lint=self.lint, **options)

    def run(self) -> None:
        """Bind, say ready, serve until :meth:`terminate` (in this thread, like Django's)."""
        if self.connections_override:
            for alias, conn in self.connections_override.items():
                connections[alias] = conn
        try:
            server = self.live_server = self._create_server(self.connections_override)
            self.httpd = server.server
            if self.port == 0:
                self.port = server.port
            self.is_ready.set()
            server.server.serve_forever()
        except Exception as exc:  # Django's thread reports it through ``error``
            self.error = exc
            self.is_ready.set()
        finally:
            connections.close_all()

    def terminate(self) -> None:
        """Stop (idle keep-alive connections at once, requests in flight finished) and join;
        raise ``AssertionError`` if the lint found a mistake in what was served."""
        server = self.live_server
        if server is not None:
            server.stop(self.stop_timeout)
        self.join()
        if server is not None and server.lint is not None:
            server.lint.check_closed()
            report = server.lint_report()
            if report:
                raise AssertionError(report)
