"""The build backend: setuptools', and mypy as a build requirement when WSGIBRIDGE_COMPILE=1.

pyproject.toml names this module (``backend-path``) so that the usual build
needs setuptools alone, as before, while ``WSGIBRIDGE_COMPILE=1 pip install .``
gets mypy (which contains mypyc) into its isolated build environment;
setup.py decides what is compiled.  Only the wheel is compiled: every other
hook runs setup.py as the pure build (the requirements are asked for before
mypy is installed, the metadata is the same either way, an sdist holds
sources), and an editable install is refused, as its extension modules would
sit in the checkout, in front of the sources.  Each wheel starts from an
empty ``build/lib*``: what a previous build left there would be packaged too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from setuptools import build_meta as _setuptools

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

VARIABLE = "WSGIBRIDGE_COMPILE"
MYPY = "mypy>=2.4"  # the oldest mypyc the compiled build was tested with


def compiling() -> bool:
    """The same test as setup.py's: the variable is exactly 1."""
    return os.environ.get(VARIABLE) == "1"


@contextlib.contextmanager
def _pure() -> Iterator[None]:
    saved = os.environ.pop(VARIABLE, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[VARIABLE] = saved


def _as_pure(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _pure():
            return hook(*args, **kwargs)

    return run


def _not_editable(hook: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(hook)
    def run(*args: Any, **kwargs: Any) -> Any:
        if compiling():
            raise SystemExit(
                f"{VARIABLE}=1 builds a wheel: `pip install .`, not `pip install -e .`"
            )
        return hook(*args, **kwargs)

    return run


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    with _pure():
        requires: list[str] = list(_setuptools.get_requires_for_build_wheel(config_settings))
    return [*requires, MYPY] if compiling() else requires


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    # setuptools copies all of build/lib* into the wheel, so a wheel would carry what
    # an earlier build left there: a module since deleted, or the extension modules
    # of a compiled build with a longer module list. mypyc's C and the objects stay.
    for stale in Path("build").glob("lib*"):
        shutil.rmtree(stale)
    name: str = _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    return name


prepare_metadata_for_build_wheel = _as_pure(_setuptools.prepare_metadata_for_build_wheel)
get_requires_for_build_sdist = _as_pure(_setuptools.get_requires_for_build_sdist)
build_sdist = _as_pure(_setuptools.build_sdist)
get_requires_for_build_editable = _not_editable(_setuptools.get_requires_for_build_editable)
prepare_metadata_for_build_editable = _not_editable(_setuptools.prepare_metadata_for_build_editable)
build_editable = _not_editable(_setuptools.build_editable)
