"""``wsgibridge.lint``: a PEP 3333 lint that reports (rule, message, fix, reference, request)
and lets the request go on (issue 5, item 4).

Every rule has a test named after it, with a deliberately broken app, middleware or
server, run through :class:`LintMiddleware` in a tiny in-process harness (``run``:
PEP 3333's example gateway on a list) - and a few through a real wsgibridge server
over a socket.  Valid apps (lazy generators, exc_info, write(), file wrappers, Flask,
Werkzeug, webtest, wsgiref) must produce no violation at all.
"""

from __future__ import annotations

import gc
import gzip
import http.client
import io
import logging
import socket
import sys
import warnings
import wsgiref.handlers
import wsgiref.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from wsgibridge import FileWrapper, serve_in_thread
from wsgibridge.lint import (
    RULES,
    LintMiddleware,
    LintViolation,
    WSGILintWarning,
    default_report,
)

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Any]
Middleware = Callable[[App], App]
TEXT = [("Content-Type", "text/plain")]
TIMEOUT = 5.0


# -- the in-process harness -------------------------------------------------------------------


class Recorder:
    """The server side: PEP 3333's example gateway, recording what it is given, lenient."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.status: Any = None
        self.headers: Any = None
        self.headers_sent = False
        self.chunks: list[Any] = []

    def start_response(self, *args: Any, **kwargs: Any) -> Callable[[Any], None]:
        self.calls.append((args, kwargs))
        exc_info = args[2] if len(args) > 2 else kwargs.get("exc_info")
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        self.status = args[0] if args else kwargs.get("status")
        self.headers = args[1] if len(args) > 1 else kwargs.get("response_headers")
        return self.write

    def write(self, data: Any) -> None:
        self.chunks.append(data)
        if data:
            self.headers_sent = True


@dataclass
class Outcome:
    violations: list[LintViolation]
    server: Recorder
    error: BaseException | None = None
    result_type: type | None = None  # of what the lint returned
    lint: LintMiddleware | None = field(default=None, repr=False)

    @property
    def rules(self) -> list[str]:
        return [v.rule for v in self.violations]

    @property
    def body(self) -> bytes:
        return b"".join(c for c in self.server.chunks if isinstance(c, bytes))

    def message(self, rule: str) -> str:
        return next(v.message for v in self.violations if v.rule == rule)


def make_environ(
    method: str = "GET",
    path: str = "/x",
    body: bytes | None = None,
    query: str = "",
    extra: dict[str, Any] | None = None,
) -> Environ:
    """A real environ: wsgiref.util.setup_testing_defaults plus a BytesIO wsgi.input."""
    environ: Environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body or b""),
    }
    if body is not None:
        environ["CONTENT_LENGTH"] = str(len(body))
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(extra or {})
    return environ


def run(
    app: App,
    environ: Environ | None = None,
    *,
    above: Middleware | None = None,
    close: bool = True,
    **env: Any,
) -> Outcome:
    """Serve one request: ``above(LintMiddleware(app))``, iterate, close; never raises."""
    violations: list[LintViolation] = []
    server = Recorder()
    lint = LintMiddleware(app, report=violations.append)
    outer: App = above(lint) if above is not None else lint
    if environ is None:
        environ = make_environ(**env)
    outcome = Outcome(violations, server, lint=lint)
    result: Any = None
    try:
        result = outer(environ, server.start_response)
        outcome.result_type = type(result)
        for chunk in result:
            server.write(chunk)
    except Exception as exc:
        outcome.error = exc
    finally:
        if close and hasattr(result, "close"):
            try:
                result.close()
            except Exception as exc:
                outcome.error = outcome.error or exc
    del result
    return outcome


def rules_of(app: App, **kwargs: Any) -> list[str]:
    return run(app, **kwargs).rules


def simple(body: bytes = b"hello", headers: list[tuple[str, str]] | None = None) -> App:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [*TEXT, *(headers or [])])
        return [body]

    return app


def environ_changer(change: Callable[[Environ], None]) -> Middleware:
    """An upstream middleware that changes the environ before the lint sees it."""

    def wrap(app: App) -> App:
        def environ_rewriter(environ: Environ, start_response: StartResponse) -> Any:
            change(environ)
            return app(environ, start_response)

        return environ_rewriter

    return wrap


# -- every rule has a test -----------------------------------------------------------------


def test_every_rule_has_a_test_named_after_it() -> None:
    """Each rule id ``a-b`` is exercised by ``test_a_b`` in this module."""
    missing = [r for r in RULES if f"test_{r.replace('-', '_')}" not in globals()]
    assert missing == []


def test_every_rule_has_a_reference_and_a_one_sentence_fix() -> None:
    """Each rule names its source (PEP 3333, RFC 9110 or CGI) and says who breaks it."""
    for rule, spec in RULES.items():
        assert spec.side in ("app", "server"), rule
        assert spec.reference.startswith(("PEP 3333", "RFC", "CGI")), rule
        assert spec.fix.endswith("."), rule


# -- environ (server side: the code that called the lint is named) --------------------------------


def test_environ_type() -> None:
    """PEP 3333: "This object must be a builtin Python dictionary (not a subclass,
    UserDict or other dictionary emulation)"."""

    class Environ2(dict[str, Any]):
        pass

    seen: list[object] = []

    def app(environ: Environ, start_response: StartResponse) -> Any:
        seen.append(environ)
        return simple()(environ, start_response)

    environ = Environ2(make_environ())
    outcome = run(app, environ)
    assert outcome.rules == ["environ-type"]
    assert seen == [environ] and type(seen[0]) is Environ2  # passed on unchanged


def test_environ_missing() -> None:
    """PEP 3333: "The following variables must be present, unless their value would be an
    empty string" - SERVER_NAME "must never be empty"."""

    def drop(environ: Environ) -> None:
        del environ["SERVER_NAME"]
        del environ["wsgi.url_scheme"]
        environ["REQUEST_METHOD"] = ""

    outcome = run(simple(), above=environ_changer(drop))
    assert outcome.rules == ["environ-missing"] * 3
    # the upstream middleware that broke the environ is named
    assert all("environ_rewriter" in v.message for v in outcome.violations)


def test_environ_missing_both_script_name_and_path_info() -> None:
    """PEP 3333 lets SCRIPT_NAME or PATH_INFO be omitted when empty - not both."""

    def drop(environ: Environ) -> None:
        del environ["SCRIPT_NAME"], environ["PATH_INFO"]

    assert rules_of(simple(), above=environ_changer(drop)) == ["environ-missing"]
    assert rules_of(simple(), above=environ_changer(lambda e: e.pop("SCRIPT_NAME"))) == []


def test_environ_not_str() -> None:
    """PEP 3333: "It is a violation of this specification for *any* CGI variable's value
    to be of any type other than str."."""

    def corrupt(environ: Environ) -> None:
        environ["SERVER_PORT"] = 8080
        environ["REMOTE_USER"] = None
        environ["myapp.user"] = object()  # extension keys may hold anything

    outcome = run(simple(), above=environ_changer(corrupt))
    assert outcome.rules == ["environ-not-str"] * 2
    assert "'SERVER_PORT' is a int: 8080" in outcome.message("environ-not-str")


def test_environ_not_latin1() -> None:
    """PEP 3333: "servers and gateways must not supply strings to an application
    containing any other Unicode characters" (than U+0000..U+00FF)."""

    def decode_utf8(environ: Environ) -> None:  # the classic middleware mistake
        environ["PATH_INFO"] = environ["PATH_INFO"].encode("latin-1").decode("utf-8")

    outcome = run(simple(), above=environ_changer(decode_utf8), path="/price/\xe2\x82\xac")
    assert outcome.rules == ["environ-not-latin1"]
    assert "'/price/€'" in outcome.message("environ-not-latin1")
    # é is U+00E9: latin-1, nothing to say
    assert rules_of(simple(), above=environ_changer(decode_utf8), path="/caf\xc3\xa9") == []


def test_environ_path() -> None:
    """CGI: PATH_INFO = "" | ( "/" path ); PEP 3333: SCRIPT_NAME "may be an empty string,
    if the application corresponds to the "root" of the server"."""

    def mount(environ: Environ) -> None:  # strips "/app/" instead of "/app"
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/app/", "x"

    assert rules_of(simple(), above=environ_changer(mount), path="/app/x") == ["environ-path"]

    def root(environ: Environ) -> None:
        environ["SCRIPT_NAME"], environ["PATH_INFO"] = "/", "x"

    assert rules_of(simple(), above=environ_changer(root)) == ["environ-path"] * 2


def test_environ_content_length() -> None:
    """CGI (RFC 3875 §4.1.2): CONTENT_LENGTH = "" | 1*digit."""
    outcome = run(simple(), extra={"CONTENT_LENGTH": "-1"})
    assert outcome.rules == ["environ-content-length"]
    assert rules_of(simple(), extra={"CONTENT_LENGTH": ""}) == []


def test_environ_wsgi_value() -> None:
    """PEP 3333: wsgi.version is "The tuple (1, 0)"; "The input and error streams provided
    by the server must support the following methods"."""

    def corrupt(environ: Environ) -> None:
        environ["wsgi.version"] = "1.0"
        environ["wsgi.input"] = b"the raw body"

    outcome = run(simple(), above=environ_changer(corrupt))
    assert outcome.rules == ["environ-wsgi-value"] * 2
    assert "has no read, readline, readlines." in outcome.violations[1].message


# -- start_response (app side) --------------------------------------------------------------------


def test_start_response_arguments() -> None:
    """PEP 3333: "the application must invoke the start_response callable using positional
    arguments (e.g. start_response(status, response_headers))"."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status="200 OK", response_headers=TEXT)
        return [b"x"]

    outcome = run(app)
    assert outcome.rules == ["start-response-arguments"]
    assert outcome.server.calls == [((), {"status": "200 OK", "response_headers": TEXT})]


def test_status_type() -> None:
    """PEP 3333: "The status argument is an HTTP "status" string like "200 OK"."."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(200, TEXT)
        return [b"x"]

    outcome = run(app)
    assert outcome.rules == ["status-type"]
    assert outcome.server.status == 200  # the wrong value goes on, unchanged


@pytest.mark.parametrize("status", ["200OK", "200", " 200 OK", "200 OK\r\n", "200  OK", "2OO OK"])
def test_status_format(status: str) -> None:
    """PEP 3333: "a Status-Code and a Reason-Phrase, in that order and separated by a single
    space, with no surrounding whitespace or other characters"."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, TEXT)
        return [b"x"]

    assert rules_of(app) == ["status-format"]


@pytest.mark.parametrize("status", ["100 Continue", "103 Early Hints", "600 Beyond", "099 Low"])
def test_status_code_range(status: str) -> None:
    """RFC 9110 §15: "Values outside the range 100..599 are invalid."; a 1xx is interim."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, TEXT)
        return []

    assert rules_of(app) == ["status-code-range"]


def test_response_not_latin1() -> None:
    """PEP 3333: "It is a fatal error for an application to supply strings containing any
    other Unicode character or code point." (than ISO-8859-1)."""
    disposition = ("Content-Disposition", "attachment; filename=日本.txt")
    assert rules_of(simple(headers=[disposition])) == ["response-not-latin1"]
    # latin-1 (bytes as latin-1, C1 range included) is fine
    assert rules_of(simple(headers=[("X-Name", "caf\xe9 \x85")])) == []


def test_headers_type() -> None:
    """PEP 3333: "It must be a Python list; i.e. type(response_headers) is ListType"."""
    headers = (("Content-Type", "text/plain"),)

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", headers)
        return [b"x"]

    outcome = run(app)
    assert outcome.rules == ["headers-type"]
    assert outcome.server.headers is headers

    def dict_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", {"Content-Type": "text/plain"})
        return [b"x"]

    assert rules_of(dict_app) == ["headers-type"]


def test_header_item() -> None:
    """PEP 3333: "The response_headers argument is a list of (header_name, header_value)
    tuples."."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [["Content-Type", "text/plain"], ("X-A",), "X-B: c"])
        return [b"x"]

    assert rules_of(app) == ["header-item"]  # once per request


def test_header_type() -> None:
    """PEP 3333: "all objects referred to in this specification as "strings" must be of
    type str"."""
    outcome = run(simple(headers=[("Content-Length", 5), (b"X-A", "b")]))  # type: ignore[list-item]
    assert outcome.rules == ["header-type", "header-type"]
    assert "a str name and a int value" in outcome.violations[0].message


def test_header_name() -> None:
    """PEP 3333: "Each header_name must be a valid HTTP header field-name [...] without a
    trailing colon or other punctuation."."""
    assert rules_of(simple(headers=[("X-Trace:", "1"), ("X Trace", "2")])) == ["header-name"] * 2


def test_header_value() -> None:
    """PEP 3333: "Each header_value must not include *any* control characters, including
    carriage returns or linefeeds, either embedded or at the end."."""
    split = ("Location", "/next\r\nSet-Cookie: session=stolen")
    outcome = run(simple(headers=[split]))
    assert outcome.rules == ["header-value"]
    assert "\\r\\nSet-Cookie" in outcome.message("header-value")


def test_hop_by_hop() -> None:
    """PEP 3333: "Applications and middleware are forbidden from using HTTP/1.1
    "hop-by-hop" features or headers"."""
    hop = [("Connection", "close"), ("Transfer-Encoding", "chunked"), ("Keep-Alive", "5")]
    assert rules_of(simple(headers=hop)) == ["hop-by-hop"] * 3


def test_content_length_value() -> None:
    """RFC 9110 §8.6: Content-Length = 1*DIGIT (and one value)."""
    assert rules_of(simple(headers=[("Content-Length", "5 bytes")])) == ["content-length-value"]
    two = [("Content-Length", "5"), ("Content-Length", "6")]
    assert rules_of(simple(headers=two)) == ["content-length-value"]
    same = [("Content-Length", "5"), ("Content-Length", "5")]
    assert rules_of(simple(headers=same)) == []


def test_start_response_twice() -> None:
    """PEP 3333: "it is a fatal error to call start_response without the exc_info argument
    if start_response has already been called within the current invocation of the
    application. This includes the case where the first call to start_response raised"."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", TEXT)
        start_response("404 Not Found", TEXT)
        return [b"x"]

    outcome = run(app)
    assert outcome.rules == ["start-response-twice"]
    assert "'404 Not Found'" in outcome.message("start-response-twice")


def test_exc_info_type() -> None:
    """PEP 3333: "The exc_info argument, if supplied, must be a Python sys.exc_info()
    tuple."."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("500 Oops", TEXT, sys.exc_info())  # outside an except block
        return [b"x"]

    outcome = run(app)
    assert outcome.rules == ["exc-info-type"]
    assert "outside an except block" in outcome.message("exc-info-type")


def test_exc_info_trapped() -> None:
    """PEP 3333: "The application must not trap any exceptions raised by start_response,
    if it called start_response with exc_info."."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"partial"
        try:
            raise ValueError("boom")
        except ValueError:
            try:
                start_response("500 Oops", TEXT, sys.exc_info())
            except ValueError:
                pass  # the mistake: the headers are out, the response must be aborted
        yield b"error page"

    outcome = run(app)
    assert outcome.rules == ["exc-info-trapped"]
    assert outcome.body == b"partialerror page"


def test_start_response_no_write() -> None:
    """PEP 3333: "The start_response callable must return a write(body_data) callable"."""

    def add_header(app: App) -> App:
        def security_headers(environ: Environ, start_response: StartResponse) -> Any:
            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
                start_response(status, [*headers, ("X-Frame-Options", "DENY")], exc_info)
                # the mistake: no "return"

            return app(environ, start)

        return security_headers

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", TEXT)
        write(b"hello")
        return []

    outcome = run(app, above=add_header)
    assert outcome.rules == ["start-response-no-write"]
    assert "security_headers" in outcome.message("start-response-no-write")
    assert isinstance(outcome.error, TypeError)  # the app's own failure, unchanged


# -- the result and the body (app side) ---------------------------------------------------------


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


def footer(app: App) -> App:
    """A middleware that appends a footer and forgets the Content-Length."""

    def add_footer(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        result = app(environ, start_response)
        try:
            yield from result
            yield b"<!-- served by footer -->"
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    return add_footer


def gzipper(app: App) -> App:
    """A gzip middleware that keeps the stale Content-Length of the uncompressed body."""

    def gzip_middleware(environ: Environ, start_response: StartResponse) -> list[bytes]:
        captured: list[Any] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, [*headers, ("Content-Encoding", "gzip")]]
            return lambda data: None

        result = app(environ, start)
        try:
            body = gzip.compress(b"".join(result))
        finally:
            if hasattr(result, "close"):
                result.close()
        start_response(*captured)
        return [body]

    return gzip_middleware


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


# -- close() (server side) ------------------------------------------------------------------------


class Closing:
    """An app whose iterable has close(), counting the calls."""

    def __init__(self) -> None:
        self.closed = 0

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", TEXT)
        app = self

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"body"

            def close(self) -> None:
                app.closed += 1

        return Body()


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


# -- wsgi.input and wsgi.errors -------------------------------------------------------------------


def reader(how: Callable[[Any], Any]) -> App:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        data = how(environ["wsgi.input"])
        start_response("200 OK", TEXT)
        return [data if isinstance(data, bytes) else b"".join(data)]

    return app


def test_input_read_unbounded() -> None:
    """PEP 3333: "The application should not attempt to read more data than is specified
    by the CONTENT_LENGTH variable." - with none, read() may never return."""
    app = reader(lambda stream: stream.read())
    outcome = run(app)
    assert outcome.rules == ["input-read-unbounded"]
    assert "read()" in outcome.message("input-read-unbounded")
    # fine with a length, or when the server terminates the stream
    assert rules_of(app, body=b"abc") == []
    assert rules_of(app, extra={"wsgi.input_terminated": True}) == []


def test_input_read_past_length() -> None:
    """PEP 3333: "The server is not required to read past the client's specified
    Content-Length, and should simulate an end-of-file condition if the application
    attempts to read past that point."."""

    def loop(stream: Any) -> list[bytes]:
        chunks = []
        while chunk := stream.read(8192):
            chunks.append(chunk)
        return chunks

    outcome = run(reader(loop), method="POST", body=b"hello")
    assert outcome.rules == ["input-read-past-length"]
    assert outcome.body == b"hello"
    assert "read(8192) with 5 bytes left" in outcome.message("input-read-past-length")

    def bounded(stream: Any) -> bytes:
        return bytes(stream.read(3) + stream.read(2) + stream.read(0))

    assert rules_of(reader(bounded), method="POST", body=b"hello") == []
    terminated = {"wsgi.input_terminated": True}
    assert rules_of(reader(loop), method="POST", body=b"hello", extra=terminated) == []


def test_input_readline_size() -> None:
    """PEP 3333: "Servers should support the optional "size" argument to readline(), but
    as in WSGI 1.0, they are allowed to omit support for it."."""
    app = reader(lambda stream: stream.readline(-1))
    assert rules_of(app, method="POST", body=b"a\nb") == ["input-readline-size"]
    assert rules_of(reader(lambda s: s.readline()), method="POST", body=b"a\nb") == []


def test_input_not_bytes() -> None:
    """PEP 3333: "values read from wsgi.input [...] must be of type bytes"."""

    def text_input(environ: Environ) -> None:  # a middleware that "decodes" the body
        environ["wsgi.input"] = io.StringIO(environ["wsgi.input"].read().decode())

    app = reader(lambda stream: stream.read(5).encode())
    outcome = run(app, above=environ_changer(text_input), method="POST", body=b"hello")
    assert outcome.rules == ["input-not-bytes"]
    assert "environ_rewriter" in outcome.message("input-not-bytes")


def test_stream_method() -> None:
    """PEP 3333: "Applications conforming to this specification must not use any other
    methods or attributes of the input or errors objects."."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        stream = environ["wsgi.input"]
        assert not hasattr(stream, "readinto")  # a probe with a fallback: not reported
        assert getattr(stream, "fileno", None) is None
        try:
            stream.seek(0)  # used directly: reported, and missing as on other servers
        except AttributeError:
            pass
        try:
            _ = environ["wsgi.errors"].fileno
        except AttributeError:
            pass
        start_response("200 OK", TEXT)
        return []

    outcome = run(app, method="POST", body=b"x")
    assert outcome.error is None
    assert outcome.rules == ["stream-method", "stream-method"]
    assert "used wsgi.input.seek" in outcome.violations[0].message
    assert "used wsgi.errors.fileno" in outcome.violations[1].message


def test_stream_close() -> None:
    """PEP 3333: "applications must not attempt to close these streams, even if they
    possess close() methods."."""

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        environ["wsgi.input"].close()
        environ["wsgi.errors"].close()
        start_response("200 OK", TEXT)
        return []

    assert rules_of(app) == ["stream-close"]


def test_errors_not_str() -> None:
    """PEP 3333: wsgi.errors "should be a "text mode" stream"; the method is write(str)."""
    errors = io.StringIO()

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        try:
            environ["wsgi.errors"].write(b"oops\n")
        except TypeError:
            pass  # StringIO refuses, as a real text stream does
        environ["wsgi.errors"].writelines(["fine\n"])
        start_response("200 OK", TEXT)
        return []

    assert rules_of(app, extra={"wsgi.errors": errors}) == ["errors-not-str"]
    assert errors.getvalue() == "fine\n"


# -- reports ---------------------------------------------------------------------------------------


def bad_status_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200OK", TEXT)
    return [b"x"]


def test_violation_fields_and_str() -> None:
    """A report says the request, the rule, what happened, the PEP sentence and the fix."""
    outcome = run(bad_status_app, path="/a b\x1b[31m", query="q=1")
    (violation,) = outcome.violations
    assert violation.rule == "status-format"
    assert violation.request == "GET /a%20b%1B%5B31m?q=1 HTTP/1.0"
    assert "bad_status_app (test_lint.py:" in violation.message
    assert "'200OK'" in violation.message
    assert violation.reference.startswith("PEP 3333, The start_response() Callable:")
    assert "separated by a single space" in violation.reference
    assert violation.fix.startswith("Write the status as three digits")
    text = str(violation).splitlines()
    assert text[0] == "PEP 3333 lint: status-format"
    assert [line.split(":")[0].strip() for line in text[1:]] == [
        "request",
        "problem",
        "reference",
        "fix",
    ]


def test_request_line_is_escaped() -> None:
    """Control characters from the request cannot reach a terminal or forge a log line."""
    outcome = run(bad_status_app, extra={"REQUEST_URI": "/x\r\n\x1b[2J"})
    assert outcome.violations[0].request == "GET /x\\x0d\\x0a\\x1b[2J HTTP/1.0"


def test_default_report_warns_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    """default_report: a WSGILintWarning and a WARNING on the wsgibridge.lint logger."""
    caplog.set_level(logging.WARNING, logger="wsgibridge.lint")
    with pytest.warns(WSGILintWarning, match="status-format") as caught:
        LintMiddleware(bad_status_app)(make_environ(), Recorder().start_response)
    assert "fix:" in str(caught[0].message)
    (record,) = [r for r in caplog.records if r.name == "wsgibridge.lint"]
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("GET /x HTTP/1.0: [status-format]")


def test_default_report_direct_call() -> None:
    """default_report can be called with any violation."""
    violation = LintViolation("status-format", "m", "f", "r", "GET / HTTP/1.1")
    with pytest.warns(WSGILintWarning, match="GET / HTTP/1.1"):
        default_report(violation)


def test_each_problem_once_per_request() -> None:
    """A problem repeated within a request is reported once; the next request reports it
    again."""
    violations: list[LintViolation] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[str]:
        start_response("200 OK", TEXT)
        yield from ["a", "b", "c"]

    lint = LintMiddleware(app, report=violations.append)
    for _ in range(2):
        result = lint(make_environ(), Recorder().start_response)
        list(result)
        result.close()  # type: ignore[attr-defined]
    assert [v.rule for v in violations] == ["body-not-bytes"] * 2


def test_report_that_raises_stops_the_request() -> None:
    """An exception from report propagates, like wsgiref.validate's assertions."""

    def strict(violation: LintViolation) -> None:
        raise AssertionError(str(violation))

    with pytest.raises(AssertionError, match="status-format"):
        LintMiddleware(bad_status_app, report=strict)(make_environ(), Recorder().start_response)


# -- pass-through: never changes what goes by ----------------------------------------------------


def fail(violation: LintViolation) -> None:
    pytest.fail(str(violation))


def test_values_pass_through_unchanged() -> None:
    """The status, the headers list, the list result, each chunk and write()'s argument
    are the very objects the app gave."""
    status, headers, chunk = "200 OK", [("Content-Type", "text/plain")], b"pushed"
    body = [b"a", b"b"]

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response(status, headers)(chunk)
        return body

    server = Recorder()
    result = LintMiddleware(app, report=fail)(make_environ(), server.start_response)
    assert result is body
    ((args, _),) = server.calls
    assert args[0] is status and args[1] is headers
    assert server.chunks[0] is chunk

    pieces = [b"x", b"y"]

    def generator(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield from pieces

    result2 = LintMiddleware(generator, report=fail)(make_environ(), server.start_response)
    got = list(result2)
    assert got[0] is pieces[0] and got[1] is pieces[1]
    result2.close()  # type: ignore[attr-defined]


def test_file_wrapper_passes_through(tmp_path: Path) -> None:
    """An instance of wsgi.file_wrapper is returned as is, so the server may sendfile it."""
    path = tmp_path / "f.txt"
    path.write_bytes(b"file body")

    def app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", TEXT)
        return environ["wsgi.file_wrapper"](path.open("rb"), 4)

    environ = make_environ(extra={"wsgi.file_wrapper": FileWrapper})
    outcome = run(app, environ)
    assert outcome.rules == [] and outcome.error is None
    assert outcome.result_type is FileWrapper
    assert outcome.body == b"file body"


def test_app_exceptions_propagate() -> None:
    """The app's exceptions reach the server unchanged, from the call or the iteration."""

    def raising(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise KeyError("from the app")

    def raising_later(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"a"
        raise KeyError("from the iterable")

    assert isinstance(run(raising).error, KeyError)
    outcome = run(raising_later)
    assert isinstance(outcome.error, KeyError) and outcome.rules == []


def test_garbage_never_crashes_the_lint(caplog: pytest.LogCaptureFixture) -> None:
    """Whatever the app passes, the lint reports and passes it on; it never raises itself."""

    class BrokenRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    def app(environ: Environ, start_response: StartResponse) -> Iterator[Any]:
        start_response(BrokenRepr(), [object(), (1, 2, 3), (BrokenRepr(), "x")], 42)
        yield BrokenRepr()
        yield None

    outcome = run(app)
    assert outcome.error is None
    assert outcome.rules == [
        "exc-info-type",
        "status-type",
        "header-item",
        "header-type",
        "body-not-bytes",
    ]
    assert "<BrokenRepr instance at" in outcome.message("status-type")
    assert not [r for r in caplog.records if r.name == "wsgibridge.lint"]

    # an environ that is not even a mapping goes to the app unchanged
    seen: list[object] = []

    def app2(environ: Any, start_response: StartResponse) -> list[bytes]:
        seen.append(environ)
        start_response("200 OK", [])
        return []

    outcome = run(app2, [])  # type: ignore[arg-type]
    assert outcome.rules == ["environ-type"] and seen == [[]]
    assert outcome.violations[0].request.startswith("(no request")


# -- valid apps: no violation at all -------------------------------------------------------------


def lazy_generator(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
    start_response("200 OK", TEXT)  # on the first iteration: valid
    yield b"lazy"
    yield b""
    yield b" body"


def exc_info_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    try:
        start_response("200 Froody", TEXT)
        raise ValueError("while rendering")
    except ValueError:
        start_response("500 Oops", TEXT, sys.exc_info())
        return [b"error body"]


def write_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    write = start_response("200 OK", [*TEXT, ("Content-Length", "6")])
    write(b"abc")
    write(b"def")
    return []


def empty_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "0")])
    return []


class PEPAppClass:
    """PEP 3333's AppClass: start_response is called in __iter__."""

    def __init__(self, environ: Environ, start_response: StartResponse) -> None:
        self.environ = environ
        self.start = start_response

    def __iter__(self) -> Iterator[bytes]:
        self.start("200 OK", TEXT)
        yield b"Hello world!\n"


def body_reader(environ: Environ, start_response: StartResponse) -> list[bytes]:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = stream.read(length - len(first))
    start_response("200 OK", TEXT)
    return [first + rest]


def error_logger(environ: Environ, start_response: StartResponse) -> list[bytes]:
    errors = environ["wsgi.errors"]
    errors.write("one\n")
    errors.writelines(["two\n", "three\n"])
    print("four", file=errors)
    errors.flush()
    logging.StreamHandler(errors).emit(logging.makeLogRecord({"msg": "five"}))
    start_response("200 OK", TEXT)
    return []


def latinator(app: App) -> App:
    """PEP 3333's middleware example (Latinator), simplified: it calls the app at once,
    strips Content-Length, and rewrites what comes through write() and the iterable."""

    def middleware(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
            write = start_response(status, headers, exc_info)
            return lambda data: write(data.upper())

        result = app(environ, start)  # now: "as soon as its underlying application returns"

        def transformed() -> Iterator[bytes]:
            try:
                for data in result:
                    yield data.upper()  # one value per inner value (maybe b"")
            finally:
                if hasattr(result, "close"):
                    result.close()

        return transformed()

    return middleware


VALID: dict[str, tuple[App, dict[str, Any]]] = {
    "lazy generator": (lazy_generator, {}),
    "exc_info before the body": (exc_info_app, {}),
    "write() before returning": (write_app, {}),
    "empty list": (empty_app, {}),
    "PEP AppClass": (PEPAppClass, {}),
    "HEAD with Content-Length, no body": (
        simple(b"", [("Content-Length", "5")]),
        {"method": "HEAD"},
    ),
    "HEAD with a body (the server drops it)": (simple(b"hello"), {"method": "HEAD"}),
    "204 without body": (
        lambda e, sr: (sr("204 No Content", []), [])[1],
        {},
    ),
    "304 with the 200's Content-Length": (
        lambda e, sr: (sr("304 Not Modified", [("Content-Length", "99")]), [])[1],
        {},
    ),
    "reading exactly CONTENT_LENGTH": (body_reader, {"method": "POST", "body": b"line\nrest"}),
    "writing str to wsgi.errors (print, logging)": (error_logger, {}),
    "iterating wsgi.input": (
        reader(lambda stream: list(stream)),
        {"method": "POST", "body": b"a\nb\n"},
    ),
    "readlines": (
        reader(lambda stream: stream.readlines()),
        {"method": "POST", "body": b"a\nb\n"},
    ),
    "a middleware from PEP 3333 (Latinator)": (latinator(lazy_generator), {}),
    "a middleware around write()": (latinator(write_app), {}),
    "a middleware that closes": (footer(simple(b"x")), {}),
    "a generator whose Content-Length matches": (
        footer(simple(b"x", [("Content-Length", str(len(b"x<!-- served by footer -->")))])),
        {},
    ),
    "latin-1 and C1 in headers (bytes as latin-1)": (
        simple(headers=[("Content-Disposition", "attachment; filename=\xe6\x97\xa5.txt")]),
        {},
    ),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid_apps_have_no_violation(name: str) -> None:
    """PEP 3333 allows all of these; the lint must say nothing."""
    app, env = VALID[name]
    outcome = run(app, **env)
    assert outcome.error is None, outcome.error
    assert outcome.violations == []


def test_exc_info_after_the_body_aborts_without_violation() -> None:
    """PEP 3333: "if any output has already been sent to the browser, start_response will
    reraise the provided exception. This exception should not be trapped by the
    application" - an app that lets it propagate is correct."""

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", TEXT)
        yield b"partial"
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Oops", TEXT, sys.exc_info())
        yield b"never"

    outcome = run(app)
    assert isinstance(outcome.error, ValueError)
    assert outcome.violations == []


def test_flask_app_has_no_violation() -> None:
    """A Flask app: GET, and a POST form parsed by Werkzeug from a bounded wsgi.input."""
    flask = pytest.importorskip("flask")
    web = flask.Flask("lint")

    def index() -> str:
        return "hello"

    def form() -> str:
        return str(flask.request.form["name"])

    web.add_url_rule("/x", view_func=index)
    web.add_url_rule("/form", view_func=form, methods=["POST"])

    get = run(web.wsgi_app)
    assert get.violations == [] and get.body == b"hello"
    body = b"name=lint"
    post = run(
        web.wsgi_app,
        method="POST",
        path="/form",
        body=body,
        extra={"CONTENT_TYPE": "application/x-www-form-urlencoded"},
    )
    assert post.violations == [] and post.body == b"lint"


def test_werkzeug_response_has_no_violation() -> None:
    """A Werkzeug Response called as a WSGI app, and a streamed one."""
    wrappers = pytest.importorskip("werkzeug.wrappers")

    def app(environ: Environ, start_response: StartResponse) -> Any:
        return wrappers.Response("hi", mimetype="text/plain")(environ, start_response)

    def streamed(environ: Environ, start_response: StartResponse) -> Any:
        response = wrappers.Response(iter([b"a", b"b"]), mimetype="text/plain")
        return response(environ, start_response)

    for each in (app, streamed):
        outcome = run(each)
        assert outcome.error is None and outcome.violations == []


def test_webtest_has_no_violation() -> None:
    """webtest's TestApp (with its own lint) drives the lint without complaint."""
    webtest = pytest.importorskip("webtest")
    violations: list[LintViolation] = []
    app = webtest.TestApp(LintMiddleware(body_reader, report=violations.append))
    assert app.post("/x", params=b"line\nrest").body == b"line\nrest"
    app2 = webtest.TestApp(LintMiddleware(lazy_generator, report=violations.append))
    assert app2.get("/").body == b"lazy body"
    assert violations == []


def test_usable_under_wsgiref() -> None:
    """A plain WSGI middleware: wsgiref's own handler runs it, and closes its iterable."""
    violations: list[LintViolation] = []
    closing = Closing()
    for app in (lazy_generator, write_app, closing):
        out, err = io.BytesIO(), io.StringIO()
        handler = wsgiref.handlers.SimpleHandler(
            io.BytesIO(), out, err, make_environ(), multithread=False
        )
        handler.run(LintMiddleware(app, report=violations.append))
        assert out.getvalue().startswith(b"HTTP/1.0 200 OK\r\n"), err.getvalue()
    assert closing.closed == 1
    assert violations == []


# -- a real wsgibridge server over a socket ------------------------------------------------------


def collected_rules(violations: list[LintViolation]) -> list[str]:
    return [v.rule for v in violations]


def test_server_bad_status_answers_500_and_reports_status_format() -> None:
    """Over a socket: the server still answers (500, it refuses the status) and the lint
    says why - rule, request line and fix."""
    violations: list[LintViolation] = []
    with serve_in_thread(LintMiddleware(bad_status_app, report=violations.append)) as server:
        response = requests.get(server.url + "x?y=1", timeout=TIMEOUT)
    assert response.status_code == 500
    assert collected_rules(violations) == ["status-format"]
    assert violations[0].request == "GET /x?y=1 HTTP/1.1"


def test_server_hop_by_hop_and_not_bytes() -> None:
    """Over a socket: hop-by-hop headers and str chunks, each explained; the server 500s."""
    violations: list[LintViolation] = []

    def str_body(environ: Environ, start_response: StartResponse) -> Iterator[Any]:
        start_response("200 OK", TEXT)
        yield "text"

    report = violations.append
    with serve_in_thread(LintMiddleware(simple(headers=[("Connection", "close")]), report)) as s:
        assert requests.get(s.url, timeout=TIMEOUT).status_code == 500
    with serve_in_thread(LintMiddleware(str_body, report)) as s:
        assert requests.get(s.url, timeout=TIMEOUT).status_code == 500
    assert collected_rules(violations) == ["hop-by-hop", "body-not-bytes"]


def test_server_gzip_middleware_with_stale_content_length() -> None:
    """Over a socket: the client sees a truncated body, the lint says why."""
    violations: list[LintViolation] = []
    body = b"hello world " * 50
    app = LintMiddleware(
        gzipper(simple(body, [("Content-Length", str(len(body)))])), report=violations.append
    )
    with serve_in_thread(app) as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT)
        connection.request("GET", "/")
        response = connection.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()
        connection.close()
    assert collected_rules(violations) == ["content-length-short"]


def test_server_upstream_middleware_is_named() -> None:
    """Over a socket: a middleware above the lint that decodes PATH_INFO as UTF-8 is named."""
    violations: list[LintViolation] = []

    def decode_utf8(environ: Environ) -> None:
        environ["PATH_INFO"] = environ["PATH_INFO"].encode("latin-1").decode("utf-8")

    app = environ_changer(decode_utf8)(LintMiddleware(simple(), report=violations.append))
    with serve_in_thread(app) as server:
        assert requests.get(server.url + "%E2%82%AC", timeout=TIMEOUT).status_code == 200
    assert collected_rules(violations) == ["environ-not-latin1"]
    assert "environ_rewriter" in violations[0].message


def test_server_valid_apps_have_no_violation(tmp_path: Path) -> None:
    """Over a socket: wsgibridge's environ and its iteration/close() are clean, and
    reading past CONTENT_LENGTH is fine where the server sets wsgi.input_terminated."""
    flask = pytest.importorskip("flask")
    web = flask.Flask("lint")

    def form() -> str:
        return str(flask.request.form["name"])

    web.add_url_rule("/form", view_func=form, methods=["POST"])

    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100_000)

    def file_app(environ: Environ, start_response: StartResponse) -> Any:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](path.open("rb"))

    def loop_reader(environ: Environ, start_response: StartResponse) -> list[bytes]:
        chunks = []
        while chunk := environ["wsgi.input"].read(8192):
            chunks.append(chunk)
        start_response("200 OK", TEXT)
        return [b"".join(chunks)]

    violations: list[LintViolation] = []
    report = violations.append
    closing = Closing()
    with serve_in_thread(LintMiddleware(lazy_generator, report)) as s, requests.Session() as ses:
        for _ in range(3):  # keep-alive: several requests on one connection
            assert ses.get(s.url, timeout=TIMEOUT).content == b"lazy body"
    with serve_in_thread(LintMiddleware(web.wsgi_app, report)) as s:
        response = requests.post(s.url + "form", data={"name": "lint"}, timeout=TIMEOUT)
        assert response.text == "lint"
    with serve_in_thread(LintMiddleware(file_app, report)) as s:
        assert len(requests.get(s.url, timeout=TIMEOUT).content) == 100_000
    with serve_in_thread(LintMiddleware(loop_reader, report)) as s:
        assert requests.post(s.url, data=b"abc" * 10, timeout=TIMEOUT).content == b"abc" * 10
    with (
        serve_in_thread(LintMiddleware(closing, report)) as s,
        socket.create_connection((s.host, s.port), timeout=TIMEOUT) as sock,
    ):
        sock.sendall(b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
    assert closing.closed == 1
    assert violations == []


def test_server_lint_option_wraps_the_app(caplog: pytest.LogCaptureFixture) -> None:
    """``lint=True`` (Config): the server wraps the app in LintMiddleware and reports each
    mistake once, in full (rule, request, problem, reference, fix) on the wsgibridge.lint
    logger - no second copy as a warning - and the 500 it causes in one error line, not a
    traceback that says the same again."""
    caplog.set_level(logging.INFO, logger="wsgibridge")
    with (
        warnings.catch_warnings(),
        serve_in_thread(bad_status_app, lint=True) as server,
    ):
        warnings.simplefilter("error", WSGILintWarning)
        assert requests.get(server.url, timeout=TIMEOUT).status_code == 500
    lint = [r for r in caplog.records if r.name == "wsgibridge.lint"]
    assert len(lint) == 1
    report = lint[0].getMessage().splitlines()
    assert report[0] == "PEP 3333 lint: status-format"
    assert [line.split(":")[0].strip() for line in report[1:]] == [
        "request",
        "problem",
        "reference",
        "fix",
    ]
    errors = [r for r in caplog.records if r.name == "wsgibridge.error"]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "answered 500: " in errors[0].getMessage()
