"""The pytest plugin as a user meets it: fixtures in their own test suite (pytester).

Each test writes a small test module, runs pytest on it and checks the outcome,
so what is tested is what installing wsgibridge gives a project.
"""

from __future__ import annotations

import pytest

pytest.importorskip("requests")

APP = """
def app(environ, start_response):
    body = (environ["REQUEST_METHOD"] + " " + environ["PATH_INFO"]).encode()
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=APP + source)
    # pytest-django, when installed, would claim the tests using live_server (README).
    return pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "-p", "no:django", *args, timeout=60
    )


def test_the_plugin_is_registered_by_installing_wsgibridge(pytester: pytest.Pytester) -> None:
    """The ``pytest11`` entry point loads it: no conftest, no ``-p`` needed."""
    result = run(
        pytester,
        "def test_fixtures(request):\n"
        "    assert request.config.pluginmanager.has_plugin('wsgibridge')\n",
    )
    result.assert_outcomes(passed=1)


def test_wsgi_server_factory_serves_and_stops(pytester: pytest.Pytester) -> None:
    """``wsgi_server(app)`` is running at return; the port is closed after the test."""
    result = run(
        pytester,
        """
import socket, requests
PORTS = []

def test_serve(wsgi_server):
    server = wsgi_server(app)
    PORTS.append(server.port)
    response = requests.get(server.url + "hello", timeout=5)
    assert response.text == "GET /hello"
    second = wsgi_server(app, threads=2)
    assert second.port != server.port

def test_stopped_after():
    try:
        socket.create_connection(("127.0.0.1", PORTS[0]), timeout=1).close()
    except ConnectionRefusedError:
        return
    raise AssertionError("still listening")
""",
    )
    result.assert_outcomes(passed=2)


def test_recorded_requests(pytester: pytest.Pytester) -> None:
    """``server.requests`` holds what the server saw: method, path, query, headers, body size."""
    result = run(
        pytester,
        """
import requests

def test_record(wsgi_server):
    server = wsgi_server(app)
    requests.post(server.url + "upload?x=1", data=b"12345", headers={"X-Test": "yes"}, timeout=5)
    requests.get(server.url, timeout=5)
    first, second = server.requests
    assert (first.method, first.path, first.query, first.body_size) == ("POST", "/upload", "x=1", 5)
    assert first.header("x-test") == "yes" and first.status == 200
    assert (second.method, second.path, second.body_size) == ("GET", "/", 0)
""",
    )
    result.assert_outcomes(passed=1)


def test_live_server_uses_the_wsgi_app_fixture(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
import pytest, requests

@pytest.fixture
def wsgi_app():
    return app

def test_live(live_server):
    assert requests.get(live_server.url + "x", timeout=5).text == "GET /x"
""",
    )
    result.assert_outcomes(passed=1)


def test_live_server_without_wsgi_app_says_what_to_do(pytester: pytest.Pytester) -> None:
    result = run(pytester, "def test_live(live_server):\n    pass\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*define a `wsgi_app` fixture*"])


def test_https_with_a_throwaway_certificate(pytester: pytest.Pytester) -> None:
    """``https=True`` (and ``live_server_https``): a trustme certificate, verified by
    clients with ``server.ca_file``."""
    pytest.importorskip("trustme")
    result = run(
        pytester,
        """
import pytest, requests

@pytest.fixture
def wsgi_app():
    return app

def test_https(wsgi_server):
    server = wsgi_server(app, https=True)
    assert server.url.startswith("https://127.0.0.1:")
    assert requests.get(server.url, verify=server.ca_file, timeout=5).text == "GET /"

def test_live_https(live_server_https):
    response = requests.get(live_server_https.url, verify=live_server_https.ca_file, timeout=5)
    assert response.status_code == 200
""",
    )
    result.assert_outcomes(passed=2)


def test_a_pep3333_mistake_fails_the_test_with_the_rule(pytester: pytest.Pytester) -> None:
    """Lint is on in the fixtures: an app yielding str fails the test, naming the rule and
    the fix; ``lint=False`` lets the same test see the server's plain 500."""
    result = run(
        pytester,
        """
import requests

def broken(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["text, not bytes"]

def test_linted(wsgi_server):
    server = wsgi_server(broken)
    assert requests.get(server.url, timeout=5).status_code == 500

def test_unlinted(wsgi_server):
    server = wsgi_server(broken, lint=False)
    assert requests.get(server.url, timeout=5).status_code == 500
""",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*PEP 3333 lint found*", "*GET / HTTP/1.1*"])


def test_the_plugin_can_be_turned_off(pytester: pytest.Pytester) -> None:
    result = run(pytester, "def test_x(wsgi_server):\n    pass\n", "-p", "no:wsgibridge")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'wsgi_server' not found*"])


def test_the_record_is_there_as_soon_as_the_client_has_its_response(
    pytester: pytest.Pytester,
) -> None:
    """The record is made after the response is sent; reading the log waits for it."""
    result = run(
        pytester,
        """
import socket

def test_race(wsgi_server):
    server = wsgi_server(app)
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        for n in range(200):
            sock.sendall(b"GET /%d HTTP/1.1\\r\\nHost: t\\r\\n\\r\\n" % n)
            reply = b""
            while not reply.endswith(b"GET /%d" % n):
                reply += sock.recv(4096)
            assert len(server.requests) == n + 1
            assert server.requests[n].path == "/%d" % n
    server.requests.clear()
    assert len(server.requests) == 0
""",
    )
    result.assert_outcomes(passed=1)
