"""``LintMiddleware`` as a whole: its rules table, its reports, what it passes through
unchanged, and the lint in a real wsgibridge server over a socket.

Rule: these tests are about the lint itself, not one rule: a report's fields and
delivery (once per problem per request, synchronously, to ``report``), values
passed on as the very objects given, exceptions propagated, garbage survived;
and the same over a socket, where the server's answer and the report agree.
"""

from __future__ import annotations

import ast
import http.client
import logging
import socket
import warnings
from collections.abc import Iterator
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

from .helpers import (
    TEXT,
    TIMEOUT,
    Closing,
    Environ,
    Recorder,
    StartResponse,
    environ_changer,
    gzipper,
    lazy_generator,
    make_environ,
    run,
    simple,
)

# -- every rule has a test ---------------------------------------------------------------------


def test_every_rule_has_a_test_named_after_it() -> None:
    """Each rule id ``a-b`` is exercised by a ``test_a_b`` in one of the modules of
    this package (tests/lint/)."""
    names: set[str] = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names.update(node.name for node in tree.body if isinstance(node, ast.FunctionDef))
    missing = [r for r in RULES if f"test_{r.replace('-', '_')}" not in names]
    assert missing == []


def test_every_rule_has_a_reference_and_a_one_sentence_fix() -> None:
    """Each rule names its source (PEP 3333, RFC 9110 or CGI) and says who breaks it."""
    for rule, spec in RULES.items():
        assert spec.side in ("app", "server"), rule
        assert spec.reference.startswith(("PEP 3333", "RFC", "CGI")), rule
        assert spec.fix.endswith("."), rule


# -- reports -----------------------------------------------------------------------------------


def bad_status_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200OK", TEXT)
    return [b"x"]


def test_violation_fields_and_str() -> None:
    """A report says the request, the rule, what happened, the PEP sentence and the fix."""
    outcome = run(bad_status_app, path="/a b\x1b[31m", query="q=1")
    (violation,) = outcome.violations
    assert violation.rule == "status-format"
    assert violation.request == "GET /a%20b%1B%5B31m?q=1 HTTP/1.0"
    assert "bad_status_app (test_middleware.py:" in violation.message
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


# -- pass-through: never changes what goes by --------------------------------------------------


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


# -- a real wsgibridge server over a socket ----------------------------------------------------


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
