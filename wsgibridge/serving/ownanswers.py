"""``OwnAnswers``: what the handler answers or adds itself, the app not called.

Rule: the answers the server makes on its own - the health path's 200/503,
the connection fields of those and of a ``--static`` file - and the request
id every response carries with ``--request-id-header`` are decided here, in
one mixin of :class:`~wsgibridge.serving.handler.WSGIRequestHandler`, which
supplies the connection, the exchange and the sending
(:meth:`send_head`, :meth:`log_access`).  Which id is kept and how a new one
is made is ``http/requestid.py``'s (pure); here is only where the handler
keeps it and who is trusted: the peer the connection reports, unless a
PROXY header said the client is unknown.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Config
from ..http.parser import RequestHead
from ..http.requestid import choose_request_id
from ..http.requestid import echo_request_id as add_id_field
from ..http.response import http_date
from ..http.trusted import TrustedProxies

if TYPE_CHECKING:
    from .exchange import Exchange

# What no request target starts with (the parser refuses control characters):
# the health path when there is none, so the check costs one startswith.
NO_HEALTH_PATH = "\0"
HEALTH_BODIES = {200: b"ok\n", 503: b"stopping\n"}


class AnsweringServer(Protocol):
    """What the server's own answers need of the server (``ServerContext`` is one)."""

    config: Config
    trusted_proxies: TrustedProxies
    observers: list[Any]
    draining: bool
    stop_announced: bool

    def note_request(self) -> None: ...


class OwnAnswers:
    """The health path, the connection fields of the server's own answers, request ids."""

    server: AnsweringServer
    exchange: Exchange
    client_address: Any
    close_connection: bool
    linger_on_close: bool
    health_path: str
    client_unknown: bool
    request_id_header: str
    _request_id_lower: str
    _idle_since: float
    writer_class: Any

    if TYPE_CHECKING:  # supplied by the handler (stubs here would shadow them)

        def _take_head(self, head: RequestHead) -> None: ...

        def send_head(
            self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
        ) -> None: ...

        def log_access(self) -> None: ...

    def answer_health(self, head: RequestHead) -> bool:
        """``GET``/``HEAD`` on ``health_path`` (a query allowed): 200 while serving, 503 once
        the stop is coming, the app not called; False for anything else (the app's).

        No access line unless ``health_access_log``; a 503 closes the connection.
        """
        target = head.target
        path = self.health_path
        if len(target) != len(path) and target[len(path)] != "?":
            return False  # /healthz-other: the app's
        method = head.method
        if method != "GET" and method != "HEAD":
            return False  # the app's to answer (the server only claims the probe)
        self._take_head(head)
        exchange = self.exchange
        server = self.server
        if self.request_id_header:
            exchange.request_id = self.assign_request_id(head.headers)
        status = HTTPStatus.SERVICE_UNAVAILABLE if server.stop_announced else HTTPStatus.OK
        body = HEALTH_BODIES[status.value]
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ]
        # A probe sends no body; one that does is not read: the connection closes.
        self.end_own_headers(head, headers, close=status != HTTPStatus.OK)
        sent = b"" if method == "HEAD" else body
        try:
            self.send_head(status.value, status.phrase, headers, sent)
        except OSError:
            self.close_connection = True
            return True
        self._idle_since = time.monotonic()
        if server.config.health_access_log:
            if server.observers:
                server.note_request()
            exchange.status_code = status.value
            exchange.body_bytes = len(sent)
            exchange.error_headers = headers
            self.log_access()
        return True

    def end_own_headers(
        self, head: RequestHead, headers: list[tuple[str, str]], close: bool = False
    ) -> None:
        """``Connection``, ``Date`` and ``Server`` for an answer the server makes itself
        (the health path, a static file), the app not called.

        The connection closes when ``close`` says so, when the request has a body
        (never read: what the client sent is not parsed as a request), when the
        client asked, or when the server is draining; an HTTP/1.0 client that
        asked to keep it is told it is kept.
        """
        has_body = head.chunked or bool(head.content_length)
        if close or has_body or not head.keep_alive or self.server.draining:
            self.close_connection = True
            self.linger_on_close = has_body
            headers.append(("Connection", "close"))
        elif head.version != "HTTP/1.1":
            headers.append(("Connection", "keep-alive"))
        headers.append(("Date", http_date()))
        headers.append(("Server", self.writer_class.server_software))

    def assign_request_id(self, headers: Sequence[tuple[str, str]]) -> str:
        """Hook: the id of the request with these fields (``request_id_header`` on): the
        one it came with, from a trusted peer, or a new one (``http/requestid.py``).

        Trusted as for the forwarding headers (``apply_forwarded``): the peer the
        connection reports - after a PROXY protocol line, the client it names - is
        in ``--forwarded-allow-ips``.  The handler keeps what this returns for the
        environ, the response and the access line; it must be a valid field value.
        """
        peer = self.client_address
        address = str(peer[0]) if isinstance(peer, tuple) else ""
        trusted = not self.client_unknown and address in self.server.trusted_proxies
        return choose_request_id(headers, self._request_id_lower, trusted)

    def echo_request_id(self, headers: list[tuple[str, str]]) -> None:
        """The request's id added to the ``headers`` about to be sent (unless the app set
        that field) - the list the access log reads too; call it only with
        ``request_id_header`` on."""
        add_id_field(
            headers, self.request_id_header, self._request_id_lower, self.exchange.request_id
        )
