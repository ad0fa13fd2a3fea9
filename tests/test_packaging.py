"""The built wheel ships what an installed wsgibridge needs: every sub-package, py.typed.

Built from a copy of the tracked files (the checkout is left as it was), with
the environment's own setuptools and wheel (no download), then read as a zip.
The usual wheel is pure Python; ``WSGIBRIDGE_COMPILE=1`` builds the compiled
one (setup.py), tested here end to end where a C compiler and mypy are at hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "wsgibridge"

pytestmark = pytest.mark.integration  # builds the project: run or skip as a group


def tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def copy_tracked(tmp_path: Path) -> Path:
    source = tmp_path / "src"
    for name in tracked_files():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    return source


def build(source: Path, dist: Path, *, what: str = "wheel", compile: bool = False) -> Path:
    """``pip wheel`` (or the backend's sdist) of ``source`` into ``dist``, no build isolation."""
    env = {name: value for name, value in os.environ.items() if name != "WSGIBRIDGE_COMPILE"}
    if compile:
        env["WSGIBRIDGE_COMPILE"] = "1"
    if what == "wheel":
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        command += ["-w", str(dist), str(source)]
    else:  # the PEP 517 hook itself: pip has no sdist command, and build is not a test need
        hook = f"import wsgibridge_build as b; b.build_sdist({str(dist)!r})"
        command = [sys.executable, "-c", hook]
        env["PYTHONPATH"] = str(source / "build_backend")
    built = subprocess.run(
        command, cwd=source, env=env, capture_output=True, text=True, timeout=600
    )
    assert built.returncode == 0, built.stderr
    pattern = "wsgibridge-*.whl" if what == "wheel" else "wsgibridge-*.tar.gz"
    (artefact,) = dist.glob(pattern)
    return artefact


def extension_modules(names: set[str]) -> set[str]:
    return {name for name in names if name.endswith((*EXTENSION_SUFFIXES, ".so", ".pyd"))}


def test_the_wheel_holds_every_module_and_py_typed(tmp_path: Path) -> None:
    wheel = build(copy_tracked(tmp_path), tmp_path / "dist")
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = set(tracked_files())
    expected = {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(ROOT).as_posix() in tracked
    }
    assert expected - names == set(), sorted(expected - names)
    assert "wsgibridge/py.typed" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "wsgibridge = wsgibridge.testing.plugin" in text  # the pytest11 plugin
    assert "wsgibridge = wsgibridge.cli:main" in text
    # The usual build is pure Python: no extension module, a py3-none-any wheel.
    assert extension_modules(names) == set()
    assert wheel.name.endswith("-py3-none-any.whl")


def test_the_sdist_builds_as_the_checkout_does(tmp_path: Path) -> None:
    """The sdist carries setup.py and the in-tree backend pyproject.toml names."""
    sdist = build(copy_tracked(tmp_path), tmp_path / "dist", what="sdist")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "setup.py", "build_backend/wsgibridge_build.py"} <= names
    assert "wsgibridge/_mypyc.py" in names


def test_a_wheel_holds_nothing_an_earlier_build_left_in_build(tmp_path: Path) -> None:
    """setuptools packages all of build/lib*: stale modules there (another build's, say a
    compiled one with a longer module list) must not reach the wheel."""
    source = copy_tracked(tmp_path)
    stale = f"wsgibridge/stale{EXTENSION_SUFFIXES[0]}"
    for lib in ("lib", f"lib.{sysconfig.get_platform()}-{sys.implementation.cache_tag}"):
        (source / "build" / lib / stale).parent.mkdir(parents=True)
        (source / "build" / lib / stale).write_bytes(b"")
    wheel = build(source, tmp_path / "dist")
    assert extension_modules(set(zipfile.ZipFile(wheel).namelist())) == set()


SERVE_ONE = textwrap.dedent(
    """
    import http.client, sys, threading
    import wsgibridge

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"compiled" if wsgibridge.compiled else b"pure"]

    server = wsgibridge.make_server(app, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        conn.request("GET", "/")
        response = conn.getresponse()
        print(response.status, response.read().decode(), wsgibridge.__file__)
    finally:
        server.stop(timeout=5)
        thread.join(10)
    """
)


def c_compiler() -> str | None:
    name = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(name)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(find_spec("mypyc") is None, reason="needs mypy (mypyc) to compile")
@pytest.mark.skipif(c_compiler() is None, reason="needs the C compiler Python was built with")
@pytest.mark.skipif(
    os.environ.get("WSGIBRIDGE_EXPECT_COMPILED") == "1",
    reason="this run's wsgibridge is the compiled build, installed by .ci/run",
)
def test_the_compiled_wheel_installs_serves_and_says_so(tmp_path: Path) -> None:
    """WSGIBRIDGE_COMPILE=1: a platform wheel with the listed modules compiled, which
    runs on the standard library alone (``-S``: no site-packages, so no mypy_extensions)."""
    wheel = build(copy_tracked(tmp_path), tmp_path / "dist", compile=True)
    assert not wheel.name.endswith("-none-any.whl"), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "wsgibridge/http/parser.py" in names  # the sources ship beside the modules
    assert any(name.startswith("wsgibridge/http/parser.") for name in extension_modules(names))
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    installed = subprocess.run(
        [*pip, "--target", str(target), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    env = {name: value for name, value in os.environ.items() if not name.startswith("PYTHON")}
    env["PYTHONPATH"] = str(target)

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-S", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    status, body, where = run("-c", SERVE_ONE).split()
    assert (status, body) == ("200", "compiled")
    assert where.startswith(str(target))
    version = run("-m", "wsgibridge", "--version")
    assert version.endswith("(compiled with mypyc)\n"), version
