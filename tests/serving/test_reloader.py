"""``reloader``: which modules are the app's, the stat-polling watcher, a fresh import."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import wsgibridge
from wsgibridge.serving import reloader
from wsgibridge.serving.reloader import Watcher, app_modules, fresh_import


@pytest.fixture
def moddir(tmp_path: Path) -> Iterator[Path]:
    """A directory on sys.path whose modules are forgotten afterwards."""
    sys.path.insert(0, str(tmp_path))
    before = set(sys.modules)
    try:
        yield tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        for name in set(sys.modules) - before:
            del sys.modules[name]


def test_app_modules_are_the_project_s_not_the_stdlib_nor_wsgibridge(moddir: Path) -> None:
    (moddir / "projmod.py").write_text("X = 1\n")
    importlib.import_module("projmod")
    found = app_modules()
    assert found["projmod"] == os.path.realpath(moddir / "projmod.py")
    assert "os" not in found and "json" not in found
    assert not any(name.startswith("wsgibridge") for name in found)
    assert "pytest" not in found  # site-packages
    assert "__main__" not in found


def test_fresh_import_sees_a_same_size_edit_within_the_second(
    moddir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit that keeps the size and the whole-second mtime the .pyc records: CPython
    alone would use the stale .pyc; a fresh import drops it and compiles the edit."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # PYTHONDONTWRITEBYTECODE may be set
    source = moddir / "samesize.py"
    source.write_text("VALUE = 'aaa'\n")
    module = importlib.import_module("samesize")
    assert module.VALUE == "aaa"
    cached = module.__cached__
    assert cached is not None and os.path.exists(cached)
    compiled = source.stat().st_mtime_ns
    source.write_text("VALUE = 'bbb'\n")
    os.utime(source, ns=(compiled, compiled))  # what the .pyc header says
    os.utime(cached, ns=(compiled - 1, compiled - 1))  # written before the edit
    # Only this module is the "app" here (the test suite's own modules stay).
    monkeypatch.setattr(reloader, "app_modules", lambda: {"samesize": str(source)})

    def loader() -> object:
        return importlib.import_module("samesize")

    fresh: object = fresh_import(loader)  # type: ignore[arg-type]
    assert fresh is not module
    assert fresh.VALUE == "bbb"  # type: ignore[attr-defined]


def test_watcher_reports_modified_deleted_and_new_matching_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reloader, "GLOB_EVERY", 1)
    module = tmp_path / "mod.py"
    module.write_text("A = 1\n")
    (tmp_path / "tpl").mkdir()
    template = tmp_path / "tpl" / "a.html"
    template.write_text("<p>")
    watcher = Watcher([str(module)], ["tpl/**/*.html"], base=str(tmp_path))
    assert len(watcher) == 2
    assert watcher.poll() == []
    module.write_text("A = 22\n")
    assert watcher.poll() == [str(module)]
    assert watcher.poll() == []
    new = tmp_path / "tpl" / "deep" / "b.html"
    new.parent.mkdir()
    new.write_text("<b>")
    assert watcher.poll() == [os.path.realpath(new)]
    template.unlink()
    assert watcher.poll() == [os.path.realpath(template)]


def test_watcher_stats_a_bounded_number_of_files_per_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reloader, "MAX_STATS_PER_ROUND", 2)
    files = [tmp_path / f"f{n}.py" for n in range(5)]
    for file in files:
        file.write_text("")
    watcher = Watcher([str(file) for file in files])
    for file in files:
        file.write_text("changed")
    seen: list[str] = []
    for _ in range(3):
        round_ = watcher.poll()
        assert len(round_) <= 2
        seen += round_
    assert sorted(seen) == sorted(str(file) for file in files)


def test_the_wsgibridge_directory_is_a_library_directory() -> None:
    package = os.path.realpath(os.path.dirname(wsgibridge.__file__))
    assert any(package.startswith(d.rstrip(os.sep)) for d in reloader._library_dirs())
