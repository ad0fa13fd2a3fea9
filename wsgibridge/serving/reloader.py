"""Reloading the app: which files are its own, a watcher over them, a fresh import.

Rule: this module decides what "the app's code" is and how it is imported
anew; the arbiter (``prefork``) decides when.

*The app's files* are the ``.py`` files of the modules in ``sys.modules``
that do not come from the interpreter's standard library, from a
site-packages directory or from wsgibridge itself: the project being
developed, including a package installed in editable mode (its files live
in the project, not in site-packages).  ``__main__`` is left out: the
arbiter runs it, the workers never import it again.

*A fresh import* happens in a newly forked worker, which inherited the
arbiter's modules: it drops the app's modules from ``sys.modules`` (and a
cached ``.pyc`` older than its source: CPython checks the source's mtime in
whole seconds only, so an edit within the second of the last compile would
otherwise be missed) and calls the loader, which imports them from the
files as they are now.

:class:`Watcher` polls ``os.stat`` (no thread: the arbiter calls it from its
loop): a file whose modification time, size or inode changed, or that
appeared or vanished, is a change.  The ``--reload-extra`` globs are
expanded again every few rounds, so a new matching file counts too.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import site
import sys
import sysconfig
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

from .._types import WSGIApp

# How often the arbiter polls the files, and how many it stats per round at
# most (a larger set is covered over several rounds).
POLL_INTERVAL = 0.5
MAX_STATS_PER_ROUND = 5000
# The extra globs are expanded again every this many rounds.
GLOB_EVERY = 4

Signature = tuple[int, int, int] | None  # (mtime_ns, size, inode); None: missing


@functools.lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    """Directories whose modules are not the app's: the stdlib, site-packages, wsgibridge."""
    dirs: set[str] = set()
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    for paths in (sysconfig.get_paths(), sysconfig.get_paths(vars=base)):
        dirs.update(paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib"))
    getsitepackages = getattr(site, "getsitepackages", None)  # absent in some virtualenvs
    if getsitepackages is not None:
        dirs.update(getsitepackages())
    user_site = site.getusersitepackages()
    if isinstance(user_site, str):
        dirs.add(user_site)
    dirs.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # wsgibridge/
    return tuple(os.path.join(os.path.realpath(d), "") for d in dirs)


# Installed third-party code, wherever its directory is (Debian's dist-packages).
_INSTALLED = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def app_modules(modules: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Module name -> real path of its ``.py`` file, for the app's own modules."""
    modules = sys.modules if modules is None else modules
    excluded = _library_dirs()
    found: dict[str, str] = {}
    for name, module in list(modules.items()):
        if name == "__main__" or not isinstance(module, ModuleType):
            continue
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not file.endswith(".py"):
            continue  # built in, a namespace package, an extension module
        path = os.path.realpath(file)
        if not path.startswith(excluded) and not any(part in path for part in _INSTALLED):
            found[name] = path
    return found


def _drop_stale_bytecode(module: ModuleType) -> None:
    """Remove the module's cached ``.pyc`` if its source changed after it was written."""
    source = getattr(module, "__file__", None)
    cached = getattr(module, "__cached__", None)
    if not isinstance(source, str) or not isinstance(cached, str):
        return
    try:
        if os.stat(source).st_mtime_ns > os.stat(cached).st_mtime_ns:
            os.unlink(cached)
    except OSError:
        pass


def fresh_import(loader: Callable[[], WSGIApp]) -> WSGIApp:
    """Forget the app's modules, then import the app from its files as they are now."""
    for name in app_modules():
        module = sys.modules.pop(name, None)
        if module is not None:
            _drop_stale_bytecode(module)
    importlib.invalidate_caches()  # files created since the finders listed their directories
    return loader()


def _signature(path: str) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Watcher:
    """Polls the app's files and the extra globs; :meth:`poll` returns what changed."""

    def __init__(self, files: Iterable[str], globs: Sequence[str] = (), base: str = "") -> None:
        base = base or os.getcwd()
        self.globs = [
            pattern if os.path.isabs(pattern) else os.path.join(base, pattern) for pattern in globs
        ]
        self._known: dict[str, Signature] = {}
        self._order: list[str] = []
        self._next = 0  # where the next round starts, in _order
        self._rounds = 0
        self.add(files)
        self._expand(report=False)

    def add(self, files: Iterable[str]) -> None:
        """Watch more files (their state now is the baseline)."""
        for path in files:
            if path not in self._known:
                self._known[path] = _signature(path)
                self._order.append(path)

    def __len__(self) -> int:
        return len(self._known)

    def _expand(self, report: bool) -> list[str]:
        """Expand the globs; new matches are watched (and, if ``report``, changes)."""
        appeared: list[str] = []
        for pattern in self.globs:
            for match in glob.glob(pattern, recursive=True):
                path = os.path.realpath(match)
                if path not in self._known and os.path.isfile(path):
                    self._known[path] = _signature(path)
                    self._order.append(path)
                    appeared.append(path)
        return appeared if report else []

    def poll(self) -> list[str]:
        """One round: the files that changed since the last look (at most a bounded number)."""
        changed: list[str] = []
        self._rounds += 1
        if self.globs and self._rounds % GLOB_EVERY == 0:
            changed.extend(self._expand(report=True))
        order = self._order
        if not order:
            return changed
        count = min(len(order), MAX_STATS_PER_ROUND)
        start = self._next % len(order)
        for index in range(start, start + count):
            path = order[index % len(order)]
            now = _signature(path)
            if now != self._known[path]:
                self._known[path] = now
                changed.append(path)
        self._next = (start + count) % len(order)
        return changed
