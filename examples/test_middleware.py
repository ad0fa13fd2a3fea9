"""Testing WSGI middleware over a real socket with wsgibridge's pytest plugin.

The ``wsgi_server`` fixture (installed with wsgibridge) serves the wrapped
app on 127.0.0.1 with PEP 3333 lint on: a mistake in the middleware fails
the test.  The same checks run with ``requests`` (a real HTTP client, which
decompresses gzip) and with WebTest, both over the live server.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import requests
import webtest

from examples.middleware import BearerAuth, Gzip

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from wsgiref.types import StartResponse, WSGIEnvironment
    else:
        from _typeshed.wsgi import StartResponse, WSGIEnvironment

TOKEN = "s3cret-token"
TEXT = b"The quick brown fox jumps over the lazy dog.\n" * 200


class Closing:
    """A streamed body that records whether the server (through the middleware) closed it."""

    closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(TEXT), 1000):
            yield TEXT[start : start + 1000]

    def close(self) -> None:
        Closing.closed += 1


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(TEXT)))])
    return [TEXT]


@pytest.fixture
def server(wsgi_server: Any) -> Any:
    return wsgi_server(BearerAuth(Gzip(app), TOKEN))


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_requests_without_the_token_get_401_with_a_challenge(server: Any) -> None:
    for headers in ({}, auth("wrong"), {"Authorization": "Basic xyz"}):
        response = requests.get(server.url, headers=headers, timeout=5)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_gzip_is_negotiated_and_the_length_is_the_compressed_one(server: Any) -> None:
    response = requests.get(server.url, headers=auth(), timeout=5)  # requests asks for gzip
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.content == TEXT  # decompressed by requests
    plain = requests.get(server.url, headers={**auth(), "Accept-Encoding": "identity"}, timeout=5)
    assert "Content-Encoding" not in plain.headers
    assert plain.headers["Content-Length"] == str(len(TEXT))


def test_a_streamed_body_is_compressed_chunked_and_closed(server: Any) -> None:
    before = Closing.closed
    response = requests.get(server.url + "stream", headers=auth(), timeout=5, stream=True)
    raw = response.raw.read(decode_content=False)
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert gzip.decompress(raw) == TEXT
    response.close()
    assert server.requests[-1].path == "/stream"
    server.stop()  # close() runs after the response; stopping waits for it
    assert Closing.closed == before + 1


def test_the_same_with_webtest_over_the_live_server(server: Any) -> None:
    """WebTest's TestApp drives a live URL too (it proxies to it over HTTP)."""
    live = webtest.TestApp(server.url)
    live.get("/", status=401)
    response = live.get("/", headers={**auth(), "Accept-Encoding": "gzip"})
    # WebTest decodes a gzip body itself (and drops Content-Encoding); Vary shows
    # the middleware negotiated it.
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.body == TEXT


def test_the_same_with_webtest_in_process() -> None:
    """And WebTest in-process, without a socket, for the fast unit-level checks."""
    test_app = webtest.TestApp(BearerAuth(Gzip(app), TOKEN))
    test_app.get("/", status=401)
    response = test_app.get("/", headers={**auth(), "Accept-Encoding": "gzip"})
    assert response.headers["Vary"] == "Accept-Encoding"
    assert response.body == TEXT
