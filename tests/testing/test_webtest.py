"""``wsgibridge.testing.StopableWSGIServer`` beside WebTest's own: the same tests pass on
both, so a suite switches by changing one import - and ours stops in milliseconds."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from wsgibridge import testing as wsgibridge_testing
from wsgibridge._types import Environ, StartResponse
from wsgibridge.accesslog import AccessRecord
from wsgibridge.testing import WAITRESS_OPTIONS, RequestLog, StopableWSGIServer

from ..conftest import needs_ipv6

webtest_http = pytest.importorskip("webtest.http")


def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom-31f0")
    body = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


IMPLEMENTATIONS = {"webtest": webtest_http.StopableWSGIServer, "wsgibridge": StopableWSGIServer}


# WebTest's check_server() leaves an http.client connection unclosed.
WEBTEST_LEAKS = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(params=[pytest.param("webtest", marks=WEBTEST_LEAKS), "wsgibridge"])
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    cls = IMPLEMENTATIONS[request.param]
    instance = cls.create(app)
    try:
        assert instance.wait()
        yield instance
    finally:
        instance.shutdown()


def test_application_url_serves_the_app(server: Any) -> None:
    assert server.application_url.startswith("http://127.0.0.1:")
    assert server.application_url.endswith("/")
    response = requests.get(server.application_url + "page", timeout=5)
    assert (response.status_code, response.text) == (200, "GET /page")
    assert server.application_url == f"http://{server.adj.host}:{server.adj.port}/"


def test_the_ping_path_answers(server: Any) -> None:
    response = requests.get(server.application_url + "__application__", timeout=5)
    assert (response.status_code, response.text) == (200, "server started")


def test_the_file_path_serves_a_local_file_rewriting_localhost(server: Any, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(b'<a href="http://localhost/next">next</a>')
    url = server.application_url + f"__file__?__file__={page}"
    response = requests.get(url, timeout=5)
    host = server.application_url.split("//")[1].rstrip("/")
    assert response.status_code == 200
    assert response.text == f'<a href="http://{host}/next">next</a>'
    missing = requests.get(server.application_url + "__file__?__file__=/nonexistent", timeout=5)
    assert missing.status_code == 404


def test_tracebacks_are_exposed_by_default(server: Any) -> None:
    """create() sets expose_tracebacks, as WebTest does: a 500 carries the traceback."""
    response = requests.get(server.application_url + "boom", timeout=5)
    assert response.status_code == 500
    assert "boom-31f0" in response.text


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_shutdown_closes_the_port_and_returns_true() -> None:
    for cls in IMPLEMENTATIONS.values():
        instance = cls.create(app)
        assert instance.wait()
        host, port = instance.adj.host, instance.adj.port
        assert instance.shutdown() is True
        assert instance.was_shutdown
        if cls is StopableWSGIServer:  # WebTest's leaves the port bound (webtest PR #265)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host, port), timeout=1).close()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ours_starts_and_stops_much_faster() -> None:
    """Start+stop measured side by side (the figures go to the closing note)."""
    timings = {}
    for name, cls in IMPLEMENTATIONS.items():
        runs = []
        for _ in range(3):
            began = time.perf_counter()
            instance = cls.create(app)
            instance.wait()
            instance.shutdown()
            runs.append(time.perf_counter() - began)
        timings[name] = min(runs)
    print(
        "\nstart+wait+shutdown: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
    )
    assert timings["wsgibridge"] < timings["webtest"]


def test_unknown_options_are_refused_by_name() -> None:
    """A misspelt option is one clear error naming it, not a TypeError from deep inside."""
    with pytest.raises(ValueError, match=r"unknown option thraeds .*threads"):
        StopableWSGIServer.create(app, thraeds=2)


def test_every_waitress_option_is_accepted_and_kept_in_adj() -> None:
    """WebTest passes its keyword arguments to waitress; each of waitress's adjustments
    is taken (translated, or accepted and ignored where it tunes waitress's own
    buffering), and ``adj`` carries what was given, as waitress's does."""
    adjustments = pytest.importorskip("waitress.adjustments")
    names = {name for name, _ in adjustments.Adjustments._params}
    assert names <= WAITRESS_OPTIONS, sorted(names - WAITRESS_OPTIONS)
    server = StopableWSGIServer.create(
        app,
        threads=2,
        channel_timeout=30,
        asyncore_use_poll=True,
        ident="test",
        trusted_proxy="127.0.0.1",
        clear_untrusted_proxy_headers=True,
    )
    try:
        assert (server.adj.threads, server.adj.channel_timeout, server.adj.ident) == (2, 30, "test")
        assert server.background.server.config.keepalive_timeout == 30
        assert server.background.server.config.threads == 2
        assert requests.get(server.application_url + "x", timeout=5).text == "GET /x"
    finally:
        server.shutdown()


@pytest.mark.parametrize("impl", ["webtest", "wsgibridge"])
def test_host_localhost_works(impl: str) -> None:
    """``create(app, host="localhost")``: served on the name, as waitress does."""
    instance = IMPLEMENTATIONS[impl].create(app, host="localhost")
    try:
        assert instance.application_url.startswith("http://localhost:")
        assert instance.adj.host == "localhost"
        url = f"http://127.0.0.1:{instance.adj.port}/y"
        assert requests.get(url, timeout=5).text == "GET /y"
    finally:
        instance.shutdown()


def test_listen_and_unix_socket_options(tmp_path: Path) -> None:
    """waitress's ``listen`` ("host:port ...") and ``unix_socket`` (+ ``unix_socket_perms``
    as an octal string) choose where the server listens."""
    path = tmp_path / "s.sock"
    server = StopableWSGIServer.create(
        app, listen="127.0.0.1:0", unix_socket=str(path), unix_socket_perms="600"
    )
    try:
        assert (path.stat().st_mode & 0o777) == 0o600
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(b"GET /u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"GET /u" in sock.recv(65536)
        assert requests.get(server.application_url + "t", timeout=5).text == "GET /t"
    finally:
        server.shutdown()


@needs_ipv6
def test_application_url_is_where_listen_bound() -> None:
    """With ``listen=`` (and no ``host``) the URL and ``adj.host`` are the address bound."""
    server = StopableWSGIServer.create(app, listen="[::1]:0")
    try:
        assert server.application_url.startswith("http://[::1]:")
        assert server.adj.host == "::1"
        assert requests.get(server.application_url + "v6", timeout=5).text == "GET /v6"
    finally:
        server.shutdown()


@pytest.mark.parametrize("module", [pytest.param("webtest", marks=WEBTEST_LEAKS), "wsgibridge"])
def test_check_server_and_get_free_port_as_in_webtest_http(module: str) -> None:
    """The module replaces ``webtest.http`` whole: ``get_free_port()`` gives (host, port),
    ``check_server(host, port, path)`` the status of a GET, 0 when nothing answers."""
    helpers = webtest_http if module == "webtest" else wsgibridge_testing
    host, port = helpers.get_free_port()
    assert host == "127.0.0.1" and 0 < port < 65536
    instance = StopableWSGIServer.create(app)
    try:
        assert helpers.check_server(instance.adj.host, instance.adj.port, "/ok", retries=1) == 200
    finally:
        instance.shutdown()
    assert helpers.check_server(instance.adj.host, instance.adj.port, retries=1, timeout=1) == 0


def _record(path: str, began: float, duration: float) -> AccessRecord:
    return AccessRecord(
        client="127.0.0.1",
        remote_port="5000",
        request_line=f"GET {path} HTTP/1.1",
        method="GET",
        path=path,
        query="",
        protocol="HTTP/1.1",
        status=200,
        bytes_sent=0,
        duration=duration,
        request_headers=(),
        response_headers=(),
        timestamp=began + duration,
    )


def test_the_request_log_keeps_the_order_requests_began_in() -> None:
    """Two clients: the slow request began first but is recorded last."""
    log = RequestLog()
    log(_record("/fast", began=100.5, duration=0.1))
    log(_record("/slow", began=100.0, duration=2.0))
    log(_record("/last", began=103.0, duration=0.1))
    assert [r.path for r in log] == ["/slow", "/fast", "/last"]
    log.clear()
    log(_record("/after", began=99.0, duration=0.1))
    assert [r.path for r in log] == ["/after"]
