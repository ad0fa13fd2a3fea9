"""A drop-in for WebTest's ``StopableWSGIServer`` (and ``webtest.http``'s helpers).

``webtest.http.StopableWSGIServer`` runs waitress in a daemon thread, picks
a "free" port by binding and closing one (a race), polls until the server
answers, and cannot really stop.  The class here has its interface -
``create(app, **kw)``, ``wait()``, ``shutdown()``, ``application_url``,
``run()``, the ``/__application__`` ping and the ``/__file__`` page - over
a :class:`~wsgibridge.BackgroundServer`: bound to port 0 before it starts,
accepting when ``create`` returns, stopped (threads joined) by ``shutdown``.
A suite switches by changing one import::

    from wsgibridge.testing import StopableWSGIServer   # was: from webtest.http import ...
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from .._types import WSGIApp
from ..serving.background import BackgroundServer

Environ = dict[str, Any]
StartResponse = Callable[..., Any]


# WebTest's create() keyword arguments are waitress adjustments.  These have a
# wsgibridge equivalent (name -> Config field) ...
_WAITRESS_NAMES = {
    "host": "host",
    "port": "port",
    "threads": "threads",
    "expose_tracebacks": "expose_tracebacks",
    "url_scheme": "url_scheme",
    "url_prefix": "url_prefix",
    "connection_limit": "connection_limit",
    "backlog": "backlog",
    "channel_timeout": "keepalive_timeout",
    "max_request_header_size": "max_header_bytes",
    "max_request_body_size": "max_body_size",
    "trusted_proxy": "forwarded_allow_ips",
}
# ... these are translated by _translate ...
_WAITRESS_TRANSLATED = {"listen", "unix_socket", "unix_socket_perms", "sockets"}
# ... and these tune waitress's own buffering, logging or proxy-header policy,
# which wsgibridge does not have (it trusts a trusted proxy's forwarding
# headers and drops them from anyone else): accepted, kept in ``adj``, ignored.
_WAITRESS_IGNORED = {
    "ipv4",
    "ipv6",
    "trusted_proxy_count",
    "trusted_proxy_headers",
    "log_untrusted_proxy_headers",
    "clear_untrusted_proxy_headers",
    "recv_bytes",
    "send_bytes",
    "outbuf_overflow",
    "outbuf_high_watermark",
    "inbuf_overflow",
    "cleanup_interval",
    "log_socket_errors",
    "ident",
    "asyncore_loop_timeout",
    "asyncore_use_poll",
    "channel_request_lookahead",
    "server_name",
}
WAITRESS_OPTIONS = frozenset(_WAITRESS_NAMES) | _WAITRESS_TRANSLATED | _WAITRESS_IGNORED


def _translate(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Any] | None]:
    """Config options and pre-bound sockets for WebTest's (waitress's) keyword arguments."""
    unknown = sorted(set(kwargs) - WAITRESS_OPTIONS)
    if unknown:
        raise ValueError(
            f"StopableWSGIServer: unknown option{'s' if len(unknown) > 1 else ''}"
            f" {', '.join(unknown)} (it takes waitress's: {', '.join(sorted(WAITRESS_OPTIONS))})"
        )
    options = {_WAITRESS_NAMES[k]: v for k, v in kwargs.items() if k in _WAITRESS_NAMES}
    binds: list[str] = []
    if "listen" in kwargs:  # waitress: "host:port host:port ..."
        binds += str(kwargs["listen"]).split()
    if "unix_socket" in kwargs:
        binds.append(f"unix:{kwargs['unix_socket']}")
    if binds:
        options["bind"] = tuple(binds)
    if "unix_socket_perms" in kwargs:  # waitress: an octal string, "600"
        options["unix_socket_mode"] = int(str(kwargs["unix_socket_perms"]), 8)
    sockets = kwargs.get("sockets")
    return options, list(sockets) if sockets else None


def get_free_port() -> tuple[str, int]:
    """``webtest.http.get_free_port``: a host and a port that was free a moment ago.

    Racy by nature (another process may take the port before you bind it); a
    server made here binds port 0 itself and never needs this.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port = int(sock.getsockname()[1])
    return os.environ.get("WEBTEST_SERVER_BIND", "127.0.0.1"), port


def check_server(
    host: str, port: int | str, path_info: str = "/", timeout: float = 3, retries: int = 30
) -> int:
    """``webtest.http.check_server``: GET ``path_info`` until the server answers; its status.

    0 when it never answered in ``retries`` tries (0.3 s apart) or ``retries``
    is negative.  A server from :meth:`StopableWSGIServer.create` answers at
    the first try.
    """
    for attempt in range(max(retries, 0)):
        if attempt:
            time.sleep(0.3)
        try:
            connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
            try:
                connection.request("GET", path_info)
                return connection.getresponse().status
            finally:
                connection.close()
        except (OSError, http.client.HTTPException):
            continue
    return 0


class StopableWSGIServer:
    """``webtest.http.StopableWSGIServer``'s interface on a wsgibridge background server."""

    was_shutdown = False

    def __init__(self, application: WSGIApp, **kwargs: Any) -> None:
        options, sockets = _translate(kwargs)
        options.setdefault("host", os.environ.get("WEBTEST_SERVER_BIND", "127.0.0.1"))
        options.setdefault("port", 0)
        self.test_app = application
        self.background = BackgroundServer(self.wrapper, sockets=sockets, **options)
        # The host as given (a name stays a name, as with waitress), else the one
        # bound (with listen= or sockets=); the port bound.
        host, port = self.background.host or "127.0.0.1", self.background.port
        given = str(kwargs.get("host", ""))
        if given and given not in ("0.0.0.0", "::") and "listen" not in kwargs:
            host = given.strip("[]")
        # What tests read of waitress's adjustments: every option given, and
        # the address actually bound.
        self.adj = SimpleNamespace(**{**kwargs, "host": host, "port": port})
        url_host = f"[{host}]" if ":" in host else host
        self.application_url = f"http://{url_host}:{port}/"
        self.runner: threading.Thread | None = None

    def wrapper(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """The app, plus WebTest's two extra paths.

        ``/__application__`` answers "server started" (the ping ``wait()``
        uses); ``/__file__?__file__=PATH`` serves a local file with
        ``http://localhost/`` replaced by the server's address - a local file
        read, so never expose this server beyond a test.
        """
        path = environ.get("PATH_INFO", "")
        if "__application__" in path:
            body = b"server started"
            start_response(
                "200 OK",
                [("Content-Type", "text/plain; charset=UTF-8"), ("Content-Length", "14")],
            )
            return [body]
        if "__file__" in path:
            filename = parse_qs(environ.get("QUERY_STRING", "")).get("__file__", [""])[0]
            if filename and os.path.isfile(filename):
                with open(filename, "rb") as file:
                    body = file.read()
                host = environ.get("HTTP_HOST") or f"{self.adj.host}:{self.adj.port}"
                body = body.replace(b"http://localhost/", f"http://{host}/".encode())
                status = "200 OK"
            else:
                body, status = b"", "404 Not Found"
            start_response(
                status,
                [
                    ("Content-Type", "text/html; charset=UTF-8"),
                    ("Content-Length", str(len(body))),
                ],
            )
            return [body]
        result: Iterable[bytes] = self.test_app(environ, start_response)
        return result

    @classmethod
    def create(cls, application: WSGIApp, **kwargs: Any) -> StopableWSGIServer:
        """Start a server for ``application`` in a thread; it is accepting on return."""
        kwargs.setdefault("expose_tracebacks", True)  # as WebTest does
        server = cls(application, **kwargs)
        server.background.start()
        server.runner = server.background.thread
        return server

    def run(self) -> None:
        """Serve in the calling thread until :meth:`shutdown` (from another thread)."""
        self.background.server.serve_forever()

    def wait(self, retries: int = 30) -> bool:
        """True: the server is accepting (it is from ``create`` on; nothing is polled)."""
        return self.background.running and not self.was_shutdown

    def shutdown(self, debug: bool = False) -> bool:
        """Stop the server (gracefully, in milliseconds) and join its threads."""
        self.was_shutdown = True
        self.background.stop(timeout=1.0)
        return True
