"""The WSGI apps every server in the benchmark serves, as ``apps:<name>``.

``run.py`` starts each server with this folder as its working directory and
on ``PYTHONPATH``, so ``apps:hello`` imports the same code in every server.
Standard library only; Flask is imported only when ``flask_hello`` is asked for.

hello        13-byte body, ``Content-Length`` set by the app.
hello_nolen  the same body from a generator and no ``Content-Length``, so the
             server cannot learn the length up front: it must use chunked
             transfer coding (HTTP/1.1) or close the connection.  (A one-item
             list would let some servers add ``Content-Length`` themselves.)
big          1 MiB with ``Content-Length``, yielded as 16 chunks of 64 KiB.
echo         reads the request body fully (``CONTENT_LENGTH`` bytes) in
             64 KiB reads and answers the number of bytes read.
upload_sink  reads the whole body, ``Content-Length`` or chunked, in 64 KiB
             reads and discards it; answers the byte count.  For the 1 GiB
             streamed-upload memory check.
flask_hello  the hello body through a one-route Flask app.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

BODY = b"Hello, World!"  # 13 bytes
BIG_CHUNK = b"x" * 65536
BIG_CHUNKS = 16
BIG_LEN = len(BIG_CHUNK) * BIG_CHUNKS  # 1 MiB
READ_SIZE = 65536
ECHO_BODY_LEN = 65536  # what run.py POSTs in the echo64k scenario

_HELLO_HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
_BIG_HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(BIG_LEN))]


def hello(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(_HELLO_HEADERS))
    return [BODY]


def _one_chunk() -> Iterator[bytes]:
    yield BODY


def hello_nolen(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return _one_chunk()


def _big_chunks() -> Iterator[bytes]:
    for _ in range(BIG_CHUNKS):
        yield BIG_CHUNK


def big(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(_BIG_HEADERS))
    return _big_chunks()


def _text(start_response: StartResponse, text: str) -> list[bytes]:
    out = text.encode("ascii")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def echo(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        remaining = 0
    stream = environ["wsgi.input"]
    total = 0
    while remaining > 0:
        data = stream.read(min(remaining, READ_SIZE))
        if not data:
            break
        total += len(data)
        remaining -= len(data)
    return _text(start_response, str(total))


def upload_sink(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    total = 0
    if length and not environ.get("wsgi.input_terminated"):
        remaining = int(length)
        while remaining > 0:
            data = stream.read(min(remaining, READ_SIZE))
            if not data:
                break
            total += len(data)
            remaining -= len(data)
    else:  # chunked (or a server that terminates the stream): read to EOF
        while True:
            data = stream.read(READ_SIZE)
            if not data:
                break
            total += len(data)
    return _text(start_response, str(total))


APPS: dict[str, WSGIApp] = {
    "hello": hello,
    "hello_nolen": hello_nolen,
    "big": big,
    "echo": echo,
    "upload_sink": upload_sink,
}


def _make_flask_hello() -> WSGIApp:
    from flask import Flask  # lazy: the module imports without Flask

    app = Flask("bench")

    @app.route("/", methods=["GET"])
    def index() -> tuple[bytes, int, dict[str, str]]:
        return BODY, 200, {"Content-Type": "text/plain"}

    wsgi_app: WSGIApp = app
    return wsgi_app


def __getattr__(name: str) -> WSGIApp:
    # ``apps:flask_hello`` builds the Flask app on first access (PEP 562).
    if name == "flask_hello":
        app = _make_flask_hello()
        globals()["flask_hello"] = app
        return app
    raise AttributeError(f"module 'apps' has no attribute {name!r}")
