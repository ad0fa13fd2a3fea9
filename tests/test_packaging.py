"""The built wheel ships what an installed wsgibridge needs: every sub-package, py.typed.

Built from a copy of the tracked files (the checkout is left as it was), with
the environment's own setuptools and wheel (no download), then read as a zip.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
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


def test_the_wheel_holds_every_module_and_py_typed(tmp_path: Path) -> None:
    source = tmp_path / "src"
    for name in tracked_files():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*command, "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("wsgibridge-*.whl")
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
