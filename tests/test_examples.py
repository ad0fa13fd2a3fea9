"""The example apps: over real sockets on 127.0.0.1 and in-process with WebTest.

Clients: ``requests`` for most requests, ``httpx``, ``http.client``, raw
sockets (the conftest helpers) and ``curl`` for some.  Every client call has a
timeout, every server is stopped by the ``serve`` fixture, and an autouse
fixture checks that no thread outlives its test.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from wsgiref.validate import validator

import httpx
import pytest
import requests

from examples import flask_app, hello, seed_parity
from tests.conftest import ResponseReader, ServerFactory, connect
from wsgibridge import WSGIServer

with warnings.catch_warnings():
    # WebOb still imports the cgi module, deprecated since Python 3.11.
    warnings.filterwarnings("ignore", message=".*'cgi' is deprecated", category=DeprecationWarning)
    import webtest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 10.0
CURL = "/usr/bin/curl"
FIVE_MIB = 5 * 1024 * 1024
CACHE_HEADERS = {
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "0",
}

needs_curl = pytest.mark.skipif(
    not os.access(CURL, os.X_OK), reason=f"curl is not installed at {CURL}"
)

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (torn down after every other fixture)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    extra = [t for t in threading.enumerate() if t not in before]
    while extra and time.monotonic() < deadline:
        time.sleep(0.02)
        extra = [t for t in threading.enumerate() if t not in before]
    assert not extra, f"threads left running: {extra}"


@pytest.fixture
def seed(serve: ServerFactory) -> WSGIServer:
    return serve(seed_parity.app)


@pytest.fixture
def flask_server(serve: ServerFactory) -> WSGIServer:
    return serve(flask_app.app)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A requests session that ignores proxy settings from the environment."""
    with requests.Session() as http:
        http.trust_env = False
        yield http


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT, trust_env=False) as http:
        yield http


def url(server: WSGIServer, path: str) -> str:
    return server.url + path.lstrip("/")


@contextlib.contextmanager
def http_connection(server: WSGIServer) -> Iterator[http.client.HTTPConnection]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
    try:
        yield conn
    finally:
        conn.close()


def body_chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes in pieces of ``size``, produced lazily."""
    block = bytes(range(256)) * (size // 256)
    sent = 0
    while sent < total:
        piece = block[: min(size, total - sent)]
        sent += len(piece)
        yield piece


def curl(*args: str) -> tuple[int, str, bytes]:
    """Run curl against the test server; (status code, content type, body)."""
    proc = subprocess.run(
        [
            CURL,
            "--silent",
            "--show-error",
            "--noproxy",
            "*",
            "--max-time",
            str(TIMEOUT),
            "--write-out",
            "\n%{http_code} %{content_type}",
            *args,
        ],
        capture_output=True,
        timeout=TIMEOUT + 5,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    body, _, trailer = proc.stdout.rpartition(b"\n")
    code, _, content_type = trailer.decode().partition(" ")
    return int(code), content_type, body


# -- seed_parity: GET /hello -------------------------------------------------------------


def test_hello_defaults_to_world(seed: WSGIServer, session: requests.Session) -> None:
    response = session.get(url(seed, "/hello"), timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.text == "Hello, World"


@pytest.mark.parametrize("name", ["Ada", "Grace Hopper", "a&b=c"])
def test_hello_greets_by_name(seed: WSGIServer, session: requests.Session, name: str) -> None:
    response = session.get(url(seed, "/hello"), params={"name": name}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == f"Hello, {name}"


@pytest.mark.parametrize("name", ["Zoë", "世界", "🐍 Python"])
def test_hello_utf8_names_with_httpx(seed: WSGIServer, client: httpx.Client, name: str) -> None:
    response = client.get(url(seed, "/hello"), params={"name": name})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.content == f"Hello, {name}".encode()
    assert response.headers["content-length"] == str(len(response.content))


def test_hello_raw_utf8_query_bytes_are_refused(seed: WSGIServer) -> None:
    """Unescaped UTF-8 in the request-target is refused (RFC 9112 §3.2: the target is
    ASCII; a recipient of an invalid one "SHOULD respond with a 400"); the same name
    percent-encoded, as browsers and HTTP libraries send it, reads as UTF-8."""
    with connect(seed) as sock:
        sock.sendall("GET /hello?name=été HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        response = ResponseReader(sock).read_response()
    assert response.status == 400
    with connect(seed) as sock:
        sock.sendall(b"GET /hello?name=%C3%A9t%C3%A9 HTTP/1.1\r\nHost: t\r\n\r\n")
        response = ResponseReader(sock).read_response()
    assert response.status == 200
    assert response.body == "Hello, été".encode()


def test_hello_head_has_length_and_no_body(seed: WSGIServer) -> None:
    with http_connection(seed) as conn:
        conn.request("HEAD", "/hello")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b""
        assert response.getheader("Content-Length") == str(len("Hello, World"))


def test_pipelined_requests_on_one_connection(seed: WSGIServer) -> None:
    with connect(seed) as sock:
        sock.sendall(
            b"GET /hello?name=one HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /hello?name=three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        reader = ResponseReader(sock)
        first, second, third = (reader.read_response() for _ in range(3))
        assert reader.at_eof()
    assert (first.status, first.body) == (200, b"Hello, one")
    assert second.status == 200 and b"<h1>" in second.body
    assert (third.status, third.body) == (200, b"Hello, three")


# -- seed_parity: POST /json ---------------------------------------------------------------


def test_json_echoes_message(seed: WSGIServer, session: requests.Session) -> None:
    response = session.post(url(seed, "/json"), json={"message": "hi"}, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Content-Length"] == str(len(response.content))
    assert response.json() == {"received": "hi"}


def test_json_chunked_upload(seed: WSGIServer, session: requests.Session) -> None:
    """A client streaming its JSON (no Content-Length) is read to wsgi.input's end."""

    def pieces() -> Iterator[bytes]:
        yield b'{"mess'
        yield b'age": "chunked"}'

    response = session.post(
        url(seed, "/json"),
        data=pieces(),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.json() == {"received": "chunked"}


@pytest.mark.parametrize("message", ["héllo wörld", ["a", 1], {"nested": True}, None])
def test_json_any_message_with_httpx(
    seed: WSGIServer, client: httpx.Client, message: object
) -> None:
    response = client.post(url(seed, "/json"), json={"message": message})
    assert response.status_code == 200
    assert response.json() == {"received": message}


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe{", b"[1, 2]", b'"message"'])
def test_json_invalid_is_400(seed: WSGIServer, session: requests.Session, body: bytes) -> None:
    response = session.post(
        url(seed, "/json"),
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 400
    assert response.text.startswith("Bad request:")
    assert response.headers["Content-Length"] == str(len(response.content))


# -- seed_parity: POST /login --------------------------------------------------------------


def test_login_success(seed: WSGIServer, session: requests.Session) -> None:
    response = session.post(
        url(seed, "/login"), data={"user": "admin", "password": "s3cr3t"}, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert response.text == "Authentication successful"
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(
    "form",
    [
        {"user": "admin", "password": "wrong"},
        {"user": "root", "password": "s3cr3t"},
        {"user": "admin"},
        {},
        {"user": "admin", "password": "s3cr3t "},
    ],
)
def test_login_bad_credentials_401(
    seed: WSGIServer, session: requests.Session, form: dict[str, str]
) -> None:
    response = session.post(
        url(seed, "/login"),
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Login Required"'
    assert response.text == "Authentication failed"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"user": "admin", "password": "s3cr3t"}'),
        ("text/plain", b"user=admin&password=s3cr3t"),
        ("multipart/form-data; boundary=x", b"--x--\r\n"),
        (None, b"user=admin&password=s3cr3t"),
    ],
)
def test_login_other_content_types_415(
    seed: WSGIServer, content_type: str | None, body: bytes
) -> None:
    headers = {"Content-Length": str(len(body))}
    if content_type is not None:
        headers["Content-Type"] = content_type
    with http_connection(seed) as conn:
        conn.request("POST", "/login", body=body, headers=headers)
        response = conn.getresponse()
        assert response.status == 415
        assert response.read() == b"Unsupported Media Type"


def test_login_content_type_with_parameters(seed: WSGIServer) -> None:
    """Media types compare case-insensitively and ignore parameters like charset."""
    body = b"user=admin&password=s3cr3t"
    with http_connection(seed) as conn:
        conn.request(
            "POST",
            "/login",
            body=body,
            headers={"Content-Type": "Application/X-WWW-Form-URLEncoded; charset=utf-8"},
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b"Authentication successful"


# -- seed_parity: DELETE /resource ---------------------------------------------------------


@pytest.mark.parametrize("authorization", ["Bearer secret-token", "bearer secret-token"])
def test_delete_with_token(seed: WSGIServer, client: httpx.Client, authorization: str) -> None:
    response = client.delete(url(seed, "/resource"), headers={"Authorization": authorization})
    assert response.status_code == 200
    assert response.text == "Resource deleted"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "Bearer secret-token-2",
        "Basic c2VjcmV0LXRva2Vu",
        "Basic secret-token",
        "Token secret-token",
        "secret-token",
    ],
)
def test_delete_without_token_403(
    seed: WSGIServer, client: httpx.Client, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.delete(url(seed, "/resource"), headers=headers)
    assert response.status_code == 403
    assert response.text == "Forbidden"
    assert response.headers["content-length"] == "9"


# -- seed_parity: /error and /bad ----------------------------------------------------------


def test_error_becomes_500(
    seed: WSGIServer, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = session.get(url(seed, "/error"), timeout=TIMEOUT)
    assert response.status_code == 500
    assert response.text == "500 Internal Server Error\n"
    assert "RuntimeError" not in response.text  # no traceback unless expose_tracebacks
    app_lines = [r for r in caplog.records if r.name == "seed_parity"]
    assert [r.levelno for r in app_lines] == [logging.ERROR]
    assert "RuntimeError" in app_lines[0].getMessage()
    # The same session (and so, normally, the same connection) keeps working.
    assert session.get(url(seed, "/hello"), timeout=TIMEOUT).text == "Hello, World"


def test_error_then_next_request_on_same_connection(seed: WSGIServer) -> None:
    with http_connection(seed) as conn:
        conn.request("GET", "/error")
        first = conn.getresponse()
        assert first.status == 500
        first.read()
        conn.request("GET", "/hello?name=again")
        second = conn.getresponse()
        assert second.status == 200
        assert second.read() == b"Hello, again"


def test_bad_is_400_from_the_app(seed: WSGIServer) -> None:
    with http_connection(seed) as conn:
        conn.request("GET", "/bad")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 400
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert response.getheader("Content-Length") == str(len(body))
        assert body.startswith(b"Bad request: ")


# -- seed_parity: POST /upload -------------------------------------------------------------


def test_upload_5mib_from_a_generator(seed: WSGIServer) -> None:
    """A generator body with an explicit Content-Length (the server has no chunked input)."""
    with http_connection(seed) as conn:
        conn.request(
            "POST",
            "/upload",
            body=body_chunks(FIVE_MIB),
            headers={"Content-Length": str(FIVE_MIB), "Content-Type": "application/octet-stream"},
        )
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == f"Received {FIVE_MIB} bytes".encode()
        # The connection is still usable afterwards.
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"Hello, World"


def test_upload_5mib_bytes_with_requests(seed: WSGIServer, session: requests.Session) -> None:
    response = session.post(url(seed, "/upload"), data=b"\0" * FIVE_MIB, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == f"Received {FIVE_MIB} bytes"


def test_upload_generator_with_httpx(seed: WSGIServer, client: httpx.Client) -> None:
    size = 300_001
    response = client.post(
        url(seed, "/upload"),
        content=body_chunks(size, 10_000),
        headers={"Content-Length": str(size)},
    )
    assert response.status_code == 200
    assert response.text == f"Received {size} bytes"


def test_upload_empty(seed: WSGIServer, session: requests.Session) -> None:
    response = session.post(url(seed, "/upload"), data=b"", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.text == "Received 0 bytes"


class RecordingInput:
    """A ``wsgi.input`` that records every read size."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.sizes.append(size)
        return self._data.read(size)


def call_app(environ: dict[str, object]) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call seed_parity.app directly; (status, headers, body)."""
    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None
    ) -> Callable[[bytes], object]:
        seen.append((status, headers))
        return lambda data: None

    body = b"".join(seed_parity.app(environ, start_response))
    ((status, headers),) = seen
    return status, headers, body


def test_upload_reads_in_4096_byte_chunks() -> None:
    data = b"x" * 100_000
    stream = RecordingInput(data)
    status, _, body = call_app(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/upload",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": stream,
        }
    )
    assert status == "200 OK"
    assert body == b"Received 100000 bytes"
    assert stream.sizes and all(size is not None and 0 < size <= 4096 for size in stream.sizes)
    assert len(stream.sizes) == -(-len(data) // 4096)


def test_upload_reads_to_eof_when_input_is_terminated() -> None:
    stream = RecordingInput(b"y" * 10_000)
    _, _, body = call_app(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/upload",
            "wsgi.input": stream,
            "wsgi.input_terminated": True,
        }
    )
    assert body == b"Received 10000 bytes"
    assert all(size == 4096 for size in stream.sizes)


def test_upload_short_body_is_not_reported_complete() -> None:
    status, _, body = call_app(
        {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/upload",
            "CONTENT_LENGTH": "5000",
            "wsgi.input": RecordingInput(b"z" * 10),
        }
    )
    assert status == "400 Bad Request"
    assert b"10 of 5000" in body


# -- seed_parity: /old, /page, 404, 405 ----------------------------------------------------


def test_old_redirects_to_hello(seed: WSGIServer, session: requests.Session) -> None:
    response = session.get(url(seed, "/old"), allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302
    assert response.headers["Location"] == "/hello"
    assert response.headers["Content-Length"] == str(len(response.content))
    followed = session.get(url(seed, "/old"), timeout=TIMEOUT)
    assert followed.status_code == 200
    assert followed.url == url(seed, "/hello")
    assert followed.text == "Hello, World"


def test_page_forbids_caching(seed: WSGIServer) -> None:
    with http_connection(seed) as conn:
        conn.request("GET", "/page")
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/html; charset=utf-8"
        for name, value in CACHE_HEADERS.items():
            assert response.getheader(name) == value
        assert response.getheader("Content-Length") == str(len(body))
        assert response.getheader("Transfer-Encoding") is None
        assert body.startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize("path", ["/nope", "/hello/", "/HELLO", "/", "/caf%C3%A9"])
def test_unknown_path_custom_404(seed: WSGIServer, session: requests.Session, path: str) -> None:
    response = session.get(url(seed, path), timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(response.content))
    assert "<h1>404 Not Found</h1>" in response.text


def test_404_page_escapes_the_path(seed: WSGIServer, client: httpx.Client) -> None:
    response = client.get(url(seed, "/%3Cscript%3Ealert(1)%3C/script%3E"))
    assert response.status_code == 404
    assert "<script>" not in response.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
    utf8 = client.get(url(seed, "/caf%C3%A9"))
    assert "<code>/café</code>" in utf8.text


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/hello", "GET, HEAD"),
        ("GET", "/json", "POST"),
        ("GET", "/login", "POST"),
        ("POST", "/resource", "DELETE"),
        ("GET", "/upload", "POST"),
    ],
)
def test_wrong_method_405(
    seed: WSGIServer, session: requests.Session, method: str, path: str, allow: str
) -> None:
    response = session.request(method, url(seed, path), timeout=TIMEOUT)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow


# -- seed_parity: logging ------------------------------------------------------------------


def test_each_request_is_logged(
    seed: WSGIServer, session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seed_parity")
    session.get(url(seed, "/hello?name=log"), timeout=TIMEOUT)
    session.post(url(seed, "/login"), data={"user": "x"}, timeout=TIMEOUT)
    session.get(url(seed, "/a%0Ab"), timeout=TIMEOUT)
    messages = [r.getMessage() for r in caplog.records if r.name == "seed_parity"]
    assert messages == [
        "GET /hello -> 200 OK",
        "POST /login -> 401 Unauthorized",
        "GET /a\\nb -> 404 Not Found",  # a control character cannot forge a log line
    ]


# -- seed_parity: curl ---------------------------------------------------------------------


@needs_curl
def test_curl_hello(seed: WSGIServer) -> None:
    assert curl(url(seed, "/hello")) == (200, "text/plain; charset=utf-8", b"Hello, World")
    code, _, body = curl("--get", "--data-urlencode", "name=Zoë", url(seed, "/hello"))
    assert (code, body) == (200, "Hello, Zoë".encode())


@needs_curl
def test_curl_json(seed: WSGIServer) -> None:
    code, content_type, body = curl(
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        '{"message": "curl"}',
        url(seed, "/json"),
    )
    assert (code, content_type, body) == (200, "application/json", b'{"received": "curl"}')
    code, _, _ = curl("--data-binary", "{oops", url(seed, "/json"))
    assert code == 400


@needs_curl
@pytest.mark.parametrize("expect", ["Expect: 100-continue", "Expect:"])
def test_curl_upload_5mib(seed: WSGIServer, tmp_path: Path, expect: str) -> None:
    """With and without ``Expect: 100-continue`` (curl sends it for large bodies)."""
    upload = tmp_path / "upload.bin"
    with upload.open("wb") as f:
        for piece in body_chunks(FIVE_MIB):
            f.write(piece)
    code, _, body = curl(
        "-H",
        "Content-Type: application/octet-stream",
        "-H",
        expect,
        "--data-binary",
        f"@{upload}",
        url(seed, "/upload"),
    )
    assert (code, body) == (200, f"Received {FIVE_MIB} bytes".encode())


# -- seed_parity: PEP 3333 conformance -----------------------------------------------------


def test_seed_parity_under_wsgiref_validator_over_a_socket(
    serve: ServerFactory, session: requests.Session
) -> None:
    """The validator checks both sides: the app's responses and the server's environ."""
    server = serve(validator(seed_parity.app))
    assert session.get(url(server, "/hello?name=v"), timeout=TIMEOUT).text == "Hello, v"
    response = session.post(url(server, "/json"), json={"message": 1}, timeout=TIMEOUT)
    assert response.json() == {"received": 1}
    response = session.post(url(server, "/upload"), data=b"u" * 50_000, timeout=TIMEOUT)
    assert response.text == "Received 50000 bytes"
    assert session.get(url(server, "/page"), timeout=TIMEOUT).status_code == 200
    assert session.get(url(server, "/gone"), timeout=TIMEOUT).status_code == 404
    assert session.head(url(server, "/hello"), timeout=TIMEOUT).status_code == 200


def test_seed_parity_with_webtest() -> None:
    app = webtest.TestApp(validator(seed_parity.app))
    assert app.get("/hello").text == "Hello, World"
    assert app.get("/hello", params={"name": "Zoë"}).text == "Hello, Zoë"
    assert app.post_json("/json", {"message": "hi"}).json == {"received": "hi"}
    app.post("/json", params=b"{", content_type="application/json", status=400)
    ok = app.post("/login", params={"user": "admin", "password": "s3cr3t"})
    assert ok.text == "Authentication successful"
    denied = app.post("/login", params={"user": "admin", "password": "no"}, status=401)
    assert denied.headers["WWW-Authenticate"] == 'Basic realm="Login Required"'
    app.post_json("/login", {"user": "admin", "password": "s3cr3t"}, status=415)
    deleted = app.delete("/resource", headers={"Authorization": "Bearer secret-token"})
    assert deleted.text == "Resource deleted"
    assert app.delete("/resource", status=403).text == "Forbidden"
    with pytest.raises(RuntimeError, match="deliberate failure"):
        app.get("/error")
    assert app.get("/bad", status=400).text.startswith("Bad request: ")
    uploaded = app.post("/upload", params=b"u" * 20_000, content_type="application/octet-stream")
    assert uploaded.text == "Received 20000 bytes"
    assert app.get("/old", status=302).headers["Location"].endswith("/hello")
    page = app.get("/page")
    for name, value in CACHE_HEADERS.items():
        assert page.headers[name] == value
    assert app.get("/nowhere", status=404).content_type == "text/html"
    assert app.put("/hello", status=405).headers["Allow"] == "GET, HEAD"


# -- hello -------------------------------------------------------------------------------


def test_hello_example_with_webtest() -> None:
    app = webtest.TestApp(validator(hello.app))
    response = app.get("/")
    assert response.status_int == 200
    assert response.text == "Hello, World!\n"
    assert response.headers["Content-Length"] == "14"
    assert app.post("/anything", params=b"ignored").text == "Hello, World!\n"


def test_hello_example_over_a_socket(serve: ServerFactory, client: httpx.Client) -> None:
    server = serve(hello.app)
    response = client.get(server.url)
    assert response.status_code == 200
    assert response.text == "Hello, World!\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


# -- flask_app ---------------------------------------------------------------------------


def test_flask_example_with_webtest() -> None:
    app = webtest.TestApp(flask_app.app)
    assert app.get("/").text == "Hello from Flask on wsgibridge!\n"
    assert app.get("/json").json == {"server": "wsgibridge", "framework": "flask", "ok": True}
    echoed = app.post("/echo", params=b"12345", content_type="application/octet-stream")
    assert echoed.json == {"length": 5}
    assert app.get("/missing", status=404).json == {"error": "not found", "path": "/missing"}


def test_flask_example_over_a_socket(flask_server: WSGIServer, session: requests.Session) -> None:
    index = session.get(flask_server.url, timeout=TIMEOUT)
    assert index.status_code == 200
    assert index.headers["Content-Type"].startswith("text/plain")
    assert index.text == "Hello from Flask on wsgibridge!\n"
    document = session.get(url(flask_server, "/json"), timeout=TIMEOUT)
    assert document.headers["Content-Type"] == "application/json"
    assert document.json() == {"server": "wsgibridge", "framework": "flask", "ok": True}
    echoed = session.post(url(flask_server, "/echo"), data=b"e" * 100_000, timeout=TIMEOUT)
    assert echoed.json() == {"length": 100_000}
    missing = session.get(url(flask_server, "/missing"), timeout=TIMEOUT)
    assert missing.status_code == 404
    assert missing.json() == {"error": "not found", "path": "/missing"}
    wrong = session.get(url(flask_server, "/echo"), timeout=TIMEOUT)
    assert wrong.status_code == 405


def test_flask_example_with_http_client(flask_server: WSGIServer) -> None:
    with http_connection(flask_server) as conn:
        for _ in range(3):  # keep-alive: one connection, several requests
            conn.request("POST", "/echo", body=b"abc", headers={"Content-Type": "text/plain"})
            response = conn.getresponse()
            assert response.status == 200
            assert response.read() == b'{"length":3}\n'


# -- the command line ----------------------------------------------------------------------


def free_port() -> int:
    """A port that was free a moment ago (a race, but an acceptable one in a test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not listen on {port} in time: {log.read_text()}")
            time.sleep(0.05)


def test_cli_serves_flask_example_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wsgibridge",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "examples.flask_app:app",
            ],
            cwd=ROOT,
            # -m would put the checkout first on sys.path, before the wsgibridge under
            # test (an installed build, in the compiled run); the CLI adds the working
            # directory for the app itself.
            env=dict(os.environ, PYTHONSAFEPATH="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_listening(proc, port, log)
        with requests.Session() as http:
            http.trust_env = False
            response = http.get(f"http://127.0.0.1:{port}/", timeout=TIMEOUT)
            assert response.status_code == 200
            assert response.text == "Hello from Flask on wsgibridge!\n"
            # The session's keep-alive connection is still open and idle: the
            # server must not wait for it.
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=5)
        assert code == 0, log.read_text()
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
