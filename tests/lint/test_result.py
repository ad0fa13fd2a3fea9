"""The result and the body: what the app returns, yields or writes, and its close().

Rule: one test per rule, named after it, each with an app or middleware that
returns, yields or writes the wrong thing (app side), or that fails to close
the iterable it was given, or closes it twice (server side).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from wsgibridge.lint import LintMiddleware, LintViolation

from .helpers import (
    TEXT,
    App,
    Closing,
    Environ,
    Recorder,
    StartResponse,
    footer,
    gzipper,
    make_environ,
    rules_of,
    run,
    simple,
    write_app,
)

# -- the result and the body (app side) --------------------------------------------------------


def test_result_not_iterable() -> None:
    """PEP 3333: "An application must return an iterable object, even if it uses write()
    to produce all or part of its response body."."""

    def app(environ: Environ, start_response: StartResponse) -> None:
        start_response("200 OK", TEXT)(b"all of it")

    outcome = run(app)
    assert outcome.rules == ["result-not-iterable"]
    assert outcome.result_type is type(None)  # None goes back to the server


@pytest.mark.parametrize("result", [b"hello", "hello"])
def test_result_is_string(result: bytes | str) -> None:
    """PEP 3333: "the application object must always return an iterable yielding zero or
    more bytestrings." - a bytes object iterates as ints, a str as characters."""

    def app(environ: Environ, start_response: StartResponse) -> bytes | str:
        start_response("200 OK", TEXT)
        return result

    outcome = run(app)
    assert outcome.rules == ["result-is-string"]
    assert outcome.result_type is type(result)


def test_start_response_missing() -> None:
    """PEP 3333: "the application must invoke the start_response() callable before the
    iterable yields its first body bytestring"."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        return [b"x"]

    def generator(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        yield from ()

    assert rules_of(app) == ["start-response-missing"]
    assert rules_of(generator) == ["start-response-missing"]


def test_body_before_start_response() -> None:
    """PEP 3333: "the application must invoke the start_response() callable before the
    iterable yields its first body bytestring"."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        yield b"too early"
        start_response("200 OK", TEXT)

    outcome = run(app)
    assert outcome.rules == ["body-before-start-response"]
    assert "generator test_body_before_start_response.<locals>.app" in outcome.violations[0].message


def test_body_not_bytes() -> None:
    """PEP 3333: "For values referred to in this specification as "bytestrings" (i.e.,
    values [...] yielded by the application), the value must be of type bytes"."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[Any]:
        start_response("200 OK", TEXT)
        yield "text"
        yield "more text"
        yield bytearray(b"x")

    outcome = run(app)
    assert outcome.rules == ["body-not-bytes"]  # once per request
    assert outcome.server.chunks == ["text", "more text", bytearray(b"x")]  # unchanged

    def list_app(environ: Environ, start_response: StartResponse) -> list[Any]:
        start_response("200 OK", TEXT)
        return ["text"]

    assert rules_of(list_app) == ["body-not-bytes"]


def test_write_not_bytes() -> None:
    """PEP 3333: "values [...] passed to write() [...] must be of type bytes"."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)("text")
        return []

    outcome = run(app)
    assert outcome.rules == ["write-not-bytes"]
    assert outcome.server.chunks == ["text"]


def test_write_after_iteration() -> None:
    """PEP 3333: "Applications must not invoke write() from within their return
    iterable"."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"pushed")
        yield b"yielded"

    outcome = run(app)
    assert outcome.rules == ["write-after-iteration"]
    assert outcome.body == b"pushedyielded"

    def lazy_middleware(app: App) -> App:
        def middleware(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
            yield from app(environ, start_response)  # calls a write() app while iterated

        return middleware

    outcome = run(lazy_middleware(write_app))
    assert outcome.rules == ["write-after-iteration"]
    assert "write_app" in outcome.message("write-after-iteration")


def test_content_length_exceeded() -> None:
    """PEP 3333: "If the application supplies a Content-Length header, the server should
    not transmit more bytes to the client than the header allows"."""
    app = simple(b"hello", [("Content-Length", "5")])
    outcome = run(footer(app))
    assert outcome.rules == ["content-length-exceeded"]
    assert "Content-Length: 5 but generator footer.<locals>.add_footer" in outcome.message(
        "content-length-exceeded"
    )


def test_content_length_short() -> None:
    """PEP 3333: "if the application does not provide *enough* data to meet its stated
    Content-Length, the server should close the connection and log or otherwise report
    the error."."""
    body = b"hello world " * 20
    outcome = run(gzipper(simple(body, [("Content-Length", str(len(body)))])))
    assert outcome.rules == ["content-length-short"]
    assert f"Content-Length: {len(body)} but the body ended after" in outcome.message(
        "content-length-short"
    )


def test_body_forbidden() -> None:
    """RFC 9110 §15.3.5: "A 204 response is terminated by the end of the header section;
    it cannot contain content or trailers."."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("204 No Content", [])
        return [b"{}"]

    assert rules_of(app) == ["body-forbidden"]


def test_result_len_wrong() -> None:
    """PEP 3333: "if the iterable returned by the application provides a working __len__()
    method, it must return an accurate result."."""

    class Body:
        def __init__(self, *parts: bytes) -> None:
            self.parts = parts

        def __len__(self) -> int:
            return 1  # the mistake: len of the first part's list, not of the parts

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.parts)

    def app(environ: Environ, start_response: StartResponse) -> Body:
        start_response("200 OK", TEXT)
        return Body(b"a", b"b")

    assert rules_of(app) == ["result-len-wrong"]


# -- close() (server side) ---------------------------------------------------------------------


def test_close_not_called() -> None:
    """PEP 3333: "If the iterable returned by the application has a close() method, the
    server or gateway must call that method upon completion of the current request"."""

    def buffering(app: App) -> App:
        def buffer_middleware(environ: Environ, start_response: StartResponse) -> list[bytes]:
            return [b"".join(app(environ, start_response))]  # the mistake: no close()

        return buffer_middleware

    app = Closing()
    outcome = run(app, above=buffering)
    assert outcome.rules == ["close-not-called"]
    assert "buffer_middleware" in outcome.message("close-not-called")
    assert app.closed == 0

    # a server that never closes: found when the iterable is dropped
    outcome = run(Closing(), close=False)
    assert outcome.rules == ["close-not-called"]


def test_close_not_called_explicit_check() -> None:
    """``check_closed()`` reports the iterables still open, deterministically, once."""
    violations: list[LintViolation] = []
    lint = LintMiddleware(Closing(), report=violations.append)
    result = lint(make_environ(), Recorder().start_response)
    assert list(result) == [b"body"]
    assert lint.check_closed() == 1
    assert [v.rule for v in violations] == ["close-not-called"]
    del result
    gc.collect()
    assert lint.check_closed() == 0
    assert [v.rule for v in violations] == ["close-not-called"]  # not again from __del__


def test_close_called_twice() -> None:
    """PEP 3333: the server "must call that method upon completion of the current
    request" - once; the app's close() is not called a second time."""

    def closing_twice(app: App) -> App:
        class Wrapped:
            def __init__(self, inner: Any) -> None:
                self.inner = inner

            def __iter__(self) -> Iterator[bytes]:
                yield from self.inner
                self.inner.close()  # the mistake: closes here...

            def close(self) -> None:
                self.inner.close()  # ...and when the server closes

        def middleware(environ: Environ, start_response: StartResponse) -> Wrapped:
            return Wrapped(app(environ, start_response))

        return middleware

    app = Closing()
    outcome = run(app, above=closing_twice)
    assert outcome.rules == ["close-called-twice"]
    assert "Wrapped.close" in outcome.message("close-called-twice")
    assert app.closed == 1


def test_iterate_after_close() -> None:
    """PEP 3333: "The close() idiom allows an application to release critical resources
    at the end of a request" - nothing is read after it."""
    violations: list[LintViolation] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"a"
        yield b"b"

    result = LintMiddleware(app, report=violations.append)(
        make_environ(), Recorder().start_response
    )
    iterator = iter(result)
    assert next(iterator) == b"a"
    result.close()  # type: ignore[attr-defined]
    with pytest.raises(StopIteration):  # the closed generator has ended
        next(iterator)
    assert [v.rule for v in violations] == ["iterate-after-close"]
