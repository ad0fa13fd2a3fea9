"""``wsgibridge.testing.django.LiveServerThread`` under Django's own test runner.

Each test runs ``python -m django test`` in a subprocess, with the example
site (examples/django_site) on the path and its test database in memory:
so the live server's worker threads must share the test's SQLite
connection.  The test modules run there check, over real sockets on
127.0.0.1: keep-alive and the request log, a worker thread serving while
another is blocked (both see the test's rows), a stop in milliseconds with
an idle keep-alive connection open, and a lint finding failing the stop.
pytest-django's ``live_server`` on wsgibridge is checked with the README's
snippet (tests/test_readme.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ..importroot import IMPORT_ROOT

pytest.importorskip("django", reason="the test extra installs Django")

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group

SITE = Path(__file__).resolve().parent.parent.parent / "examples" / "django_site"

LIVE_TESTS = """
import http.client
import socket
import threading
import time

import requests
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.contrib.staticfiles.testing import StaticLiveServerTestCase

from django.db import connections
from notes.models import Note
from wsgibridge.testing.django import LiveServerThread


class FourThreads(LiveServerThread):
    options = {"threads": 4}


class Probe(StaticFilesHandler):
    # Notes which thread served each request, with which database connection.

    seen = []

    def __call__(self, environ, start_response):
        Probe.seen.append((threading.current_thread().name, connections["default"]))
        return super().__call__(environ, start_response)


class LiveTests(StaticLiveServerTestCase):
    server_thread_class = FourThreads
    static_handler = Probe

    def setUp(self):
        self.server_thread.requests.clear()  # one server for the class: this test's requests

    def connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server_thread.port, timeout=5)
        self.addCleanup(conn.close)
        return conn

    def test_keep_alive_and_the_request_log(self):
        conn = self.connection()
        sock = None
        for path in ("/", "/static/notes/site.css", "/admin/login/", "/notes/12345/"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            sock = sock or conn.sock
            self.assertIs(conn.sock, sock)  # one connection throughout
        seen = [(r.method, r.path, r.status) for r in self.server_thread.requests]
        self.assertEqual(
            seen,
            [
                ("GET", "/", 200),
                ("GET", "/static/notes/site.css", 200),
                ("GET", "/admin/login/", 200),
                ("GET", "/notes/12345/", 404),
            ],
        )
        self.assertIsNotNone(self.server_thread.live_server.lint)
        self.assertEqual(self.server_thread.lint_violations, [])

    def test_a_second_worker_serves_while_one_is_blocked_and_both_see_the_test_db(self):
        Note.objects.create(title="made by the test")
        form = requests.get(self.live_server_url + "/", timeout=5)
        token = form.text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
        body = f"csrfmiddlewaretoken={token}&title=made+over+http&text=".encode()
        slow = socket.create_connection(("127.0.0.1", self.server_thread.port), timeout=5)
        self.addCleanup(slow.close)
        head = (
            "POST / HTTP/1.1\\r\\nHost: localhost\\r\\n"
            "Content-Type: application/x-www-form-urlencoded\\r\\n"
            f"Cookie: csrftoken={form.cookies['csrftoken']}\\r\\n"
            f"Content-Length: {len(body)}\\r\\n\\r\\n"
        )
        slow.sendall(head.encode() + body[:10])  # a worker now waits for the rest
        time.sleep(0.1)
        other = requests.get(self.live_server_url + "/", timeout=5)
        self.assertEqual(other.status_code, 200)
        self.assertIn("made by the test", other.text)
        slow.sendall(body[10:])
        answer = slow.recv(65536)
        self.assertTrue(answer.startswith(b"HTTP/1.1 302 "), answer[:300])
        self.assertTrue(Note.objects.filter(title="made over http").exists())
        threads = {name for name, _ in Probe.seen}
        self.assertGreaterEqual(len(threads), 2, threads)  # the blocked one and another
        self.assertTrue(all(name.startswith("wsgibridge-worker") for name in threads), threads)
        # Every worker used the test's own connection, as Django's threads do.
        self.assertTrue(all(conn is connections["default"] for _, conn in Probe.seen))

    def test_a_stop_takes_milliseconds_with_an_idle_keep_alive_connection(self):
        override = self._make_connections_override()
        for conn in override.values():
            conn.inc_thread_sharing()
        thread = LiveServerThread("localhost", StaticFilesHandler, override, port=0)
        thread.daemon = True
        thread.start()
        self.assertTrue(thread.is_ready.wait(5))
        self.assertIsNone(thread.error)
        idle = http.client.HTTPConnection("127.0.0.1", thread.port, timeout=5)
        self.addCleanup(idle.close)
        idle.request("GET", "/admin/login/")
        idle.getresponse().read()
        began = time.perf_counter()
        thread.terminate()
        took = time.perf_counter() - began
        for conn in override.values():
            conn.dec_thread_sharing()
        self.assertFalse(thread.is_alive())
        self.assertLess(took, 0.25)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", thread.port), timeout=1).close()

    def test_a_lint_finding_fails_the_stop(self):
        def broken(app):
            def text_body(environ, start_response):
                start_response("200 OK", [("Content-Type", "text/plain")])
                return ["text, not bytes"]

            return text_body

        thread = LiveServerThread("localhost", broken, port=0)
        thread.daemon = True
        thread.start()
        self.assertTrue(thread.is_ready.wait(5))
        requests.get(f"http://127.0.0.1:{thread.port}/", timeout=5)
        with self.assertRaisesRegex(AssertionError, "PEP 3333 lint found 1 problem"):
            thread.terminate()
        self.assertFalse(thread.is_alive())
        self.assertEqual(len(thread.lint_violations), 1)

    def test_a_port_that_is_taken_is_the_threads_error(self):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            thread = LiveServerThread("127.0.0.1", StaticFilesHandler, port=taken.getsockname()[1])
            thread.daemon = True
            thread.start()
            self.assertTrue(thread.is_ready.wait(5))
            self.assertIsInstance(thread.error, OSError)
            thread.terminate()
"""


def django_test(tmp_path: Path, *labels: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m django test LABELS`` with the example site and ``tmp_path`` on the path."""
    run_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SITE), str(tmp_path), IMPORT_ROOT]),
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "DJANGO_SITE_DB": str(tmp_path / "db.sqlite3"),
        "DJANGO_SITE_MEDIA_ROOT": str(tmp_path / "media"),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "django", "test", "-v", "2", *labels],
        cwd=tmp_path,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_live_server_thread_under_djangos_runner(tmp_path: Path) -> None:
    (tmp_path / "live_tests.py").write_text(textwrap.dedent(LIVE_TESTS), encoding="utf-8")
    done = django_test(tmp_path, "live_tests")
    assert done.returncode == 0, done.stderr
    assert "Ran 5 tests" in done.stderr and "\nOK" in done.stderr, done.stderr
    assert "in-memory" in done.stderr or "memorydb" in done.stderr, done.stderr


@pytest.mark.parametrize("server", ["wsgibridge", "django"])
def test_the_example_sites_live_tests(tmp_path: Path, server: str) -> None:
    """examples/django_site/notes/tests.py, on wsgibridge's thread and on Django's."""
    done = django_test(tmp_path, "notes", NOTES_LIVE_SERVER=server)
    assert done.returncode == 0, done.stderr
    assert "Ran 3 tests" in done.stderr and "\nOK" in done.stderr, done.stderr
