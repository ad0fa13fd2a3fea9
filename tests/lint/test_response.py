"""``start_response``: what the lint checks in the status, headers and exc_info.

Rule: one test per rule, named after it, each with an app (or a middleware
between the lint and the server) that calls ``start_response`` wrongly; the
wrong values still reach the server unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .helpers import (
    TEXT,
    App,
    Environ,
    StartResponse,
    rules_of,
    run,
    simple,
)

# -- start_response (app side) -----------------------------------------------------------------


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
