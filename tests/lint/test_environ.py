"""The environ and its streams: what the lint checks in what the app is given.

Rule: one test per rule, named after it, each with a deliberately broken
environ (``environ-*``, ``input-not-bytes``: server side, so the code above the
lint is named) or a deliberately broken use of ``wsgi.input`` / ``wsgi.errors``
(app side).
"""

from __future__ import annotations

import io
from typing import Any

from .helpers import (
    TEXT,
    Environ,
    StartResponse,
    environ_changer,
    make_environ,
    reader,
    rules_of,
    run,
    simple,
)

# -- environ (server side: the code that called the lint is named) -----------------------------


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


# -- wsgi.input and wsgi.errors ----------------------------------------------------------------


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
