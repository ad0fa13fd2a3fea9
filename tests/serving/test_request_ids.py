"""``--request-id-header`` over real sockets: kept from trusted peers, new otherwise, the same
id in the environ, the response and the access line; refusals and the server's own answers
carry one too.

Every request goes to a live server on 127.0.0.1 (a trusted peer by default,
``--forwarded-allow-ips 127.0.0.1,::1``); raw bytes where a client library would refuse
to send them, ``http.client`` for the 10,000 requests.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request

from wsgibridge import WSGIRequestHandler
from wsgibridge._types import Environ, StartResponse
from wsgibridge.serving.accesssink import open_sink

from ..conftest import ResponseReader, ServerFactory, connect, exchange

NEW = re.compile(r"[0-9a-f]{32}")
TIMEOUT = 5.0


def ids_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """Answers the id it was given and the header's value in the environ: ``id|header``."""
    body = f"{environ.get('wsgibridge.request_id')}|{environ.get('HTTP_X_REQUEST_ID')}"
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode("latin-1")]


def get(path: str = "/", *extra: bytes) -> bytes:
    return b"GET " + path.encode("ascii") + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(extra) + b"\r\n"


def one(server: Any, raw: bytes) -> tuple[int, str | None, bytes]:
    """(status, the X-Request-ID header, body) of the one response to ``raw``."""
    with connect(server, TIMEOUT) as sock:
        sock.sendall(raw)
        response = ResponseReader(sock).read_response()
    return response.status, response.header("X-Request-ID"), response.body


@pytest.fixture
def access_lines(tmp_path: Path, access_logger: logging.Logger) -> Iterator[Path]:
    """The access log's file (as --access-log-file writes it); read it after the stop."""
    path = tmp_path / "access.log"
    access_logger.handlers[:] = [open_sink(str(path))]
    yield path


def logged(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]


def test_ten_thousand_new_ids_are_unique_and_the_same_everywhere(
    serve: ServerFactory, access_lines: Path
) -> None:
    """No id sent: each request gets a new one, in the environ (both keys), the response
    and its access line; 10,000 of them over one keep-alive connection never repeat."""
    server = serve(ids_app, request_id_header="X-Request-ID", access_log_format="json")
    answered = []
    client = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        for _ in range(10_000):
            client.request("GET", "/")
            response = client.getresponse()
            in_environ, in_header = response.read().decode("latin-1").split("|")
            assert response.getheader("X-Request-ID") == in_environ == in_header
            answered.append(in_environ)
    finally:
        client.close()
    server.server_close()  # every line written
    assert len(set(answered)) == 10_000
    assert all(NEW.fullmatch(request_id) for request_id in answered)
    assert [line["request_id"] for line in logged(access_lines)] == answered


def test_a_trusted_peers_id_is_kept(serve: ServerFactory, access_lines: Path) -> None:
    server = serve(ids_app, request_id_header="X-Request-ID", access_log_format="json")
    sent = 'abc-123/"quoted"\\'
    status, echoed, body = one(server, get("/", f"X-Request-ID: {sent}\r\n".encode()))
    assert (status, echoed, body) == (200, sent, f"{sent}|{sent}".encode())
    server.server_close()
    assert [line["request_id"] for line in logged(access_lines)] == [sent]


@pytest.mark.parametrize("trusted", ["", "10.0.0.0/8", "::1"])
def test_an_untrusted_peers_id_is_replaced(serve: ServerFactory, trusted: str) -> None:
    """The peer 127.0.0.1 is not in --forwarded-allow-ips: its id is a new one, and the
    app sees that one under HTTP_X_REQUEST_ID too, never the one sent."""
    server = serve(ids_app, request_id_header="X-Request-ID", forwarded_allow_ips=trusted)
    status, echoed, body = one(server, get("/", b"X-Request-ID: abc-123\r\n"))
    assert status == 200 and echoed is not None and NEW.fullmatch(echoed)
    assert body == f"{echoed}|{echoed}".encode()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"x" * 201,
        b"a b",
        b"a\tb",
        b"caf\xc3\xa9",
        b"\xc3\x28",
    ],
    ids=["empty", "201-chars", "space", "tab", "utf-8", "invalid-utf-8"],
)
def test_a_malformed_id_is_replaced(serve: ServerFactory, value: bytes) -> None:
    server = serve(ids_app, request_id_header="X-Request-ID")
    status, echoed, body = one(server, get("/", b"X-Request-ID: " + value + b"\r\n"))
    assert status == 200 and echoed is not None and NEW.fullmatch(echoed)
    assert body == f"{echoed}|{echoed}".encode()


def test_an_id_sent_twice_is_replaced(serve: ServerFactory) -> None:
    server = serve(ids_app, request_id_header="X-Request-ID")
    twice = get("/", b"X-Request-ID: one\r\n", b"x-request-id: two\r\n")
    status, echoed, body = one(server, twice)
    assert status == 200 and echoed is not None and NEW.fullmatch(echoed)
    assert body == f"{echoed}|{echoed}".encode()


def test_a_control_byte_is_refused_and_the_refusal_gets_a_new_id(
    serve: ServerFactory, access_lines: Path
) -> None:
    """A control character in a field value is a 400 before any id is chosen (RFC 9110
    §5.5); the refusal still answers with an id, new, and logs it."""
    server = serve(ids_app, request_id_header="X-Request-ID", access_log_format="json")
    status, echoed, _ = one(server, get("/", b"X-Request-ID: a\x01b\r\n"))
    assert status == 400 and echoed is not None and NEW.fullmatch(echoed)
    assert one(server, get("/next"))[0] == 200  # and the server answers the next client
    server.server_close()
    # Two connections: the lines may come in either order.
    lines = {line["status"]: line for line in logged(access_lines)}
    assert sorted(lines) == [200, 400]
    assert lines[400]["request_id"] == echoed
    assert NEW.fullmatch(lines[200]["request_id"])


def test_a_refusal_after_the_head_keeps_a_trusted_id(serve: ServerFactory) -> None:
    """413 for a Content-Length over the limit: the head was read, so the id it carried is
    the refusal's; a request line that cannot be parsed gets a new one."""
    server = serve(ids_app, request_id_header="X-Request-ID", max_body_size=10)
    big = get("/", b"X-Request-ID: upload-7\r\n", b"Content-Length: 11\r\n")
    assert one(server, big)[:2] == (413, "upload-7")
    response = exchange(server, b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 400 ")
    (echoed,) = re.findall(rb"\r\nX-Request-ID: ([^\r]*)\r\n", response)
    assert NEW.fullmatch(echoed.decode())


def test_the_apps_own_header_wins(serve: ServerFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("x-request-id", "the app's")])
        return [environ["wsgibridge.request_id"].encode()]

    server = serve(app, request_id_header="X-Request-ID")
    with connect(server, TIMEOUT) as sock:
        sock.sendall(get("/", b"X-Request-ID: sent\r\n"))
        response = ResponseReader(sock).read_response()
    assert [value for name, value in response.headers if name.lower() == "x-request-id"] == [
        "the app's"
    ]
    assert response.body == b"sent"


def test_an_app_that_raises_answers_500_with_the_id(serve: ServerFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise RuntimeError("boom")

    server = serve(app, request_id_header="X-Request-ID")
    assert one(server, get("/", b"X-Request-ID: r-500\r\n"))[:2] == (500, "r-500")


def test_the_health_path_answers_with_an_id(serve: ServerFactory) -> None:
    server = serve(ids_app, request_id_header="X-Request-ID", health_path="/healthz")
    assert one(server, get("/healthz", b"X-Request-ID: probe-1\r\n"))[:2] == (200, "probe-1")


def test_a_framework_reads_the_id_that_is_logged(serve: ServerFactory) -> None:
    """Flask's request.headers is built from the HTTP_ keys: it sees the id the server
    chose, not the one the untrusted client sent."""
    flask_app = Flask(__name__)

    @flask_app.get("/")
    def index() -> str:
        return f"{request.headers['X-Request-ID']}|{request.environ['wsgibridge.request_id']}"

    server = serve(flask_app, request_id_header="X-Request-ID", forwarded_allow_ips="")
    status, echoed, body = one(server, get("/", b"X-Request-ID: forged\r\n"))
    assert status == 200 and echoed is not None and NEW.fullmatch(echoed)
    assert body == f"{echoed}|{echoed}".encode()


def test_behind_a_proxy_protocol_line_the_named_client_decides(serve: ServerFactory) -> None:
    """As for X-Forwarded-*, trust is the client's the PROXY line names (203.0.113.7, not
    trusted), not the proxy connection's: an id it passes through is replaced."""
    server = serve(ids_app, request_id_header="X-Request-ID", proxy_protocol=True)
    line = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\n"
    status, echoed, _ = one(server, line + get("/", b"X-Request-ID: from-the-client\r\n"))
    assert status == 200 and echoed is not None and NEW.fullmatch(echoed)
    trusted = serve(
        ids_app,
        request_id_header="X-Request-ID",
        proxy_protocol=True,
        forwarded_allow_ips="127.0.0.1,203.0.113.0/24",
    )
    assert one(trusted, line + get("/", b"X-Request-ID: kept\r\n"))[:2] == (200, "kept")


def test_off_by_default(serve: ServerFactory, access_lines: Path) -> None:
    server = serve(ids_app, access_log_format="json")
    status, echoed, body = one(server, get("/", b"X-Request-ID: sent\r\n"))
    assert (status, echoed, body) == (200, None, b"None|sent")
    server.server_close()
    assert [line["request_id"] for line in logged(access_lines)] == [None]


def test_another_header_name(serve: ServerFactory) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        return [environ["HTTP_X_CORRELATION_ID"].encode()]

    server = serve(app, request_id_header="X-Correlation-ID")
    with connect(server, TIMEOUT) as sock:
        sock.sendall(get("/", b"x-correlation-id: c-1\r\n"))
        response = ResponseReader(sock).read_response()
    assert (response.header("X-Correlation-ID"), response.body) == ("c-1", b"c-1")
    assert response.header("X-Request-ID") is None


class Numbered(WSGIRequestHandler):
    """Ids of its own, through the hook."""

    issued = 0

    def assign_request_id(self, headers: Sequence[tuple[str, str]]) -> str:
        Numbered.issued += 1
        return f"req-{Numbered.issued}"


def test_a_handler_subclass_chooses_the_ids(serve: ServerFactory) -> None:
    server = serve(ids_app, request_id_header="X-Request-ID", handler_class=Numbered)
    assert one(server, get("/"))[1:] == ("req-1", b"req-1|req-1")
    assert one(server, b"GET /a b HTTP/1.1\r\nHost: t\r\n\r\n")[:2] == (400, "req-2")
