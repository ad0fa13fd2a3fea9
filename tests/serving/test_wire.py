"""The server's contract on the wire: raw request bytes in, raw response bytes out.

Every test talks to a live server on 127.0.0.1 (the ``serve`` fixture) over a
real socket, so what is checked is what a client actually receives.  Socket
operations are bounded by the 5 s timeout of ``connect``; waits on the server's
threads use ``threading.Event`` with a timeout.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import socket
import sys
import threading
import time
import wsgiref.validate
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wsgibridge
from wsgibridge._types import Environ, StartResponse
from wsgibridge._types import WSGIApp as App

from ..conftest import (
    RawResponse,
    ResponseReader,
    ServerFactory,
    connect,
    exchange,
    expect_eof,
    fill_until,
    recv_all,
    simple_app,
)

TIMEOUT = 5.0


# -- helpers ---------------------------------------------------------------------------


def req(
    target: str = "/",
    method: str = "GET",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    """A raw request; ``Host`` is always sent, the target is sent byte for byte (latin-1)."""
    lines = [f"{method} {target} {version}", "Host: test"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def responses_in(raw: bytes, method: str = "GET") -> list[RawResponse]:
    """Parse every response in ``raw`` (bytes already received) with ``ResponseReader``."""
    ours, theirs = socket.socketpair()
    theirs.close()  # the reader sees EOF once ``raw`` is used up
    with ours:
        reader = ResponseReader(ours)
        reader.buffer = raw
        found = []
        while reader.buffer:
            found.append(reader.read_response(method))
        return found


def get(server: Any, target: str = "/", method: str = "GET") -> RawResponse:
    """One request on a fresh connection."""
    with connect(server) as sock:
        sock.sendall(req(target, method, [("Connection", "close")]))
        return ResponseReader(sock).read_response(method)


def capturing(captured: list[Environ], validate: bool = True) -> App:
    """An app that records each environ (a copy) and answers 200 with the PATH_INFO."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        captured.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode("latin-1")]

    return wsgiref.validate.validator(app) if validate else app


def capture_one(server_factory: ServerFactory, raw: bytes, **config: Any) -> Environ:
    """Serve a validated capturing app, send ``raw``, return the environ the app saw."""
    captured: list[Environ] = []
    server = server_factory(capturing(captured), **config)
    with connect(server) as sock:
        sock.sendall(raw)
        response = ResponseReader(sock).read_response()
    assert response.status == 200, response  # the validator raised nothing
    assert len(captured) == 1
    return captured[0]


class Tracked:
    """An app iterable that counts its ``close()`` calls (PEP 3333)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.close_calls = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self.close_calls += 1
        self.closed.set()


# -- environ (PEP 3333) ------------------------------------------------------------------


def test_environ_cgi_variables(serve: ServerFactory) -> None:
    """PEP 3333 environ: SERVER_NAME/SERVER_PORT/REMOTE_* are str; QUERY_STRING raw.

    "SERVER_NAME, SERVER_PORT ... can never be empty strings"; "QUERY_STRING:
    the portion of the request URL that follows the '?'"; REQUEST_URI and
    RAW_URI carry the request-target exactly as sent.
    """
    captured: list[Environ] = []
    server = serve(capturing(captured))
    with connect(server) as sock:
        sock.sendall(req("/path/x?a=1&b=%20c&a=2"))
        response = ResponseReader(sock).read_response()
        client_port = sock.getsockname()[1]
    assert response.status == 200
    env = captured[0]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/path/x"
    assert env["QUERY_STRING"] == "a=1&b=%20c&a=2"
    assert env["REQUEST_URI"] == "/path/x?a=1&b=%20c&a=2"
    assert env["RAW_URI"] == "/path/x?a=1&b=%20c&a=2"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(server.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    # RFC 3875 §4.1.9: REMOTE_HOST "SHOULD" be set; the server "MAY substitute the
    # value of REMOTE_ADDR" when it does not look the name up (never: no DNS per request).
    assert env["REMOTE_HOST"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(client_port)
    # RFC 3875 §4.1.17, as waitress, gunicorn, wsgiref and Werkzeug set it.
    assert env["SERVER_SOFTWARE"] == f"wsgibridge/{wsgibridge.__version__}"
    assert env["HTTP_HOST"] == "test"
    for key, value in env.items():
        if "." not in key:
            assert type(value) is str, key


def test_environ_server_protocol_http10(serve: ServerFactory) -> None:
    """PEP 3333: SERVER_PROTOCOL is "the version of the protocol the client used"."""
    env = capture_one(serve, req("/", version="HTTP/1.0"))
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_environ_request_method(serve: ServerFactory, method: str) -> None:
    """PEP 3333: REQUEST_METHOD is the HTTP request method, "always required"."""
    env = capture_one(serve, req("/m", method, [("Content-Length", "0")]))
    assert env["REQUEST_METHOD"] == method


@pytest.mark.parametrize(
    ("target", "path_info"),
    [("/app/users/1", "/users/1"), ("/app/", "/"), ("/app", "")],
)
def test_environ_url_prefix_becomes_script_name(
    serve: ServerFactory, target: str, path_info: str
) -> None:
    """PEP 3333: SCRIPT_NAME is "the initial portion of the request URL's path that
    corresponds to the application object"; PATH_INFO is the remainder."""
    env = capture_one(serve, req(target), url_prefix="/app")
    assert env["SCRIPT_NAME"] == "/app"
    assert env["PATH_INFO"] == path_info
    assert env["REQUEST_URI"] == target


def test_paths_outside_the_url_prefix_get_404_and_keep_alive(serve: ServerFactory) -> None:
    """The app is mounted at the prefix: it is not called for other paths."""
    calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    server = serve(app, url_prefix="/app")
    with connect(server) as sock:
        sock.sendall(req("/apple") + req("/app%2Fx") + req("/app/in"))
        reader = ResponseReader(sock)
        assert [reader.read_response().status for _ in range(3)] == [404, 404, 200]
    assert calls == ["/in"]


@pytest.mark.parametrize(
    ("target", "path_info"),
    [
        ("/caf%C3%A9", "/caf\xc3\xa9"),  # UTF-8 bytes carried as latin-1 code points
        ("/a%2Fb", "/a/b"),
        ("/a%20b", "/a b"),
        ("//x", "//x"),  # a leading double slash is not collapsed
        ("//x/%41", "//x/A"),
    ],
)
def test_environ_path_info_decoded_as_latin1(
    serve: ServerFactory, target: str, path_info: str
) -> None:
    """PEP 3333 "Unicode Issues": native strings hold bytes as latin-1; PATH_INFO is
    percent-decoded, REQUEST_URI keeps the raw target."""
    env = capture_one(serve, req(target))
    assert env["PATH_INFO"] == path_info
    assert env["RAW_URI"] == target
    assert env["REQUEST_URI"] == target


def test_environ_content_headers_only_when_sent(serve: ServerFactory) -> None:
    """PEP 3333: CONTENT_TYPE / CONTENT_LENGTH "may be empty or absent"; they come from
    the request, never as HTTP_CONTENT_* (the validator checks that too)."""
    captured: list[Environ] = []
    server = serve(capturing(captured))
    with connect(server) as sock:
        sock.sendall(req("/plain"))
        sock.sendall(
            req("/post", "POST", [("Content-Type", "text/csv"), ("Content-Length", "5")], b"a,b,c")
        )
        reader = ResponseReader(sock)
        assert reader.read_response().status == 200
        assert reader.read_response().status == 200
    plain, post = captured
    assert "CONTENT_TYPE" not in plain
    assert "CONTENT_LENGTH" not in plain
    assert post["CONTENT_TYPE"] == "text/csv"
    assert post["CONTENT_LENGTH"] == "5"
    for env in captured:
        assert "HTTP_CONTENT_TYPE" not in env
        assert "HTTP_CONTENT_LENGTH" not in env


def test_environ_repeated_headers_are_comma_joined(serve: ServerFactory) -> None:
    """RFC 9110 §5.3: repeated field lines combine "in order, separated by a comma";
    RFC 6265 §5.4: cookie-pairs are joined with "; "."""
    env = capture_one(
        serve,
        req(
            "/",
            headers=[
                ("X-Multi", "a"),
                ("Cookie", "a=1"),
                ("X-Multi", "b"),
                ("Cookie", "b=2"),
                ("X-Multi", "c"),
            ],
        ),
    )
    assert [part.strip() for part in env["HTTP_X_MULTI"].split(",")] == ["a", "b", "c"]
    assert env["HTTP_COOKIE"] == "a=1; b=2"


def test_environ_drops_header_names_with_underscores(serve: ServerFactory) -> None:
    """HTTP_* keys come from header names with '-' mapped to '_' (PEP 3333 / CGI), so a
    client's ``X_Forwarded_For`` must not pose as a proxy's ``X-Forwarded-For``."""
    spoofed = capture_one(serve, req("/", headers=[("X_Forwarded_For", "6.6.6.6")]))
    assert "HTTP_X_FORWARDED_FOR" not in spoofed
    both = capture_one(
        serve,
        req("/", headers=[("X-Forwarded-For", "10.0.0.1"), ("X_Forwarded_For", "6.6.6.6")]),
    )
    assert both["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"
    assert not any("6.6.6.6" in str(value) for value in both.values())


def test_environ_wsgi_keys(serve: ServerFactory) -> None:
    """PEP 3333: the wsgi.* variables are present with the right types and values."""
    env = capture_one(serve, req("/"))
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    for method in ("read", "readline", "readlines", "__iter__"):
        assert callable(getattr(env["wsgi.input"], method))
    for method in ("write", "writelines", "flush"):
        assert callable(getattr(env["wsgi.errors"], method))
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert callable(env["wsgi.file_wrapper"])


def test_environ_does_not_leak_os_environ(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PEP 3333 describes the CGI variables *of the request*; the server process's own
    environment (secrets, PATH ...) must not be copied into the environ."""
    monkeypatch.setenv("WSGIBRIDGE_LEAK_CANARY", "canary-7f3a9c")
    env = capture_one(serve, req("/"))
    assert "WSGIBRIDGE_LEAK_CANARY" not in env
    assert not any(value == "canary-7f3a9c" for value in env.values())
    request_keys = {k for k in env if k.startswith("HTTP_") or "." in k} | {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "REQUEST_URI",
        "RAW_URI",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_PORT",
        "SERVER_SOFTWARE",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
    }
    assert set(env) - request_keys == set()


# -- wsgi.input ---------------------------------------------------------------------------

BODY = b"alpha\nbeta\ngamma"
NEXT = req("/next")


def _read_all(inp: Any) -> list[bytes]:
    return [inp.read(), inp.read(), inp.read(5)]


def _read_n(inp: Any) -> list[bytes]:
    return [inp.read(3), inp.read(0), inp.read(4), inp.read(100), inp.read(1)]


def _readline(inp: Any) -> list[bytes]:
    return [inp.readline() for _ in range(4)]


def _readline_limit(inp: Any) -> list[bytes]:
    return [inp.readline(3), inp.readline(3), inp.readline(100), inp.readline(2), inp.readline(9)]


def _readlines(inp: Any) -> list[bytes]:
    lines: list[bytes] = inp.readlines()
    return [*lines, inp.read()]


def _iterate(inp: Any) -> list[bytes]:
    return [*inp, inp.readline()]


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        (_read_all, [BODY, b"", b""]),
        (_read_n, [b"alp", b"", b"ha\nb", b"eta\ngamma", b""]),
        (_readline, [b"alpha\n", b"beta\n", b"gamma", b""]),
        (_readline_limit, [b"alp", b"ha\n", b"beta\n", b"ga", b"mma"]),
        (_readlines, [b"alpha\n", b"beta\n", b"gamma", b""]),
        (_iterate, [b"alpha\n", b"beta\n", b"gamma", b""]),
    ],
    ids=["read", "read_n", "readline", "readline_limit", "readlines", "iterate"],
)
def test_input_reads_exactly_the_body_with_a_pipelined_request_behind_it(
    serve: ServerFactory, reader: Callable[[Any], list[bytes]], expected: list[bytes]
) -> None:
    """PEP 3333: the server "should simulate an end-of-file condition if the application
    attempts to read past" Content-Length; the next pipelined request is not body."""
    results: list[list[bytes]] = []
    paths: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        paths.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/upload":
            results.append(reader(environ["wsgi.input"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = serve(app)
    with connect(server) as sock:
        upload = req("/upload", "POST", [("Content-Length", str(len(BODY)))], BODY)
        sock.sendall(upload + NEXT)  # the next request follows the body at once
        rd = ResponseReader(sock)
        first, second = rd.read_response(), rd.read_response()
    assert results == [expected]
    assert (first.status, first.body) == (200, b"/upload")
    assert (second.status, second.body) == (200, b"/next")
    assert paths == ["/upload", "/next"]


@pytest.mark.parametrize("how", ["read", "read_n", "readline"])
def test_input_raises_when_client_closes_mid_body(serve: ServerFactory, how: str) -> None:
    """PEP 3333 leaves truncation to the server; a cut-off upload must not look complete:
    the read raises (a ConnectionError) instead of returning the short data."""
    outcomes: list[object] = []
    done = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        inp = environ["wsgi.input"]
        try:
            if how == "read":
                outcomes.append(inp.read())
            elif how == "read_n":
                outcomes.append(inp.read(100))
            else:
                outcomes.append(inp.readline())
        except Exception as exc:
            outcomes.append(exc)
            raise
        finally:
            done.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"complete"]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/", "POST", [("Content-Length", "100")], b"x" * 10))
        sock.shutdown(socket.SHUT_WR)  # the client stops after 10 of 100 bytes
        assert done.wait(TIMEOUT)
        assert b"complete" not in recv_all(sock)
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], ConnectionError), outcomes
    assert get(server).status == 200


# -- an unread request body ---------------------------------------------------------------


def test_unread_small_body_is_drained_for_the_next_request(serve: ServerFactory) -> None:
    """RFC 9112 §6.3: the body's length is Content-Length; a server that keeps the
    connection must consume an unread body so the next request starts at the right byte."""
    paths: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]  # never reads wsgi.input

    server = serve(app)
    body = (b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n" * 40)[:1000]
    with connect(server) as sock:
        sock.sendall(req("/ignore", "POST", [("Content-Length", "1000")], body) + NEXT)
        rd = ResponseReader(sock)
        first, second = rd.read_response(), rd.read_response()
    assert (first.status, first.body) == (200, b"/ignore")
    assert first.header("Connection") is None
    assert (second.status, second.body) == (200, b"/next")
    assert paths == ["/ignore", "/next"]


def test_unread_body_over_drain_limit_closes_and_is_never_parsed(serve: ServerFactory) -> None:
    """RFC 9112 §9.6: a server that will not read the rest of the body "SHOULD send a
    'close' connection option" and close; the body's bytes must never be read as a
    request (request smuggling)."""
    paths: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        paths.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ignored"]

    server = serve(app, max_drain_bytes=1024)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    body = (smuggled * (100_000 // len(smuggled) + 1))[:100_000]
    with connect(server) as sock:
        try:
            sock.sendall(req("/", "POST", [("Content-Length", "100000")], body))
        except OSError:
            pass  # the server may close before taking the whole body
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.status == 200
        assert response.header("Connection") == "close"
        try:
            rest = recv_all(sock)
        except ConnectionResetError:
            rest = b""
        assert rd.buffer + rest == b""
    assert paths == ["/"]
    assert "/smuggled" not in paths


# -- lazy 100 Continue ------------------------------------------------------------------


def test_100_continue_is_sent_only_when_the_app_reads(serve: ServerFactory) -> None:
    """PEP 3333: "the server ... should send the 100 Continue response ... when the
    application first attempts to read from the input stream"; RFC 9110 §10.1.1."""
    entered, go = threading.Event(), threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        entered.set()
        go.wait(TIMEOUT)
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got " + data]

    server = serve(app)
    try:
        with connect(server) as sock:
            sock.sendall(req("/", "PUT", [("Content-Length", "5"), ("Expect", "100-continue")]))
            assert entered.wait(TIMEOUT)
            readable, _, _ = select.select([sock], [], [], 0.3)
            assert readable == [], "the server answered before the app read the body"
            go.set()
            rd = ResponseReader(sock)
            interim = rd.read_response()
            assert (interim.status, interim.headers) == (100, [])
            sock.sendall(b"hello")
            final = rd.read_response()
            assert (final.status, final.body) == (200, b"got hello")
            sock.sendall(NEXT)  # the connection is still good
            assert rd.read_response().status == 200
    finally:
        go.set()


def test_100_continue_never_sent_when_app_answers_without_reading(serve: ServerFactory) -> None:
    """RFC 9110 §10.1.1: a server that "responds with a final status code before reading the
    entire request content SHOULD indicate whether it intends to close the connection";
    with no 100 sent, the client never sends the body, so the server closes."""
    calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"who are you?"]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/", "PUT", [("Content-Length", "5"), ("Expect", "100-continue")]))
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.status == 401
        assert response.body == b"who are you?"
        assert response.header("Connection") == "close"
        expect_eof(rd)
    assert calls == ["/"]


def test_100_continue_not_sent_inside_a_response_already_started(serve: ServerFactory) -> None:
    """RFC 9110 §15.2: a 1xx is an interim response sent "prior to ... sending a final
    response"; once the final response's header section is out, a 100 Continue written
    into the body corrupts its framing (RFC 9112 §7.1)."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"first;"
        yield environ["wsgi.input"].read()

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/", "PUT", [("Content-Length", "5"), ("Expect", "100-continue")]))
        rd = ResponseReader(sock)
        fill_until(rd, b"first;\r\n")
        assert rd.buffer.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"hello")
        fill_until(rd, b"hello\r\n0\r\n\r\n")
        assert b"100 Continue" not in rd.buffer, rd.buffer
        response = rd.read_response()
        assert (response.status, response.body) == (200, b"first;hello")


# -- response framing ---------------------------------------------------------------------


def test_app_content_length_is_honoured(serve: ServerFactory) -> None:
    """RFC 9112 §6.3: "If a valid Content-Length header field is present ... its decimal
    value defines the expected message body length in octets"."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
        yield b"hello"
        yield b" world"

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/") + req("/"))
        rd = ResponseReader(sock)
        for _ in range(2):
            response = rd.read_response()
            assert response.header("Content-Length") == "11"
            assert response.header("Transfer-Encoding") is None
            assert response.body == b"hello world"


@pytest.mark.parametrize("as_list", [True, False], ids=["list", "generator"])
def test_bytes_past_content_length_are_not_sent(serve: ServerFactory, as_list: bool) -> None:
    """PEP 3333: "the server should not transmit more bytes to the client than the header
    allows"; the excess must not become the start of the next response."""

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        if as_list:
            return [b"0123456789"]
        return iter([b"012", b"3456789"])

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        rd = ResponseReader(sock)
        assert rd.read_response().body == b"01234"
        sock.sendall(req("/", headers=[("Connection", "close")]))
        second = rd.read_response()  # would fail to parse if "56789" had been sent
        assert (second.status, second.body) == (200, b"01234")
        expect_eof(rd)


def test_short_body_closes_the_connection(serve: ServerFactory) -> None:
    """RFC 9112 §8: a message "is incomplete if the size of the message body received ... is
    less than the value given by Content-Length"; closing lets the client see that."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        yield b"12345"

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        raw = recv_all(sock)  # times out (and fails) if the connection stays open
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Content-Length: 10" in head
    assert body == b"12345"


def test_single_element_list_gets_a_computed_content_length(serve: ServerFactory) -> None:
    """PEP 3333 "Handling the Content-Length Header": if the iterable has len() 1 the
    server "can automatically determine Content-Length"."""
    server = serve(simple_app(b"exactly 19 bytes!!!"))
    with connect(server) as sock:
        sock.sendall(req("/"))
        response = ResponseReader(sock).read_response()
    assert response.header("Content-Length") == "19"
    assert response.header("Transfer-Encoding") is None
    assert response.body == b"exactly 19 bytes!!!"


def test_generator_on_http11_is_chunked_and_keeps_alive(serve: ServerFactory) -> None:
    """RFC 9112 §7.1: chunk = chunk-size CRLF chunk-data CRLF; last-chunk = "0" CRLF, then
    CRLF.  Chunking keeps the connection usable when the length is unknown."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"hello"
        yield b""  # an empty chunk must not end the body early
        yield b" world!" * 3

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        raw = b""
        while not raw.endswith(b"\r\n0\r\n\r\n"):
            data = sock.recv(65536)
            assert data, f"closed mid-response: {raw!r}"
            raw += data
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"\r\nTransfer-Encoding: chunked" in head
        assert b"Content-Length" not in head
        assert b"Connection: close" not in head
        assert body == b"5\r\nhello\r\n15\r\n world! world! world!\r\n0\r\n\r\n"
        sock.sendall(req("/"))  # keep-alive kept
        assert ResponseReader(sock).read_response().body == b"hello world! world! world!"


def test_generator_on_http10_ends_at_close(serve: ServerFactory) -> None:
    """RFC 9112 §6.3: without Content-Length or Transfer-Encoding "the message body length
    is determined by the number of octets received prior to the server closing"; HTTP/1.0
    has no chunked coding (RFC 9112 §6.1: not for HTTP/1.0 recipients)."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"streamed "
        yield b"to close"

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/", version="HTTP/1.0"))
        raw = recv_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length" not in head
    assert b"Transfer-Encoding" not in head
    assert body == b"streamed to close"


def test_head_has_get_content_length_and_no_body(serve: ServerFactory) -> None:
    """RFC 9110 §9.3.2: HEAD is "identical to GET except that the server MUST NOT send
    content"; §8.6: its Content-Length, if sent, equals what a GET would have."""
    server = serve(simple_app(b"twelve bytes"))
    with connect(server) as sock:
        sock.sendall(req("/", "HEAD") + req("/"))  # pipelined: a HEAD body would show up
        rd = ResponseReader(sock)
        head = rd.read_response("HEAD")
        get_response = rd.read_response()
    assert head.status == 200
    assert head.header("Content-Length") == "12"
    assert get_response.header("Content-Length") == "12"
    assert get_response.body == b"twelve bytes"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_have_no_body(serve: ServerFactory, status: str) -> None:
    """RFC 9110 §6.4.1: "All 1xx, 204 (No Content), and 304 (Not Modified) responses do not
    include content"; §8.6: "A server MUST NOT send a Content-Length header field in any
    response with a status code of ... 204"."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, [("Content-Length", "5")])
        return [b"oops!"]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/") + req("/", headers=[("Connection", "close")]))
        raw = recv_all(sock)
    assert b"oops!" not in raw
    first, second = responses_in(raw)
    assert first.status == second.status == int(status[:3])
    if status.startswith("204"):
        assert b"Content-Length" not in raw
        assert first.header("Content-Length") is None


def test_generator_of_empty_chunks_gets_content_length_zero(serve: ServerFactory) -> None:
    """PEP 3333: headers wait for "the first iteration ... that yields a non-empty
    bytestring"; a body that ended before any is known to be empty: Content-Length: 0."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b""

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        response = ResponseReader(sock).read_response()
    assert response.header("Content-Length") == "0"
    assert response.header("Transfer-Encoding") is None
    assert response.body == b""


def test_date_and_server_added_once(serve: ServerFactory) -> None:
    """RFC 9110 §6.6.1: an origin server with a clock "MUST generate a Date header field";
    a field the app already set must not be sent twice."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        headers = [("Content-Type", "text/plain")]
        if environ["PATH_INFO"] == "/own":
            headers += [("date", "Tue, 01 Jan 2030 00:00:00 GMT"), ("Server", "mine/1.0")]
        start_response("200 OK", headers)
        return [b"x"]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/") + req("/own"))
        rd = ResponseReader(sock)
        plain, own = rd.read_response(), rd.read_response()

    def values(response: RawResponse, name: str) -> list[str]:
        return [v for k, v in response.headers if k.lower() == name]

    assert len(values(plain, "date")) == 1
    assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", values(plain, "date")[0])
    assert len(values(plain, "server")) == 1
    assert values(own, "date") == ["Tue, 01 Jan 2030 00:00:00 GMT"]
    assert values(own, "server") == ["mine/1.0"]


# -- keep-alive ----------------------------------------------------------------------------


def test_http11_persists_by_default(serve: ServerFactory) -> None:
    """RFC 9112 §9.3: with HTTP/1.1 "the connection will persist after the current response"
    unless the "close" option was received."""
    seen_ports: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        seen_ports.append(environ["REMOTE_PORT"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(app)
    with connect(server) as sock:
        rd = ResponseReader(sock)
        for _ in range(2):
            sock.sendall(req("/"))
            response = rd.read_response()
            assert response.status == 200
            assert response.header("Connection") is None
    assert len(seen_ports) == 2
    assert seen_ports[0] == seen_ports[1]


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close", "close, te"])
def test_connection_close_is_honoured(serve: ServerFactory, value: str) -> None:
    """RFC 9112 §9.6: a server that receives a "close" connection option "MUST initiate
    closure of the connection after it sends the final response" and "SHOULD send a
    'close' connection option in its final response"."""
    server = serve(simple_app())
    with connect(server) as sock:
        sock.sendall(req("/", headers=[("Connection", value)]))
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.status == 200
        assert response.header("Connection") == "close"
        expect_eof(rd)


def test_http10_closes_by_default(serve: ServerFactory) -> None:
    """RFC 9112 §9.3: for HTTP/1.0 without "keep-alive" "the connection will close after
    the current response"; §9.6: the server "SHOULD send a "close" connection option" -
    a pooling proxy (nginx with upstream keepalive) relies on it."""
    server = serve(simple_app())
    with connect(server) as sock:
        sock.sendall(req("/", version="HTTP/1.0"))
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.body == b"Hello, World!"
        assert response.header("Connection") == "close"
        expect_eof(rd)


def test_http10_keep_alive_with_known_length(serve: ServerFactory) -> None:
    """RFC 9112 §9.3 / Appendix C.2.2: an HTTP/1.0 "keep-alive" request persists when the
    server honours it, which it must say with "Connection: keep-alive"."""
    server = serve(simple_app())
    with connect(server) as sock:
        rd = ResponseReader(sock)
        for _ in range(2):
            sock.sendall(req("/", headers=[("Connection", "keep-alive")], version="HTTP/1.0"))
            response = rd.read_response()
            assert response.header("Connection") == "keep-alive"
            assert response.body == b"Hello, World!"


def test_http10_keep_alive_streaming_without_length_closes(serve: ServerFactory) -> None:
    """RFC 9112 §6.3: without a length, the body ends at close, so an HTTP/1.0 keep-alive
    request cannot persist and the response must not claim it does."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        yield b"b"

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/", headers=[("Connection", "keep-alive")], version="HTTP/1.0"))
        raw = recv_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"keep-alive" not in head.lower()
    assert body == b"ab"


def test_pipelined_requests_answered_in_order(serve: ServerFactory) -> None:
    """RFC 9112 §9.3.2: a server "MUST send the corresponding responses in the same order
    that the requests were received"."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield environ["PATH_INFO"].encode()  # chunked, to mix framings

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/1") + req("/2", "HEAD") + req("/3"))
        rd = ResponseReader(sock)
        bodies = [rd.read_response().body, rd.read_response("HEAD").body, rd.read_response().body]
    assert bodies == [b"/1", b"", b"/3"]


# -- start_response and write() -------------------------------------------------------------


def test_exc_info_before_headers_replaces_the_status(serve: ServerFactory) -> None:
    """PEP 3333: start_response may be called again with exc_info "if and only if" the
    headers have not been sent; the new status and headers replace the old ones."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response(
                "503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"try later"]

    server = serve(app)
    response = get(server)
    assert (response.status, response.body) == (503, b"try later")
    assert response.header("X-First") is None


def test_exc_info_after_headers_reraises_and_truncates(serve: ServerFactory) -> None:
    """PEP 3333: "if exc_info is provided, and the HTTP headers have already been sent,
    start_response must raise an error"; RFC 9112 §8: a chunked body without its last-chunk
    is incomplete, which is how the client learns the response broke."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/ok":
            yield b"fine"
            return
        yield b"partial"
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        yield b"never"

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        raw = recv_all(sock)  # the server must close (a timeout fails the test)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"\r\n\r\n7\r\npartial\r\n" in raw
    assert not raw.endswith(b"0\r\n\r\n")
    assert b"never" not in raw
    assert b"Internal Server Error" not in raw
    with pytest.raises(EOFError):
        responses_in(raw)
    assert get(server, "/ok").body == b"fine"


def test_second_start_response_without_exc_info_is_500(serve: ServerFactory) -> None:
    """PEP 3333: "it is a fatal error to call start_response without the exc_info argument
    if start_response has already been called within the current invocation"."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"body"]

    server = serve(app)
    response = get(server)
    assert response.status == 500
    assert b"body" not in response.body


def test_write_callable_and_iterable_arrive_in_order(serve: ServerFactory) -> None:
    """PEP 3333: data passed to write() is sent before the iterable's, "in order", and the
    write() callable must not return until the data is handed to the OS."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")
        write(b"")
        write(b"two,")
        yield b"three,"
        yield b"four"

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/") + req("/"))
        rd = ResponseReader(sock)
        assert rd.read_response().body == b"one,two,three,four"
        assert rd.read_response().body == b"one,two,three,four"


@pytest.mark.parametrize("first_yield", [False, True], ids=["raise", "empty-then-raise"])
def test_headers_wait_for_first_nonempty_chunk(serve: ServerFactory, first_yield: bool) -> None:
    """PEP 3333: start_response "must not actually transmit the response headers" before
    the first non-empty bytestring, so an error before it still gets a clean 500."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-From-App", "1")])
        if first_yield:
            yield b""
        raise RuntimeError("before any body byte")
        yield b"unreachable"

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.status == 500
        assert response.header("X-From-App") is None
        assert response.body.startswith(b"500 Internal Server Error\n")


# -- header validation ----------------------------------------------------------------------

BAD_RESPONSES: list[tuple[str, Any, Any]] = [
    ("crlf-value", "200 OK", [("X-Test", "x\r\nInjected: 1")]),
    ("lf-value", "200 OK", [("X-Test", "x\nInjected: 1")]),
    ("nul-value", "200 OK", [("X-Test", "a\x00Injected")]),
    ("bytes-value", "200 OK", [("X-Test", b"Injected")]),
    ("bytes-name", "200 OK", [(b"Injected", "1")]),
    ("space-name", "200 OK", [("Injected Header", "1")]),
    ("crlf-name", "200 OK", [("X-A\r\nInjected", "1")]),
    ("colon-name", "200 OK", [("Injected:", "1")]),
    ("connection", "200 OK", [("Connection", "Injected")]),
    ("transfer-encoding", "200 OK", [("Transfer-Encoding", "Injected")]),
    ("status-no-reason", "200", []),
    ("status-two-digits", "20 OK", []),
    ("status-bytes", b"200 Injected", []),
    ("status-crlf", "200 OK\r\nInjected: 1", []),
    ("status-int", 200, []),
    ("status-1xx", "100 Continue", []),
    ("status-101", "101 Switching Protocols", []),
    ("status-600", "600 High", []),
    ("proxy-connection", "200 OK", [("Proxy-Connection", "keep-alive")]),
]


@pytest.mark.parametrize(
    ("status", "headers"),
    [(s, h) for _, s, h in BAD_RESPONSES],
    ids=[name for name, _, _ in BAD_RESPONSES],
)
def test_invalid_status_or_header_is_500_with_nothing_injected(
    serve: ServerFactory, status: Any, headers: Any
) -> None:
    """RFC 9110 §5.5: "Field values containing CR, LF, or NUL characters are invalid and
    dangerous"; §5.1 field names are tokens; PEP 3333: status is "a status code and a reason
    phrase ... separated by a single space", headers are native str, and hop-by-hop fields
    are the server's business.  The server answers 500 instead of sending them."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return [b"app body"]

    server = serve(app)
    raw = exchange(server, req("/"))
    assert b"Injected" not in raw
    assert b"app body" not in raw
    (response,) = responses_in(raw)
    assert response.status == 500
    assert get(server).status == 500  # every request fails the same way, and is answered


# -- application errors -------------------------------------------------------------------


def _failing_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    if environ["PATH_INFO"] == "/ok":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]
    raise RuntimeError("boom-7c1e marker")


def test_exception_before_headers_is_plain_500(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """PEP 3333 "Error Handling": the server sends an error response when the app fails
    before headers are sent; the traceback goes to the log, not to the client."""
    caplog.set_level(logging.ERROR, logger="wsgibridge.error")
    server = serve(_failing_app)
    response = get(server, "/fail")
    assert response.status == 500
    assert (response.header("Content-Type") or "").startswith("text/plain")
    assert b"Traceback" not in response.body
    assert b"boom-7c1e" not in response.body
    records = [r for r in caplog.records if r.name == "wsgibridge.error" and r.exc_info]
    assert len(records) == 1
    exc_info = records[0].exc_info
    assert exc_info is not None and isinstance(exc_info[1], RuntimeError)
    assert "boom-7c1e marker" in caplog.text
    assert "Traceback" in caplog.text
    assert get(server, "/ok").body == b"fine"


def test_exception_traceback_exposed_when_configured(serve: ServerFactory) -> None:
    """Config ``expose_tracebacks=True`` (development): the 500 body carries the traceback."""
    server = serve(_failing_app, expose_tracebacks=True)
    response = get(server, "/fail")
    assert response.status == 500
    assert b"Traceback (most recent call last)" in response.body
    assert b"RuntimeError: boom-7c1e marker" in response.body


def test_exception_after_headers_truncates_and_closes(serve: ServerFactory) -> None:
    """RFC 9112 §8: a body short of its Content-Length is incomplete; the server closes so
    the client sees the truncation, and keeps serving other clients."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        if environ["PATH_INFO"] == "/ok":
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"fine"
            return
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        yield b"0123456789"
        raise RuntimeError("mid-body failure")

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        raw = recv_all(sock)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"0123456789"
    assert get(server, "/ok").body == b"fine"


def test_app_yielding_str_is_500(serve: ServerFactory) -> None:
    """PEP 3333: the iterable yields "zero or more bytestrings"; a str is an app error."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[Any]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield "text, not bytes"

    server = serve(app)
    response = get(server)
    assert response.status == 500
    assert b"text, not bytes" not in response.body


# -- the iterable's close() ---------------------------------------------------------------


def test_close_called_once_after_normal_completion(serve: ServerFactory) -> None:
    """PEP 3333: if the iterable has close(), the server "must call that method upon
    completion of the current request" — once."""
    bodies: list[Tracked] = []

    def app(environ: Environ, start_response: StartResponse) -> Tracked:
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(Tracked(iter([b"a", b"b"])))
        return bodies[-1]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        rd = ResponseReader(sock)
        assert rd.read_response().body == b"ab"
        assert bodies[0].closed.wait(TIMEOUT)
        sock.sendall(req("/"))  # the first request is fully finished once this is answered
        assert rd.read_response().body == b"ab"
        assert bodies[1].closed.wait(TIMEOUT)
    assert [b.close_calls for b in bodies] == [1, 1]


def test_close_called_once_after_error_mid_iteration(serve: ServerFactory) -> None:
    """PEP 3333: close() is called "whether the request was completed normally, or
    terminated early due to an application error during iteration"."""
    bodies: list[Tracked] = []

    def chunks() -> Iterator[bytes]:
        yield b"a"
        raise RuntimeError("mid-iteration")

    def app(environ: Environ, start_response: StartResponse) -> Tracked:
        start_response("200 OK", [("Content-Type", "text/plain")])
        bodies.append(Tracked(chunks()))
        return bodies[-1]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        recv_all(sock)
    assert bodies[0].closed.wait(TIMEOUT)
    assert bodies[0].close_calls == 1


def test_close_called_once_when_client_disconnects_mid_stream(serve: ServerFactory) -> None:
    """PEP 3333: close() is called also when the request was "terminated early due to ...
    an early disconnect of the browser"; the server stops iterating."""
    client_gone = threading.Event()
    produced: list[int] = []
    bodies: list[Tracked] = []

    def chunks() -> Iterator[bytes]:
        yield b"first chunk"
        client_gone.wait(TIMEOUT)
        for i in range(2000):  # 128 MiB at most: far more than any socket buffer
            produced.append(i)
            yield b"y" * 65536

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        if environ["PATH_INFO"] == "/ok":
            return [b"fine"]
        bodies.append(Tracked(chunks()))
        return bodies[-1]

    server = serve(app)
    sock = connect(server)
    try:
        sock.sendall(req("/"))
        rd = ResponseReader(sock)
        fill_until(rd, b"first chunk")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    finally:
        sock.close()  # with SO_LINGER 0: a reset, as when a browser tab is closed
        client_gone.set()
    assert bodies[0].closed.wait(TIMEOUT)
    assert bodies[0].close_calls == 1
    assert len(produced) < 2000
    assert get(server, "/ok").body == b"fine"


# -- wsgi.file_wrapper ------------------------------------------------------------------------


def test_file_wrapper_sends_a_real_file_with_sendfile(
    serve: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PEP 3333 "Optional Platform-Specific File Handling": a file_wrapper over a real file
    lets the server use a high-performance path (sendfile); the whole file arrives with
    a Content-Length from the file size, and the file is closed afterwards."""
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    calls: list[tuple[int, int | None]] = []
    original = socket.socket.sendfile

    def recording(self: socket.socket, file: Any, offset: int = 0, count: int | None = None) -> int:
        calls.append((offset, count))
        return original(self, file, offset, count)

    monkeypatch.setattr(socket.socket, "sendfile", recording)
    opened: list[io.BufferedReader] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        opened.append(path.open("rb"))
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](opened[-1])
        return wrapper

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        rd = ResponseReader(sock)
        response = rd.read_response()
        sock.sendall(req("/", "HEAD"))
        head = rd.read_response("HEAD")
    assert response.header("Content-Length") == str(len(data))
    assert response.header("Transfer-Encoding") is None
    assert response.body == data
    assert calls and calls[0] == (0, len(data))
    assert head.header("Content-Length") == str(len(data))
    # close() runs after the response has gone out, so the client may get there first.
    deadline = time.monotonic() + 5
    while not all(f.closed for f in opened) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(opened) == 2 and all(f.closed for f in opened)


def test_file_wrapper_over_bytesio_falls_back_to_iteration(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PEP 3333: the wrapper "must be an iterable", so a file-like object without a real
    file descriptor is sent by iterating it."""
    calls: list[object] = []
    original = socket.socket.sendfile

    def recording(self: socket.socket, *args: Any) -> int:
        calls.append(args)
        return original(self, *args)

    monkeypatch.setattr(socket.socket, "sendfile", recording)
    data = b"in memory " * 20_000

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](io.BytesIO(data), 8192)
        return wrapper

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/"))
        response = ResponseReader(sock).read_response()
    assert response.body == data
    assert calls == []


# -- bad requests the server answers itself -------------------------------------------------

BAD_REQUESTS: list[tuple[str, bytes, int]] = [
    ("two-word-request-line", b"GET /\r\n\r\n", 400),
    ("request-line-too-long", req("/" + "a" * 70_000), 414),
    ("content-length-not-a-number", req("/", "POST", [("Content-Length", "abc")], b"abc"), 400),
    (
        "two-content-lengths",
        req("/", "POST", [("Content-Length", "5"), ("Content-Length", "6")], b"hello!"),
        400,
    ),
    (
        "transfer-coding-gzip",
        req("/", "POST", [("Transfer-Encoding", "gzip, chunked")], b"5\r\nhello\r\n0\r\n\r\n"),
        501,
    ),
]


@pytest.mark.parametrize(
    ("raw", "status"),
    [(raw, status) for _, raw, status in BAD_REQUESTS],
    ids=[name for name, _, _ in BAD_REQUESTS],
)
def test_bad_request_answered_by_server(serve: ServerFactory, raw: bytes, status: int) -> None:
    """RFC 9112 §3: an invalid request-line gets 400, an over-long target 414; §6.3: an
    invalid Content-Length "MUST respond with a 400 ... and then close the connection";
    §6.1: an unsupported transfer coding "SHOULD respond with 501".  The app never runs."""
    calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app"]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(raw)
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.status == status
        assert response.header("Connection") == "close"
        expect_eof(rd)
    assert calls == []
    assert get(server).body == b"app"


def test_bad_request_line_on_a_kept_alive_connection(serve: ServerFactory) -> None:
    """RFC 9112 §3: a malformed request-line after a good request on the same connection
    still gets a complete "HTTP/1.1 400" response (status line and headers), then close."""
    server = serve(simple_app())
    with connect(server) as sock:
        sock.sendall(req("/") + b"GET /\r\n\r\n")
        rd = ResponseReader(sock)
        assert rd.read_response().status == 200
        fill_until(rd, b"\r\n\r\n")
        assert rd.buffer.startswith(b"HTTP/1.1 400 "), rd.buffer
        response = rd.read_response()
        assert response.header("Connection") == "close"
        expect_eof(rd)


# -- access log -------------------------------------------------------------------------------


def test_access_log_one_line_per_request(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's access log (Common Log Format style): one line per request, after the
    response, with the client address, the request line, the status and the body bytes
    actually sent (5, not the 10 the app offered past its Content-Length)."""
    caplog.set_level(logging.INFO, logger="wsgibridge.access")

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            start_response("201 Created", [("Content-Type", "text/plain")])
            return [b"made"]
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"0123456789"]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(req("/logged?x=1"))
        sock.sendall(req("/new", "POST", [("Content-Length", "0"), ("Connection", "close")]))
        rd = ResponseReader(sock)
        rd.read_response()
        rd.read_response()
        expect_eof(rd)  # the lines are written before the connection is closed
    lines = [r.getMessage() for r in caplog.records if r.name == "wsgibridge.access"]
    assert len(lines) == 2, lines
    assert re.match(r'127\.0\.0\.1 .*"GET /logged\?x=1 HTTP/1\.1" 200 5 ', lines[0]), lines[0]
    assert re.match(r'127\.0\.0\.1 .*"POST /new HTTP/1\.1" 201 4 ', lines[1]), lines[1]


def test_access_log_escapes_control_characters(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A request must not forge log lines or send terminal escapes (CWE-117): a target with
    a raw ESC is refused (RFC 9112 §3.2) and logged escaped; a C1 control (an 8-bit byte,
    refused too) is escaped as well, and %-escapes are logged undecoded."""
    caplog.set_level(logging.INFO, logger="wsgibridge")
    server = serve(simple_app())
    with connect(server) as sock:
        sock.sendall(req("/a\x1b[31mb", headers=[("Connection", "close")]))
        rd = ResponseReader(sock)
        assert rd.read_response().status == 400
        expect_eof(rd)
    with connect(server) as sock:
        sock.sendall(req("/c\x9b31md?q=%1b", headers=[("Connection", "close")]))
        rd = ResponseReader(sock)
        assert rd.read_response().status == 400
        expect_eof(rd)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("wsgibridge")]
    access = [r.getMessage() for r in caplog.records if r.name == "wsgibridge.access"]
    assert len(access) == 2
    assert not any("\x1b" in line or "\x9b" in line for line in lines)
    assert "/a\\x1b[31mb" in access[0]
    assert "/c\\x9b31md?q=%1b" in access[1]


# -- stopping ---------------------------------------------------------------------------------


def test_server_stops_quickly_with_idle_keepalive_client(serve: ServerFactory) -> None:
    """An idle keep-alive connection has no request in flight (RFC 9112 §9.6: a server may
    close it at any time), so stopping must not wait for its keep-alive timeout."""
    server = serve(simple_app(), keepalive_timeout=30.0, graceful_timeout=5.0)
    with connect(server) as sock:
        sock.sendall(req("/"))
        rd = ResponseReader(sock)
        assert rd.read_response().status == 200
        start = time.monotonic()
        server.shutdown()
        server.server_close()
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, f"server_close took {elapsed:.2f}s"
        expect_eof(rd)
