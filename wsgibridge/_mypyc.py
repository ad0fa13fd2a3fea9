"""Which build runs: ``compiled`` is True when mypyc compiled the package (setup.py's MODULES).

Rule: the compiled build's two needs and nothing else, importable from every
layer.  setup.py compiles this module with the others into one shared
library, so this module being an extension module means they all are.
``mypyc_attr`` is mypy_extensions' class decorator, which mypyc reads when it
compiles (``allow_interpreted_subclasses=True`` on a class users subclass in
Python); at run time it does nothing, and without mypy_extensions (neither
build needs it installed) a no-op of the same name stands in.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.machinery import EXTENSION_SUFFIXES
from typing import TypeVar

__all__ = ["compiled", "mypyc_attr"]

_T = TypeVar("_T")

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # pragma: no cover  # mypy_extensions comes with mypy, not with us

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        return lambda cls: cls


compiled: bool = __file__.endswith(tuple(EXTENSION_SUFFIXES))
