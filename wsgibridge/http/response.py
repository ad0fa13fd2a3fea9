"""Running a WSGI app and framing its response: everything that decides what goes on the wire.

Rule: this module decides, the handler sends.  :class:`ResponseWriter` holds
the PEP 3333 state machine (``start_response``, ``write``, iteration,
``close``) and the RFC 9112 framing choice; it emits bytes only through a
:class:`ResponseSink`, which the handler implements with ``send_response_only``
/ ``send_header`` and tests implement with a list.

Framing (RFC 9112 §6.3 read from the server's side):

* no body at all for HEAD, 1xx, 204 and 304 (RFC 9110 §6.4.1); a HEAD response
  keeps the Content-Length a GET would have had when the app gave its body,
  and has none when the app gave an empty one (its length is not known);
* ``Content-Length`` when the app sent one or when the length is known before
  the first byte goes out (a one-element list, or a body that ended before any
  non-empty chunk); bytes past it are not sent, and a body that ends short
  closes the connection so the client sees the truncation;
* ``Transfer-Encoding: chunked`` for an HTTP/1.1 request of unknown length;
* otherwise the body ends when the connection closes (HTTP/1.0).
"""

from __future__ import annotations

import enum
import logging
import re
import time
import traceback
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, ClassVar, Protocol, cast

from .._mypyc import mypyc_attr
from .._types import WSGIApp
from .._version import __version__
from ..errors import AppError, ClientDisconnected, HTTPError, ResponseHeaderError
from .filewrapper import FileWrapper
from .grammar import FIELD_VALUE_STR, REASON_PHRASE_STR, TOKEN_STR

log = logging.getLogger("wsgibridge.error")

# PEP 3333: "a status code and a reason phrase, in that order and separated by
# a single space"; the reason phrase is RFC 9112 §4's (grammar.REASON_PHRASE_STR).
# Only final statuses, 200-599: RFC 9110 §15 defines no code above 599, and a
# 1xx is an interim response that a client skips while it waits for the real
# one - sent as the app's answer, every later response on the connection
# would be taken for the one before it.  (WSGI has no way to switch protocols.)
_STATUS = re.compile(f"([2-5][0-9][0-9]) ({REASON_PHRASE_STR.pattern})")

# RFC 9110 §7.6.1 and PEP 3333 "Other HTTP Features": hop-by-hop fields are the
# server's business; an application must not set them.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",  # obsolete, but still hop-by-hop wherever it is honoured
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class Framing(enum.Enum):
    """How the end of a response body is shown to the client."""

    EMPTY = "empty"  # no body may be sent (HEAD, 1xx, 204, 304)
    LENGTH = "content-length"
    CHUNKED = "chunked"
    CLOSE = "close"  # the body ends when the connection closes


def has_no_body(method: str, status_code: int) -> bool:
    """RFC 9110 §6.4.1: HEAD, 1xx, 204 and 304 responses end after the header section."""
    return method == "HEAD" or status_code < 200 or status_code in (204, 304)


def choose_framing(
    *, method: str, status_code: int, http11: bool, content_length: int | None
) -> Framing:
    """The framing of a response, from what is known when its header section goes out."""
    if has_no_body(method, status_code):
        return Framing.EMPTY
    if content_length is not None:
        return Framing.LENGTH
    if http11:
        return Framing.CHUNKED
    return Framing.CLOSE


class ResponseSink(Protocol):
    """Where a :class:`ResponseWriter` sends bytes (the handler, or a test double)."""

    def send_head(
        self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        """Send the status line, the header fields and the first body bytes, in one write."""

    def send_body(self, data: bytes) -> None:
        """Send body bytes (already framed)."""

    def send_file(self, file: Any, offset: int, count: int) -> int:
        """Send ``count`` bytes of a regular file from ``offset``; returns bytes sent."""


class _DateCache:
    """The IMF-fixdate for the current second, formatted once per second."""

    __slots__ = ("second", "value")

    def __init__(self) -> None:
        self.second = -1
        self.value = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.value = formatdate(second, usegmt=True)
            self.second = second
        return self.value


http_date = _DateCache().now

SERVER_SOFTWARE = f"wsgibridge/{__version__}"


ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"


def error_body(code: int, message: str | None, *, encoding: str) -> bytes:
    """The body of every error response the server writes itself, plain text.

    The status line's code and phrase and a newline (``500 Internal Server
    Error``), then, when there is one, the message (why, or a traceback) in
    ``encoding`` (unencodable characters replaced) and a newline.  The
    Content-Type is :data:`ERROR_CONTENT_TYPE`.
    """
    status = HTTPStatus(code)
    body = f"{status.value} {status.phrase}\n".encode("ascii")
    if message:
        body += message.encode(encoding, "replace") + b"\n"
    return body


def error_response(
    code: int,
    message: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    server: str = SERVER_SOFTWARE,
) -> tuple[list[tuple[str, str]], bytes]:
    """The header fields and body of an error the server answers itself (the app is not called).

    A short plain-text body (:func:`error_body`: ``400 Bad Request`` and why,
    the message in latin-1), ``Connection: close`` (the connection ends with
    it), and ``Date``: RFC 9110 §6.6.1, "An origin server with a clock MUST
    generate a Date header field in all 2xx, 3xx and 4xx responses".
    ``extra_headers`` must already be validated.
    """
    body = error_body(code, message, encoding="latin-1")
    headers = [
        ("Content-Type", ERROR_CONTENT_TYPE),
        ("Content-Length", str(len(body))),
        *extra_headers,
        ("Connection", "close"),
        ("Date", http_date()),
        ("Server", server),
    ]
    return headers, body


def encode_head(
    protocol: str, status_code: int, reason: str, headers: Iterable[tuple[str, str]]
) -> bytes:
    """A status line and header section as bytes (latin-1, the names and values validated)."""
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers])
    return f"{protocol} {status_code} {reason}\r\n{lines}\r\n".encode("latin-1", "strict")


def error_message(code: int, message: str | None = None, *, with_body: bool = True) -> bytes:
    """A whole error response as bytes, for a connection no handler serves (HTTP/1.1)."""
    headers, body = error_response(code, message)
    head = encode_head("HTTP/1.1", code, HTTPStatus(code).phrase, headers)
    return head + body if with_body else head


def validate_status(status: object) -> tuple[int, str]:
    """(code, reason) from a PEP 3333 status string, or ResponseHeaderError."""
    if not isinstance(status, str):
        raise ResponseHeaderError(f"status must be a str, not {type(status).__name__}: {status!r}")
    match = _STATUS.fullmatch(status)
    if match is None:
        raise ResponseHeaderError(
            f"status must be a final status code (200-599), a space and a reason phrase"
            f" without control characters, not {status!r}"
        )
    return int(match.group(1)), match.group(2)


# (name, value) pairs that passed every check below: an app sends the same few
# again and again.  Bounded; plain tuples of plain strs only.
_VALID_HEADERS: set[tuple[str, str]] = set()
_VALID_HEADERS_MAX = 1024


def validate_headers(headers: object) -> list[tuple[str, str]]:
    """Check response headers as PEP 3333 and RFC 9110 require; returns them as a list."""
    if not isinstance(headers, list):
        raise ResponseHeaderError(
            f"response_headers must be a list of (name, value) tuples, not {type(headers).__name__}"
        )
    valid = _VALID_HEADERS
    for item in headers:
        if (
            type(item) is tuple
            and len(item) == 2
            and type(item[0]) is str
            and type(item[1]) is str
            and item in valid  # hashed only once known to be two strs
        ):
            continue
        if not isinstance(item, tuple) or len(item) != 2:
            raise ResponseHeaderError(
                f"each response header must be a (name, value) tuple: {item!r}"
            )
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            raise ResponseHeaderError(
                f"header names and values must be str, not {type(name).__name__}"
                f" and {type(value).__name__}: {item!r}"
            )
        if TOKEN_STR.fullmatch(name) is None:
            raise ResponseHeaderError(f"header name is not an RFC 9110 token: {name!r}")
        if FIELD_VALUE_STR.fullmatch(value) is None:
            raise ResponseHeaderError(
                f"header {name!r} has a control character or a non-latin-1 character"
                f" in its value: {value!r}"
            )
        if name.lower() in HOP_BY_HOP:
            raise ResponseHeaderError(
                f"hop-by-hop header {name!r} is the server's business (PEP 3333)"
            )
        if len(valid) < _VALID_HEADERS_MAX and type(name) is str and type(value) is str:
            valid.add((name, value))
    return headers


@mypyc_attr(allow_interpreted_subclasses=True)
class ResponseWriter:
    """One response: the ``start_response`` and ``write`` callables and the framing.

    ``keep_alive`` says, once :meth:`respond` returns, whether the connection
    may carry another request as far as this response is concerned.
    ``will_close`` is asked, just before the header section goes out, whether
    the server already knows it will close the connection (then the response
    says ``Connection: close``); its argument says whether the response is
    already complete (the app has returned, so it can read no more of the
    request body).
    """

    server_software: ClassVar[str] = SERVER_SOFTWARE  # a class attribute, compiled or not

    def __init__(
        self,
        sink: ResponseSink,
        *,
        method: str,
        http11: bool,
        client_keep_alive: bool,
        will_close: Callable[[bool], bool] | None = None,
        expose_tracebacks: bool = False,
        describe: Callable[[], str] | None = None,
        brief_app_errors: bool = False,
    ) -> None:
        self._sink = sink
        # A PEP 3333 mistake (AppError) is logged in one line, no traceback:
        # under --lint the lint has reported it in full already.
        self.brief_app_errors = brief_app_errors
        self.method = method
        self.http11 = http11
        self.keep_alive = client_keep_alive
        self._will_close = will_close
        self.expose_tracebacks = expose_tracebacks
        self._describe = describe
        # set by start_response
        self.status: str | None = None
        self.status_code = 0
        self._reason = ""
        self._headers: list[tuple[str, str]] = []
        self._declared_length: int | None = None
        # set when the header section is sent
        self.headers_sent = False
        self.sent_headers: list[tuple[str, str]] = []
        self.framing: Framing | None = None
        self._remaining: int | None = None  # bytes still allowed under Content-Length
        self._truncated = False
        self.client_gone = False
        self.body_bytes = 0  # body bytes that actually went out (framing excluded)

    # -- PEP 3333 callables -------------------------------------------------------

    def start_response(
        self,
        status: object,
        headers: object,
        exc_info: object = None,
    ) -> Callable[[bytes], None]:
        """The ``start_response`` callable of PEP 3333.

        The arguments (and ``write``'s ``data``) are typed ``object``:
        whatever the app passes is checked here, with the PEP's words (and a
        compiled build would otherwise refuse a wrong type with a bare TypeError).
        """
        if exc_info:
            try:
                if self.headers_sent:
                    # "if exc_info is provided, and the HTTP headers have already
                    # been sent, start_response must raise an error, and should
                    # re-raise using the exc_info tuple"
                    raise exc_info[1].with_traceback(exc_info[2])  # type: ignore[index]
            finally:
                exc_info = None  # break the traceback cycle (PEP 3333)
        elif self.status is not None:
            raise AppError("start_response called a second time without exc_info (PEP 3333)")
        code, reason = validate_status(status)
        checked = validate_headers(headers)
        declared: int | None = None
        for name, value in checked:
            if len(name) == 14 and name.lower() == "content-length":
                if not value.isdigit() or not value.isascii():
                    raise ResponseHeaderError(f"Content-Length is not a number: {value!r}")
                length = int(value)
                if declared is not None and declared != length:
                    raise ResponseHeaderError("two different Content-Length headers")
                declared = length
        self.status = cast(str, status)  # validate_status passed it
        self.status_code = code
        self._reason = reason
        self._headers = checked
        self._declared_length = declared
        return self.write

    def write(self, data: object) -> None:
        """The ``write`` callable of PEP 3333 (also used for each chunk of the iterable)."""
        if type(data) is not bytes and not isinstance(data, bytes):
            raise AppError(
                f"the application sent {type(data).__name__} where bytes belong: {data!r:.60}"
            )
        if self.status is None:
            raise AppError("the application sent body bytes before calling start_response")
        if not data:
            return
        if not self.headers_sent:
            self._send_head(data, None)
            return
        self._send_body(data)

    # -- running an application ---------------------------------------------------

    def respond(self, app: WSGIApp, environ: dict[str, Any]) -> None:
        """Call the app, send its response, call ``close()`` exactly once."""
        try:
            # object, not bytes: an app may return anything, checked by write() in
            # the PEP's words (a compiled build would refuse a str with a TypeError).
            result: Iterable[object] = app(environ, self.start_response)
        except Exception as exc:
            self._app_failed(exc)
            return
        try:
            if isinstance(result, FileWrapper) and self._send_file_wrapper(result):
                pass
            else:
                if (
                    isinstance(result, (list, tuple))
                    and len(result) == 1
                    and self.status is not None
                    and not self.headers_sent
                    and isinstance(result[0], bytes)
                ):
                    # The whole body is known: Content-Length, and one write for
                    # the header section and the body together.
                    self._send_head(result[0], len(result[0]))
                    self.finish()
                    return
                write = self.write
                for chunk in result:
                    write(chunk)
                    if self.client_gone:
                        break
            self.finish()
        except Exception as exc:
            self._app_failed(exc)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as exc:
                    self._log_app_error("the application's close() raised", exc)

    def finish(self) -> None:
        """End the body: send pending headers, the last chunk, or note a short body."""
        if self.client_gone:
            return
        if not self.headers_sent:
            if self.status is None:
                raise AppError("the application returned without calling start_response")
            self._send_head(b"", 0)
        framing = self.framing
        if framing is Framing.CHUNKED:
            # RFC 9112 §7.1: last-chunk = 1*("0") [ chunk-ext ] CRLF, then CRLF
            self._emit(b"0\r\n\r\n")
        elif framing is Framing.LENGTH and self._remaining:
            log.warning(
                "%s: the body ended %d bytes short of its Content-Length; closing the connection",
                self._what(),
                self._remaining,
            )
            self.keep_alive = False
        elif framing is Framing.CLOSE:
            self.keep_alive = False

    # -- the header section -------------------------------------------------------

    def _send_head(self, first: bytes, known_length: int | None) -> None:
        """Decide the framing and send the header section with the first body bytes."""
        code = self.status_code
        declared = self._declared_length
        length = declared if declared is not None else known_length
        framing = choose_framing(
            method=self.method, status_code=code, http11=self.http11, content_length=length
        )
        headers = self._headers
        has_date = has_server = False
        for name, _ in headers:
            lower_len = len(name)
            if lower_len == 4 and name.lower() == "date":
                has_date = True
            elif lower_len == 6 and name.lower() == "server":
                has_server = True
        out = list(headers)
        if framing is Framing.EMPTY:
            if code == 204 or code < 200:
                # RFC 9110 §8.6: "A server MUST NOT send a Content-Length header
                # field in any response with a status code of 1xx or 204".
                if declared is not None:
                    out = [h for h in out if h[0].lower() != "content-length"]
            elif declared is None and known_length and self.method == "HEAD":
                # HEAD keeps the Content-Length a GET would have had, when the
                # app produced the GET's body.  An empty body says nothing: the
                # framework may have dropped it (Flask and Werkzeug do for
                # streamed responses).  RFC 9110 §8.6: a server MUST NOT send
                # Content-Length in a response to HEAD "unless its field value
                # equals the decimal number of octets that would have been sent
                # in the content of a response if the same request had used the
                # GET method".
                out.append(("Content-Length", str(known_length)))
        elif framing is Framing.LENGTH:
            if declared is None:
                out.append(("Content-Length", str(length)))
            self._remaining = length
        elif framing is Framing.CHUNKED:
            out.append(("Transfer-Encoding", "chunked"))
        else:
            self.keep_alive = False
        if (
            self.keep_alive
            and self._will_close is not None
            and self._will_close(known_length is not None)
        ):
            self.keep_alive = False
        # RFC 9112 §9.6: a server that closes after this response "SHOULD send
        # a "close" connection option"; said to HTTP/1.0 clients too, because
        # a proxy that pools connections may not infer it from the version.
        if not self.keep_alive:
            out.append(("Connection", "close"))
        elif not self.http11:
            out.append(("Connection", "keep-alive"))
        if not has_date:
            out.append(("Date", http_date()))
        if not has_server:
            out.append(("Server", self.server_software))
        self.framing = framing
        self.headers_sent = True
        self.sent_headers = out
        body = self._frame(first) if first else b""
        try:
            self._sink.send_head(code, self._reason, out, body)
        except OSError as exc:
            self._gone(exc)

    def _frame(self, data: bytes) -> bytes:
        framing = self.framing
        if framing is Framing.LENGTH:
            remaining = self._remaining or 0
            if len(data) > remaining:
                if not self._truncated:
                    self._truncated = True
                    log.warning(
                        "%s: the application sent more than its Content-Length; the excess"
                        " was not sent",
                        self._what(),
                    )
                data = data[:remaining]
            self._remaining = remaining - len(data)
            self.body_bytes += len(data)
            return data
        if framing is Framing.CHUNKED:
            self.body_bytes += len(data)
            # RFC 9112 §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF.
            # One bytes object, so the chunk leaves in one write.
            return b"%x\r\n%b\r\n" % (len(data), data)
        if framing is Framing.CLOSE:
            self.body_bytes += len(data)
            return data
        return b""  # EMPTY: HEAD, 1xx, 204, 304 never carry a body

    def _send_body(self, data: bytes) -> None:
        framed = self._frame(data)
        if framed:
            self._emit(framed)

    def _emit(self, data: bytes) -> None:
        if self.client_gone:
            raise ClientDisconnected("the client has gone away")
        try:
            self._sink.send_body(data)
        except OSError as exc:
            self._gone(exc)

    def _gone(self, exc: BaseException) -> None:
        self.client_gone = True
        self.keep_alive = False
        raise ClientDisconnected(f"the client has gone away: {exc!r}") from exc

    # -- files ----------------------------------------------------------------------

    def _send_file_wrapper(self, wrapper: FileWrapper) -> bool:
        """Send a FileWrapper with sendfile; False to fall back to iterating it."""
        if self.status is None or self.headers_sent:
            return False
        span = wrapper.sendfile_span()
        if span is None:
            return False
        file, offset, size = span
        declared = self._declared_length
        count = size if declared is None else min(size, declared)
        self._send_head(b"", size)
        if self.framing is not Framing.LENGTH or self.client_gone:
            # HEAD and friends: nothing to send; chunked cannot happen with a length.
            return self.framing is Framing.EMPTY or self.client_gone
        try:
            sent = self._sink.send_file(file, offset, count)
        except OSError as exc:
            self._gone(exc)
        self.body_bytes += sent
        self._remaining = (self._remaining or 0) - sent
        return True

    # -- errors ---------------------------------------------------------------------

    def _what(self) -> str:
        return self._describe() if self._describe is not None else "request"

    def _log_app_error(self, message: str, exc: BaseException) -> None:
        log.error("%s: %s", self._what(), message, exc_info=exc)

    def _app_failed(self, exc: BaseException) -> None:
        """An exception escaped the app (or its iterable): 500, or a truncated response."""
        if isinstance(exc, ClientDisconnected) or self.client_gone:
            self.keep_alive = False
            log.info("%s: %s", self._what(), exc)
            return
        if isinstance(exc, HTTPError):
            # The request body turned out malformed or too large while the app
            # read it: answer with the error's own status if we still can.
            self.keep_alive = False
            log.warning("%s: %d %s", self._what(), exc.status, exc.reason)
            if not self.headers_sent:
                self._send_error(exc.status.value, exc.reason)
            else:
                self.client_gone = True
            return
        if isinstance(exc, TimeoutError):
            # A body read from a client that stopped sending: nothing useful to say.
            self.keep_alive = False
            log.info("%s: timed out reading the request body", self._what())
            return
        if self.brief_app_errors and isinstance(exc, AppError):
            log.error("%s: answered 500: %s", self._what(), exc)
        else:
            self._log_app_error("the application raised an exception", exc)
        if self.headers_sent:
            # Never end a broken response as if it were complete: closing the
            # connection without the last chunk (or short of Content-Length)
            # lets the client see the truncation.
            self.keep_alive = False
            self.client_gone = True
            return
        detail = ""
        if self.expose_tracebacks:
            detail = "".join(traceback.format_exception(exc))
        self._send_error(500, detail)

    def _send_error(self, code: int, detail: str = "") -> None:
        """Replace whatever the app started with the server's plain-text error (:func:`error_body`).

        The detail (a traceback, or why the request body was refused) is UTF-8;
        the header section gets Date and Server like any response's.
        """
        body = error_body(code, detail, encoding="utf-8")
        self.status = None
        self.start_response(
            f"{code} {HTTPStatus(code).phrase}",
            [("Content-Type", ERROR_CONTENT_TYPE), ("Content-Length", str(len(body)))],
        )
        try:
            self._send_head(body, len(body))
        except ClientDisconnected:
            pass
