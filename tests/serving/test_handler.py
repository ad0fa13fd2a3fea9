"""The handler's contract without a server: a socketpair and a small fake ServerContext.

No reactor, no worker thread, no listening socket: the handler is given one
end of a ``socket.socketpair()`` and a :class:`FakeServer` with just what
``ServerContext`` names; the test writes a request into the other end, calls
``handle()`` in its own thread and reads what came back.  What is checked here
is the handler's own job: reading heads and bodies off ``rfile``, the environ,
keep-alive versus close, the access record, refusals - the server's parts
(parking, deadlines, lingering close) have their own tests over live sockets.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest

from wsgibridge import Config
from wsgibridge._types import Environ, StartResponse, WSGIApp
from wsgibridge.accesslog import AccessLogFormat, AccessRecord
from wsgibridge.http.body import ContentLengthInput, InputStream
from wsgibridge.http.parser import RequestHead
from wsgibridge.http.trusted import TrustedProxies
from wsgibridge.serving.handler import ServerContext, WSGIRequestHandler
from wsgibridge.serving.metrics import ServerMetrics

from ..conftest import ResponseReader


class FakeServer:
    """Exactly what a handler needs of its server (``ServerContext``), nothing more."""

    multithread = True
    multiprocess = False
    socket_options_inherited = False  # a socketpair: the handler sets its own options
    watched: dict[int, WSGIRequestHandler] | None = None  # no request watchdog
    metrics: ServerMetrics | None = None  # no --metrics-bind

    def __init__(self, app: WSGIApp, **options: Any) -> None:
        self.app = app
        self.config = Config(**options)
        self.limits = self.config.limits
        self.url_scheme = "http"
        self.trusted_proxies = TrustedProxies(self.config.forwarded_allow_ips)
        self.access_format = AccessLogFormat(self.config.access_log_format)
        self.records: list[AccessRecord] = []
        self.observers: list[Callable[[AccessRecord], None]] = [self.records.append]
        self.begun = 0
        self.stopping = False
        self.draining = False
        self.stop_announced = False

    def note_request(self) -> None:
        self.begun += 1

    def local_address(self, sock: socket.socket) -> tuple[str, str]:
        return "testserver", "80"


def _typed(server: FakeServer) -> ServerContext:
    return server  # mypy checks here that FakeServer is a ServerContext


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5)
    theirs.settimeout(5)
    try:
        yield ours, theirs
    finally:
        ours.close()
        theirs.close()


def run(
    app: WSGIApp, raw: bytes, pair: tuple[socket.socket, socket.socket], **options: Any
) -> tuple[WSGIRequestHandler, FakeServer, ResponseReader]:
    """Write ``raw``, half-close, let the handler serve what it can; the client's reader."""
    client, server_end = pair
    server = FakeServer(app, **options)
    handler = WSGIRequestHandler(server_end, ("192.0.2.7", 5000), _typed(server))
    client.sendall(raw)
    client.shutdown(socket.SHUT_WR)
    for _ in range(100):  # each call serves what has arrived; parked, it returns
        handler.handle()
        if handler.close_connection:
            break
    assert handler.close_connection, "the handler did not notice the client's EOF"
    handler.finish()
    server_end.shutdown(socket.SHUT_WR)
    return handler, server, ResponseReader(client)


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    text = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {environ['REMOTE_ADDR']}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [text.encode() + b" " + body]


def test_pipelined_requests_are_answered_in_order_then_eof_closes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    raw = (
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
    )
    handler, server, reader = run(echo, raw, pair)
    first, second = reader.read_response(), reader.read_response()
    assert first.body == b"GET /one 192.0.2.7 "
    assert second.body == b"POST /two 192.0.2.7 abc"
    assert first.header("Connection") is None  # HTTP/1.1 keeps the connection
    assert reader.at_eof()
    assert handler.requests_served == 2
    assert [(r.method, r.path, r.status, r.bytes_received) for r in server.records] == [
        ("GET", "/one", 200, 0),
        ("POST", "/two", 200, 3),
    ]
    assert server.begun == 2


def test_the_environ_comes_from_the_server_context(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    seen: list[Environ] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ)
        start_response("204 No Content", [])
        return []

    run(app, b"GET /p?q=1 HTTP/1.1\r\nHost: example\r\nConnection: close\r\n\r\n", pair)
    (environ,) = seen
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("testserver", "80")
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("192.0.2.7", "5000")
    assert environ["REMOTE_HOST"] == "192.0.2.7"
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/p", "q=1")
    assert environ["wsgi.multithread"] is True and environ["wsgi.multiprocess"] is False


def test_connection_close_is_honoured(pair: tuple[socket.socket, socket.socket]) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n"
    handler, server, reader = run(echo, raw, pair)
    response = reader.read_response()
    assert response.header("Connection") == "close"
    assert reader.at_eof()
    assert [r.path for r in server.records] == ["/"]
    assert handler.close_connection


def test_a_refused_head_is_answered_without_the_app(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    called: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        called.append(environ["PATH_INFO"])
        start_response("200 OK", [])
        return []

    handler, server, reader = run(app, b"GET /a\xffb HTTP/1.1\r\nHost: x\r\n\r\n", pair)
    response = reader.read_response()
    assert response.status == 400
    assert response.header("Date") is not None
    assert called == []
    assert handler.linger_on_close  # the server closes it lingeringly
    assert [r.status for r in server.records] == [400]


def test_an_unread_body_is_drained_so_the_next_request_starts_right(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    def ignoring(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    raw = (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
        b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    _, server, reader = run(ignoring, raw, pair)
    assert [reader.read_response().status for _ in range(2)] == [200, 200]
    assert [r.path for r in server.records] == ["/upload", "/next"]


def test_stopping_closes_after_the_request_in_flight(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    server_box: list[FakeServer] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        server_box[0].stopping = server_box[0].draining = True  # the stop arrives as the app runs
        start_response("200 OK", [("Content-Length", "0")])
        return []

    client, server_end = pair
    server = FakeServer(app)
    server_box.append(server)
    handler = WSGIRequestHandler(server_end, ("192.0.2.7", 5000), server)
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n")
    handler.handle()
    assert handler.close_connection
    reader = ResponseReader(client)
    assert reader.read_response().header("Connection") == "close"
    assert [r.path for r in server.records] == ["/"]


# -- the hooks of subclasses written against the handler ------------------------------


def test_an_access_record_override_reaches_the_log_and_observers(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """``access_record()`` is a hook: what a subclass returns is what observers get."""

    class Tagged(WSGIRequestHandler):
        def access_record(self) -> AccessRecord:
            record = super().access_record()
            return dataclasses.replace(record, request_line=record.request_line + " [tagged]")

    client, server_end = pair
    server = FakeServer(echo)
    handler = Tagged(server_end, ("192.0.2.7", 5000), server)
    client.sendall(b"GET /t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    handler.handle()
    assert [r.request_line for r in server.records] == ["GET /t HTTP/1.1 [tagged]"]


def test_an_open_input_override_can_still_publish_the_length(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A subclass that replaces ``open_input`` whole sets ``_content_length`` for the
    environ, as it had to before the per-request state moved; ``head`` is assignable."""
    seen: list[str | None] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ.get("CONTENT_LENGTH"))
        environ["wsgi.input"].read()
        start_response("204 No Content", [])
        return []

    class OwnInput(WSGIRequestHandler):
        def open_input(self, head: RequestHead) -> InputStream:
            assert head.content_length is not None
            self._content_length = str(head.content_length)
            self.head = head  # assignable, as on http.server's handler
            return ContentLengthInput(self.rfile, head.content_length)

    client, server_end = pair
    server = FakeServer(app)
    handler = OwnInput(server_end, ("192.0.2.7", 5000), server)
    client.sendall(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    )
    handler.handle()
    assert seen == ["5"]
