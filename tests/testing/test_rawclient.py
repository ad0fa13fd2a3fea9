"""The ``raw_client`` fixture's :class:`~wsgibridge.testing.RawClient` against a live server."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from wsgibridge._types import Environ, StartResponse
from wsgibridge.testing import RawClient
from wsgibridge.testing.liveserver import LiveServer

Factory = Callable[..., LiveServer]
RawFactory = Callable[..., RawClient]


def app(environ: Environ, start_response: StartResponse) -> object:
    received = environ["wsgi.input"].read()
    body = b"%s %d" % (environ["PATH_INFO"].encode(), len(received))
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"part one, ", body])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def server(wsgi_server: Factory) -> LiveServer:
    return wsgi_server(app)


def test_pipelined_requests_are_answered_in_order(
    server: LiveServer, raw_client: RawFactory
) -> None:
    client = raw_client(server)
    client.send(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /second HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    first, second, third = (client.recv_response() for _ in range(3))
    assert (first.status, first.body) == (200, b"/first 0")
    assert second.body == b"/second 3"
    assert third.header("Transfer-Encoding") == "chunked"
    assert third.body == b"part one, /stream 0"
    assert third.raw.endswith(b"0\r\n\r\n")
    assert client.closed()
    assert [r.path for r in server.requests] == ["/first", "/second", "/stream"]


def test_an_open_connection_is_not_closed(server: LiveServer, raw_client: RawFactory) -> None:
    client = raw_client(server)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert client.recv_response().status == 200
    assert not client.closed(timeout=0.1)  # kept alive


def test_a_head_response_has_no_body(server: LiveServer, raw_client: RawFactory) -> None:
    client = raw_client(server)
    client.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    head = client.recv_response("HEAD")
    assert (head.status, head.body) == (200, b"")
    assert client.recv_response().body == b"/next 0"


def test_a_refused_request_then_the_close(server: LiveServer, raw_client: RawFactory) -> None:
    client = raw_client(server)
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert client.recv_response().status == 400
    assert client.closed()
    assert client.recv() == b""
    with pytest.raises(EOFError):
        client.recv_until(b"\r\n")


def test_reads_are_bounded(server: LiveServer, raw_client: RawFactory) -> None:
    client = raw_client(server, timeout=0.2)
    with pytest.raises(TimeoutError):
        client.recv()  # nothing was asked
    client.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ValueError):
        client.recv_until(b"never sent", limit=10)
