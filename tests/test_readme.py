"""The README is the front door: it must stay true to the code it describes."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wsgibridge.cli import build_parser

from .conftest import ResponseReader
from .importroot import IMPORT_ROOT
from .test_serving_processes import ServerProcess

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_every_command_line_option_is_documented() -> None:
    """Each option `wsgibridge --help` lists appears in the README's text."""
    flags = {
        flag
        for action in build_parser()._actions
        for flag in action.option_strings
        if flag.startswith("--")
        and flag not in ("--help", "--version")
        and not flag.startswith("--no-")
    }
    missing = sorted(flag for flag in flags if f"`{flag}" not in README)
    assert missing == []


def test_no_option_the_command_line_does_not_have() -> None:
    """No documented `--option` that the CLI would refuse (exit 2)."""
    known = {flag for action in build_parser()._actions for flag in action.option_strings}
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*)", README))
    assert sorted(documented - known) == []


def test_examples_named_in_the_readme_exist() -> None:
    root = Path(__file__).parent.parent
    for name in re.findall(r"`(examples/[\w./-]+)`", README):
        assert (root / name).exists(), name


# -- every Python block runs as written ---------------------------------------------------

BLOCKS: list[str] = re.findall(r"^```python\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)


def block_with(marker: str) -> str:
    """The one README Python block containing ``marker``."""
    found = [block for block in BLOCKS if marker in block]
    assert len(found) == 1, f"{len(found)} blocks contain {marker!r}"
    return found[0]


# Each block is recognised by a line of its own; every block must have a runner below.
MARKERS = {
    "api": 'server = make_server(app, "127.0.0.1", 0)',
    "upload-guard": "class UploadGuard(WSGIRequestHandler):",
    "background": "with serve_in_thread(app) as server:",
    "pytest": "def test_home(live_server):",
    "faults": "def test_retries_past_dropped_connections(wsgi_server):",
    "webtest": "server = StopableWSGIServer.create(app)",
    "django-testcase": "server_thread_class = LiveServerThread  # was Django's, on wsgiref",
    "pytest-django": "server.thread = LiveServerThread.replacing(server.thread)",
}


def test_every_python_block_has_a_runner() -> None:
    assert BLOCKS, "no ```python blocks found"
    for block in BLOCKS:
        assert sum(marker in block for marker in MARKERS.values()) == 1, block[:200]


def on_a_free_port(block: str) -> str:
    """The block with its fixed port 8000 made 0, so a test never collides with a server."""
    assert "port=8000" in block
    return block.replace("port=8000", "port=0")


def write(tmp_path: Path, name: str, block: str) -> Path:
    path = tmp_path / name
    path.write_text(block, encoding="utf-8")
    return path


def test_the_api_block_serves_until_a_signal_then_drives_a_server(tmp_path: Path) -> None:
    """``serve(...)`` blocks until SIGINT; the rest then makes, serves and stops a server."""
    script = write(tmp_path, "api.py", on_a_free_port(block_with(MARKERS["api"])))
    server = ServerProcess([sys.executable, str(script)], cwd=tmp_path)
    try:
        [address] = server.serving()
        assert isinstance(address, tuple)
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert ResponseReader(sock).read_response().body == b"Hello, World!"
        server.send(signal.SIGINT)
        assert server.wait(10) == 0, server.stderr()
    finally:
        server.close()


def test_the_upload_guard_block_refuses_before_the_body(tmp_path: Path) -> None:
    """The check_continue hook answers 401 to an upload without credentials before its body
    is sent, and lets one with credentials through to the app (after 100 Continue)."""
    script = write(tmp_path, "guard.py", on_a_free_port(block_with(MARKERS["upload-guard"])))
    server = ServerProcess([sys.executable, str(script)], cwd=tmp_path)
    try:
        [address] = server.serving()
        assert isinstance(address, tuple)
        head = "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(head.encode() + b"\r\n")
            refused = ResponseReader(sock).read_response()
        assert refused.status == 401
        assert refused.header("WWW-Authenticate") == 'Bearer realm="uploads"'
        with socket.create_connection(address, timeout=5) as sock:
            sock.sendall(head.encode() + b"Authorization: Bearer t\r\n\r\n")
            reader = ResponseReader(sock)
            assert reader.read_response().status == 100
            sock.sendall(b"hello")
            stored = reader.read_response()
        assert (stored.status, stored.body) == (201, b"stored 5 bytes\n")
        server.send(signal.SIGINT)
        assert server.wait(10) == 0, server.stderr()
    finally:
        server.close()


@pytest.mark.parametrize("name", ["background", "webtest"])
def test_the_self_contained_blocks_run(tmp_path: Path, name: str) -> None:
    script = write(tmp_path, f"{name}.py", block_with(MARKERS[name]))
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr


def test_the_pytest_block_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme_block=block_with(MARKERS["pytest"]))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-p", "no:django")
    result.assert_outcomes(passed=3)


# -- the Django blocks, with the example site (examples/django_site) -----------------------

SITE = Path(__file__).parent.parent / "examples" / "django_site"


def test_the_django_testcase_block_passes_under_djangos_runner(tmp_path: Path) -> None:
    pytest.importorskip("django", reason="the test extra installs Django")
    from .testing.test_django import django_test

    write(tmp_path, "readme_live.py", block_with(MARKERS["django-testcase"]))
    done = django_test(tmp_path, "readme_live")
    assert done.returncode == 0, done.stderr
    assert "Ran 1 test" in done.stderr, done.stderr


PYTEST_DJANGO_TESTS = """
import requests

from notes.models import Note


def test_pages_over_one_connection(live_server):
    with requests.Session() as http:
        http.trust_env = False
        assert http.get(live_server.url + "/").status_code == 200
        assert http.get(live_server.url + "/admin/login/").status_code == 200
    assert [r.path for r in live_server.thread.requests][-2:] == ["/", "/admin/login/"]
    assert type(live_server.thread).__module__ == "wsgibridge.testing.django"


def test_the_live_server_sees_the_test_database(live_server):
    Note.objects.create(title="made by the test")
    page = requests.get(live_server.url + "/", timeout=5)
    assert "made by the test" in page.text
"""


def test_the_pytest_django_block_moves_live_server_onto_wsgibridge(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("pytest_django", reason="the test extra installs pytest-django")
    pytester.makeconftest(block_with(MARKERS["pytest-django"]))
    pytester.makepyfile(test_site=PYTEST_DJANGO_TESTS)
    monkeypatch.setenv("PYTHONPATH", f"{SITE}:{IMPORT_ROOT}")
    monkeypatch.setenv("DJANGO_SITE_DB", str(pytester.path / "db.sqlite3"))
    monkeypatch.delenv("DJANGO_SETTINGS_MODULE", raising=False)
    result = pytester.runpytest_subprocess(
        "-q", "-p", "no:cacheprovider", "-p", "pytest_django", "--ds=mysite.settings", timeout=120
    )
    result.assert_outcomes(passed=2)


def test_the_faults_block_passes(pytester: pytest.Pytester) -> None:
    """The retry, timeout and raw-client tests pass as written: each fault did its part."""
    pytester.makepyfile(test_readme_faults=block_with(MARKERS["faults"]))
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
