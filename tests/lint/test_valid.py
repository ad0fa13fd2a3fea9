"""Valid apps: everything PEP 3333 allows goes through the lint without a violation.

Rule: a valid app, middleware or framework (lazy generators, exc_info, write(),
file wrappers, PEP 3333's own examples, Flask, Werkzeug, webtest, wsgiref)
produces no violation at all, and comes out unchanged.
"""

from __future__ import annotations

import io
import logging
import sys
import wsgiref.handlers
from collections.abc import Iterator
from typing import Any

import pytest

from wsgibridge.lint import LintMiddleware, LintViolation

from .helpers import (
    TEXT,
    App,
    Closing,
    Environ,
    StartResponse,
    footer,
    lazy_generator,
    make_environ,
    reader,
    run,
    simple,
    write_app,
)

# -- valid apps: no violation at all -----------------------------------------------------------


def exc_info_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    try:
        start_response("200 Froody", TEXT)
        raise ValueError("while rendering")
    except ValueError:
        start_response("500 Oops", TEXT, sys.exc_info())
        return [b"error body"]


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
