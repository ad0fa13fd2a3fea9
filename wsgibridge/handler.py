"""``WSGIRequestHandler``: a ``BaseHTTPRequestHandler`` that hands every request to a WSGI app.

This is the only module that touches the connection's ``rfile`` and ``wfile``.
One request's life, all in :meth:`WSGIRequestHandler.handle_one_request`:

1. read the request line and header section (``parse_request``);
2. decide the body's framing and wrap it in a bounded ``wsgi.input``;
3. build the environ (``environ.build_environ``, pure);
4. run the app through a ``ResponseWriter`` (``response.py``), which calls
   back into :meth:`send_head` / :meth:`send_body` / :meth:`send_file` here;
5. drain what the app left unread, or close the connection;
6. write the access log line.

Subclasses customise through the collaborator attributes (``writer_class``,
``input_class``) and the named hooks (``make_environ``, ``expect_continue``,
``log_access``), never through ``__getattr__``.
"""

from __future__ import annotations

import logging
import socket
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from . import __version__
from .body import ContentLengthInput, InputStream
from .environ import build_environ
from .errors import BadRequest, HTTPError, NotImplementedByServer
from .response import ResponseWriter, http_date

if TYPE_CHECKING:
    from .server import WSGIServer

access_log = logging.getLogger("wsgibridge.access")
error_log = logging.getLogger("wsgibridge.error")

MAX_REQUEST_LINE = 65536

# Control characters are escaped in log lines so a request cannot forge log
# entries or terminal escapes (the same rule http.server applies).
_LOG_ESCAPES = str.maketrans(
    {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]} | {ord("\\"): "\\\\"}
)


def escape_log(text: str) -> str:
    """``text`` with control characters and backslashes escaped for a log line."""
    return text.translate(_LOG_ESCAPES)


def connection_tokens(values: list[str] | None) -> set[str]:
    """The lower-cased tokens of every ``Connection`` header (RFC 9110 §7.6.1)."""
    tokens: set[str] = set()
    for value in values or ():
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


class _LogDate:
    """The CLF date for the current second, formatted once per second."""

    second = -1
    value = ""

    @classmethod
    def now(cls) -> str:
        second = int(time.time())
        if second != cls.second:
            cls.value = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(second))
            cls.second = second
        return cls.value


class WSGIRequestHandler(BaseHTTPRequestHandler):
    """Serve each request on a connection by calling the server's WSGI app."""

    protocol_version = "HTTP/1.1"
    # Until a request line is parsed, answers go out as HTTP/1.1 (http.server's
    # default of HTTP/0.9 would send an error without a status line).
    default_request_version = "HTTP/1.1"
    server_version = f"wsgibridge/{__version__}"
    # Collaborators a subclass may swap.
    writer_class: type[ResponseWriter] = ResponseWriter
    input_class: type[ContentLengthInput] = ContentLengthInput
    url_scheme = "http"

    server: WSGIServer
    close_connection: bool
    _headers_buffer: list[bytes]

    def setup(self) -> None:
        config = self.server.config
        self.timeout = config.timeout  # type: ignore[misc]  # per-connection, from config
        super().setup()
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            # Each response chunk leaves in one write; don't let Nagle hold it
            # back waiting for the client's delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._requests_served = 0

    # -- the connection loop ----------------------------------------------------------

    def handle(self) -> None:
        """Serve requests until either side closes, the idle timeout passes, or the server stops."""
        server = self.server
        config = server.config
        sock = self.connection
        self.close_connection = True
        try:
            self.handle_one_request()
            while not self.close_connection and not server.stopping:
                # Idle between requests: the keep-alive timeout applies, and a
                # stopping server may close the connection under us.  A
                # pipelined request already in rfile's buffer returns at once.
                server.mark_idle(sock, True)
                sock.settimeout(config.keepalive_timeout)
                try:
                    if server.stopping or not self._wait_for_input():
                        break
                finally:
                    server.mark_idle(sock, False)
                sock.settimeout(config.timeout)
                self.handle_one_request()
        except (ConnectionError, TimeoutError):
            pass

    def _wait_for_input(self) -> bool:
        """Block (under the keep-alive timeout) until the next request starts; False on close."""
        try:
            return bool(self.rfile.peek(1))  # type: ignore[attr-defined]
        except (TimeoutError, OSError, ValueError):
            return False

    def handle_one_request(self) -> None:
        """Read one request, run the app, send the response (the whole lifecycle)."""
        self._start_time = time.perf_counter()
        self._status_code = 0
        self._body_bytes = 0
        self._expect_continue = False
        self._writer: ResponseWriter | None = None
        self.requestline = ""
        self.request_version = self.default_request_version
        self.command = ""
        try:
            raw = self.rfile.readline(MAX_REQUEST_LINE + 1)
            if raw in (b"\r\n", b"\n"):
                # RFC 9112 §2.2: "a server that is expecting to receive and parse
                # a request-line SHOULD ignore at least one empty line (CRLF)
                # received prior to the request-line".
                raw = self.rfile.readline(MAX_REQUEST_LINE + 1)
        except TimeoutError:
            self.close_connection = True
            return
        if not raw:
            self.close_connection = True
            return
        self.raw_requestline = raw
        if len(raw) > MAX_REQUEST_LINE:
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if len(raw.split()) != 3:
            # Also refuses HTTP/0.9's two-word "GET /", which http.server would
            # answer without a status line.
            self.requestline = raw.decode("latin-1").rstrip("\r\n")
            self.send_error(HTTPStatus.BAD_REQUEST, "Malformed request line")
            return
        if not self.parse_request():
            return
        try:
            self.run_wsgi()
        except HTTPError as exc:
            self.send_error(exc.status, exc.reason)

    # -- parse_request hooks ------------------------------------------------------------

    def handle_expect_100(self) -> bool:
        """Defer ``100 Continue`` until the app first reads ``wsgi.input`` (PEP 3333).

        ``BaseHTTPRequestHandler`` would send it at once, before the app has had a
        chance to answer 401 or 413 without the body.
        """
        self._expect_continue = True
        return True

    def send_continue(self) -> None:
        """Send the interim ``100 Continue`` (called on the app's first body read).

        Not once the final response has started: an interim response inside
        it would corrupt its framing (RFC 9110 §15.2).
        """
        writer = self._writer
        if writer is not None and writer.headers_sent:
            return
        self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    # -- running the app ----------------------------------------------------------------

    def request_target(self) -> str:
        """The request-target exactly as sent (``parse_request`` collapses a leading ``//``)."""
        words = self.requestline.split()
        return words[1] if len(words) == 3 else self.path

    def open_input(self) -> InputStream:
        """The ``wsgi.input`` for this request, from its framing headers."""
        headers = self.headers
        if headers.get("Transfer-Encoding") is not None:
            raise NotImplementedByServer("Transfer-Encoding in requests is not supported")
        values = headers.get_all("Content-Length") or []
        length = 0
        if values:
            text = values[0].strip(" \t")
            if any(v.strip(" \t") != text for v in values) or not (
                text.isdigit() and text.isascii()
            ):
                raise BadRequest("invalid Content-Length")
            length = int(text)
        self._content_length = str(length) if values else None
        on_first_read = self.send_continue if self._expect_continue else None
        return self.input_class(self.rfile, length, on_first_read)

    def make_environ(self, body: InputStream) -> dict[str, Any]:
        """The PEP 3333 environ for the current request."""
        server = self.server
        peer = self.client_address
        if isinstance(peer, tuple):
            remote_addr, remote_port = str(peer[0]), str(peer[1])
        else:
            remote_addr, remote_port = "", ""
        return build_environ(
            method=self.command,
            target=self.request_target(),
            version=self.request_version,
            headers=self.headers.items(),
            body=body,
            content_length=self._content_length,
            server_name=server.server_name,
            server_port=str(server.server_port),
            remote_addr=remote_addr,
            remote_port=remote_port,
            script_name=server.config.url_prefix,
            url_scheme=self.url_scheme,
            multithread=server.multithread,
        )

    def client_wants_keep_alive(self) -> bool:
        """RFC 9112 §9.3: persistence by version and the ``Connection`` tokens."""
        tokens = connection_tokens(self.headers.get_all("Connection"))
        if "close" in tokens:
            return False
        if self.request_version == "HTTP/1.1":
            return True
        return "keep-alive" in tokens

    def run_wsgi(self) -> None:
        """Run the app for the parsed request and settle the connection's fate."""
        server = self.server
        config = server.config
        body = self.open_input()
        environ = self.make_environ(body)

        def will_close() -> bool:
            remaining = getattr(body, "remaining", 0)
            return server.stopping or (
                remaining > 0 and (not body.started or remaining > config.max_drain_bytes)
            )

        writer = self.writer_class(
            self,
            method=self.command,
            http11=self.request_version == "HTTP/1.1",
            client_keep_alive=self.client_wants_keep_alive(),
            will_close=will_close,
            expose_tracebacks=config.expose_tracebacks,
            describe=self.describe_request,
        )
        self._writer = writer
        writer.respond(server.app, environ)
        self._status_code = writer.status_code
        self._body_bytes = writer.body_bytes
        keep_alive = writer.keep_alive and not writer.client_gone
        if keep_alive:
            try:
                keep_alive = body.drain(config.max_drain_bytes)
            except (OSError, HTTPError):
                keep_alive = False
        self.close_connection = not keep_alive
        self._requests_served += 1
        self.log_access()

    # -- the ResponseSink used by ResponseWriter -----------------------------------------

    def send_head(
        self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Status line and headers through ``send_response_only``/``send_header``, one write."""
        self.send_response_only(status_code, reason)
        for name, value in headers:
            self.send_header(name, value)
        buffer = self._headers_buffer
        buffer.append(b"\r\n")
        if body:
            buffer.append(body)
        self._headers_buffer = []
        self.wfile.write(b"".join(buffer))

    def send_body(self, data: bytes) -> None:
        self.wfile.write(data)

    def send_file(self, file: Any, offset: int, count: int) -> int:
        sent: int = self.connection.sendfile(file, offset, count)
        return sent

    # -- errors the server answers itself --------------------------------------------------

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """A short plain-text error that closes the connection (the app is never called)."""
        status = HTTPStatus(code)
        self.close_connection = True
        self._status_code = status.value
        error_log.warning(
            "%s: %d %s%s",
            self.describe_request(),
            status.value,
            status.phrase,
            f" ({escape_log(message)})" if message else "",
        )
        body = f"{status.value} {status.phrase}\n".encode("ascii")
        if message:
            body += message.encode("latin-1", "replace") + b"\n"
        try:
            self.send_head(
                status.value,
                status.phrase,
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body))),
                    ("Connection", "close"),
                    ("Date", http_date()),
                    ("Server", ResponseWriter.server_software),
                ],
                b"" if self.command == "HEAD" else body,
            )
            self._body_bytes = 0 if self.command == "HEAD" else len(body)
        except OSError:
            pass
        self.log_access()

    # -- logging -------------------------------------------------------------------------

    def describe_request(self) -> str:
        """``"GET / HTTP/1.1" from 127.0.0.1:5000`` for log messages (escaped)."""
        return f'"{escape_log(self.requestline)}" from {self.address_string()}'

    def address_string(self) -> str:
        peer = self.client_address
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer) or "unix"

    def log_access(self) -> None:
        """One access log line per request, after the response: who, what, status, bytes, time."""
        if not self.server.config.access_log or not access_log.isEnabledFor(logging.INFO):
            return
        peer = self.client_address
        client = peer[0] if isinstance(peer, tuple) else (str(peer) or "unix")
        duration_ms = (time.perf_counter() - self._start_time) * 1000
        access_log.info(
            '%s - - [%s] "%s" %d %d %.2fms',
            client,
            _LogDate.now(),
            escape_log(self.requestline),
            self._status_code,
            self._body_bytes,
            duration_ms,
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Replaced by :meth:`log_access`, which runs after the response."""

    def log_message(self, format: str, *args: Any) -> None:
        error_log.info("%s: %s", self.address_string(), escape_log(format % args))

    def log_error(self, format: str, *args: Any) -> None:
        error_log.warning("%s: %s", self.address_string(), escape_log(format % args))
