"""The proxies the lint hands across the interface: checked ``wsgi.input`` and
``wsgi.errors`` streams, ``start_response``, ``write`` and the result iterable.

Rule: each proxy checks what passes through it and passes it on unchanged - the
same objects, to the same callee, in the same order - and gives the code using
it only what PEP 3333 gives (an attribute it does not give is missing).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, NoReturn

from .checks import _check_headers, _check_status, _valid_exc_info
from .describe import _describe, _direct_access, _show, _where
from .state import _checking, _Request

# -- wsgi.input and wsgi.errors --------------------------------------------------------------


class _Input:
    """``wsgi.input`` as PEP 3333 gives it: read, readline, readlines, iteration - checked."""

    def __init__(
        self, stream: Any, state: _Request, declared: int | None, terminated: bool
    ) -> None:
        self._stream = stream
        self._state = state
        self._declared = declared  # CONTENT_LENGTH, None if absent or empty
        self._terminated = terminated  # wsgi.input_terminated: reading to EOF is safe
        self._consumed = 0

    def _check_size(self, method: str, size: object, frame: FrameType | None) -> None:
        state = self._state
        unbounded = size is None or (isinstance(size, int) and size < 0)
        if method == "readline" and isinstance(size, int) and size < 0:
            state.flag(
                "input-readline-size",
                f"{_where(frame)} called wsgi.input.readline({size}).",
            )
        if self._terminated:
            return
        if unbounded:
            if method == "read" and self._declared is None:
                state.flag(
                    "input-read-unbounded",
                    f"{_where(frame)} called wsgi.input.read({'' if size is None else size})"
                    " with no CONTENT_LENGTH and no wsgi.input_terminated: a server that does"
                    " not simulate end-of-file blocks here until the client gives up.",
                )
        elif isinstance(size, int) and size > 0:
            remaining = (self._declared or 0) - self._consumed
            if size > remaining:
                declared = "absent" if self._declared is None else str(self._declared)
                state.flag(
                    "input-read-past-length",
                    f"{_where(frame)} called wsgi.input.{method}({size}) with"
                    f" {max(remaining, 0)} bytes left (CONTENT_LENGTH {declared}, no"
                    " wsgi.input_terminated): a server that does not simulate end-of-file"
                    " blocks waiting for bytes the client never sends.",
                )

    def _took(self, method: str, data: object) -> None:
        if isinstance(data, bytes):
            self._consumed += len(data)
        else:
            self._state.flag(
                "input-not-bytes",
                f"wsgi.input.{method}() (the stream of {self._state.upstream}) returned a"
                f" {type(data).__qualname__}: {_show(data)}.",
            )

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        frame = sys._getframe(2)
        state = self._state
        with _checking(f"wsgi.input.{method}"):
            size = args[0] if args else kwargs.get("size")
            self._check_size(method, size, frame)
        state.deliver()
        data = getattr(self._stream, method)(*args, **kwargs)
        with _checking(f"wsgi.input.{method}"):
            self._took(method, data)
        state.deliver()
        return data

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("read", args, kwargs)

    def readline(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("readline", args, kwargs)

    def readlines(self, *args: Any, **kwargs: Any) -> Any:
        lines = self._stream.readlines(*args, **kwargs)
        with _checking("wsgi.input.readlines"):
            for line in lines:
                self._took("readlines", line)
        self._state.deliver()
        return lines

    def __iter__(self) -> Iterator[Any]:
        for line in self._stream:
            with _checking("iterating wsgi.input"):
                self._took("__iter__", line)
            self._state.deliver()
            yield line

    def close(self) -> None:
        self._state.flag("stream-close", f"{_where(sys._getframe(1))} closed wsgi.input.")
        self._state.deliver()
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        _refuse(self, "wsgi.input", name, sys._getframe(1))

    def __repr__(self) -> str:
        return f"<lint wsgi.input around {_show(self._stream)}>"


class _Errors:
    """``wsgi.errors`` as PEP 3333 gives it: write, writelines, flush - checked."""

    def __init__(self, stream: Any, state: _Request) -> None:
        self._stream = stream
        self._state = state

    def _check(self, text: object, frame: FrameType | None) -> None:
        if not isinstance(text, str):
            self._state.flag(
                "errors-not-str",
                f"{_where(frame)} wrote a {type(text).__qualname__} to wsgi.errors: {_show(text)}.",
            )

    def write(self, text: Any) -> Any:
        with _checking("wsgi.errors.write"):
            self._check(text, sys._getframe(1))
        self._state.deliver()
        return self._stream.write(text)

    def writelines(self, lines: Any) -> Any:
        items = list(lines)
        with _checking("wsgi.errors.writelines"):
            frame = sys._getframe(1)
            for text in items:
                self._check(text, frame)
        self._state.deliver()
        return self._stream.writelines(items)

    def flush(self) -> Any:
        return self._stream.flush()

    def close(self) -> None:
        self._state.flag("stream-close", f"{_where(sys._getframe(1))} closed wsgi.errors.")
        self._state.deliver()
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        _refuse(self, "wsgi.errors", name, sys._getframe(1))

    def __repr__(self) -> str:
        return f"<lint wsgi.errors around {_show(self._stream)}>"


def _refuse(proxy: _Input | _Errors, what: str, name: str, frame: FrameType | None) -> NoReturn:
    """An attribute PEP 3333 does not give: reported when used directly, always missing."""
    if not name.startswith("_") and _direct_access(frame):
        state: _Request = proxy.__dict__["_state"]
        state.flag(
            "stream-method",
            f"{_where(frame)} used {what}.{name}, which PEP 3333 does not give (it works on some"
            " servers only).",
            (what, name),
        )
        state.deliver()
    raise AttributeError(f"{what} has no {name!r} under PEP 3333 (wsgibridge.lint)")


# -- start_response and write ----------------------------------------------------------------


class _StartResponse:
    """The ``start_response`` the application is given: checks, then calls the real one."""

    def __init__(self, inner: Callable[..., Any], state: _Request) -> None:
        self._inner = inner
        self._state = state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        state = self._state
        has_exc_info = False
        with _checking("start_response"):
            has_exc_info = self._check(args, kwargs, frame)
        state.deliver()
        state.start_calls += 1  # "This includes the case where the first call ... raised"
        try:
            write = self._inner(*args, **kwargs)
        except BaseException:
            if has_exc_info:
                state.raised_exc_info = True
            raise
        finally:
            del frame
        usable = True
        with _checking("start_response's return value"):
            usable = callable(write)
            if not usable:
                state.flag(
                    "start-response-no-write",
                    f"the start_response that {state.upstream} passed down returned"
                    f" {_show(write)}, not a write callable.",
                )
        state.deliver()
        return _Write(write, state) if usable else write

    def _check(self, args: tuple[Any, ...], kwargs: dict[str, Any], frame: FrameType) -> bool:
        """Check one call; True if it carries exc_info."""
        state = self._state
        by = f"{_where(frame)} passed start_response"
        if kwargs or len(args) not in (2, 3):
            given = [_show(a) for a in args] + [f"{k}={_show(v)}" for k, v in kwargs.items()]
            state.flag(
                "start-response-arguments",
                f"{_where(frame)} called start_response({', '.join(given)}).",
            )
        status = args[0] if args else kwargs.get("status")
        headers = (
            args[1] if len(args) > 1 else kwargs.get("response_headers", kwargs.get("headers"))
        )
        exc_info = args[2] if len(args) > 2 else kwargs.get("exc_info")
        try:
            has_exc_info = bool(exc_info)
        except Exception:
            has_exc_info = True
        if exc_info is not None and not _valid_exc_info(exc_info):
            hint = (
                " (sys.exc_info() called outside an except block)"
                if exc_info == (None, None, None)
                else ""
            )
            state.flag("exc-info-type", f"{by} exc_info={_show(exc_info)}{hint}.")
        if state.start_calls and not has_exc_info:
            state.flag(
                "start-response-twice",
                f"{_where(frame)} called start_response({_show(status)}, ...) a second time"
                " without exc_info.",
            )
        code = _check_status(state, status, by)
        declared = _check_headers(state, headers, by)
        if not state.start_calls or has_exc_info:
            # the headers that count: the first call's, or an exc_info call's replacement
            state.status_code = code
            state.declared = declared
        return has_exc_info


class _Write:
    """The ``write`` callable the application is given."""

    def __init__(self, inner: Callable[..., Any], state: _Request) -> None:
        self._inner = inner
        self._state = state

    def __call__(self, data: Any) -> Any:
        state = self._state
        with _checking("write"):
            frame = sys._getframe(1)
            by = _where(frame)
            if state.returned:
                state.flag(
                    "write-after-iteration",
                    f"{by} called write() after the application had returned its iterable"
                    " (from inside the iterable, or later).",
                )
            if isinstance(data, bytes):
                state.body(data, f"write() from {by}")
            else:
                state.flag(
                    "write-not-bytes",
                    f"{by} called write() with a {type(data).__qualname__}: {_show(data)}.",
                )
            del frame
        state.deliver()
        return self._inner(data)


# -- the result ------------------------------------------------------------------------------


class _Result:
    """The app's iterable, proxied: checks what it yields and records ``close()``."""

    def __init__(self, result: Any, state: _Request) -> None:
        self._closed = True  # until fully set up: __del__ must not report
        self._result = result
        self._state = state
        self._iterator: Iterator[Any] | None = None
        self._exhausted = False
        self._count = 0
        self._expected_len: int | None = None
        self._unclosed_reported = False
        self._name = _describe(result)
        self._has_close = hasattr(result, "close")
        if hasattr(type(result), "__len__"):
            try:
                self._expected_len = len(result)
            except Exception:
                self._expected_len = None
        self._closed = False

    def __iter__(self) -> _Result:
        return self

    def __next__(self) -> Any:
        state = self._state
        if self._closed:
            with _checking("the iterable"):
                state.flag(
                    "iterate-after-close",
                    f"{_where(sys._getframe(1))} asked the application's iterable for more"
                    " after calling its close().",
                )
            state.deliver()
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = iter(self._result)
            value = next(iterator)
        except StopIteration:
            if not self._exhausted and not self._closed:
                self._exhausted = True
                with _checking("the end of the body"):
                    self._ended()
                state.deliver()
            raise
        self._count += 1
        with _checking("a body chunk"):
            state.trapped("went on yielding")
            if state.start_calls == 0:
                state.flag(
                    "body-before-start-response",
                    f"{self._name} yielded {_show(value)} before start_response was called.",
                )
            if isinstance(value, bytes):
                state.body(value, self._name)
            else:
                state.flag(
                    "body-not-bytes",
                    f"{self._name} yielded a {type(value).__qualname__}: {_show(value)}.",
                )
        state.deliver()
        return value

    def _ended(self) -> None:
        state = self._state
        state.trapped("ended the body normally")
        state.end(self._name)
        expected = self._expected_len
        if expected is not None and expected != self._count:
            state.flag(
                "result-len-wrong",
                f"len() of {self._name} said {expected}, but it yielded {self._count} items.",
            )

    def close(self) -> None:
        state = self._state
        if self._closed:
            with _checking("close()"):
                state.flag(
                    "close-called-twice",
                    f"{_where(sys._getframe(1))} called close() on the application's iterable"
                    " a second time (the application's close() was not called again).",
                )
            state.deliver()
            return
        self._closed = True
        if self._has_close:
            self._result.close()

    def __del__(self) -> None:
        try:
            if self._closed or not self._has_close or self._unclosed_reported:
                return
            self._unclosed_reported = True
            state = self._state
            state.flag(
                "close-not-called",
                f"the iterable ({self._name}) returned to {state.upstream} was dropped without"
                " its close() being called.",
            )
        except Exception:
            return
        state.deliver()

    def _report_unclosed(self) -> bool:
        """For :meth:`LintMiddleware.check_closed`: report now if close() is still missing."""
        if self._closed or not self._has_close or self._unclosed_reported:
            return False
        self._unclosed_reported = True
        state = self._state
        state.flag(
            "close-not-called",
            f"the iterable ({self._name}) returned to {state.upstream} is still open: its"
            " close() has not been called.",
        )
        state.deliver()
        return True

    def __repr__(self) -> str:
        return f"<lint iterable around {self._name}>"
