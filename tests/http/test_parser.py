"""The strict request parser and the chunked/100-continue paths, pure and on the wire.

Eight groups, each test naming the RFC 9112 / RFC 9110 rule it checks:

1. the parser alone (``read_request_head`` over an in-memory ``SocketReader``):
   every malformed head of ``tests/malformed.py`` is refused with its status, and
   a table of valid heads that real clients send parses to the expected facts;
2. every malformed head live, with a valid request pipelined behind it: exactly one
   error response, ``Connection: close``, EOF, the app never called, a warning logged;
3. every malformed chunked body live: the app's read raises, the status is the
   case's, the connection closes;
4. chunked uploads from real clients (requests, httpx, http.client, curl) and raw
   sockets, byte-exact, streamed in bounded memory, drained, cut off;
5. lazy ``100 Continue``;
6. the limits of :class:`~wsgibridge.config.Config` and their CLI options;
7. rejections stay final with 50 clients at once;
8. the grammar itself (``wsgibridge.http.grammar``): each rule's bytes and str
   forms and its character set agree, and no other module spells a rule again.

Sockets use the 5 s timeout of ``connect``; threads are waited on with
``Event.wait``/``Future.result`` timeouts; subprocesses have a timeout.  The only
fixed waits are short ``select`` calls that check that nothing arrives.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import logging
import random
import resource
import select
import shutil
import socket
import string
import struct
import subprocess
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from wsgibridge import WSGIRequestHandler, WSGIServer
from wsgibridge._types import Environ, StartResponse
from wsgibridge._types import WSGIApp as App
from wsgibridge.accesslog import escape_log
from wsgibridge.cli import build_parser, config_from_args
from wsgibridge.errors import ClientDisconnected, HTTPError, PayloadTooLarge
from wsgibridge.http import grammar
from wsgibridge.http.parser import Limits, RequestHead, read_request_head, read_trailer_section
from wsgibridge.http.reader import SocketReader

from ..conftest import (
    RawResponse,
    Recorder,
    ResponseReader,
    ServerFactory,
    connect,
    expect_eof,
    fill_until,
    recv_all,
)
from ..malformed import BAD_CHUNKED_BODIES, CASES, CHUNKED_HEAD, Case

TIMEOUT = 5.0
KiB = 1024
MiB = 1024 * KiB
# A valid request a client pipelines behind the one under test.
AFTER = b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
# How long "nothing arrives" is watched for (a negative check cannot wait on a condition).
QUIET = 0.3


# -- helpers ---------------------------------------------------------------------------


def fresh_get(server: WSGIServer, path: str = "/fresh") -> RawResponse:
    """One GET on a new connection (the server still serves)."""
    with connect(server) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return ResponseReader(sock).read_response()


def only_response(server: WSGIServer, raw: bytes, method: str = "GET") -> RawResponse:
    """Send ``raw``; exactly one response arrives, then the server closes (EOF, no timeout)."""
    with connect(server) as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        response = reader.read_response(method)
        expect_eof(reader)
        return response


def parse(raw: bytes, limits: Limits | None = None) -> tuple[RequestHead | None, bytes]:
    """The head parsed from ``raw`` in memory, and the bytes left unread after it."""
    rfile = SocketReader(io.BytesIO(raw).read)
    head = read_request_head(rfile, limits or Limits())
    return head, rfile.read()


def refusal(raw: bytes, limits: Limits | None = None) -> HTTPError:
    """The HTTPError the parser raises for ``raw`` (fails if it parses)."""
    with pytest.raises(HTTPError) as info:
        parse(raw, limits)
    return info.value


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    """A chunked body (RFC 9112 §7.1) with one chunk per piece."""
    out = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces if p)
    return out + b"0\r\n" + trailer + b"\r\n"


def post_head(path: str = "/", *fields: str, version: str = "HTTP/1.1") -> bytes:
    """A POST head with Host and ``fields``, ending in the empty line."""
    lines = [f"POST {path} {version}", "Host: x", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def nothing_arrives(sock: socket.socket) -> bool:
    """True if ``sock`` stays unreadable for ``QUIET`` seconds."""
    readable, _, _ = select.select([sock], [], [], QUIET)
    return not readable


def curl_exe() -> str:
    """The curl binary, or skip."""
    exe = shutil.which("curl")
    if exe is None:
        pytest.skip("curl is not installed")
    return exe


@dataclass
class Upload:
    """What an upload-recording app saw: the body and the framing facts of the environ."""

    body: bytes
    content_length: str | None
    input_terminated: bool
    transfer_encoding: str | None
    expect: str | None


def upload_app(seen: list[Upload]) -> App:
    """Reads ``wsgi.input`` to EOF, records it, answers with the body's SHA-256."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = environ["wsgi.input"].read()
        seen.append(
            Upload(
                body,
                environ.get("CONTENT_LENGTH"),
                environ["wsgi.input_terminated"],
                environ.get("HTTP_TRANSFER_ENCODING"),
                environ.get("HTTP_EXPECT"),
            )
        )
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [hashlib.sha256(body).hexdigest().encode()]

    return app


def payload(size: int, seed: int = 9112) -> bytes:
    """Random bytes with chunked-syntax traps at both ends."""
    return b"0\r\n\r\n" + random.Random(seed).randbytes(size) + b"\r\n0\r\n"


def assert_chunked_upload(seen: list[Upload], data: bytes) -> None:
    assert len(seen) == 1
    upload = seen[0]
    assert upload.transfer_encoding is not None
    assert upload.transfer_encoding.lower() == "chunked"
    assert upload.content_length is None
    assert upload.input_terminated is True
    assert len(upload.body) == len(data)
    assert upload.body == data


# -- 1. the parser alone ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_parser_refuses_malformed_head(case: Case) -> None:
    """RFC 9112 §2.2: "a recipient ... MUST ... respond with a 400 (Bad Request)" to an
    invalid message; 414/431/417/501/505 where the RFCs name a more specific status."""
    exc = refusal(case.raw)
    assert exc.status == case.status, exc.reason


@dataclass
class Valid:
    """A valid request head and the facts the parser must find in it."""

    id: str
    raw: bytes
    method: str = "GET"
    target: str = "/"
    version: str = "HTTP/1.1"
    headers: list[tuple[str, str]] = field(default_factory=lambda: [("Host", "a")])
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False
    limits: Limits = field(default_factory=Limits)


HOST = b"Host: a\r\n"
LONG_TARGET = "/" + "a" * (8192 - len("GET / HTTP/1.1\r\n"))
HUNDRED = [("Host", "a")] + [(f"X-{i}", str(i)) for i in range(99)]

VALID: list[Valid] = [
    Valid("origin-form", b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    Valid(
        "origin-form-query",
        b"GET /p/a%20th?q=1&r=%ff;x HTTP/1.1\r\nHost: a\r\n\r\n",
        target="/p/a%20th?q=1&r=%ff;x",
    ),
    Valid(
        "absolute-form",
        b"GET http://example.com/a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n",
        target="http://example.com/a?b=c",
        headers=[("Host", "example.com")],
    ),
    Valid(
        "absolute-form-https-port",
        b"GET https://example.com:8443 HTTP/1.1\r\nHost: example.com:8443\r\n\r\n",
        target="https://example.com:8443",
        headers=[("Host", "example.com:8443")],
    ),
    Valid(
        "options-asterisk",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        method="OPTIONS",
        target="*",
    ),
    Valid(
        "absolute-form-host-replaced",
        b"GET http://other.example:81/p HTTP/1.1\r\nHost: evil\r\nX-A: b\r\n\r\n",
        target="http://other.example:81/p",
        headers=[("Host", "other.example:81"), ("X-A", "b")],
    ),
    Valid(
        "absolute-form-http10-no-host",
        b"GET HTTP://Example.COM/p HTTP/1.0\r\n\r\n",
        target="HTTP://Example.COM/p",
        version="HTTP/1.0",
        headers=[("Host", "Example.COM")],
        keep_alive=False,
    ),
    Valid(
        "host-forms",
        b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        headers=[("Host", "[::1]:8080")],
    ),
    Valid(
        "http10-no-host",
        b"GET / HTTP/1.0\r\n\r\n",
        version="HTTP/1.0",
        headers=[],
        keep_alive=False,
    ),
    Valid(
        "http10-keep-alive",
        b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
        version="HTTP/1.0",
        headers=[("Connection", "Keep-Alive")],
    ),
    Valid(
        "empty-host",
        b"OPTIONS * HTTP/1.1\r\nHost:\r\n\r\n",
        method="OPTIONS",
        target="*",
        headers=[("Host", "")],
    ),
    Valid(
        "obs-text-value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9 \xff\x80\r\n\r\n",
        headers=[("Host", "a"), ("X-Name", "caf\xe9 \xff\x80")],
    ),
    Valid(
        "percent-encoded-utf8-target",
        b"GET /caf%C3%A9 HTTP/1.1\r\nHost: a\r\n\r\n",
        target="/caf%C3%A9",
    ),
    Valid(
        "tabs-inside-value",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\tb\t c\r\n\r\n",
        headers=[("Host", "a"), ("X-A", "a\tb\t c")],
    ),
    Valid(
        "empty-values",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Blank: \t \r\n\r\n",
        headers=[("Host", "a"), ("X-Empty", ""), ("X-Blank", "")],
    ),
    Valid(
        "ows-stripped",
        b"GET / HTTP/1.1\r\nHost:a\r\nX-A: \t  v  v \t \r\n\r\n",
        headers=[("Host", "a"), ("X-A", "v  v")],
    ),
    Valid(
        "colons-in-value",
        b"GET / HTTP/1.1\r\nHost: a:80\r\nX-Time: 12:34:56\r\n\r\n",
        headers=[("Host", "a:80"), ("X-Time", "12:34:56")],
    ),
    Valid(
        "all-tchar-name",
        b"GET / HTTP/1.1\r\nHost: a\r\nX!#$%&'*+-.^_`|~9: v\r\n\r\n",
        headers=[("Host", "a"), ("X!#$%&'*+-.^_`|~9", "v")],
    ),
    Valid(
        "extension-method",
        b"PROPFIND /dav/a%20b HTTP/1.1\r\nHost: a\r\n\r\n",
        method="PROPFIND",
        target="/dav/a%20b",
    ),
    Valid(
        "te-chunked-mixed-case",
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
        method="POST",
        target="/up",
        headers=[("Host", "a"), ("Transfer-Encoding", "Chunked")],
        chunked=True,
    ),
    Valid(
        "te-empty-list-members",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked ,\r\n\r\n",
        method="POST",
        headers=[("Host", "a"), ("Transfer-Encoding", ", chunked ,")],
        chunked=True,
    ),
    Valid(
        "content-length",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        method="POST",
        headers=[("Host", "a"), ("Content-Length", "5")],
        content_length=5,
    ),
    Valid(
        "content-length-zero",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        method="POST",
        headers=[("Host", "a"), ("Content-Length", "0")],
        content_length=0,
    ),
    Valid(
        "content-length-leading-zeros",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n",
        method="POST",
        headers=[("Host", "a"), ("Content-Length", "007")],
        content_length=7,
    ),
    Valid(
        "content-length-18-digits",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 123456789012345678\r\n\r\n",
        method="POST",
        headers=[("Host", "a"), ("Content-Length", "123456789012345678")],
        content_length=123456789012345678,
    ),
    Valid(
        "lowercase-names",
        b"PUT / HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nexpect: 100-continue\r\n\r\n",
        method="PUT",
        headers=[("host", "a"), ("content-length", "3"), ("expect", "100-continue")],
        content_length=3,
        expect_continue=True,
    ),
    Valid(
        "expect-mixed-case",
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
        method="PUT",
        headers=[("Host", "a"), ("Expect", "100-Continue"), ("Content-Length", "3")],
        content_length=3,
        expect_continue=True,
    ),
    Valid(
        "expect-ignored-in-http10",
        b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
        method="PUT",
        version="HTTP/1.0",
        headers=[("Expect", "100-continue"), ("Content-Length", "3")],
        content_length=3,
        keep_alive=False,
    ),
    Valid(
        "connection-keep-alive-upgrade",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n",
        headers=[("Host", "a"), ("Connection", "keep-alive, Upgrade"), ("Upgrade", "h2c")],
    ),
    Valid(
        "connection-close-wins",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: Close\r\n\r\n",
        headers=[("Host", "a"), ("Connection", "keep-alive"), ("Connection", "Close")],
        keep_alive=False,
    ),
    Valid(
        "duplicates-kept-in-order",
        b"GET / HTTP/1.1\r\nAccept: a\r\nHost: a\r\nCookie: x=1\r\n"
        b"accept: b\r\nCookie: y=2\r\n\r\n",
        headers=[
            ("Accept", "a"),
            ("Host", "a"),
            ("Cookie", "x=1"),
            ("accept", "b"),
            ("Cookie", "y=2"),
        ],
    ),
    Valid(
        "hundred-headers",
        b"GET / HTTP/1.1\r\n" + b"".join(f"{n}: {v}\r\n".encode() for n, v in HUNDRED) + b"\r\n",
        headers=HUNDRED,
    ),
    Valid(
        "request-line-8192-bytes",
        f"GET {LONG_TARGET} HTTP/1.1\r\n".encode() + HOST + b"\r\n",
        target=LONG_TARGET,
    ),
    Valid(
        "header-section-64KiB",
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"X-Pad: "
        + b"p" * (64 * KiB - len(HOST) - len(b"X-Pad: \r\n\r\n"))
        + b"\r\n\r\n",
        headers=[("Host", "a"), ("X-Pad", "p" * (64 * KiB - len(HOST) - len(b"X-Pad: \r\n\r\n")))],
    ),
    Valid("leading-crlf-ignored", b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    Valid(
        "bare-lf-allowed",
        b"\nPOST /lf HTTP/1.1\nHost: a\nContent-Length: 2\r\nX-A: b\n\n",
        method="POST",
        target="/lf",
        headers=[("Host", "a"), ("Content-Length", "2"), ("X-A", "b")],
        content_length=2,
        limits=Limits(allow_bare_lf=True),
    ),
    Valid(
        "small-limits-at-their-bounds",
        b"GET /" + b"b" * (64 - 16) + b" HTTP/1.1\r\nHost: a\r\nX-1: 12\r\n\r\n",
        target="/" + "b" * 48,
        headers=[("Host", "a"), ("X-1", "12")],
        limits=Limits(max_request_line=64, max_header_count=2, max_header_bytes=20),
    ),
]


@pytest.mark.parametrize("case", VALID, ids=[v.id for v in VALID])
def test_parser_accepts_valid_head(case: Valid) -> None:
    """RFC 9112 §3 (request-line, the four target forms: "A server MUST accept the
    absolute-form"), RFC 9110 §5.5 ("field-vchar = VCHAR / obs-text", "A field value does
    not include leading or trailing whitespace"), §5.1 ("Field names are
    case-insensitive"), §5.3 (order of repeated fields "is significant"), RFC 9112 §7
    ("All transfer-coding names are case-insensitive"), §9.3 (persistence), RFC 9110
    §10.1.1 ("The Expect field value is case-insensitive"; HTTP/1.0 expectations ignored),
    §2.2 ("SHOULD ignore at least one empty line (CRLF) received prior to the
    request-line"; "MAY recognize a single LF").  The head is consumed exactly."""
    body = b"BODY-BYTES"
    head, rest = parse(case.raw + body, case.limits)
    assert head is not None
    got = (
        head.method,
        head.target,
        head.version,
        head.headers,
        head.content_length,
        head.chunked,
        head.keep_alive,
        head.expect_continue,
    )
    want = (
        case.method,
        case.target,
        case.version,
        case.headers,
        case.content_length,
        case.chunked,
        case.keep_alive,
        case.expect_continue,
    )
    assert got == want
    assert rest == body


def test_connection_tokens_are_lowercased() -> None:
    """RFC 9110 §7.6.1: "Connection options are case-insensitive"."""
    head, _ = parse(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: h2c\r\n\r\n"
    )
    assert head is not None
    assert head.connection_tokens == {"keep-alive", "upgrade"}


def test_clean_close_before_a_request_is_not_an_error() -> None:
    """RFC 9112 §9.3: a client may close an idle persistent connection at any time; no
    bytes at all is no request, not a malformed one."""
    assert parse(b"") == (None, b"")


BOUNDARY_REFUSALS = [
    ("request-line-8193-bytes", b"GET /" + b"a" * 8177 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414),
    (
        "101-headers",
        b"GET / HTTP/1.1\r\n" + HOST + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
        431,
    ),
    (
        "header-section-64KiB-plus-1",
        b"GET / HTTP/1.1\r\n"
        + HOST
        + b"X-Pad: "
        + b"p" * (64 * KiB - len(HOST) - len(b"X-Pad: \r\n\r\n") + 1)
        + b"\r\n\r\n",
        431,
    ),
    ("two-leading-crlf", b"\r\n\r\nGET / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
]


@pytest.mark.parametrize(
    ("raw", "status"),
    [(raw, status) for _, raw, status in BOUNDARY_REFUSALS],
    ids=[name for name, _, _ in BOUNDARY_REFUSALS],
)
def test_parser_refuses_one_past_each_limit(raw: bytes, status: int) -> None:
    """RFC 9110 §15.5.15 (414 URI Too Long) and RFC 6585 §5 (431): one byte or one field
    past a default limit is refused, where the limit itself is accepted (above)."""
    assert refusal(raw).status == status


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\nHost: a\nX-A: a\rb\n\n",
        b"GET / HTTP/1.1\nHost: a\nX-A: one\n two\n\n",
        b"GET / HTTP/1.1\nHost: a\nContent-Length : 1\n\n",
    ],
    ids=["bare-cr", "obs-fold", "space-before-colon"],
)
def test_allow_bare_lf_relaxes_nothing_else(raw: bytes) -> None:
    """RFC 9112 §2.2: a bare CR "MUST" be treated as invalid (or replaced), §5.2 obs-fold
    and §5.1 whitespace before the colon are refused even when bare LF is accepted."""
    assert refusal(raw, Limits(allow_bare_lf=True)).status == 400


# -- 2. every malformed head, live -------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_head_gets_one_response_then_close(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture, case: Case
) -> None:
    """RFC 9112 §9.6: a server that sends "close" "MUST NOT process any further requests
    received on that connection" - the pipelined request is never answered - and RFC 9112
    §2.2/§3/§5/§6 give the status; the app never sees the request."""
    caplog.set_level(logging.WARNING, logger="wsgibridge.error")
    reason = refusal(case.raw + AFTER).reason
    app = Recorder()
    server = serve(app)
    response = only_response(server, case.raw + AFTER)
    assert response.status == case.status, response
    assert response.header("Connection") == "close"
    assert app.calls == []
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "wsgibridge.error" and r.levelno == logging.WARNING
    ]
    assert any(
        f"{case.status} {HTTPStatus(case.status).phrase}" in m and escape_log(reason) in m
        for m in warnings
    ), warnings
    fresh = fresh_get(server)
    assert (fresh.status, fresh.body) == (200, b"ok:/fresh")
    assert app.calls == ["/fresh"]


# -- 3. every malformed chunked body, live ----------------------------------------------------


@pytest.mark.parametrize("how", ["read", "lines"])
@pytest.mark.parametrize("case", BAD_CHUNKED_BODIES, ids=[c.id for c in BAD_CHUNKED_BODIES])
def test_malformed_chunked_body_fails_the_read_and_closes(
    serve: ServerFactory, case: Case, how: str
) -> None:
    """RFC 9112 §7.1: chunked-body = *chunk last-chunk trailer-section CRLF, chunk =
    chunk-size [ chunk-ext ] CRLF chunk-data CRLF; a body off that grammar is an error the
    app sees as an exception (never as data), answered with 400 (431 for a trailer section
    over the limit, RFC 6585 §5), and the connection is closed (§9.6)."""
    entered: list[str] = []
    completed: list[bytes] = []
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        entered.append(environ["PATH_INFO"])
        stream = environ["wsgi.input"]
        try:
            # read() and line-by-line iteration (what multipart parsers do) take
            # different paths through the decoder; both must refuse.
            data = stream.read() if how == "read" else b"".join(stream)
        except BaseException as exc:
            raised.append(exc)
            raise
        completed.append(data)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read:" + data]

    server = serve(app)
    response = only_response(server, CHUNKED_HEAD + case.raw + AFTER)
    assert response.status == case.status, response
    assert response.header("Connection") == "close"
    assert entered == ["/"]
    assert completed == []
    assert len(raised) == 1
    assert isinstance(raised[0], HTTPError)
    assert raised[0].status == case.status


# -- 4. chunked uploads ---------------------------------------------------------------------


def test_chunked_upload_from_requests_generator(serve: ServerFactory) -> None:
    """RFC 9112 §7.1: "A recipient MUST be able to parse and decode the chunked transfer
    coding"; requests sends a generator body chunked, and the app gets it byte-exact with
    no CONTENT_LENGTH (PEP 3333: only when the length is known) and
    ``wsgi.input_terminated``."""
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    data = payload(200_000)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(data), 7_777):
            yield data[start : start + 7_777]

    with requests.Session() as session:
        session.trust_env = False
        response = session.post(server.url + "up", data=pieces(), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == hashlib.sha256(data).hexdigest()
    assert_chunked_upload(seen, data)


def test_chunked_upload_from_httpx_iterator(serve: ServerFactory) -> None:
    """RFC 9112 §7.1 (decode chunked): httpx streams an iterator as chunked; byte-exact."""
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    data = payload(150_000, seed=2)
    parts = [data[i : i + 4096] for i in range(0, len(data), 4096)]
    with httpx.Client(trust_env=False, timeout=TIMEOUT) as client:
        response = client.post(server.url + "up", content=iter(parts))
    assert response.status_code == 200
    assert response.text == hashlib.sha256(data).hexdigest()
    assert_chunked_upload(seen, data)


def test_chunked_upload_from_http_client_small_blocks(serve: ServerFactory) -> None:
    """RFC 9112 §7.1 (decode chunked): http.client with ``encode_chunked=True`` and a 7-byte
    blocksize sends thousands of tiny chunks; byte-exact."""
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    data = payload(20_000, seed=3)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT, blocksize=7)
    try:
        conn.request(
            "POST",
            "/up",
            body=io.BytesIO(data),
            headers={"Transfer-Encoding": "chunked"},
            encode_chunked=True,
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == hashlib.sha256(data).hexdigest().encode()
    finally:
        conn.close()
    assert_chunked_upload(seen, data)


def test_chunked_upload_from_curl(serve: ServerFactory, tmp_path: Path) -> None:
    """RFC 9112 §7.1 (decode chunked): ``curl -H 'Transfer-Encoding: chunked'
    --data-binary @file`` uploads a file chunked; byte-exact."""
    exe = curl_exe()
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    data = payload(300_000, seed=4)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    done = subprocess.run(
        [
            exe,
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            f"@{path}",
            server.url + "up",
        ],
        capture_output=True,
        timeout=15,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == hashlib.sha256(data).hexdigest().encode()
    assert_chunked_upload(seen, data)


def test_chunk_extensions_and_trailers_are_consumed(serve: ServerFactory) -> None:
    """RFC 9112 §7.1.1: "A recipient MUST ignore unrecognized chunk extensions" (token or
    quoted-string values, BWS around ";" and "="); §7.1.2: the trailer section is read to
    its empty line, so the pipelined request behind it starts at the right byte."""
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    body = (
        b'5;name=value;q="quoted \\" str"\r\nhello\r\n'
        b"6 ; a = b ;flag\r\n world\r\n"
        b"0;last=1\r\nX-Trailer: t\r\nX-Checksum: abc\r\n\r\n"
    )
    with connect(server) as sock:
        sock.sendall(post_head("/ext", "Transfer-Encoding: chunked") + body + AFTER)
        reader = ResponseReader(sock)
        first, second = reader.read_response(), reader.read_response()
    assert first.status == 200
    assert first.header("Connection") is None
    assert (second.status, second.body) == (200, hashlib.sha256(b"").hexdigest().encode())
    assert [u.body for u in seen] == [b"hello world", b""]


def test_forbidden_trailer_in_a_body_the_app_ignores_closes_the_connection(
    serve: ServerFactory,
) -> None:
    """RFC 9110 §6.5.1: a trailer field that "cannot be processed outside the header
    section" (here Content-Length, framing) is refused also when the app never reads the
    body: the drain that keeps the connection finds it, the response says
    ``Connection: close``, and the request pipelined behind it is never answered."""
    app = Recorder()
    server = serve(app)
    body = b"5\r\nhello\r\n0\r\nContent-Length: 40\r\n\r\n"
    response = only_response(
        server, post_head("/ignored", "Transfer-Encoding: chunked") + body + AFTER
    )
    assert response.status == 200
    assert response.header("Connection") == "close"
    assert app.calls == ["/ignored"]


def test_ordinary_trailer_fields_still_pass() -> None:
    """Trailer fields meant for after the content (RFC 9110 §6.5: integrity checks,
    metrics, signatures) are read and discarded without complaint."""
    rfile = SocketReader(
        io.BytesIO(b"X-Checksum: abc\r\nServer-Timing: db;dur=53\r\nETag-Like: x\r\n\r\n").read
    )
    fields = read_trailer_section(rfile, Limits())
    assert [name for name, _ in fields] == ["X-Checksum", "Server-Timing", "ETag-Like"]


def test_an_8bit_target_pipelined_after_a_body_is_refused(serve: ServerFactory) -> None:
    """RFC 9112 §3.2: 8-bit bytes have no place in any request-target form, also in a
    request that follows a body on the same connection (parsed at another offset)."""
    app = Recorder()
    server = serve(app)
    first = post_head("/first", "Content-Length: 5") + b"hello"
    with connect(server) as sock:
        sock.sendall(first + b"GET /a\xffb HTTP/1.1\r\nHost: x\r\n\r\n" + AFTER)
        reader = ResponseReader(sock)
        assert reader.read_response().status == 200
        refused = reader.read_response()
        assert refused.status == 400
        assert b"8-bit" in refused.body
        expect_eof(reader)
    assert app.calls == ["/first"]


BODY_LINES = b"alpha\nbeta\ngamma"
CHUNKS = [b"al", b"pha\nbe", b"t", b"a\ngam", b"ma"]


def _read_n(inp: Any) -> list[bytes]:
    return [inp.read(3) for _ in range(7)]


def _readline(inp: Any) -> list[bytes]:
    return [inp.readline() for _ in range(4)]


def _readline_limit(inp: Any) -> list[bytes]:
    return [inp.readline(4) for _ in range(7)]


def _readlines(inp: Any) -> list[bytes]:
    lines: list[bytes] = inp.readlines()
    return [*lines, inp.read()]


def _iterate(inp: Any) -> list[bytes]:
    return [*inp, inp.read()]


def _mixed(inp: Any) -> list[bytes]:
    return [inp.read(2), inp.readline(), inp.read(), inp.read(), inp.readline()]


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        (_read_n, [b"alp", b"ha\n", b"bet", b"a\ng", b"amm", b"a", b""]),
        (_readline, [b"alpha\n", b"beta\n", b"gamma", b""]),
        (_readline_limit, [b"alph", b"a\n", b"beta", b"\n", b"gamm", b"a", b""]),
        (_readlines, [b"alpha\n", b"beta\n", b"gamma", b""]),
        (_iterate, [b"alpha\n", b"beta\n", b"gamma", b""]),
        (_mixed, [b"al", b"pha\n", b"beta\ngamma", b"", b""]),
    ],
    ids=["read_n", "readline", "readline_limit", "readlines", "iterate", "mixed"],
)
def test_chunked_input_reads_across_chunk_boundaries(
    serve: ServerFactory, reader: Callable[[Any], list[bytes]], expected: list[bytes]
) -> None:
    """PEP 3333: wsgi.input's read(n)/readline()/iteration have file semantics; RFC 9112
    §7.1: chunk boundaries are framing, invisible in the decoded content, and the body
    ends at the last-chunk (the pipelined request is not body)."""
    results: list[list[bytes]] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/up":
            results.append(reader(environ["wsgi.input"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode()]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(post_head("/up", "Transfer-Encoding: chunked") + chunked(*CHUNKS) + AFTER)
        rd = ResponseReader(sock)
        first, second = rd.read_response(), rd.read_response()
    assert results == [expected]
    assert b"".join(expected) == BODY_LINES
    assert (first.status, first.body) == (200, b"/up")
    assert (second.status, second.body) == (200, b"/after")


def test_large_chunked_upload_is_streamed_in_bounded_memory(serve: ServerFactory) -> None:
    """RFC 9112 §7.1 decodes a chunked body as it arrives; a server that buffered a
    20 MiB upload before handing it over would grow by 20 MiB.  Peak RSS
    (``ru_maxrss``) and peak traced Python allocations both stay far below that."""
    total = 20 * MiB
    chunk = 50_000  # not a multiple of the app's 64 KiB reads
    block = bytes(range(256)) * (chunk // 256 + 1)
    outcome: list[tuple[int, int, str]] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        inp = environ["wsgi.input"]
        digest = hashlib.sha256()
        received = largest = 0
        while True:
            data = inp.read(64 * KiB)
            if not data:
                break
            digest.update(data)
            received += len(data)
            largest = max(largest, len(data))
        outcome.append((received, largest, digest.hexdigest()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    server = serve(app)
    expected = hashlib.sha256()
    with connect(server) as sock:  # warm up the server's code paths first
        sock.sendall(post_head("/warm", "Transfer-Encoding: chunked") + chunked(b"w" * 100))
        assert ResponseReader(sock).read_response().body == b"done"
    assert outcome == [(100, 100, hashlib.sha256(b"w" * 100).hexdigest())]
    outcome.clear()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        with connect(server) as sock:
            sock.sendall(post_head("/big", "Transfer-Encoding: chunked"))
            sent = 0
            while sent < total:
                size = min(chunk, total - sent)
                piece = block[:size]
                expected.update(piece)
                sock.sendall(b"%x\r\n%b\r\n" % (size, piece))
                sent += size
            sock.sendall(b"0\r\n\r\n")
            response = ResponseReader(sock).read_response()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is a high-water mark: after an earlier, bigger peak in the same process it
    # cannot rise, so the traced peak (Python allocations of every thread) is checked too.
    assert (response.status, response.body) == (200, b"done")
    assert outcome == [(total, 64 * KiB, expected.hexdigest())]
    assert (after - before) * KiB < 15 * MiB, f"peak RSS grew by {(after - before) // KiB} MiB"
    assert peak < 15 * MiB, f"peak traced allocations {peak // MiB} MiB"


def test_connection_is_kept_alive_after_a_chunked_upload(serve: ServerFactory) -> None:
    """RFC 9112 §9.3: an HTTP/1.1 connection persists after a request whose chunked body
    was read to its end; the next request on the socket is answered."""
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    with connect(server) as sock:
        rd = ResponseReader(sock)
        sock.sendall(post_head("/up", "Transfer-Encoding: chunked") + chunked(b"one", b"two"))
        first = rd.read_response()
        assert first.status == 200
        assert first.header("Connection") is None
        sock.sendall(post_head("/again", "Content-Length: 3") + b"abc")
        second = rd.read_response()
        assert second.status == 200
    assert [u.body for u in seen] == [b"onetwo", b"abc"]


def test_ignored_small_chunked_body_is_drained(serve: ServerFactory) -> None:
    """RFC 9112 §6.3/§7.1: the chunked body ends at its last-chunk whether or not the app
    reads it; a server keeping the connection must consume it, never parse it as a
    request (the body here looks like one)."""
    app = Recorder()
    server = serve(app)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(
            post_head("/ignore", "Transfer-Encoding: chunked")
            + chunked(smuggled, smuggled * 10, trailer=b"X-T: 1\r\n")
            + AFTER
        )
        rd = ResponseReader(sock)
        first, second = rd.read_response(), rd.read_response()
    assert (first.status, first.body) == (200, b"ok:/ignore")
    assert (second.status, second.body) == (200, b"ok:/after")
    assert app.calls == ["/ignore", "/after"]


@pytest.mark.parametrize("size", [101, 600, 100_000])
def test_ignored_chunked_body_past_the_drain_cap_says_close(
    serve: ServerFactory, size: int
) -> None:
    """The drain cap holds exactly (no 64 KiB overshoot), and because the app has
    returned before the head goes out, the response itself says Connection: close
    (RFC 9112 §9.6) instead of closing a connection it announced as persistent."""
    app = Recorder()
    server = serve(app, max_drain_bytes=100)
    raw = post_head("/ignore", "Transfer-Encoding: chunked") + chunked(b"x" * size) + AFTER
    response = only_response(server, raw)
    assert (response.status, response.header("Connection")) == (200, "close")
    assert app.calls == ["/ignore"]


@pytest.mark.parametrize(
    "partial",
    [
        b"a\r\nhello",  # inside chunk data
        b"5\r\nhello",  # before the CRLF after chunk data
        b"5\r\nhello\r",  # half of that CRLF
        b"5\r\nhello\r\n",  # between chunks
        b"5\r\nhello\r\n1",  # inside a chunk-size line
        b"5\r\nhello\r\n0\r\nX-T",  # inside the trailer section
    ],
    ids=["in-data", "before-crlf", "half-crlf", "between-chunks", "in-size-line", "in-trailer"],
)
def test_client_disconnect_mid_chunked_body_raises_in_the_app(
    serve: ServerFactory, partial: bytes
) -> None:
    """RFC 9112 §8: "A message that uses a valid chunked transfer coding is incomplete if
    the zero-sized chunk that terminates the encoding has not been received"; the cut-off
    upload must never look complete: the app's read raises ClientDisconnected (the
    documented contract of ChunkedInput), and the server keeps serving."""
    kinds: list[type[BaseException]] = []
    done = threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except BaseException as exc:
            kinds.append(type(exc))
            raise
        finally:
            done.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"complete"]

    server = serve(app)
    with connect(server) as sock:
        sock.sendall(post_head("/cut", "Transfer-Encoding: chunked") + partial)
        sock.shutdown(socket.SHUT_WR)
        assert done.wait(TIMEOUT)
        assert b"complete" not in recv_all(sock)
    assert len(kinds) == 1
    assert issubclass(kinds[0], ClientDisconnected), kinds
    assert issubclass(kinds[0], ConnectionError)
    assert fresh_get(server).status == 200


# -- 5. lazy 100 Continue ----------------------------------------------------------------


FRAMINGS = {
    "content-length": ("Content-Length: 10", [b"hello", b"world"]),
    "chunked": ("Transfer-Encoding: chunked", [b"5\r\nhello\r\n", b"5\r\nworld\r\n0\r\n\r\n"]),
}


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_100_continue_is_lazy_and_sent_once(serve: ServerFactory, framing: str) -> None:
    """PEP 3333: the server "should send the 100 Continue response ... when the application
    first attempts to read from the input stream"; RFC 9110 §15.2.1: 100 means the request
    "has not yet been rejected".  Nothing before the first read, exactly one 100 however
    many reads follow, then the final response on a connection that stays usable."""
    entered, go = threading.Event(), threading.Event()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        if environ["PATH_INFO"] == "/up":
            entered.set()
            go.wait(TIMEOUT)
        inp = environ["wsgi.input"]
        parts = []
        while True:
            data = inp.read(2)
            if not data:
                break
            parts.append(data)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"got " + b"".join(parts)]

    field_line, body = FRAMINGS[framing]
    server = serve(app)
    try:
        with connect(server) as sock:
            sock.sendall(post_head("/up", "Expect: 100-continue", field_line))
            assert entered.wait(TIMEOUT)
            assert nothing_arrives(sock), "bytes were sent before the app read the body"
            go.set()
            rd = ResponseReader(sock)
            fill_until(rd, b"\r\n\r\n")
            assert rd.buffer == b"HTTP/1.1 100 Continue\r\n\r\n"
            rd.buffer = b""
            for part in body:
                sock.sendall(part)
            final = rd.read_response()
            assert (final.status, final.body) == (200, b"got helloworld")
            assert final.header("Connection") is None
            sock.sendall(AFTER)
            after = rd.read_response()
            assert (after.status, after.body) == (200, b"got ")
    finally:
        go.set()


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_final_answer_without_reading_sends_no_100_and_closes(
    serve: ServerFactory, framing: str
) -> None:
    """RFC 9110 §10.1.1: "A server that responds with a final status code before reading
    the entire request content SHOULD indicate whether it intends to close the connection";
    the client never sent the body, so the server closes (RFC 9112 §9.6) - and no 100."""
    app_calls: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        app_calls.append(environ["PATH_INFO"])
        start_response("401 Unauthorized", [("Content-Type", "text/plain")])
        return [b"who are you?"]

    field_line, _ = FRAMINGS[framing]
    server = serve(app)
    response = only_response(server, post_head("/up", "Expect: 100-continue", field_line))
    assert (response.status, response.body) == (401, b"who are you?")
    assert response.header("Connection") == "close"
    assert app_calls == ["/up"]


class GuardedHandler(WSGIRequestHandler):
    """Refuses ``Expect: 100-continue`` uploads to /private before the body is sent."""

    def check_continue(self, head: RequestHead) -> None:
        if head.target.startswith("/private"):
            raise HTTPError(
                "credentials required for /private",
                status=401,
                headers=[("WWW-Authenticate", 'Bearer realm="uploads"')],
            )


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_check_continue_hook_refuses_before_the_app(serve: ServerFactory, framing: str) -> None:
    """RFC 9110 §10.1.1: on "Expect: 100-continue" a server may "respond with a final
    status code" instead of 100 - the point of the expectation is to refuse before the
    content is sent.  The hook's HTTPError status is the answer, the app is not called, no
    100 is sent, the connection closes; a request the hook lets through gets its 100."""
    seen: list[Upload] = []
    server = serve(upload_app(seen), handler_class=GuardedHandler)
    field_line, body = FRAMINGS[framing]
    response = only_response(server, post_head("/private", "Expect: 100-continue", field_line))
    assert response.status == 401
    assert response.header("Connection") == "close"
    # RFC 9110 §15.5.2: a 401 "MUST send a WWW-Authenticate header field".
    assert response.header("WWW-Authenticate") == 'Bearer realm="uploads"'
    assert b"credentials required" in response.body
    assert seen == []
    with connect(server) as sock:
        sock.sendall(post_head("/public", "Expect: 100-continue", field_line))
        rd = ResponseReader(sock)
        interim = rd.read_response()
        assert (interim.status, interim.headers) == (100, [])
        for part in body:
            sock.sendall(part)
        response = rd.read_response()
        assert response.status == 200
    assert [u.body for u in seen] == [b"helloworld"]


def test_unknown_expectation_is_417_without_the_app(serve: ServerFactory) -> None:
    """RFC 9110 §10.1.1: "A server that receives an Expect field value containing a member
    other than 100-continue MAY respond with a 417 (Expectation Failed)"."""
    app = Recorder()
    server = serve(app)
    raw = post_head("/", "Expect: something-else", "Content-Length: 5") + b"hello" + AFTER
    response = only_response(server, raw)
    assert response.status == 417
    assert response.header("Connection") == "close"
    assert app.calls == []


def test_http10_expectation_is_ignored(serve: ServerFactory) -> None:
    """RFC 9110 §10.1.1: "A server that receives a 100-continue expectation in an HTTP/1.0
    request MUST ignore that expectation" - no 100, the app runs and reads the body."""
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    raw = (
        post_head("/h10", "Expect: 100-continue", "Content-Length: 5", version="HTTP/1.0")
        + b"hello"
    )
    with connect(server) as sock:
        sock.sendall(raw)
        received = recv_all(sock)
    assert received.startswith(b"HTTP/1.1 200 "), received
    assert b" 100 " not in received.split(b"\r\n", 1)[0]
    assert b"100 Continue" not in received
    assert received.endswith(hashlib.sha256(b"hello").hexdigest().encode())
    assert [u.body for u in seen] == [b"hello"]


def test_oversized_content_length_with_expect_is_413_without_100(serve: ServerFactory) -> None:
    """RFC 9110 §15.5.14: 413 when "the request content is larger than the server is
    willing ... to process"; with "Expect: 100-continue" the refusal comes instead of the
    100 (§10.1.1), before any byte of the body and before the app."""
    app = Recorder()
    server = serve(app, max_body_size=10)
    response = only_response(server, post_head("/", "Expect: 100-continue", "Content-Length: 100"))
    assert response.status == 413
    assert response.header("Connection") == "close"
    assert app.calls == []


def test_curl_large_upload_waits_for_100_continue(serve: ServerFactory, tmp_path: Path) -> None:
    """RFC 9110 §10.1.1: curl sends "Expect: 100-continue" for a large upload and waits
    for the 100; the server sends it when the app reads, and the body arrives intact."""
    exe = curl_exe()
    seen: list[Upload] = []
    server = serve(upload_app(seen))
    data = payload(2 * MiB, seed=5)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    done = subprocess.run(
        [
            exe,
            "-sS",
            "-v",
            "--noproxy",
            "*",
            "--max-time",
            "10",
            "--expect100-timeout",
            "10",
            "--data-binary",
            f"@{path}",
            server.url + "up",
        ],
        capture_output=True,
        timeout=15,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == hashlib.sha256(data).hexdigest().encode()
    assert b"< HTTP/1.1 100 Continue" in done.stderr
    assert len(seen) == 1
    assert seen[0].expect == "100-continue"
    assert seen[0].content_length == str(len(data))
    assert seen[0].body == data


# -- 6. limits from the configuration ------------------------------------------------------


def _line(length: int) -> bytes:
    """A request line of exactly ``length`` bytes, CRLF included."""
    return b"GET /" + b"x" * (length - 16) + b" HTTP/1.1\r\n"


def _fields(count: int) -> bytes:
    """``count`` header fields, Host first."""
    return b"Host: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))


def _section(size: int) -> bytes:
    """A header section (Host, one padding field, the empty line) of exactly ``size`` bytes."""
    fixed = len(b"Host: x\r\nX-Pad: \r\n\r\n")
    return b"Host: x\r\nX-Pad: " + b"p" * (size - fixed) + b"\r\n\r\n"


LIMITS: list[tuple[str, dict[str, Any], bytes, int]] = [
    ("request-line-1024", {"max_request_line": 1024}, _line(1024) + b"Host: x\r\n\r\n", 200),
    ("request-line-1025", {"max_request_line": 1024}, _line(1025) + b"Host: x\r\n\r\n", 414),
    ("request-line-1100", {"max_request_line": 1024}, _line(1100) + b"Host: x\r\n\r\n", 414),
    ("5-headers", {"max_header_count": 5}, b"GET / HTTP/1.1\r\n" + _fields(5) + b"\r\n", 200),
    ("6-headers", {"max_header_count": 5}, b"GET / HTTP/1.1\r\n" + _fields(6) + b"\r\n", 431),
    ("section-2048", {"max_header_bytes": 2048}, b"GET / HTTP/1.1\r\n" + _section(2048), 200),
    ("section-2049", {"max_header_bytes": 2048}, b"GET / HTTP/1.1\r\n" + _section(2049), 431),
    ("section-5000", {"max_header_bytes": 2048}, b"GET / HTTP/1.1\r\n" + _section(5000), 431),
    (
        "body-1000",
        {"max_body_size": 1000},
        post_head("/", "Content-Length: 1000") + b"b" * 1000,
        200,
    ),
    (
        "body-1001",
        {"max_body_size": 1000},
        post_head("/", "Content-Length: 1001") + b"b" * 1001,
        413,
    ),
]


@pytest.mark.parametrize(
    ("config", "raw", "status"),
    [(config, raw, status) for _, config, raw, status in LIMITS],
    ids=[name for name, _, _, _ in LIMITS],
)
def test_configured_limits(
    serve: ServerFactory, config: dict[str, Any], raw: bytes, status: int
) -> None:
    """RFC 9110 §15.5.15 (414), RFC 6585 §5 (431), RFC 9110 §15.5.14 (413, known before
    the body is read): each configured limit is accepted at its bound and refused one past
    it, with "Connection: close" and without calling the app (RFC 9112 §9.6)."""
    app = Recorder()
    server = serve(app, **config)
    with connect(server) as sock:
        sock.sendall(raw + AFTER)
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.status == status, response
        if status == 200:
            assert response.header("Connection") is None
            assert rd.read_response().body == b"ok:/after"
            assert app.calls[1:] == ["/after"]
            assert len(app.calls) == 2
        else:
            assert response.header("Connection") == "close"
            expect_eof(rd)
            assert app.calls == []


@pytest.mark.parametrize(("size", "status"), [(1000, 200), (1001, 413)])
def test_chunked_body_over_max_body_size_is_413_mid_stream(
    serve: ServerFactory, size: int, status: int
) -> None:
    """RFC 9110 §15.5.14: a chunked body's size is only known as it arrives, so the limit
    is enforced mid-stream: the app is called, its read raises PayloadTooLarge, the answer
    is 413 with "Connection: close" (the rest of the body is never parsed as requests)."""
    reads: list[bytes] = []
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        try:
            reads.append(environ["wsgi.input"].read())
        except BaseException as exc:
            raised.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read %d" % len(reads[-1])]

    server = serve(app, max_body_size=1000)
    body = chunked(b"a" * 600, b"b" * (size - 600))
    with connect(server) as sock:
        sock.sendall(post_head("/", "Transfer-Encoding: chunked") + body + AFTER)
        rd = ResponseReader(sock)
        response = rd.read_response()
        assert response.status == status, response
        if status == 200:
            assert response.body == b"read 1000"
            assert rd.read_response().body == b"read 0"
        else:
            assert response.header("Connection") == "close"
            expect_eof(rd)
            assert reads == []
            assert len(raised) == 1
            assert isinstance(raised[0], PayloadTooLarge)


def test_allow_bare_lf_accepts_bare_lf_heads_live(serve: ServerFactory) -> None:
    """RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line terminator" -
    refused by default (see CASES), accepted with ``allow_bare_lf=True``."""
    app = Recorder()
    server = serve(app, allow_bare_lf=True)
    with connect(server) as sock:
        sock.sendall(b"GET /lf HTTP/1.1\nHost: x\nConnection: close\n\n")
        rd = ResponseReader(sock)
        assert rd.read_response().body == b"ok:/lf"
        expect_eof(rd)
    assert app.calls == ["/lf"]


def test_cli_exposes_the_limits() -> None:
    """The limits are configuration (RFC 9112 §5: the server decides what it "wishes to
    process"); every one has a CLI option generated from Config."""
    args = build_parser().parse_args(
        [
            "--max-body-size",
            "1000",
            "--max-header-count",
            "5",
            "--max-header-bytes",
            "2048",
            "--max-request-line",
            "1024",
            "--allow-bare-lf",
            "mod:app",
        ]
    )
    config = config_from_args(args)
    assert (
        config.max_body_size,
        config.max_header_count,
        config.max_header_bytes,
        config.max_request_line,
        config.allow_bare_lf,
    ) == (1000, 5, 2048, 1024, True)
    assert config.limits == Limits(
        max_request_line=1024, max_header_count=5, max_header_bytes=2048, allow_bare_lf=True
    )
    defaults = config_from_args(build_parser().parse_args(["--no-allow-bare-lf", "mod:app"]))
    assert defaults.limits == Limits()
    assert defaults.max_body_size == 0


# -- 7. rejections under load ---------------------------------------------------------


def test_rejections_are_final_under_load(serve: ServerFactory) -> None:
    """RFC 9112 §9.6: after a "close" response the server "MUST NOT process any further
    requests received on that connection" - with 50 clients at once, each malformed request
    gets exactly its one error response, none of the pipelined requests reach the app, and
    the server still answers afterwards."""
    app = Recorder()
    server = serve(app)
    rng = random.Random(9112)
    picks = [rng.choice(CASES) for _ in range(50)]

    def one(case: Case) -> tuple[str, int, str | None]:
        with connect(server) as sock:
            sock.sendall(case.raw + AFTER)
            rd = ResponseReader(sock)
            response = rd.read_response()
            expect_eof(rd)
            return case.id, response.status, response.header("Connection")

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(one, case) for case in picks]
        results = [future.result(timeout=4 * TIMEOUT) for future in futures]
    assert results == [(case.id, case.status, "close") for case in picks]
    assert app.calls == []
    assert fresh_get(server).body == b"ok:/fresh"
    assert app.calls == ["/fresh"]


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_client_gone_before_100_continue_is_a_disconnect_not_an_app_error(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture, framing: str
) -> None:
    """RFC 9110 §10.1.1: a client that sent "Expect: 100-continue" may give up instead of
    sending the content.  The app's first read (which sends the 100) then raises
    ClientDisconnected - the documented signal for a body that never arrives - and the
    server logs no "application raised an exception" error and tries no 500."""
    caplog.set_level(logging.INFO, logger="wsgibridge.error")
    entered, go, done = threading.Event(), threading.Event(), threading.Event()
    kinds: list[type[BaseException]] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        entered.set()
        go.wait(TIMEOUT)
        try:
            environ["wsgi.input"].read()
        except BaseException as exc:
            kinds.append(type(exc))
            raise
        finally:
            done.set()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"complete"]

    class Observed(WSGIRequestHandler):
        def log_access(self) -> None:
            super().log_access()  # runs after the response, error logging included
            if self.path == "/up":
                handled.set()

    handled = threading.Event()
    field_line, _ = FRAMINGS[framing]
    server = serve(app, handler_class=Observed)
    try:
        sock = connect(server)
        with sock:
            sock.sendall(post_head("/up", "Expect: 100-continue", field_line))
            assert entered.wait(TIMEOUT)
            # Abort: SO_LINGER 0 makes close() send RST, as a client killed mid-upload does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        go.set()
    assert done.wait(TIMEOUT)
    # Wait for the server to finish the request (and its logging) before judging it.
    assert handled.wait(TIMEOUT)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(kinds) == 1
    assert issubclass(kinds[0], ClientDisconnected), (kinds, errors)
    assert fresh_get(server).status == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_handler_state_is_fresh_for_a_refused_request(serve: ServerFactory) -> None:
    """Handler subclasses keep working on refusals: ``self.headers`` is empty (never the
    previous request's fields, never an AttributeError), ``raw_requestline`` is the line as
    received, and a refused HEAD gets no body (RFC 9110 §9.3.2)."""
    seen: list[tuple[str, dict[str, str], bytes]] = []

    class Inspecting(WSGIRequestHandler):
        def send_error(self, code: int, *args: Any, **kwargs: Any) -> None:
            seen.append((self.command, dict(self.headers.items()), self.raw_requestline))
            super().send_error(code, *args, **kwargs)

    server = serve(Recorder(), handler_class=Inspecting)
    with connect(server) as sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-Secret: s1\r\n\r\n"
            b"HEAD /b HTTP/1.1\r\nHost: y\r\nContent-Length: x\r\n\r\n"
        )
        reader = ResponseReader(sock)
        assert reader.read_response().status == 200
        refused = reader.read_response("HEAD")
        assert refused.status == 400
        assert reader.at_eof()  # no body followed the refused HEAD's head
    assert seen == [("HEAD", {}, b"HEAD /b HTTP/1.1\r\n")]
    response = only_response(server, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n")
    assert response.status == 400
    assert seen[-1] == ("GET", {}, b"GET / HTTP/1.1\r\n")


def test_absolute_form_target_sets_http_host(serve: ServerFactory) -> None:
    """RFC 9112 §3.2.2: the origin server "MUST ignore the received Host header field ...
    and instead use the host information of the request-target"."""
    hosts: list[tuple[str, str]] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        hosts.append((environ["HTTP_HOST"], environ["PATH_INFO"]))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    server = serve(app)
    raw = b"GET http://other.example:81/p?q HTTP/1.1\r\nHost: evil\r\nConnection: close\r\n\r\n"
    assert only_response(server, raw).status == 200
    assert hosts == [("other.example:81", "/p")]


# -- 8. the grammar ---------------------------------------------------------------------

LATIN_1 = [chr(code) for code in range(256)]
PACKAGE = Path(__file__).resolve().parents[2] / "wsgibridge"


def test_tchar_set_token_patterns_are_one_rule() -> None:
    """RFC 9110 §5.6.2: token = 1*tchar, the set and both patterns from one class."""
    assert frozenset("!#$%&'*+-.^_`|~" + string.digits + string.ascii_letters) == grammar.TCHARS
    for char in LATIN_1:
        tchar = char in grammar.TCHARS
        assert (grammar.TOKEN_STR.fullmatch(char) is not None) is tchar, repr(char)
        assert (grammar.TOKEN.fullmatch(char.encode("latin-1")) is not None) is tchar, repr(char)


def test_ows_is_sp_and_htab() -> None:
    """RFC 9110 §5.6.3: OWS = *( SP / HTAB ), as str and bytes."""
    assert sorted(grammar.OWS_STR) == ["\t", " "]
    assert grammar.OWS_STR.encode("ascii") == grammar.OWS


def test_field_value_and_reason_phrase_allow_htab_sp_vchar_obs_text_only() -> None:
    """RFC 9110 §5.5 field-vchar = VCHAR / obs-text, with SP and HTAB; no CR, LF, NUL, DEL."""
    allowed = (
        {"\t", " "} | {chr(c) for c in range(0x21, 0x7F)} | {chr(c) for c in range(0x80, 0x100)}
    )
    for char in LATIN_1:
        ok = char in allowed
        value = f"a{char}b"
        assert (grammar.FIELD_VALUE_STR.fullmatch(value) is not None) is ok, repr(char)
        assert (grammar.FIELD_VALUE.fullmatch(value.encode("latin-1")) is not None) is ok
        assert (grammar.REASON_PHRASE_STR.fullmatch(value) is not None) is ok
    assert grammar.FIELD_VALUE.fullmatch(b"") is not None


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ('""', True),
        ('"plain text"', True),
        ('"tab\there"', True),
        ('"\\"quoted\\" and \\\\"', True),
        ('"obs-text \xe9\xff"', True),
        ('"\\\x80"', True),  # quoted-pair of obs-text
        ('"', False),
        ('"unterminated', False),
        ('"a"b"', False),  # a bare DQUOTE inside
        ('"ends in a backslash\\"', False),
        ('"nul \x00"', False),
        ('"del \x7f"', False),
        ('"escaped nul \\\x00"', False),
        ('"lf\n"', False),
        ("unquoted", False),
    ],
)
def test_quoted_string_in_bytes_and_str(text: str, valid: bool) -> None:
    """RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE."""
    assert (grammar.QUOTED_STRING_STR.fullmatch(text) is not None) is valid
    assert (grammar.QUOTED_STRING.fullmatch(text.encode("latin-1")) is not None) is valid


def test_quoted_pair_unescapes_to_the_octet_after_the_backslash() -> None:
    """RFC 9110 §5.6.4: "handle a quoted-pair as if it were replaced by the octet following"."""
    inside = '\\"a\\\\b\\\tc\\d'  # \"a\\b\<TAB>c\d
    assert grammar.QUOTED_PAIR_STR.sub(r"\1", inside) == '"a\\b\tcd'


@pytest.mark.parametrize(
    ("ext", "valid"),
    [
        (b"", True),
        (b";name", True),
        (b";name=value", True),
        (b' ; name = "quoted \\" value" ;other', True),
        (b';a;b=c;d=""', True),
        (b";", False),  # no name
        (b";=v", False),
        (b";name=", False),
        (b";na me=v", False),
        (b";name=a b", False),
        (b';name="open', False),
        (b"name", False),  # no ";"
        (b";name\r", False),
    ],
)
def test_chunk_ext_grammar(ext: bytes, valid: bool) -> None:
    """RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS chunk-ext-val ] )."""
    assert (grammar.CHUNK_EXT.fullmatch(ext) is not None) is valid


# Distinctive pieces of each rule's spelling: a module that contains one spells
# the rule itself instead of importing it from grammar.py.
SPELLINGS = {
    "tchar": ["`|~", "|~0-9"],
    "obs-text": ["\\x80-\\xff", "\\x80-\\xFF"],
    "qdtext": ["\\x23-\\x5b", "\\x5d-\\x7e"],
    "field-value / VCHAR": ["\\x20-\\x7e", "\\x21-\\x7e"],
    "OWS": ['" \\t"', '"\\t "', "[ \\t]"],
}


@pytest.mark.parametrize("rule", sorted(SPELLINGS))
def test_no_http_module_spells_a_grammar_rule_again(rule: str) -> None:
    """Every rule is spelled once, in ``http/grammar.py``; the others import it."""
    paths = [*sorted((PACKAGE / "http").glob("*.py")), PACKAGE / "accesslog.py"]
    for path in paths:
        if path.name == "grammar.py":
            continue
        text = path.read_text(encoding="utf-8")
        for spelling in SPELLINGS[rule]:
            assert spelling not in text, f"{path.name} spells {rule} again: {spelling!r}"
