"""How the lint names things in a report: values, code locations, apps, the request.

Rule: every function here turns what crosses the interface (whatever it is)
into text or a yes/no, and none of them raises: a broken ``repr``, a frame
without code or an environ that is not a mapping each get a description of
their own.
"""

from __future__ import annotations

import dis
import os
import reprlib
from collections.abc import Mapping
from types import CodeType, FrameType, FunctionType, MethodType
from urllib.parse import quote

from ..accesslog import escape_log

_REQUEST_MAX = 300  # characters of the request line kept in a report
# The opcodes of ``obj.name`` (as opposed to hasattr(obj, "name") or getattr(obj, "name", x)).
_ATTR_OPS = frozenset(dis.opmap[name] for name in ("LOAD_ATTR", "LOAD_METHOD") if name in dis.opmap)

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 4
_repr.maxlevel = 3


def _show(value: object) -> str:
    """A short repr that never raises."""
    try:
        return _repr.repr(value)
    except Exception:
        return f"<{type(value).__name__} object with a broken repr>"


def _where(frame: FrameType | None) -> str:
    """``qualname (file.py:line)`` of a frame."""
    if frame is None:
        return "unknown code"
    try:
        code = frame.f_code
        return f"{_qualname(code)} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"
    except Exception:
        return "unknown code"


def _qualname(code: CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))


def _describe(obj: object) -> str:
    """A name for an app or an iterable, to put in a message."""
    try:
        code = getattr(obj, "gi_code", None)  # a generator
        if isinstance(code, CodeType):
            where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            return f"generator {_qualname(code)} ({where})"
        if isinstance(obj, MethodType):
            obj = obj.__func__
        if isinstance(obj, FunctionType):
            code = obj.__code__
            where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            return f"{obj.__module__}.{obj.__qualname__} ({where})"
        kind = type(obj)
        return f"a {kind.__module__}.{kind.__qualname__} object"
    except Exception:
        return "the application"


def _direct_access(frame: FrameType | None) -> bool:
    """True if ``frame`` is at an ``obj.name`` load rather than a call such as hasattr()."""
    if frame is None:
        return True
    try:
        return frame.f_code.co_code[frame.f_lasti] in _ATTR_OPS
    except Exception:
        return True


def _request_line(environ: object) -> str:
    """'GET /x?y=1 HTTP/1.1' from an environ (whatever is in it), escaped for a log."""
    try:
        if not isinstance(environ, Mapping):
            return f"(no request: the environ is {_show(environ)})"

        def text(key: str, default: str = "") -> str:
            value = environ.get(key, default)
            return value if isinstance(value, str) else _show(value)

        target = environ.get("REQUEST_URI")
        if not isinstance(target, str) or not target:
            path = text("SCRIPT_NAME") + text("PATH_INFO")
            target = quote(path, safe="/;=,~!$&'()*+@:%", encoding="latin-1", errors="replace")
            query = text("QUERY_STRING")
            if query:
                target += "?" + query
        line = f"{text('REQUEST_METHOD', '-')} {target or '/'} {text('SERVER_PROTOCOL', '-')}"
        if len(line) > _REQUEST_MAX:
            line = line[: _REQUEST_MAX - 3] + "..."
        return escape_log(line)
    except Exception:
        return "(unknown request)"
