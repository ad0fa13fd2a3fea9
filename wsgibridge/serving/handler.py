"""``WSGIRequestHandler``: a ``BaseHTTPRequestHandler`` that hands every request to a WSGI app.

Rule: this module and its socket half, ``stream.py`` (timeouts, reading what
has arrived, the head's deadline, writing), are the only code that touches
the connection's ``rfile`` and ``wfile``; it sees its server only as a
:class:`ServerContext`.  One request's
life, all in :meth:`WSGIRequestHandler.handle_one_request`, its state in a
fresh :class:`~wsgibridge.serving.exchange.Exchange`:

1. read the request head from what has arrived, never waiting
   (:meth:`read_head`, over ``http.parser.take_head``);
2. decide the body's framing and wrap it in a bounded ``wsgi.input``;
3. build the environ (``http.environ.build_environ``, pure);
4. run the app through a ``ResponseWriter`` (``http/response.py``), which calls
   back into :meth:`send_head` / :meth:`send_body` / :meth:`send_file` here;
5. drain what the app left unread, or close the connection;
6. write the access log line.

Subclasses customise through the collaborator attributes (``writer_class``,
``input_class``) and the named hooks (``open_input``, ``check_continue``,
``send_continue``, ``make_environ``, ``assign_request_id``, ``log_access``),
never through ``__getattr__``.
A target under a ``--static`` mount (or the health path) is answered by the
server before step 2, the app not called (``staticfiles.py``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler
from threading import get_ident
from typing import Any, Protocol

from .._types import WSGIApp
from .._version import __version__
from ..accesslog import AccessLogFormat, AccessRecord, escape_log
from ..config import Config
from ..errors import HTTPError, PayloadTooLarge
from ..http.body import ChunkedInput, ContentLengthInput, InputStream
from ..http.environ import build_environ, environ_key
from ..http.forwarded import apply_forwarded
from ..http.parser import Limits, RequestHead
from ..http.reader import SocketReader
from ..http.requestid import ENVIRON_KEY as REQUEST_ID_KEY
from ..http.response import (
    ResponseWriter,
    encode_head,
    error_response,
    validate_headers,
)
from ..http.trusted import TrustedProxies
from .exchange import Exchange, ExchangeLogging
from .metrics import ServerMetrics
from .ownanswers import NO_HEALTH_PATH, OwnAnswers
from .staticfiles import StaticFiles
from .staticfiles import answer as answer_static
from .stream import ConnectionStream
from .tls import tls_environ

access_log = logging.getLogger("wsgibridge.access")
error_log = logging.getLogger("wsgibridge.error")

LOGGED_LINE_MAX = 512  # bytes of a refused request line kept for the logs
NO_TRUST = TrustedProxies("")  # for a client a PROXY header said is unknown


def not_mounted(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The 404 for a path outside the ``url_prefix`` the app is mounted under."""
    body = b"404 Not Found\n"
    start_response(
        "404 Not Found",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]


class ServerContext(Protocol):
    """What a handler needs of its server - ``WSGIServer`` is one, a test can be another."""

    app: WSGIApp
    config: Config
    limits: Limits
    url_scheme: str
    multithread: bool
    multiprocess: bool
    trusted_proxies: TrustedProxies
    access_format: AccessLogFormat
    observers: list[Callable[[AccessRecord], None]]
    # The figures for --metrics-bind (every request is counted there); None: no metrics.
    metrics: ServerMetrics | None
    # True when every connection inherits TCP_NODELAY and the kernel timeouts
    # from its listener (stream.prepare_listener), so the handler sets none.
    socket_options_inherited: bool
    # Every response closes its connection: the stop is coming or under way, or
    # the server hands its clients over to other processes (the connection is
    # kept until then, so no request the client sends meanwhile is lost).
    draining: bool
    # The stop is coming or under way: the health path says 503.
    stop_announced: bool
    # The request watchdog's table (watchdog.py): thread ident -> the handler
    # whose request that thread runs; None when no watchdog looks.
    watched: dict[int, WSGIRequestHandler] | None

    @property
    def stopping(self) -> bool: ...

    def note_request(self) -> None:
        """Count a request that observers will see recorded."""

    def local_address(self, sock: socket.socket) -> tuple[str, str]:
        """(SERVER_NAME, SERVER_PORT) for a connection."""


class WSGIRequestHandler(ConnectionStream, ExchangeLogging, OwnAnswers, BaseHTTPRequestHandler):
    """Serve each request on a connection by calling the server's WSGI app."""

    protocol_version = "HTTP/1.1"
    # Until a request line is parsed, answers go out as HTTP/1.1 (http.server's
    # default of HTTP/0.9 would send an error without a status line).
    default_request_version = "HTTP/1.1"
    server_version = f"wsgibridge/{__version__}"
    # Collaborators a subclass may swap.
    writer_class: type[ResponseWriter] = ResponseWriter
    input_class: type[ContentLengthInput] = ContentLengthInput

    server: ServerContext  # type: ignore[assignment]  # not a socketserver.BaseServer
    rfile: SocketReader  # type: ignore[assignment]  # see reader.py
    close_connection: bool
    _headers_buffer: list[bytes]

    def __init__(self, request: Any, client_address: Any, server: ServerContext) -> None:
        """Set the connection up; unlike socketserver's handlers, construction does not serve it.

        The server calls :meth:`handle` each time the connection has bytes to
        read (it returns when the connection closes or has gone quiet) and
        :meth:`finish` once, before it closes the socket.
        """
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()

    def setup(self) -> None:
        sock = self.connection = self.request
        config = self.server.config
        preset = self.server.socket_options_inherited
        if not preset:
            family = sock.family
            if family == socket.AF_INET or family == socket.AF_INET6:
                # Each response chunk leaves in one write; don't let Nagle hold
                # it back waiting for the client's delayed ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.open_stream(sock, config, preset)
        self.close_connection = False
        self.waiting = False  # handle() returned to wait for more bytes
        self.requests_served = 0
        # Set when the client may still be sending bytes we will not read: the
        # server then half-closes and discards them for a moment before closing,
        # so that a kernel RST does not destroy our last response (connection.py).
        self.linger_on_close = False
        self.server_name, self.server_port = self.server.local_address(sock)
        # The proxy's own address when a PROXY protocol line named the client
        # (``client_address``); set by the server.
        self.proxy_peer: Any = None
        # A PROXY header said the client is unknown: the peer (the proxy) is not
        # trusted for what the client sent through it; set by the server.
        self.client_unknown = False
        # TLS facts (HTTPS, SSL_CLIENT_CERT …) are the same for every request.
        self.tls_environ = tls_environ(sock) if isinstance(sock, ssl.SSLSocket) else {}
        self.health_path = config.health_path or NO_HEALTH_PATH
        # --request-id-header: its name ("" when off: the one check per request),
        # lower case, and its environ key.
        self.request_id_header = name = config.request_id_header
        if name:
            self._request_id_lower = name.lower()
            self._request_id_key = environ_key(name) or ""
        # --static: the mounts the server answers before the app (None: none).
        self.static: StaticFiles | None = getattr(self.server, "static", None)
        self._begin_request()

    # -- the connection loop ----------------------------------------------------------

    def handle(self) -> None:
        """Serve the requests that are ready; return when the connection closes or goes quiet.

        "Quiet" (``self.waiting``): no request, or only part of one, has
        arrived within a short linger; the server then parks the connection
        in its selector, holding no thread, and calls ``handle`` again when
        bytes arrive.
        """
        self.waiting = False
        rfile = self.rfile
        pending = self._pending
        try:
            while not self.close_connection and not self.waiting:
                self.handle_one_request()
                if self.server.stopping:
                    self.close_connection = True
                elif not rfile.buffered() and not (pending is not None and pending()):
                    # Nothing pipelined: wait in the selector, which reports the
                    # next request at once if it is already in the socket (TLS
                    # bytes already decrypted it cannot see: they are read here).
                    self.waiting = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True

    def _begin_request(self) -> None:
        """A fresh :class:`Exchange` for the next request, and http.server's fields reset."""
        self.exchange = Exchange()
        self._header_message: HTTPMessage | None = None
        self.raw_requestline = b""
        self.requestline = ""
        self.request_version = self.default_request_version
        self.command = ""
        self.path = ""

    def handle_one_request(self) -> None:
        """Read one request, run the app, send the response (the whole lifecycle)."""
        self._begin_request()
        try:
            head = self.read_head()
        except HTTPError as exc:
            self.reject(exc)
            return
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        if head is None:
            return
        if head.target.startswith(self.health_path) and self.answer_health(head):
            return
        if self.server.observers:
            self.server.note_request()
        self._take_head(head)
        static = self.static
        if static is not None:
            mounted = static.match(head.target)
            if mounted is not None:
                if self.request_id_header:  # for the response and the access line
                    self.exchange.request_id = self.assign_request_id(head.headers)
                answer_static(self, head, static, *mounted)
                self._idle_since = time.monotonic()
                return
        try:
            body = self.open_input(head)
        except HTTPError as exc:
            self.reject(exc)
            return
        watched = self.server.watched
        if watched is None:
            self.run_wsgi(head, body)
        else:
            # The watchdog sees this thread running this request until it ends.
            ident = get_ident()
            watched[ident] = self
            try:
                self.run_wsgi(head, body)
            finally:
                del watched[ident]
        self._idle_since = time.monotonic()

    def _take_head(self, head: RequestHead) -> None:
        """The request is this head: counted, and http.server's fields set from it."""
        self.requests_served += 1
        self.exchange.head = head
        self.raw_requestline = head.raw_request_line
        self.command = head.method
        self.path = head.target
        self.request_version = head.version
        self.requestline = f"{head.method} {head.target} {head.version}"

    # -- the request's fields, for code written against BaseHTTPRequestHandler ------------

    @property
    def head(self) -> RequestHead | None:
        """The current request's parsed head (None before one arrived, or for a refusal)."""
        return self.exchange.head

    @head.setter
    def head(self, head: RequestHead | None) -> None:
        self.exchange.head = head

    @property
    def _content_length(self) -> str | None:
        """The validated Content-Length to publish (an ``open_input`` override may set it)."""
        return self.exchange.content_length

    @_content_length.setter
    def _content_length(self, value: str | None) -> None:
        self.exchange.content_length = value

    @property  # type: ignore[override]  # a lazy property where http.server has an attribute
    def headers(self) -> HTTPMessage:
        """The request's fields as an ``http.client.HTTPMessage``, built on first use."""
        message = self._header_message
        if message is None:
            message = HTTPMessage()
            if self.head is not None:  # None while no request, or a refused one
                for name, value in self.head.headers:
                    message[name] = value
            self._header_message = message
        return message

    @headers.setter
    def headers(self, message: HTTPMessage) -> None:
        self._header_message = message

    # -- running the app ----------------------------------------------------------------

    def check_continue(self, head: RequestHead) -> None:
        """Hook: decide on ``Expect: 100-continue`` before the app runs or the body is sent.

        Raise an :class:`~wsgibridge.errors.HTTPError` (a subclass with the
        ``status`` you want, e.g. 401 or 413, and ``headers=[...]`` for fields
        such as ``WWW-Authenticate``) to refuse the request without the client
        ever sending its body; return to let the app decide.  The default lets
        every request through; ``100 Continue`` is then sent when the app
        first reads ``wsgi.input``.
        """

    def send_continue(self) -> None:
        """Send the interim ``100 Continue`` (called on the app's first body read).

        Not once the final response has started: an interim response inside
        it would corrupt its framing (RFC 9110 §15.2).
        """
        writer = self.exchange.writer
        if writer is not None and writer.headers_sent:
            return
        self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def open_input(self, head: RequestHead) -> InputStream:
        """The ``wsgi.input`` for this request, from its framing; may refuse it (413 …)."""
        config = self.server.config
        on_first_read = None
        if head.expect_continue:
            self.check_continue(head)
            on_first_read = self.send_continue
        if head.chunked:
            return ChunkedInput(self.rfile, self.server.limits, config.max_body_size, on_first_read)
        length = head.content_length
        if length is None:
            # RFC 9112 §6.3: no Content-Length and no Transfer-Encoding in a
            # request means a body of length zero.
            return self.input_class(self.rfile, 0)
        if config.max_body_size and length > config.max_body_size:
            # Refused before a byte of the body is read (and before 100 Continue).
            raise PayloadTooLarge(f"the body is larger than {config.max_body_size} bytes")
        self.exchange.content_length = str(length)
        return self.input_class(self.rfile, length, on_first_read)

    def make_environ(self, head: RequestHead, body: InputStream) -> dict[str, Any]:
        """The PEP 3333 environ for the current request."""
        server = self.server
        peer = self.client_address
        if isinstance(peer, tuple):
            remote_addr, remote_port = str(peer[0]), str(peer[1])
        else:
            remote_addr, remote_port = "", ""
        environ = build_environ(
            method=head.method,
            target=head.target,
            version=head.version,
            headers=head.headers,
            body=body,
            content_length=self.exchange.content_length,
            server_name=self.server_name,
            server_port=self.server_port,
            remote_addr=remote_addr,
            remote_port=remote_port,
            script_name=server.config.url_prefix,
            url_scheme=server.url_scheme,
            multithread=server.multithread,
            multiprocess=server.multiprocess,
        )
        if self.tls_environ:
            environ.update(self.tls_environ)
        # From trusted proxies, X-Forwarded-* / Forwarded rewrite REMOTE_ADDR,
        # wsgi.url_scheme and HTTP_HOST; from anyone else they are removed.
        apply_forwarded(environ, NO_TRUST if self.client_unknown else server.trusted_proxies)
        # RFC 3875 §4.1.9: REMOTE_HOST "SHOULD" be set, and the server "MAY
        # substitute the value of REMOTE_ADDR" when it does not look names up
        # (we never do: a DNS lookup per request is slow and spoofable).
        environ["REMOTE_HOST"] = environ["REMOTE_ADDR"]
        # RFC 3875 §4.1.17: "the name and version of the information server
        # software making the CGI request" (the Server header's value).
        environ["SERVER_SOFTWARE"] = self.writer_class.server_software
        if self.request_id_header:
            # The app sees the id that is logged and answered, under both names
            # (a framework's request.headers reads the HTTP_ key).
            request_id = self.exchange.request_id = self.assign_request_id(head.headers)
            environ[REQUEST_ID_KEY] = environ[self._request_id_key] = request_id
        return environ

    def run_wsgi(self, head: RequestHead, body: InputStream) -> None:
        """Run the app for the parsed request and settle the connection's fate."""
        server = self.server
        config = server.config
        exchange = self.exchange
        exchange.body = body
        environ = exchange.environ = self.make_environ(head, body)

        def will_close(complete: bool) -> bool:
            if server.draining:
                return True
            if complete:
                # The app is done with the body: settle it now, so that the
                # response can say Connection: close if it cannot be drained.
                try:
                    return not body.drain(config.max_drain_bytes)
                except OSError:
                    return True
            return not body.drainable(config.max_drain_bytes)

        writer = self.writer_class(
            self,
            method=head.method,
            http11=head.version == "HTTP/1.1",
            client_keep_alive=head.keep_alive,
            will_close=will_close,
            expose_tracebacks=config.expose_tracebacks,
            describe=self.describe_request,
            brief_app_errors=config.lint,
        )
        exchange.writer = writer
        app = server.app
        if config.url_prefix and not environ["SCRIPT_NAME"]:
            app = not_mounted  # outside --url-prefix: the app is not there
        writer.respond(app, environ)
        exchange.status_code = writer.status_code
        exchange.body_bytes = writer.body_bytes
        keep_alive = writer.keep_alive and not writer.client_gone and body.failed is None
        if keep_alive:
            try:
                keep_alive = body.drain(config.max_drain_bytes)
            except (OSError, HTTPError):
                keep_alive = False
        self.close_connection = not keep_alive
        if not keep_alive and not writer.client_gone:
            # Bytes we will never read (the rest of a body, pipelined requests)
            # would make close() send a RST that can destroy this response.
            self.linger_on_close = body.unread() or bool(self.rfile.buffered()) or self.ready(0)
        self.log_access()

    # -- the ResponseSink used by ResponseWriter -----------------------------------------

    def send_head(
        self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Status line and headers as ``send_response_only``/``send_header`` make them, one write.

        Unless a subclass overrides one of those two, the same bytes are made
        here in one go (the stock methods cost a call and an encode per line).
        """
        if self.request_id_header:  # off: no call per response
            self.echo_request_id(headers)
        cls = type(self)
        if (
            cls.send_header is BaseHTTPRequestHandler.send_header
            and cls.send_response_only is BaseHTTPRequestHandler.send_response_only
        ):
            head = encode_head(self.protocol_version, status_code, reason, headers)
            self._send(head + body if body else head)
            return
        self.send_response_only(status_code, reason)
        for name, value in headers:
            self.send_header(name, value)
        buffer = self._headers_buffer
        buffer.append(b"\r\n")
        if body:
            buffer.append(body)
        self._headers_buffer = []
        self._send(b"".join(buffer))

    def send_body(self, data: bytes) -> None:
        self._send(data)

    # -- errors the server answers itself --------------------------------------------------

    def reject(self, exc: HTTPError) -> None:
        """Refuse a request: one error response, ``Connection: close``, nothing more read.

        The app is never called.  Whatever the client pipelined after the bad
        request is never parsed, let alone answered.
        """
        if exc.request_line and not self.requestline:
            self.raw_requestline = exc.request_line
            line = exc.request_line[:LOGGED_LINE_MAX].rstrip(b"\r\n")
            self.requestline = line.decode("latin-1")
        if exc.method and not self.command:
            self.command = exc.method  # a refused HEAD still gets no body
        server = self.server
        if server.observers:
            server.note_request()
        if server.metrics is not None:
            server.metrics.refused(str(exc.status.value))
        self.send_error(exc.status, exc.reason, extra_headers=exc.headers)
        self.linger_on_close = True

    def send_error(
        self,
        code: int,
        message: str | None = None,
        explain: str | None = None,
        *,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """A short plain-text error that closes the connection (the app is never called)."""
        status = HTTPStatus(code)
        self.close_connection = True
        exchange = self.exchange
        exchange.status_code = status.value
        if self.request_id_header and not exchange.request_id:
            # A refusal gets an id too (for its response and its access line):
            # the one it came with when its head was read, else a new one.
            head = exchange.head
            exchange.request_id = self.assign_request_id(head.headers if head is not None else ())
        error_log.warning(
            "%s: %d %s%s",
            self.describe_request(),
            status.value,
            status.phrase,
            f" ({escape_log(message)})" if message else "",
        )
        headers, body = error_response(
            status.value,
            message,
            validate_headers(extra_headers) if extra_headers else (),
            self.writer_class.server_software,
        )
        exchange.error_headers = headers
        try:
            self.send_head(
                status.value, status.phrase, headers, b"" if self.command == "HEAD" else body
            )
            exchange.body_bytes = 0 if self.command == "HEAD" else len(body)
        except OSError:
            pass
        self.log_access()

    def finish(self) -> None:
        """Called once, before the server closes (or lingeringly closes) the connection."""
        self.rfile.close()
