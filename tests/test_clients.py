"""The server driven by real HTTP clients and real frameworks, all on 127.0.0.1.

Clients: ``requests``, ``httpx``, ``http.client`` and the ``curl`` binary.
Frameworks: Werkzeug's ``Request``/``Response`` and Flask.  Every client call
has a timeout; proxies from the environment are ignored so traffic stays local.
"""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import flask
import httpx
import pytest
import requests
from werkzeug.wrappers import Request, Response

from wsgibridge import WSGIServer
from wsgibridge._types import Environ, StartResponse

from .conftest import ServerFactory

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group

TIMEOUT = 5.0


def echo_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """/port: the client's port; /echo: the request body, streamed back; /stream: chunks."""
    path = environ["PATH_INFO"]
    if path == "/port":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["REMOTE_PORT"].encode()]
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return iter([b"echo:", body])  # no length: chunked on HTTP/1.1
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"part%d;" % i for i in range(5))
    if path == "/env":
        start_response("200 OK", [("Content-Type", "application/json")])
        keys = ("SERVER_PROTOCOL", "REQUEST_METHOD", "CONTENT_LENGTH", "QUERY_STRING")
        return [json.dumps({k: environ.get(k) for k in keys}).encode()]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


STREAMED = b"part0;part1;part2;part3;part4;"


def session() -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # no proxy from the environment: talk to 127.0.0.1 directly
    return s


# -- requests ------------------------------------------------------------------------------


def test_requests_session_reuses_the_connection(serve: ServerFactory) -> None:
    """RFC 9112 §9.3: an HTTP/1.1 connection persists; a Session's pool reuses it, so the
    same client port reaches the app twice."""
    server = serve(echo_app)
    with session() as s:
        first = s.get(server.url + "port", timeout=TIMEOUT)
        second = s.get(server.url + "port", timeout=TIMEOUT)
        posted = s.post(server.url + "echo", data=b"payload", timeout=TIMEOUT)
        third = s.get(server.url + "port", timeout=TIMEOUT)
    assert first.status_code == second.status_code == 200
    assert first.text == second.text == third.text
    assert posted.content == b"echo:payload"
    assert "close" not in first.headers.get("Connection", "")


def test_requests_streamed_and_not_found(serve: ServerFactory) -> None:
    """RFC 9112 §7.1: a chunked response is reassembled by the client; statuses pass through."""
    server = serve(echo_app)
    with session() as s:
        streamed = s.get(server.url + "stream", timeout=TIMEOUT)
        missing = s.get(server.url + "nope", timeout=TIMEOUT)
    assert streamed.headers["Transfer-Encoding"] == "chunked"
    assert streamed.content == STREAMED
    assert (missing.status_code, missing.text) == (404, "not found")


# -- httpx ---------------------------------------------------------------------------------


def test_httpx_streaming_response(serve: ServerFactory) -> None:
    """PEP 3333: yielded bytestrings are sent "in an unbuffered fashion"; httpx reads the
    chunked stream incrementally with iter_bytes()."""
    server = serve(echo_app)
    with httpx.Client(trust_env=False, timeout=TIMEOUT) as client:
        with client.stream("GET", server.url + "stream") as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            received = b"".join(response.iter_bytes())
        env = client.get(server.url + "env", params={"q": "a b"}).json()
        posted = client.post(server.url + "echo", content=b"x" * 100_000)
    assert received == STREAMED
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["QUERY_STRING"] == "q=a+b"
    assert posted.content == b"echo:" + b"x" * 100_000


# -- http.client ---------------------------------------------------------------------------


def test_http_client_post_with_chunked_response(serve: ServerFactory) -> None:
    """RFC 9112 §6.3: the client finds the end of a chunked body and the connection stays
    usable (``will_close`` is False), so a second request goes over the same socket."""
    server = serve(echo_app)
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/echo", body=b"hello body", headers={"Content-Type": "text/plain"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read() == b"echo:hello body"
        assert response.will_close is False
        sock = conn.sock
        conn.request("GET", "/port")
        second = conn.getresponse()
        assert second.read() == str(sock.getsockname()[1]).encode()
        assert conn.sock is sock
    finally:
        conn.close()


# -- curl ------------------------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    exe = shutil.which("curl")
    if exe is None:
        pytest.skip("curl is not installed")
    return subprocess.run(
        [exe, "-sS", "--max-time", "5", "--noproxy", "*", *args],
        capture_output=True,
        timeout=15,
        check=False,
    )


def test_curl_get_and_post(serve: ServerFactory) -> None:
    """Interoperability with curl over HTTP/1.1: status, chunked body and a POST body."""
    server = serve(echo_app)
    got = curl("-i", server.url + "stream")
    assert got.returncode == 0, got.stderr
    head, _, body = got.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"Transfer-Encoding: chunked" in head
    assert body == STREAMED
    posted = curl("--data-binary", "curl body", server.url + "echo")
    assert posted.returncode == 0, posted.stderr
    assert posted.stdout == b"echo:curl body"


def test_curl_http10(serve: ServerFactory) -> None:
    """RFC 9112 §6.3 and §9.3: an HTTP/1.0 client gets no chunked coding; a streamed body
    ends when the server closes the connection."""
    server = serve(echo_app)
    streamed = curl("--http1.0", "-i", server.url + "stream")
    assert streamed.returncode == 0, streamed.stderr
    head, _, body = streamed.stdout.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert body == STREAMED
    env = curl("--http1.0", server.url + "env")
    assert env.returncode == 0, env.stderr
    assert json.loads(env.stdout)["SERVER_PROTOCOL"] == "HTTP/1.0"


# -- Werkzeug ------------------------------------------------------------------------------


@Request.application
def werkzeug_app(request: Request) -> Response:
    if request.path == "/form":
        return Response(f"{request.form['name']}|{request.form['city']}", mimetype="text/plain")
    if request.path == "/json":
        data = request.get_json()
        return Response(json.dumps({"sum": sum(data["numbers"])}), mimetype="application/json")
    if request.path == "/upload":
        upload = request.files["file"]
        return Response(f"{upload.filename}:{len(upload.read())}", mimetype="text/plain")
    return Response("not found", status=404)


def test_werkzeug_request_reads_form_and_json(serve: ServerFactory) -> None:
    """PEP 3333 wsgi.input and CONTENT_TYPE/CONTENT_LENGTH are enough for Werkzeug to parse
    urlencoded, JSON and multipart bodies."""
    server = serve(werkzeug_app)
    with session() as s:
        form = s.post(server.url + "form", data={"name": "Zoë", "city": "Köln"}, timeout=TIMEOUT)
        data = s.post(server.url + "json", json={"numbers": [1, 2, 39]}, timeout=TIMEOUT)
        upload = s.post(
            server.url + "upload", files={"file": ("a.bin", b"\x00" * 70_000)}, timeout=TIMEOUT
        )
        missing = s.get(server.url + "nope", timeout=TIMEOUT)
    assert (form.status_code, form.text) == (200, "Zoë|Köln")
    assert data.json() == {"sum": 42}
    assert upload.text == "a.bin:70000"
    assert missing.status_code == 404


# -- Flask -------------------------------------------------------------------------------------


def make_flask_app(torn_down: threading.Event) -> flask.Flask:
    app = flask.Flask("wire_test_app")

    @app.get("/api/<int:item>")
    def item(item: int) -> Any:
        return flask.jsonify(item=item, q=flask.request.args.get("q"))

    @app.post("/api")
    def create() -> Any:
        payload = flask.request.get_json()
        return flask.jsonify(created=payload), 201

    @app.get("/old")
    def old() -> Any:
        return flask.redirect(flask.url_for("item", item=7))

    @app.get("/stream")
    def stream() -> Any:
        def generate() -> Iterator[str]:
            for i in range(3):
                yield f"line {i}\n"

        return flask.Response(generate(), mimetype="text/plain")

    @app.get("/ctx")
    def ctx() -> Any:
        def generate() -> Iterator[str]:
            yield "hello "
            yield flask.request.args["name"]  # needs the request context while streaming
            yield "!"

        return flask.Response(flask.stream_with_context(generate()), mimetype="text/plain")

    @app.get("/secret")
    def secret() -> Any:
        flask.abort(403)

    @app.teardown_request
    def teardown(exc: BaseException | None) -> None:
        if flask.request.path == "/ctx":
            torn_down.set()

    return app


@pytest.fixture
def flask_server(serve: ServerFactory) -> tuple[WSGIServer, threading.Event]:
    torn_down = threading.Event()
    return serve(make_flask_app(torn_down)), torn_down


def test_flask_json_routes(flask_server: tuple[WSGIServer, threading.Event]) -> None:
    """A Flask app behind the server: routing on PATH_INFO, QUERY_STRING, JSON both ways."""
    server, _ = flask_server
    with session() as s:
        got = s.get(server.url + "api/5", params={"q": "x y"}, timeout=TIMEOUT)
        made = s.post(server.url + "api", json={"name": "thing"}, timeout=TIMEOUT)
    assert got.status_code == 200
    assert got.json() == {"item": 5, "q": "x y"}
    assert made.status_code == 201
    assert made.json() == {"created": {"name": "thing"}}


def test_flask_redirect_and_abort(flask_server: tuple[WSGIServer, threading.Event]) -> None:
    """RFC 9110 §15.4.3: a 302 carries Location and the client follows it; §15.5.4: 403."""
    server, _ = flask_server
    with session() as s:
        moved = s.get(server.url + "old", timeout=TIMEOUT)
        denied = s.get(server.url + "secret", timeout=TIMEOUT)
    assert [r.status_code for r in moved.history] == [302]
    assert moved.history[0].headers["Location"].endswith("/api/7")
    assert moved.url == server.url + "api/7"
    assert moved.json() == {"item": 7, "q": None}
    assert denied.status_code == 403


def test_flask_streaming_response(flask_server: tuple[WSGIServer, threading.Event]) -> None:
    """A Flask ``Response(generator)``: streamed as chunks, reassembled by the client."""
    server, _ = flask_server
    with (
        httpx.Client(trust_env=False, timeout=TIMEOUT) as client,
        client.stream("GET", server.url + "stream") as response,
    ):
        assert response.headers["transfer-encoding"] == "chunked"
        text = "".join(response.iter_text())
    assert text == "line 0\nline 1\nline 2\n"


def test_flask_stream_with_context(flask_server: tuple[WSGIServer, threading.Event]) -> None:
    """PEP 3333: the body is iterated after the app returns; Flask's stream_with_context
    keeps the request context alive while the server iterates (request.args is readable
    mid-stream) and tears it down once the iterable is finished and closed."""
    server, torn_down = flask_server
    with session() as s:
        response = s.get(server.url + "ctx", params={"name": "Ada"}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == "hello Ada!"
    assert torn_down.wait(TIMEOUT)


@pytest.mark.parametrize("path", ["/stream", "/ctx?name=Ada"])
def test_flask_head_of_a_streamed_response_claims_no_length(
    flask_server: tuple[WSGIServer, threading.Event], path: str
) -> None:
    """Werkzeug drops the body of every HEAD response, so the server never learns the
    length of a streamed one.  RFC 9110 §8.6: a server "MUST NOT send Content-Length in
    such a response unless its field value equals the decimal number of octets that
    would have been sent in the content of a response if the same request had used the
    GET method" - so none at all, where a GET is chunked; and no body, keep-alive kept."""
    server, _ = flask_server
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        got = conn.getresponse()
        assert got.getheader("Transfer-Encoding") == "chunked"
        got.read()
        conn.request("HEAD", path)
        head = conn.getresponse()
        assert head.status == 200
        assert head.getheader("Content-Length") is None
        assert head.getheader("Transfer-Encoding") is None
        assert head.read() == b""
        conn.request("GET", "/api/1")  # the connection is still in step
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_werkzeug_head_keeps_a_known_length(serve: ServerFactory) -> None:
    """A Werkzeug response whose body is known sets its own Content-Length, which HEAD
    keeps (the same number a GET carries), while a streamed one gets none."""

    @Request.application
    def app(request: Request) -> Response:
        if request.path == "/known":
            return Response("twelve bytes")
        return Response(iter(["a", "b"]))

    server = serve(app)
    with session() as s:
        known = s.head(server.url + "known", timeout=TIMEOUT)
        streamed = s.head(server.url + "streamed", timeout=TIMEOUT)
        got = s.get(server.url + "known", timeout=TIMEOUT)
    assert known.headers["Content-Length"] == "12" == got.headers["Content-Length"]
    assert "Content-Length" not in streamed.headers
    assert known.content == streamed.content == b""
