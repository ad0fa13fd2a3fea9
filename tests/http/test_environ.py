"""build_environ: the PEP 3333 environ from a parsed request, no sockets."""

from __future__ import annotations

import io
import os
from typing import Any
from urllib.parse import unquote

import pytest

from wsgibridge.http.body import ContentLengthInput
from wsgibridge.http.environ import build_environ, decode_path, environ_key, split_target
from wsgibridge.http.filewrapper import FileWrapper


def make(target: str = "/", headers: list[tuple[str, str]] | None = None, **kw: Any) -> Any:
    defaults: dict[str, Any] = {
        "method": "GET",
        "target": target,
        "version": "HTTP/1.1",
        "headers": headers or [("Host", "example.com")],
        "body": ContentLengthInput(io.BytesIO(b""), 0),
        "content_length": None,
        "server_name": "127.0.0.1",
        "server_port": "8000",
        "remote_addr": "127.0.0.1",
        "remote_port": "54321",
    }
    defaults.update(kw)
    return build_environ(**defaults)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", ""),
        ("/a/b?x=1&y=2", "/a/b", "x=1&y=2"),
        ("/a?", "/a", ""),
        ("/a?b?c", "/a", "b?c"),
        ("//double/slash", "//double/slash", ""),
        ("http://example.com/p?q=1", "/p", "q=1"),
        ("http://example.com", "/", ""),
        ("http://example.com?q", "/", "q"),
        ("*", "*", ""),
        ("/frag#x", "/frag", ""),
    ],
)
def test_split_target(target: str, path: str, query: str) -> None:
    assert split_target(target) == (path, query)


@pytest.mark.parametrize(
    ("raw", "decoded"),
    [
        ("/caf%C3%A9", "/caf\xc3\xa9"),  # UTF-8 bytes carried as latin-1 (PEP 3333)
        ("/a%2Fb", "/a/b"),
        ("/plain", "/plain"),
        ("/100%", "/100%"),
        ("/%zz", "/%zz"),
    ],
)
def test_decode_path_is_bytes_as_latin1(raw: str, decoded: str) -> None:
    assert decode_path(raw) == decoded
    assert decode_path(raw).encode("latin-1")  # always representable


def test_required_keys_and_types() -> None:
    """PEP 3333: every CGI key a native str, the wsgi.* keys present."""
    env = make("/x?y=1")
    for key in (
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_PORT",
        "REQUEST_URI",
        "RAW_URI",
    ):
        assert type(env[key]) is str, key
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["PATH_INFO"] == "/x"
    assert env["QUERY_STRING"] == "y=1"
    assert env["REQUEST_URI"] == "/x?y=1"
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env


def test_no_process_environment_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGIBRIDGE_SECRET_TEST", "leak")
    env = make()
    assert "WSGIBRIDGE_SECRET_TEST" not in env
    assert not set(os.environ) & set(env)


def test_headers_map_to_http_keys_and_repeat_joined() -> None:
    env = make(
        headers=[
            ("Host", "h"),
            ("Accept", "a"),
            ("accept", "b"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("X-Custom-Thing", "v"),
        ]
    )
    assert env["HTTP_HOST"] == "h"
    assert env["HTTP_ACCEPT"] == "a,b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_CUSTOM_THING"] == "v"


def test_underscore_names_are_dropped() -> None:
    """X_Forwarded_For must not pose as X-Forwarded-For."""
    env = make(headers=[("X_Forwarded_For", "6.6.6.6"), ("X-Forwarded-For", "1.1.1.1")])
    assert env["HTTP_X_FORWARDED_FOR"] == "1.1.1.1"
    assert environ_key("X_Forwarded_For") is None


def test_content_headers_without_http_prefix() -> None:
    env = make(
        headers=[("Content-Type", "text/plain"), ("Content-Length", "5")], content_length="5"
    )
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env


def test_content_length_only_from_validated_framing() -> None:
    env = make(headers=[("Content-Length", "5")], content_length=None)
    assert "CONTENT_LENGTH" not in env


@pytest.mark.parametrize(
    ("target", "script", "path"),
    [
        ("/app/x", "/app", "/x"),
        ("/app/a%2Fb", "/app", "/a/b"),
        ("/app", "/app", ""),
        ("/caf%C3%A9/x", "/caf%C3%A9", "/x"),
    ],
)
def test_script_name_prefix(target: str, script: str, path: str) -> None:
    """PEP 3333: SCRIPT_NAME is the mount point, PATH_INFO the rest; both decoded."""
    env = make(target, script_name=script)
    assert env["SCRIPT_NAME"] == unquote(script, encoding="latin-1")
    assert env["PATH_INFO"] == path


@pytest.mark.parametrize("target", ["/apple", "/other", "/app%2Fx", "/", "/APP/x"])
def test_paths_outside_the_prefix_are_not_mounted(target: str) -> None:
    """Matched on the raw path at a segment boundary: outside it SCRIPT_NAME is empty
    (and the handler answers 404 without calling the app)."""
    env = make(target, script_name="/app")
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == unquote(target, encoding="latin-1")
