"""Every server of the "hand-written ``BaseHTTPRequestHandler``" tutorial, as ONE WSGI app.

The tutorial builds its servers by subclassing ``http.server.BaseHTTPRequestHandler``
and writing ``do_GET``/``do_POST``/``do_DELETE`` by hand: parsing the query
string, reading ``Content-Length`` bytes off ``rfile``, calling
``send_response``/``send_header``/``end_headers``.  This module redoes each of
those behaviours as plain WSGI (standard library only), so the same code runs
on wsgibridge or on any other WSGI server::

    wsgibridge examples.seed_parity:app
    python -m wsgibridge examples.seed_parity:app

Endpoint -> the tutorial section it reproduces:

=========================  =================================================================
``GET /hello?name=X``      Handling GET requests and query parameters: ``Hello, X``
                           (default ``World``), ``text/plain; charset=utf-8``, UTF-8 names.
``POST /json``             Handling POST requests with a JSON body: ``{"message": ...}`` ->
                           200 ``{"received": message}``; invalid JSON -> 400.
``POST /login``            Form data and authentication: ``user``/``password`` as
                           ``application/x-www-form-urlencoded``; good credentials -> 200,
                           bad -> 401 with ``WWW-Authenticate: Basic realm="Login Required"``,
                           any other content type -> 415.
``DELETE /resource``       Other HTTP methods: DELETE guarded by
                           ``Authorization: Bearer secret-token`` (else 403).
``GET /error``             Error handling, server side: the handler raises and the server
                           answers 500 (the app does not catch it).
``GET /bad``               Error handling, client side: the app answers 400 itself.
``POST /upload``           Large uploads: the body is read in 4096-byte chunks and only
                           counted, never held in memory -> ``Received N bytes``.
``GET /old``               Redirects: 302 with ``Location: /hello``.
``GET /page``              Caching headers: an HTML page sent with ``Cache-Control``,
                           ``Pragma`` and ``Expires`` that forbid caching.
any other path             Custom error pages: an HTML 404 page.
every request              Logging: one line per request on the ``seed_parity`` logger.
=========================  =================================================================

What the tutorial did by hand and a WSGI server now does: the status line,
``Date``/``Server``, keep-alive, bounding the request body, answering 500 when
the handler raises.  What stays the app's business: every response here carries
its own ``Content-Type`` and ``Content-Length``.  A known path asked for with
the wrong method gets 405 with ``Allow`` (the tutorial's server answered 501
for a missing ``do_*`` method); HEAD is answered like GET, without the body.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from wsgiref.types import StartResponse, WSGIEnvironment
    else:  # wsgiref.types is new in 3.11; typeshed has the same types for 3.10
        from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("seed_parity")

TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

CHUNK_SIZE = 4096  # /upload reads the body this many bytes at a time
MAX_SMALL_BODY = 1024 * 1024  # /json and /login refuse larger bodies with 413

# Demonstration secrets, as in the tutorial.  Never hard-code real ones.
USERS = {"admin": "s3cr3t"}
DELETE_TOKEN = "secret-token"


# -- responses -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """A complete response: the body is known, so Content-Length always is too."""

    status: HTTPStatus
    body: bytes
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


def text(status: HTTPStatus, message: str, *headers: tuple[str, str]) -> Response:
    return Response(status, message.encode("utf-8"), TEXT, headers)


def html_page(status: HTTPStatus, page: str, *headers: tuple[str, str]) -> Response:
    return Response(status, page.encode("utf-8"), HTML, headers)


def json_response(status: HTTPStatus, data: object) -> Response:
    return Response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), JSON)


class Reject(Exception):
    """Raised while reading a request to answer with ``response`` at once."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status.phrase)
        self.response = response


# -- reading requests ----------------------------------------------------------------------


def wsgi_text(value: str) -> str:
    """A PEP 3333 "bytes as latin-1" string decoded as the UTF-8 the client meant."""
    return value.encode("latin-1", "replace").decode("utf-8", "replace")


def query_params(environ: WSGIEnvironment) -> dict[str, list[str]]:
    """The query string, with raw or percent-encoded UTF-8 decoded."""
    return parse_qs(wsgi_text(environ.get("QUERY_STRING", "")), encoding="utf-8")


def content_length(environ: WSGIEnvironment) -> int | None:
    """The request body's length; None when there is no ``Content-Length``."""
    value = environ.get("CONTENT_LENGTH", "").strip()
    if not value:
        return None
    if not (value.isascii() and value.isdigit()):
        raise Reject(text(HTTPStatus.BAD_REQUEST, "Bad request: invalid Content-Length"))
    return int(value)


def read_small_body(environ: WSGIEnvironment) -> bytes:
    """The whole body of a request that is expected to be small (JSON, a form).

    With a Content-Length, that many bytes; without one (a chunked upload), to
    end-of-file when the server promises ``wsgi.input_terminated``, reading at
    most one byte past the limit to tell that it is exceeded.
    """
    length = content_length(environ)
    if length is None:
        if not environ.get("wsgi.input_terminated"):
            return b""  # PEP 3333: without a length, an app must not read to EOF
        body: bytes = environ["wsgi.input"].read(MAX_SMALL_BODY + 1)
        if len(body) > MAX_SMALL_BODY:
            raise Reject(text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Payload Too Large"))
        return body
    if length > MAX_SMALL_BODY:
        raise Reject(text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Payload Too Large"))
    body = environ["wsgi.input"].read(length) if length else b""
    return body


# -- the endpoints -------------------------------------------------------------------------


def hello(environ: WSGIEnvironment) -> Response:
    """``GET /hello?name=X`` -> ``Hello, X``."""
    name = query_params(environ).get("name", ["World"])[0]
    return text(HTTPStatus.OK, f"Hello, {name}")


def receive_json(environ: WSGIEnvironment) -> Response:
    """``POST /json`` with ``{"message": ...}`` -> ``{"received": message}``."""
    try:
        data = json.loads(read_small_body(environ))
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return text(HTTPStatus.BAD_REQUEST, "Bad request: invalid JSON")
    if not isinstance(data, dict):
        return text(HTTPStatus.BAD_REQUEST, 'Bad request: expected {"message": ...}')
    return json_response(HTTPStatus.OK, {"received": data.get("message")})


def login(environ: WSGIEnvironment) -> Response:
    """``POST /login`` with a urlencoded ``user`` and ``password``."""
    media_type = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
    if media_type != FORM:
        return text(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
    form = parse_qs(read_small_body(environ).decode("utf-8", "replace"), keep_blank_values=True)
    user = form.get("user", [""])[0]
    password = form.get("password", [""])[0]
    expected = USERS.get(user)
    # compare_digest takes as long for a wrong first character as for a wrong last one.
    if expected is not None and hmac.compare_digest(password.encode(), expected.encode()):
        return text(HTTPStatus.OK, "Authentication successful")
    return text(
        HTTPStatus.UNAUTHORIZED,
        "Authentication failed",
        ("WWW-Authenticate", 'Basic realm="Login Required"'),
    )


def delete_resource(environ: WSGIEnvironment) -> Response:
    """``DELETE /resource``, allowed only with ``Authorization: Bearer secret-token``."""
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(
        token.strip().encode("latin-1", "replace"), DELETE_TOKEN.encode()
    ):
        return text(HTTPStatus.OK, "Resource deleted")
    return text(HTTPStatus.FORBIDDEN, "Forbidden")


def fail(environ: WSGIEnvironment) -> Response:
    """``GET /error``: an unhandled exception; the server answers 500."""
    raise RuntimeError("deliberate failure in /error: the server must answer 500")


def bad_request(environ: WSGIEnvironment) -> Response:
    """``GET /bad``: the app itself rejects the request with 400."""
    return text(HTTPStatus.BAD_REQUEST, "Bad request: this endpoint always rejects the request")


def upload(environ: WSGIEnvironment) -> Response:
    """``POST /upload``: count the body in CHUNK_SIZE reads, never holding all of it."""
    stream = environ["wsgi.input"]
    length = content_length(environ)
    received = 0
    if length is None:
        # No Content-Length: a server that promises wsgi.input_terminated ends
        # the stream at the end of the body (a chunked upload); others have none.
        if environ.get("wsgi.input_terminated"):
            while chunk := stream.read(CHUNK_SIZE):
                received += len(chunk)
        return text(HTTPStatus.OK, f"Received {received} bytes")
    while received < length:
        chunk = stream.read(min(CHUNK_SIZE, length - received))
        if not chunk:
            return text(
                HTTPStatus.BAD_REQUEST,
                f"Bad request: the body ended after {received} of {length} bytes",
            )
        received += len(chunk)
    return text(HTTPStatus.OK, f"Received {received} bytes")


def old(environ: WSGIEnvironment) -> Response:
    """``GET /old``: a temporary redirect to ``/hello``."""
    return text(HTTPStatus.FOUND, "Found: /hello", ("Location", "/hello"))


PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>seed parity</title></head>
<body>
<h1>Served fresh</h1>
<p>This page is sent with headers that forbid caching, so a reload always reaches the server.</p>
</body>
</html>
"""


def page(environ: WSGIEnvironment) -> Response:
    """``GET /page``: HTML that no cache may keep."""
    return html_page(
        HTTPStatus.OK,
        PAGE,
        ("Cache-Control", "no-cache, no-store, must-revalidate"),
        ("Pragma", "no-cache"),
        ("Expires", "0"),
    )


NOT_FOUND_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>404 Not Found</title></head>
<body>
<h1>404 Not Found</h1>
<p>There is nothing at <code>{path}</code>.</p>
<p>Try <a href="/hello">/hello</a> or <a href="/page">/page</a>.</p>
</body>
</html>
"""


def not_found(path: str) -> Response:
    """The custom HTML 404 page (the path is escaped: it comes from the client)."""
    return html_page(HTTPStatus.NOT_FOUND, NOT_FOUND_PAGE.format(path=html.escape(path)))


ROUTES: dict[str, dict[str, Callable[[WSGIEnvironment], Response]]] = {
    "/hello": {"GET": hello},
    "/json": {"POST": receive_json},
    "/login": {"POST": login},
    "/resource": {"DELETE": delete_resource},
    "/error": {"GET": fail},
    "/bad": {"GET": bad_request},
    "/upload": {"POST": upload},
    "/old": {"GET": old},
    "/page": {"GET": page},
}


# -- the application -----------------------------------------------------------------------


def dispatch(method: str, path: str, environ: WSGIEnvironment) -> Response:
    """The response for one request: route by path, then by method."""
    methods = ROUTES.get(path)
    if methods is None:
        return not_found(path)
    handler = methods.get(method)
    if handler is None and method == "HEAD":
        handler = methods.get("GET")  # the server leaves the body out
    if handler is None:
        allow = sorted({*methods, "HEAD"} if "GET" in methods else set(methods))
        return text(
            HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed", ("Allow", ", ".join(allow))
        )
    try:
        return handler(environ)
    except Reject as rejected:
        return rejected.response


def printable(value: str) -> str:
    """``value`` with control characters escaped, so a request cannot forge log lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point: dispatch, log one line, send the complete response."""
    method = environ["REQUEST_METHOD"]
    path = wsgi_text(environ.get("PATH_INFO", "")) or "/"
    try:
        response = dispatch(method, path, environ)
    except Exception as exc:
        log.error(
            "%s %s -> %s raised; the server answers 500",
            printable(method),
            printable(path),
            type(exc).__name__,
        )
        raise
    status = response.status
    log.info("%s %s -> %d %s", printable(method), printable(path), status.value, status.phrase)
    start_response(
        f"{status.value} {status.phrase}",
        [
            ("Content-Type", response.content_type),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ],
    )
    return [response.body]
