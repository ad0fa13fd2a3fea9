"""The checks of values: the environ, a status, response headers, exc_info.

Rule: each check looks at a value, flags on the request's :class:`_Request`
what is wrong with it, and never keeps or changes the value (what the app or
the server gave goes on unchanged, right or wrong).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from types import TracebackType

from ..http.grammar import TOKEN_STR
from ..http.response import HOP_BY_HOP
from .describe import _show
from .state import _Request

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATUS = re.compile(r"([0-9]{3}) (.*)", re.DOTALL)
_NOT_LATIN1 = re.compile(r"[^\x00-\xff]")
_REQUIRED = (
    "REQUEST_METHOD",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "wsgi.version",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.errors",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
)
_NEVER_EMPTY = ("REQUEST_METHOD", "SERVER_NAME", "SERVER_PORT")
_INPUT_METHODS = ("read", "readline", "readlines", "__iter__")
_ERRORS_METHODS = ("write", "writelines", "flush")


def _latin1(text: str) -> bool:
    return text.isascii() or _NOT_LATIN1.search(text) is None


def _iterable(value: object) -> bool:
    """Iterable by the iterator protocol or the old ``__getitem__`` one (PEP 3333 allows both)."""
    return isinstance(value, Iterable) or hasattr(type(value), "__getitem__")


# -- environ checks --------------------------------------------------------------------------


def _check_environ(state: _Request, environ: object) -> None:
    by = f"the environ passed in by {state.upstream}"
    if type(environ) is not dict:
        state.flag("environ-type", f"{by} is a {type(environ).__qualname__}, not a dict.")
    if not isinstance(environ, Mapping):
        return
    for key in _REQUIRED:
        if key not in environ:
            state.flag("environ-missing", f"{by} has no {key!r} key.", key)
        elif key in _NEVER_EMPTY and environ[key] == "":
            state.flag("environ-missing", f"{by} has an empty {key!r}.", key)
    if "SCRIPT_NAME" not in environ and "PATH_INFO" not in environ:
        state.flag(
            "environ-missing",
            f"{by} has neither 'SCRIPT_NAME' nor 'PATH_INFO' (PATH_INFO should be at least '/').",
            "PATH_INFO",
        )
    for key, value in list(environ.items()):
        if not isinstance(key, str) or "." in key:
            continue  # wsgi.* and extensions: any type
        if not isinstance(value, str):
            state.flag(
                "environ-not-str",
                f"in {by}, the CGI variable {key!r} is a {type(value).__qualname__}:"
                f" {_show(value)}.",
                key,
            )
        elif not _latin1(value):
            state.flag(
                "environ-not-latin1",
                f"in {by}, {key!r} has characters beyond U+00FF: {_show(value)} (decoded as"
                " UTF-8 instead of latin-1?).",
                key,
            )
    for key in ("SCRIPT_NAME", "PATH_INFO"):
        value = environ.get(key, "")
        if isinstance(value, str) and value and not value.startswith("/"):
            state.flag("environ-path", f"in {by}, {key} {value!r} does not start with '/'.", key)
    if environ.get("SCRIPT_NAME") == "/":
        state.flag(
            "environ-path",
            f"in {by}, SCRIPT_NAME is '/': an application at the root has SCRIPT_NAME ''.",
            "SCRIPT_NAME",
        )
    length = environ.get("CONTENT_LENGTH")
    if isinstance(length, str) and length and not (length.isascii() and length.isdigit()):
        state.flag("environ-content-length", f"in {by}, CONTENT_LENGTH is {length!r}.")
    version = environ.get("wsgi.version", (1, 0))
    if type(version) is not tuple:
        state.flag(
            "environ-wsgi-value", f"in {by}, wsgi.version is {_show(version)}.", "wsgi.version"
        )
    scheme = environ.get("wsgi.url_scheme", "http")
    if not isinstance(scheme, str):
        state.flag(
            "environ-wsgi-value", f"in {by}, wsgi.url_scheme is {_show(scheme)}.", "url_scheme"
        )
    for key, methods in (("wsgi.input", _INPUT_METHODS), ("wsgi.errors", _ERRORS_METHODS)):
        if key not in environ:
            continue
        stream = environ[key]
        missing = [name for name in methods if not hasattr(stream, name)]
        if missing:
            state.flag(
                "environ-wsgi-value",
                f"in {by}, {key} ({_show(stream)}) has no {', '.join(missing)}.",
                key,
            )


def _content_length(value: object) -> int | None:
    if isinstance(value, str) and value and value.isascii() and value.isdigit():
        return int(value)
    return None


# -- start_response's arguments --------------------------------------------------------------


def _check_status(state: _Request, status: object, by: str) -> int | None:
    """Flag what is wrong with a status; its code if one can be read from it."""
    if not isinstance(status, str):
        state.flag(
            "status-type",
            f"{by} the status {_show(status)}, a {type(status).__name__}.",
        )
        return None
    if not _latin1(status):
        state.flag(
            "response-not-latin1",
            f"{by} the status {status!r}, with characters beyond U+00FF.",
            "status",
        )
    match = _STATUS.fullmatch(status)
    code: int | None = None
    problem = ""
    if match is None:
        problem = "is not three digits, a space and a reason phrase"
        if status[:3].isascii() and status[:3].isdigit():
            code = int(status[:3])
    else:
        code = int(match.group(1))
        reason = match.group(2)
        if _CONTROL.search(status):
            problem = "contains a control character"
        elif reason[:1].isspace() or reason[-1:].isspace():
            problem = "has whitespace around the reason phrase"
    if problem:
        state.flag("status-format", f"{by} the status {status!r}, which {problem}.")
    if code is not None and not 200 <= code <= 599:
        kind = "an interim 1xx status" if 100 <= code < 200 else "outside 100..599"
        state.flag("status-code-range", f"{by} the status {status!r}: {kind}.")
    return code


def _check_headers(state: _Request, headers: object, by: str) -> int | None:
    """Flag what is wrong with response headers; the declared Content-Length if any."""
    if type(headers) is not list:
        state.flag(
            "headers-type",
            f"{by} the headers as a {type(headers).__qualname__}: {_show(headers)}.",
        )
        if not isinstance(headers, (list, tuple)):
            return None
    lengths: set[int] = set()
    bad_length = False
    for item in list(headers):
        if type(item) is not tuple or len(item) != 2:
            state.flag(
                "header-item",
                f"{by} the header {_show(item)}, not a (name, value) tuple.",
            )
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                continue
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            state.flag(
                "header-type",
                f"{by} the header {_show(item)}: a {type(name).__name__} name and a"
                f" {type(value).__name__} value.",
                _show(name),
            )
            continue
        key = name.lower()
        if not (_latin1(name) and _latin1(value)):
            state.flag(
                "response-not-latin1",
                f"{by} the header {name!r}: {value!r}, with characters beyond U+00FF.",
                key,
            )
        if TOKEN_STR.fullmatch(name) is None:
            state.flag("header-name", f"{by} the header name {name!r}.", key)
        if _CONTROL.search(value):
            state.flag(
                "header-value",
                f"{by} the header {name!r} the value {value!r}, with a control character.",
                key,
            )
        if key in HOP_BY_HOP:
            state.flag(
                "hop-by-hop",
                f"{by} the hop-by-hop header {name!r}: {value!r}.",
                key,
            )
        if key == "content-length":
            length = _content_length(value)
            if length is None:
                bad_length = True
                state.flag(
                    "content-length-value",
                    f"{by} Content-Length: {value!r}.",
                    "value",
                )
            else:
                lengths.add(length)
    if len(lengths) > 1:
        bad_length = True
        state.flag(
            "content-length-value",
            f"{by} different Content-Length values: {sorted(lengths)}.",
            "several",
        )
    if bad_length or not lengths:
        return None
    return lengths.pop()


def _valid_exc_info(exc_info: object) -> bool:
    return (
        type(exc_info) is tuple
        and len(exc_info) == 3
        and isinstance(exc_info[0], type)
        and issubclass(exc_info[0], BaseException)
        and isinstance(exc_info[1], exc_info[0])
        and (exc_info[2] is None or isinstance(exc_info[2], TracebackType))
    )
