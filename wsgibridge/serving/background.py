"""A server in a background thread, for tests and for programs that embed one.

``serve_in_thread(app, port=0)`` returns a running :class:`BackgroundServer`
once its sockets are bound and its reactor is accepting, so ``server.url``
can be used at once; ``stop()`` is graceful and returns as soon as the
requests in flight are done (in milliseconds for an idle server).  Nothing
here touches signals, so it is safe in any thread of any program, and
several servers can run in one process.  Every thread it starts is named
(``wsgibridge-reactor-<port>``, ``wsgibridge-worker-N``) and joined on stop.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

from .._types import WSGIApp
from .handler import WSGIRequestHandler
from .server import WSGIServer, make_server

START_TIMEOUT = 10.0


class BackgroundServer:
    """A :class:`~wsgibridge.WSGIServer` and the thread that runs its reactor.

    Make one with :func:`serve_in_thread` (started) or construct it and call
    :meth:`start`; use it as a context manager or call :meth:`stop`.
    Options are :class:`~wsgibridge.Config` fields and ``make_server``'s
    keywords (``ssl_context``, ``sockets``, ``handler_class``).
    """

    def __init__(
        self,
        app: WSGIApp,
        host: str | None = "127.0.0.1",
        port: int | None = 0,
        *,
        handler_class: type[WSGIRequestHandler] = WSGIRequestHandler,
        **options: Any,
    ) -> None:
        # An embedded or test server trusts no proxy unless told: on loopback,
        # the CLI's default (trust 127.0.0.1) would let any local client - a
        # browser page after DNS rebinding included - set X-Forwarded-Host.
        options.setdefault("forwarded_allow_ips", "")
        self.server: WSGIServer = make_server(
            app, host, port, handler_class=handler_class, **options
        )
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # -- facts ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/`` (``https`` with TLS)."""
        return self.server.url

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def thread(self) -> threading.Thread | None:
        """The thread that runs the reactor, once started."""
        return self._thread

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> BackgroundServer:
        """Start the reactor thread; return once it is accepting (or raise why not)."""
        if self._thread is not None:
            return self
        thread = threading.Thread(
            target=self._run, name=f"wsgibridge-reactor-{self.port or 'unix'}", daemon=True
        )
        self._thread = thread
        thread.start()
        if not self.server.serving.wait(timeout):
            self.stop(timeout=0)
            raise TimeoutError(f"the server did not start accepting within {timeout} s")
        if self._failure is not None:
            thread.join(timeout)
            raise RuntimeError("the server stopped as it started") from self._failure
        return self

    def _run(self) -> None:
        try:
            self.server.serve_forever()
        except BaseException as exc:  # reported by start() or stop()
            self._failure = exc
        finally:
            self.server.serving.set()  # never leave start() waiting

    def stop(self, timeout: float | None = None, *, delay: float = 0.0) -> float:
        """Stop gracefully (see ``WSGIServer.stop``) and join the threads; returns seconds taken.

        ``timeout`` bounds the wait for requests in flight (default
        ``graceful_timeout``); ``delay`` drains first (the health path
        answers 503 while serving goes on).  Safe to call twice, or without
        ``start``.
        """
        began = time.perf_counter()
        self.server.stop(timeout, delay=delay)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(START_TIMEOUT)
        return time.perf_counter() - began

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<BackgroundServer {self.url} {state}>"


def serve_in_thread(
    app: WSGIApp,
    host: str | None = "127.0.0.1",
    port: int | None = 0,
    **options: Any,
) -> BackgroundServer:
    """A started :class:`BackgroundServer` for ``app``: bound, accepting, in its own thread.

    ::

        with serve_in_thread(app) as server:
            requests.get(server.url)
    """
    return BackgroundServer(app, host, port, **options).start()
