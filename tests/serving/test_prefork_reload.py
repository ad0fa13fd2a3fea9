"""``--reload``: a changed file of the app restarts the workers with the new code.

Real processes: the app module lives in the test's directory; the test edits
it and sees the new body, breaks it and sees the old code keep serving with
the import error logged, fixes it and sees the fix.  Edits keep the file's
size (``v1`` -> ``v2``), as the worst case for a ``.pyc`` check; the stale
``.pyc`` itself is tested in ``test_reloader`` (the suite may run with
PYTHONDONTWRITEBYTECODE, so these servers may write none).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..test_serving_processes import Address, Launcher, needs_proc
from .prefork_helpers import Load, launcher_in, matching, wait_until, write_app

pytestmark = pytest.mark.integration


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    yield from launcher_in(tmp_path)


def version(launch: Launcher, address: Address) -> str:
    response = launch.get(address)
    assert response.status == 200
    return response.body.decode().split()[1]


def wait_for_version(launch: Launcher, address: Address, wanted: str, timeout: float) -> float:
    """Seconds until ``/`` answers with ``wanted`` (polled every 20 ms)."""
    start = time.monotonic()
    while version(launch, address) != wanted:
        assert time.monotonic() - start < timeout, f"still not {wanted} after {timeout} s"
        time.sleep(0.02)
    return time.monotonic() - start


@needs_proc
def test_reload_serves_the_edited_code_then_survives_a_broken_edit(
    launch: Launcher, tmp_path: Path
) -> None:
    server = launch.start("--port", "0", "--reload", app="verapp:app")
    [address] = server.serving()
    server.wait_for(r"reload: watching \d+ files for changes")
    assert version(launch, address) == "v1"

    write_app(tmp_path, "v2")
    took = wait_for_version(launch, address, "v2", timeout=10)
    print(f"--reload: the edited code answered {took * 1000:.0f} ms after the write")
    assert took < 3.0  # within a second on an idle machine; margin for a loaded one
    server.wait_for(r"reload: .*verapp\.py changed")

    # A broken edit: the error is logged, the v2 worker serves on.
    (tmp_path / "verapp.py").write_text("def app(:\n")
    server.wait_for(r"cannot import the app: .*SyntaxError", timeout=10)
    server.wait_for("reload failed", timeout=10)
    load = Load(address, keepalive=1, fresh=1, pause=0.01)
    try:
        time.sleep(0.6)  # (an editor's write may be seen half done, then done)
        failed = len(matching(server, "reload failed"))
        time.sleep(1.2)  # more polls of the still broken file: no further attempt
        assert len(matching(server, "reload failed")) == failed
    finally:
        load.stop()
    assert load.failures == []
    assert {v for _, v in load.answers} == {"v2"}

    write_app(tmp_path, "v3")
    took = wait_for_version(launch, address, "v3", timeout=10)
    print(f"--reload: the fixed code answered {took * 1000:.0f} ms after the write")


@needs_proc
def test_reload_follows_a_module_the_app_imports_and_an_extra_glob(
    launch: Launcher, tmp_path: Path
) -> None:
    """A helper module the app imports, and a data file named by ``--reload-extra``."""
    (tmp_path / "helper.py").write_text('WORD = "one"\n')
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "greeting.txt").write_text("hello")
    (tmp_path / "multi.py").write_text(
        "import helper\n"
        "GREETING = open('data/greeting.txt').read()\n\n"
        "def app(environ, start_response):\n"
        "    body = f'{helper.WORD} {GREETING}'.encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    server = launch.start(
        "--port", "0", "--reload", "--reload-extra", "data/**/*.txt", app="multi:app"
    )
    [address] = server.serving()
    assert launch.get(address).body == b"one hello"
    (tmp_path / "helper.py").write_text('WORD = "two"\n')
    wait_until(lambda: launch.get(address).body == b"two hello", 10, "helper change", server)
    (tmp_path / "data" / "greeting.txt").write_text("howdy")
    wait_until(lambda: launch.get(address).body == b"two howdy", 10, "data change", server)
    server.wait_for(r"reload: .*greeting\.txt changed")


def test_reload_needs_the_app_as_module_and_name_in_the_api() -> None:
    """``serve(app_object, reload=True)`` cannot import new code: a ValueError says what
    to give instead, before anything is bound."""
    from wsgibridge import serve

    def app(environ: object, start_response: object) -> list[bytes]:
        return []

    with pytest.raises(ValueError, match="loader="):
        serve(app, port=0, reload=True)


def test_write_app_keeps_the_size(tmp_path: Path) -> None:
    """The premise of the same-size edits above."""
    write_app(tmp_path, "v1")
    first = (tmp_path / "verapp.py").stat().st_size
    write_app(tmp_path, "v2")
    assert (tmp_path / "verapp.py").stat().st_size == first
