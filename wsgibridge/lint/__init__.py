"""A strict PEP 3333 lint: a WSGI middleware that checks both sides of the interface as
requests run, and reports each mistake with the request, the rule broken and the fix.

``LintMiddleware(app)`` sits between a server (any server: wsgibridge, wsgiref,
webtest...) and an application (or a stack of middleware).  Like
:mod:`wsgiref.validate` it wraps everything that crosses the interface -
``environ`` and its ``wsgi.input`` / ``wsgi.errors`` streams, ``start_response``,
the ``write`` callable and the returned iterable - but where the validator
asserts and stops, the lint *reports* (one :class:`LintViolation` per distinct
mistake per request, to the ``report`` callable) and lets the request go on:

* what a correct app does is never changed, and for an incorrect one its
  (wrong) values go to the server unchanged, so the server answers the way it
  would without the lint (wsgibridge: a 500 for a bad status or header);
* the app's exceptions are never swallowed, and the lint never raises because
  of garbage it is given (a failing check is logged as a lint bug, on the
  ``wsgibridge.lint`` logger, and skipped);
* ``report`` is called synchronously, in the thread where the mistake
  happened; an exception from it propagates to whoever called the checked
  callable (a ``report`` that raises stops the request at the mistake, the way
  :mod:`wsgiref.validate` does).

Who is at fault is part of each message: "app side" rules name the code below
the lint that broke them (the function that called ``start_response`` or
``write``, the generator that yielded); "server side" rules (``environ-*``,
``close-*``, ``iterate-after-close``, ``input-not-bytes``,
``start-response-no-write``) name the code that called the lint - the server,
or a middleware between the server and the lint.  To check each layer of a
stack, wrap each layer: ``LintMiddleware(mw1(LintMiddleware(mw2(LintMiddleware(app)))))``.

What is passed through untouched, so that the server's fast paths still apply:
a ``list`` or ``tuple`` result (checked completely when the app returns: it
cannot run code later) and an instance of ``environ["wsgi.file_wrapper"]``
(returned as is so the server can still use ``sendfile``; its body is not
counted).  Any other iterable is returned wrapped in a proxy.

``close-not-called`` - how it is detected: the proxy around the app's iterable
records ``close()``.  When the proxy is garbage-collected and its ``close()``
was never called (and the app's iterable has a ``close`` method), the
violation is reported from ``__del__``.  On CPython this happens as soon as
the server (or the middleware that consumed the iterable) drops its last
reference, so it is reliable and prompt unless the proxy ends up in a
reference cycle (then at the next garbage collection); on other interpreters
it happens whenever the collector runs.  For a deterministic check,
:meth:`LintMiddleware.check_closed` reports every iterable still alive and not
closed: call it when no request is in flight (a test fixture's teardown, after
the server has stopped).

Not flagged, because PEP 3333 allows it: a generator that calls
``start_response`` on its first iteration; ``start_response`` called again
with ``exc_info`` before any body byte; an empty result; ``write()`` before the
app returns; a body on a HEAD response (the server drops it); a response
without ``Content-Type`` (RFC 9110 §8.3 makes it a SHOULD with an exception
for an unknown media type); probing ``wsgi.input`` / ``wsgi.errors`` with
``hasattr`` or ``getattr(..., default)`` (the proxies raise ``AttributeError``
for anything PEP 3333 does not give, so the probe takes its portable branch,
but only direct use, such as ``wsgi_input.seek(0)``, is reported).

Every rule, its reference and its fix are in :data:`RULES`.
"""

from __future__ import annotations

import contextlib
import dis
import logging
import os
import re
import reprlib
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from types import CodeType, FrameType, FunctionType, MethodType, TracebackType
from typing import Any, NoReturn
from urllib.parse import quote

from ..accesslog import escape_log
from ..http.response import HOP_BY_HOP

log = logging.getLogger("wsgibridge.lint")

__all__ = [
    "RULES",
    "LintMiddleware",
    "LintViolation",
    "Rule",
    "WSGILintWarning",
    "default_report",
    "log_report",
]


class WSGILintWarning(UserWarning):
    """A PEP 3333 mistake found by :class:`LintMiddleware` (the text is the full report)."""


@dataclass(frozen=True)
class LintViolation:
    """One mistake, in one request."""

    rule: str  # short stable id, e.g. "status-format" (a key of RULES)
    message: str  # what the code did, concretely, with the offending value
    fix: str  # how to fix it, one sentence
    reference: str  # the PEP 3333 (or RFC) sentence that is broken
    request: str  # the request line, escaped: 'GET /x HTTP/1.1'

    def __str__(self) -> str:
        return (
            f"PEP 3333 lint: {self.rule}\n"
            f"  request:   {self.request}\n"
            f"  problem:   {self.message}\n"
            f"  reference: {self.reference}\n"
            f"  fix:       {self.fix}"
        )

    def summary(self) -> str:
        """The report on one line (for a log)."""
        return f"{self.request}: [{self.rule}] {self.message} Fix: {self.fix}"


def default_report(violation: LintViolation) -> None:
    """Log a WARNING on the ``wsgibridge.lint`` logger and ``warnings.warn`` a
    :class:`WSGILintWarning` (in that order, so the log line is written even when
    warnings are errors)."""
    log.warning("%s", violation.summary())
    warnings.warn(WSGILintWarning(str(violation)), stacklevel=2)


def log_report(violation: LintViolation) -> None:
    """Log the violation once, in full (rule, request, problem, reference, fix), as a
    WARNING on the ``wsgibridge.lint`` logger: what the server's ``--lint`` uses."""
    log.warning("%s", violation)


# -- the rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """A rule: who breaks it ("app" below the lint, "server" above it), its reference, its fix."""

    side: str
    reference: str
    fix: str


_START = "PEP 3333, The start_response() Callable: "
_BYTES = (
    'PEP 3333, Unicode Issues: "For values referred to in this specification as'
    ' "bytestrings" (i.e., values read from wsgi.input, passed to write() or yielded by'
    ' the application), the value must be of type bytes under Python 3"'
)
_READ_PAST = (
    'PEP 3333, Input and Error Streams, note 1: "The server is not required to read past'
    " the client's specified Content-Length, and should simulate an end-of-file condition"
    " if the application attempts to read past that point. The application should not"
    ' attempt to read more data than is specified by the CONTENT_LENGTH variable."'
)
_STREAM_METHODS = (
    'PEP 3333, Input and Error Streams: "Applications conforming to this specification'
    ' must not use any other methods or attributes of the input or errors objects."'
)
_CLOSE = (
    'PEP 3333, Specification Details: "If the iterable returned by the application has a'
    " close() method, the server or gateway must call that method upon completion of the"
    " current request, whether the request was completed normally, or terminated early"
    ' due to an application error during iteration or an early disconnect of the browser."'
)
_FIRST_BODY = (
    'PEP 3333, Specification Details: "the application must invoke the start_response()'
    " callable before the iterable yields its first body bytestring, so that the server"
    ' can send the headers before any body content."'
)
_LENGTH_FIX = (
    "Make Content-Length the exact byte length of the body as produced; a middleware that"
    " changes the body (gzip, templating, a filter) must remove or recompute it."
)

RULES: dict[str, Rule] = {
    # -- the environ the lint is given (server side) --
    "environ-type": Rule(
        "server",
        'PEP 3333, Specification Details: "This object must be a builtin Python dictionary'
        ' (not a subclass, UserDict or other dictionary emulation)"',
        "Pass the application a plain dict (dict(environ) if a middleware built something else).",
    ),
    "environ-missing": Rule(
        "server",
        'PEP 3333, environ Variables: "The following variables must be present, unless their'
        ' value would be an empty string, in which case they may be omitted" (REQUEST_METHOD'
        ' "cannot ever be an empty string", SERVER_NAME and SERVER_PORT "must never be empty")'
        ' and the environ "must contain the following WSGI-defined variables"',
        "Keep every required key: a middleware that rewrites the environ changes values, it"
        " never drops REQUEST_METHOD, SERVER_NAME, SERVER_PORT, SERVER_PROTOCOL,"
        " SCRIPT_NAME/PATH_INFO or the wsgi.* keys.",
    ),
    "environ-not-str": Rule(
        "server",
        'PEP 3333, environ Variables: "It is a violation of this specification for *any* CGI'
        " variable's value to be of any type other than str.\"",
        "Store CGI variables as str (bytes decoded as latin-1); put other objects under a"
        " dotted extension key such as 'myapp.user'.",
    ),
    "environ-not-latin1": Rule(
        "server",
        'PEP 3333, Unicode Issues: all strings "must contain only code points representable in'
        ' ISO-8859-1 encoding (\\u0000 through \\u00FF, inclusive)" and "servers and gateways'
        ' must not supply strings to an application containing any other Unicode characters"',
        "Keep environ strings as bytes decoded as latin-1; decode PATH_INFO as UTF-8 in the"
        " application, into a variable of its own, not back into the environ.",
    ),
    "environ-path": Rule(
        "server",
        'CGI (RFC 3875 §4.1.5, §4.1.13): PATH_INFO = "" | ( "/" path ) and SCRIPT_NAME = "" |'
        ' ( "/" path ); PEP 3333: SCRIPT_NAME "may be an empty string, if the application'
        ' corresponds to the "root" of the server"',
        "Make SCRIPT_NAME and PATH_INFO each empty or starting with '/'; an app at the root"
        " has SCRIPT_NAME '' (never '/'), and a prefix moves between them at a '/' boundary.",
    ),
    "environ-content-length": Rule(
        "server",
        'CGI (RFC 3875 §4.1.2): CONTENT_LENGTH = "" | 1*digit; PEP 3333: "The contents of any'
        ' Content-Length fields in the HTTP request."',
        "Publish CONTENT_LENGTH as decimal digits, or leave it out when there is no body.",
    ),
    "environ-wsgi-value": Rule(
        "server",
        'PEP 3333, environ Variables: wsgi.version is "The tuple (1, 0)", wsgi.url_scheme is'
        ' "A string"; "The input and error streams provided by the server must support the'
        ' following methods": read, readline, readlines, __iter__ (input), flush, write,'
        " writelines (errors)",
        "Give wsgi.version as (1, 0), wsgi.url_scheme as a str, and streams with the methods"
        " PEP 3333 lists (io.BytesIO for input, a text stream for errors).",
    ),
    # -- start_response (app side) --
    "start-response-arguments": Rule(
        "app",
        'PEP 3333, Specification Details: "the application must invoke the start_response'
        ' callable using positional arguments (e.g. start_response(status, response_headers))"',
        "Call start_response(status, response_headers) or start_response(status,"
        " response_headers, exc_info), positionally.",
    ),
    "status-type": Rule(
        "app",
        _START + 'The status argument is an HTTP "status" string like "200 OK" or "404 Not Found".',
        "Pass the status as a str such as '200 OK', not an int, bytes or HTTPStatus"
        " (f'{s.value} {s.phrase}' for an HTTPStatus).",
    ),
    "status-format": Rule(
        "app",
        _START + '"it is a string consisting of a Status-Code and a Reason-Phrase, in that order'
        " and separated by a single space, with no surrounding whitespace or other characters."
        " [...] The string must not contain control characters, and must not be terminated"
        ' with a carriage return, linefeed, or combination thereof."',
        "Write the status as three digits, one space and a reason phrase, e.g. '404 Not Found',"
        " with nothing around it.",
    ),
    "status-code-range": Rule(
        "app",
        'RFC 9110 §15: "Values outside the range 100..599 are invalid."; §15.2: "The 1xx'
        " (Informational) class of status code indicates an interim response [...] prior to"
        ' completing the requested action and sending a final response."',
        "Answer with a final status from 200 to 599; a WSGI application cannot send interim"
        " 1xx responses (the server sends 100 Continue itself).",
    ),
    "response-not-latin1": Rule(
        "app",
        'PEP 3333, Unicode Issues: "strings passed to start_response() as a status or as'
        " response headers must follow RFC 2616 with respect to encoding. That is, they must"
        ' either be ISO-8859-1 characters, or use RFC 2047 MIME encoding." and "It is a fatal'
        ' error for an application to supply strings containing any other Unicode character"',
        "Encode non-Latin-1 text yourself: percent-encode URLs (Location), use RFC 8187"
        " filename*=UTF-8''... (Content-Disposition), or RFC 2047 for other fields.",
    ),
    "headers-type": Rule(
        "app",
        _START + '"The response_headers argument is a list of (header_name, header_value)'
        ' tuples. It must be a Python list; i.e. type(response_headers) is ListType"',
        "Pass a plain list of (name, value) tuples: list(d.items()) for a dict,"
        " headers.to_wsgi_list() for Werkzeug Headers.",
    ),
    "header-item": Rule(
        "app",
        _START + '"The response_headers argument is a list of (header_name, header_value) tuples."',
        "Make each header a 2-tuple: ('Content-Type', 'text/plain').",
    ),
    "header-type": Rule(
        "app",
        'PEP 3333, Unicode Issues: "all objects referred to in this specification as "strings"'
        ' must be of type str"; header names and values are strings',
        "Give header names and values as str: str(len(body)) for Content-Length,"
        " value.decode('latin-1') for bytes.",
    ),
    "header-name": Rule(
        "app",
        _START + '"Each header_name must be a valid HTTP header field-name (as defined by'
        ' RFC 2616, Section 4.2), without a trailing colon or other punctuation."',
        "Use a token as the name (letters, digits and !#$%&'*+-.^_`|~), without the colon.",
    ),
    "header-value": Rule(
        "app",
        _START + '"Each header_value must not include *any* control characters, including'
        ' carriage returns or linefeeds, either embedded or at the end."',
        "Remove or encode control characters (CR, LF, NUL, TAB...) in the value; never copy"
        " request input into a header unchecked (response splitting).",
    ),
    "hop-by-hop": Rule(
        "app",
        _START + '"Applications and middleware are forbidden from using HTTP/1.1 "hop-by-hop"'
        " features or headers, any equivalent features in HTTP/1.0, or any headers that would"
        " affect the persistence of the client's connection to the web server.\"",
        "Drop the header: Connection, Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade and"
        " Proxy-* are the server's business (compress with Content-Encoding instead).",
    ),
    "content-length-value": Rule(
        "app",
        'RFC 9110 §8.6: "Content-Length = 1*DIGIT"; a message with differing Content-Length'
        " values cannot be framed",
        "Send one Content-Length made of decimal digits: str(len(body)).",
    ),
    "start-response-twice": Rule(
        "app",
        _START + '"it is a fatal error to call start_response without the exc_info argument if'
        " start_response has already been called within the current invocation of the"
        " application. This includes the case where the first call to start_response raised"
        ' an error."',
        "Call start_response once; to replace the response after an error, call it again"
        " with sys.exc_info() as the third argument, from the except block.",
    ),
    "exc-info-type": Rule(
        "app",
        _START + '"The exc_info argument, if supplied, must be a Python sys.exc_info() tuple."',
        "Pass sys.exc_info() from inside the except block (outside one it is"
        " (None, None, None)), or pass nothing.",
    ),
    "exc-info-trapped": Rule(
        "app",
        _START + '"The application must not trap any exceptions raised by start_response, if'
        " it called start_response with exc_info. Instead, it should allow such exceptions to"
        ' propagate back to the server or gateway."',
        "Let the exception raised by start_response(..., exc_info) propagate: the headers are"
        " out, so the response can only be aborted.",
    ),
    "start-response-no-write": Rule(
        "server",
        'PEP 3333, Specification Details: "The start_response callable must return a'
        ' write(body_data) callable that takes one positional parameter"',
        "Return what the inner start_response returns from your wrapper:"
        " return start_response(status, headers, exc_info).",
    ),
    # -- the result and the body (app side) --
    "result-not-iterable": Rule(
        "app",
        'PEP 3333, Specification Details: "the application object must always return an'
        ' iterable yielding zero or more bytestrings."; The write() Callable: "An application'
        " must return an iterable object, even if it uses write() to produce all or part of"
        ' its response body."',
        "Return a list of bytes (return [body]), or [] when the body went through write().",
    ),
    "result-is-string": Rule(
        "app",
        'PEP 3333, Specification Details: "the application object must always return an'
        ' iterable yielding zero or more bytestrings." (a str or bytes object is iterable, but'
        " yields one character or one int at a time)",
        "Wrap the body in a list: return [body] (encode a str first).",
    ),
    "start-response-missing": Rule("app", _FIRST_BODY, "Call start_response before returning."),
    "body-before-start-response": Rule(
        "app", _FIRST_BODY, "Call start_response before the first yield."
    ),
    "body-not-bytes": Rule(
        "app",
        _BYTES,
        "Yield bytes: encode text (text.encode('utf-8')), convert bytearray or memoryview with"
        " bytes().",
    ),
    "write-not-bytes": Rule(
        "app", _BYTES, "Pass bytes to write(): write(text.encode('utf-8')), write(bytes(view))."
    ),
    "write-after-iteration": Rule(
        "app",
        'PEP 3333, The write() Callable: "Applications must not invoke write() from within'
        " their return iterable, and therefore any bytestrings yielded by the iterable are"
        ' transmitted after all bytestrings passed to write() have been sent to the client."',
        "Call write() only before the application returns; from a generator, yield the bytes"
        " instead.",
    ),
    "content-length-exceeded": Rule(
        "app",
        'PEP 3333, Handling the Content-Length Header: "If the application supplies a'
        " Content-Length header, the server should not transmit more bytes to the client"
        ' than the header allows" (the excess is lost)',
        _LENGTH_FIX,
    ),
    "content-length-short": Rule(
        "app",
        'PEP 3333, Handling the Content-Length Header: "if the application does not provide'
        " *enough* data to meet its stated Content-Length, the server should close the"
        ' connection and log or otherwise report the error."',
        _LENGTH_FIX,
    ),
    "body-forbidden": Rule(
        "app",
        'RFC 9110 §15.3.5: "A 204 response is terminated by the end of the header section; it'
        ' cannot contain content or trailers." (§15.4.5: the same for 304)',
        "Send no body with 204 or 304 (return []), or answer 200 when there is content.",
    ),
    "result-len-wrong": Rule(
        "app",
        'PEP 3333, Specification Details: "If a call to len(iterable) succeeds, the server must'
        " be able to rely on the result being accurate. That is, if the iterable returned by"
        " the application provides a working __len__() method, it must return an accurate"
        ' result."',
        "Make __len__ return the number of bytestrings the iterable yields, or remove it.",
    ),
    # -- the iterable's close() (server side) --
    "close-not-called": Rule(
        "server",
        _CLOSE,
        "Call the iterable's close() in a finally: block; a middleware that consumes or replaces"
        " the iterable must call its close() (or return an iterable whose close() does).",
    ),
    "close-called-twice": Rule(
        "server",
        _CLOSE + " (once: the PEP's own server does it in one finally: block)",
        "Call the iterable's close() exactly once; a middleware that closes the inner iterable"
        " must not also hand that close() to the server.",
    ),
    "iterate-after-close": Rule(
        "server",
        'PEP 3333, Questions and Answers: "The close() idiom allows an application to release'
        ' critical resources at the end of a request" - after close() the iterable is finished',
        "Stop iterating before calling close(); close() comes last.",
    ),
    # -- wsgi.input and wsgi.errors --
    "input-read-unbounded": Rule(
        "app",
        _READ_PAST,
        "Read only when CONTENT_LENGTH is set, and at most that many bytes"
        " (read(int(environ['CONTENT_LENGTH']))); read to end-of-file only when"
        " environ.get('wsgi.input_terminated') is true.",
    ),
    "input-read-past-length": Rule(
        "app",
        _READ_PAST,
        "Ask for at most the bytes that remain: read(min(size, remaining)), counting"
        " remaining down from CONTENT_LENGTH.",
    ),
    "input-readline-size": Rule(
        "app",
        'PEP 3333, Input and Error Streams, note 2: "Servers should support the optional'
        ' "size" argument to readline(), but as in WSGI 1.0, they are allowed to omit support'
        ' for it."',
        "Call readline() without an argument, or with a positive size.",
    ),
    "input-not-bytes": Rule(
        "server",
        _BYTES,
        "Make wsgi.input a binary stream (io.BytesIO, not io.StringIO) whose reads return bytes.",
    ),
    "stream-method": Rule(
        "app",
        _STREAM_METHODS,
        "Use only read, readline, readlines and iteration on wsgi.input, and write, writelines"
        " and flush on wsgi.errors; to seek, buffer the body: io.BytesIO(wsgi_input.read(n)).",
    ),
    "stream-close": Rule(
        "app",
        _STREAM_METHODS + ' "In particular, applications must not attempt to close these'
        ' streams, even if they possess close() methods."',
        "Don't close wsgi.input or wsgi.errors (nor use them in a with statement): the server"
        " owns them.",
    ),
    "errors-not-str": Rule(
        "app",
        'PEP 3333, environ Variables: wsgi.errors "should be a "text mode" stream"; Input and'
        " Error Streams: write(str)",
        "Write str to wsgi.errors: decode bytes first, or print(..., file=environ['wsgi.errors']).",
    ),
}

# -- helpers ---------------------------------------------------------------------------------

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_STATUS = re.compile(r"([0-9]{3}) (.*)", re.DOTALL)
_NOT_LATIN1 = re.compile(r"[^\x00-\xff]")
_NO_BODY = (204, 304)
_REQUIRED = (
    "REQUEST_METHOD",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "wsgi.version",
    "wsgi.url_scheme",
    "wsgi.input",
    "wsgi.errors",
    "wsgi.multithread",
    "wsgi.multiprocess",
    "wsgi.run_once",
)
_NEVER_EMPTY = ("REQUEST_METHOD", "SERVER_NAME", "SERVER_PORT")
_INPUT_METHODS = ("read", "readline", "readlines", "__iter__")
_ERRORS_METHODS = ("write", "writelines", "flush")
_REQUEST_MAX = 300  # characters of the request line kept in a report
# The opcodes of ``obj.name`` (as opposed to hasattr(obj, "name") or getattr(obj, "name", x)).
_ATTR_OPS = frozenset(dis.opmap[name] for name in ("LOAD_ATTR", "LOAD_METHOD") if name in dis.opmap)

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 4
_repr.maxlevel = 3


def _show(value: object) -> str:
    """A short repr that never raises."""
    try:
        return _repr.repr(value)
    except Exception:
        return f"<{type(value).__name__} object with a broken repr>"


def _where(frame: FrameType | None) -> str:
    """``qualname (file.py:line)`` of a frame."""
    if frame is None:
        return "unknown code"
    try:
        code = frame.f_code
        return f"{_qualname(code)} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"
    except Exception:
        return "unknown code"


def _qualname(code: CodeType) -> str:
    return str(getattr(code, "co_qualname", code.co_name))


def _describe(obj: object) -> str:
    """A name for an app or an iterable, to put in a message."""
    try:
        code = getattr(obj, "gi_code", None)  # a generator
        if isinstance(code, CodeType):
            where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            return f"generator {_qualname(code)} ({where})"
        if isinstance(obj, MethodType):
            obj = obj.__func__
        if isinstance(obj, FunctionType):
            code = obj.__code__
            where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            return f"{obj.__module__}.{obj.__qualname__} ({where})"
        kind = type(obj)
        return f"a {kind.__module__}.{kind.__qualname__} object"
    except Exception:
        return "the application"


def _direct_access(frame: FrameType | None) -> bool:
    """True if ``frame`` is at an ``obj.name`` load rather than a call such as hasattr()."""
    if frame is None:
        return True
    try:
        return frame.f_code.co_code[frame.f_lasti] in _ATTR_OPS
    except Exception:
        return True


def _latin1(text: str) -> bool:
    return text.isascii() or _NOT_LATIN1.search(text) is None


def _iterable(value: object) -> bool:
    """Iterable by the iterator protocol or the old ``__getitem__`` one (PEP 3333 allows both)."""
    return isinstance(value, Iterable) or hasattr(type(value), "__getitem__")


def _request_line(environ: object) -> str:
    """'GET /x?y=1 HTTP/1.1' from an environ (whatever is in it), escaped for a log."""
    try:
        if not isinstance(environ, Mapping):
            return f"(no request: the environ is {_show(environ)})"

        def text(key: str, default: str = "") -> str:
            value = environ.get(key, default)
            return value if isinstance(value, str) else _show(value)

        target = environ.get("REQUEST_URI")
        if not isinstance(target, str) or not target:
            path = text("SCRIPT_NAME") + text("PATH_INFO")
            target = quote(path, safe="/;=,~!$&'()*+@:%", encoding="latin-1", errors="replace")
            query = text("QUERY_STRING")
            if query:
                target += "?" + query
        line = f"{text('REQUEST_METHOD', '-')} {target or '/'} {text('SERVER_PROTOCOL', '-')}"
        if len(line) > _REQUEST_MAX:
            line = line[: _REQUEST_MAX - 3] + "..."
        return escape_log(line)
    except Exception:
        return "(unknown request)"


@contextlib.contextmanager
def _checking(what: str) -> Iterator[None]:
    """Run checks; a check that fails is a bug in the lint, logged and skipped."""
    try:
        yield
    except Exception:
        log.exception("lint: checking %s failed (a bug in wsgibridge.lint, not in the app)", what)


# -- per-request state -----------------------------------------------------------------------


class _Request:
    """What the lint knows about one request, and the violations found in it."""

    def __init__(
        self, report: Callable[[LintViolation], None], request: str, upstream: str, app: str
    ) -> None:
        self.report = report
        self.request = request
        self.upstream = upstream  # who called the lint: the server or a middleware
        self.app = app
        self.seen: set[tuple[str, object]] = set()
        self.pending: list[LintViolation] = []
        self.lock = threading.Lock()
        self.method = ""
        self.start_calls = 0
        self.status_code: int | None = None
        self.declared: int | None = None  # the Content-Length of the current headers
        self.produced = 0  # body bytes produced (write() and the iterable)
        self.returned = False  # the application callable has returned
        self.raised_exc_info = False  # start_response(..., exc_info) raised into the app

    def flag(self, rule: str, message: str, key: object = None) -> None:
        """Note a violation (once per rule and key per request); delivered by :meth:`deliver`."""
        with self.lock:
            if (rule, key) in self.seen:
                return
            self.seen.add((rule, key))
            spec = RULES[rule]
            self.pending.append(
                LintViolation(rule, message, spec.fix, spec.reference, self.request)
            )

    def deliver(self) -> None:
        """Hand the pending violations to ``report`` (outside any check guard)."""
        while True:
            with self.lock:
                if not self.pending:
                    return
                violation = self.pending.pop(0)
            self.report(violation)

    # -- the body, from write() and the iterable --

    def body(self, data: bytes, via: str) -> None:
        size = len(data)
        if not size:
            return
        self.produced += size
        code = self.status_code
        if code in _NO_BODY:
            self.flag(
                "body-forbidden",
                f"{via} produced body bytes ({_show(data)}) for a {code} response, which has no"
                " body; the server drops them.",
            )
        elif (
            self.declared is not None
            and self.method != "HEAD"
            and code is not None
            and code >= 200
            and self.produced > self.declared
        ):
            self.flag(
                "content-length-exceeded",
                f"the headers say Content-Length: {self.declared} but {via} produced"
                f" {self.produced} bytes so far; the bytes past the length are lost and a client"
                " may take them for the next response.",
            )

    def end(self, via: str) -> None:
        """The body is complete (the iterable is exhausted, or a list was returned)."""
        if self.start_calls == 0:
            self.flag(
                "start-response-missing",
                f"{via} ended without start_response ever being called, so there is no status"
                " to send.",
            )
            return
        code = self.status_code
        if (
            self.declared is not None
            and self.method != "HEAD"
            and code is not None
            and code >= 200
            and code not in _NO_BODY
            and self.produced < self.declared
        ):
            self.flag(
                "content-length-short",
                f"the headers say Content-Length: {self.declared} but the body ended after"
                f" {self.produced} bytes; the client waits for the rest until the connection"
                " closes.",
            )

    def trapped(self, how: str) -> None:
        if self.raised_exc_info:
            self.flag(
                "exc-info-trapped",
                "start_response(status, headers, exc_info) raised (the headers were already"
                f" sent), and the application caught the exception and {how}.",
            )


# -- environ checks --------------------------------------------------------------------------


def _check_environ(state: _Request, environ: object) -> None:
    by = f"the environ passed in by {state.upstream}"
    if type(environ) is not dict:
        state.flag("environ-type", f"{by} is a {type(environ).__qualname__}, not a dict.")
    if not isinstance(environ, Mapping):
        return
    for key in _REQUIRED:
        if key not in environ:
            state.flag("environ-missing", f"{by} has no {key!r} key.", key)
        elif key in _NEVER_EMPTY and environ[key] == "":
            state.flag("environ-missing", f"{by} has an empty {key!r}.", key)
    if "SCRIPT_NAME" not in environ and "PATH_INFO" not in environ:
        state.flag(
            "environ-missing",
            f"{by} has neither 'SCRIPT_NAME' nor 'PATH_INFO' (PATH_INFO should be at least '/').",
            "PATH_INFO",
        )
    for key, value in list(environ.items()):
        if not isinstance(key, str) or "." in key:
            continue  # wsgi.* and extensions: any type
        if not isinstance(value, str):
            state.flag(
                "environ-not-str",
                f"in {by}, the CGI variable {key!r} is a {type(value).__qualname__}:"
                f" {_show(value)}.",
                key,
            )
        elif not _latin1(value):
            state.flag(
                "environ-not-latin1",
                f"in {by}, {key!r} has characters beyond U+00FF: {_show(value)} (decoded as"
                " UTF-8 instead of latin-1?).",
                key,
            )
    for key in ("SCRIPT_NAME", "PATH_INFO"):
        value = environ.get(key, "")
        if isinstance(value, str) and value and not value.startswith("/"):
            state.flag("environ-path", f"in {by}, {key} {value!r} does not start with '/'.", key)
    if environ.get("SCRIPT_NAME") == "/":
        state.flag(
            "environ-path",
            f"in {by}, SCRIPT_NAME is '/': an application at the root has SCRIPT_NAME ''.",
            "SCRIPT_NAME",
        )
    length = environ.get("CONTENT_LENGTH")
    if isinstance(length, str) and length and not (length.isascii() and length.isdigit()):
        state.flag("environ-content-length", f"in {by}, CONTENT_LENGTH is {length!r}.")
    version = environ.get("wsgi.version", (1, 0))
    if type(version) is not tuple:
        state.flag(
            "environ-wsgi-value", f"in {by}, wsgi.version is {_show(version)}.", "wsgi.version"
        )
    scheme = environ.get("wsgi.url_scheme", "http")
    if not isinstance(scheme, str):
        state.flag(
            "environ-wsgi-value", f"in {by}, wsgi.url_scheme is {_show(scheme)}.", "url_scheme"
        )
    for key, methods in (("wsgi.input", _INPUT_METHODS), ("wsgi.errors", _ERRORS_METHODS)):
        if key not in environ:
            continue
        stream = environ[key]
        missing = [name for name in methods if not hasattr(stream, name)]
        if missing:
            state.flag(
                "environ-wsgi-value",
                f"in {by}, {key} ({_show(stream)}) has no {', '.join(missing)}.",
                key,
            )


def _content_length(value: object) -> int | None:
    if isinstance(value, str) and value and value.isascii() and value.isdigit():
        return int(value)
    return None


# -- wsgi.input and wsgi.errors --------------------------------------------------------------


class _Input:
    """``wsgi.input`` as PEP 3333 gives it: read, readline, readlines, iteration - checked."""

    def __init__(
        self, stream: Any, state: _Request, declared: int | None, terminated: bool
    ) -> None:
        self._stream = stream
        self._state = state
        self._declared = declared  # CONTENT_LENGTH, None if absent or empty
        self._terminated = terminated  # wsgi.input_terminated: reading to EOF is safe
        self._consumed = 0

    def _check_size(self, method: str, size: object, frame: FrameType | None) -> None:
        state = self._state
        unbounded = size is None or (isinstance(size, int) and size < 0)
        if method == "readline" and isinstance(size, int) and size < 0:
            state.flag(
                "input-readline-size",
                f"{_where(frame)} called wsgi.input.readline({size}).",
            )
        if self._terminated:
            return
        if unbounded:
            if method == "read" and self._declared is None:
                state.flag(
                    "input-read-unbounded",
                    f"{_where(frame)} called wsgi.input.read({'' if size is None else size})"
                    " with no CONTENT_LENGTH and no wsgi.input_terminated: a server that does"
                    " not simulate end-of-file blocks here until the client gives up.",
                )
        elif isinstance(size, int) and size > 0:
            remaining = (self._declared or 0) - self._consumed
            if size > remaining:
                declared = "absent" if self._declared is None else str(self._declared)
                state.flag(
                    "input-read-past-length",
                    f"{_where(frame)} called wsgi.input.{method}({size}) with"
                    f" {max(remaining, 0)} bytes left (CONTENT_LENGTH {declared}, no"
                    " wsgi.input_terminated): a server that does not simulate end-of-file"
                    " blocks waiting for bytes the client never sends.",
                )

    def _took(self, method: str, data: object) -> None:
        if isinstance(data, bytes):
            self._consumed += len(data)
        else:
            self._state.flag(
                "input-not-bytes",
                f"wsgi.input.{method}() (the stream of {self._state.upstream}) returned a"
                f" {type(data).__qualname__}: {_show(data)}.",
            )

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        frame = sys._getframe(2)
        state = self._state
        with _checking(f"wsgi.input.{method}"):
            size = args[0] if args else kwargs.get("size")
            self._check_size(method, size, frame)
        state.deliver()
        data = getattr(self._stream, method)(*args, **kwargs)
        with _checking(f"wsgi.input.{method}"):
            self._took(method, data)
        state.deliver()
        return data

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("read", args, kwargs)

    def readline(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("readline", args, kwargs)

    def readlines(self, *args: Any, **kwargs: Any) -> Any:
        lines = self._stream.readlines(*args, **kwargs)
        with _checking("wsgi.input.readlines"):
            for line in lines:
                self._took("readlines", line)
        self._state.deliver()
        return lines

    def __iter__(self) -> Iterator[Any]:
        for line in self._stream:
            with _checking("iterating wsgi.input"):
                self._took("__iter__", line)
            self._state.deliver()
            yield line

    def close(self) -> None:
        self._state.flag("stream-close", f"{_where(sys._getframe(1))} closed wsgi.input.")
        self._state.deliver()
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        _refuse(self, "wsgi.input", name, sys._getframe(1))

    def __repr__(self) -> str:
        return f"<lint wsgi.input around {_show(self._stream)}>"


class _Errors:
    """``wsgi.errors`` as PEP 3333 gives it: write, writelines, flush - checked."""

    def __init__(self, stream: Any, state: _Request) -> None:
        self._stream = stream
        self._state = state

    def _check(self, text: object, frame: FrameType | None) -> None:
        if not isinstance(text, str):
            self._state.flag(
                "errors-not-str",
                f"{_where(frame)} wrote a {type(text).__qualname__} to wsgi.errors: {_show(text)}.",
            )

    def write(self, text: Any) -> Any:
        with _checking("wsgi.errors.write"):
            self._check(text, sys._getframe(1))
        self._state.deliver()
        return self._stream.write(text)

    def writelines(self, lines: Any) -> Any:
        items = list(lines)
        with _checking("wsgi.errors.writelines"):
            frame = sys._getframe(1)
            for text in items:
                self._check(text, frame)
        self._state.deliver()
        return self._stream.writelines(items)

    def flush(self) -> Any:
        return self._stream.flush()

    def close(self) -> None:
        self._state.flag("stream-close", f"{_where(sys._getframe(1))} closed wsgi.errors.")
        self._state.deliver()
        self._stream.close()

    def __getattr__(self, name: str) -> Any:
        _refuse(self, "wsgi.errors", name, sys._getframe(1))

    def __repr__(self) -> str:
        return f"<lint wsgi.errors around {_show(self._stream)}>"


def _refuse(proxy: _Input | _Errors, what: str, name: str, frame: FrameType | None) -> NoReturn:
    """An attribute PEP 3333 does not give: reported when used directly, always missing."""
    if not name.startswith("_") and _direct_access(frame):
        state: _Request = proxy.__dict__["_state"]
        state.flag(
            "stream-method",
            f"{_where(frame)} used {what}.{name}, which PEP 3333 does not give (it works on some"
            " servers only).",
            (what, name),
        )
        state.deliver()
    raise AttributeError(f"{what} has no {name!r} under PEP 3333 (wsgibridge.lint)")


# -- start_response and write ----------------------------------------------------------------


def _check_status(state: _Request, status: object, by: str) -> int | None:
    """Flag what is wrong with a status; its code if one can be read from it."""
    if not isinstance(status, str):
        state.flag(
            "status-type",
            f"{by} the status {_show(status)}, a {type(status).__name__}.",
        )
        return None
    if not _latin1(status):
        state.flag(
            "response-not-latin1",
            f"{by} the status {status!r}, with characters beyond U+00FF.",
            "status",
        )
    match = _STATUS.fullmatch(status)
    code: int | None = None
    problem = ""
    if match is None:
        problem = "is not three digits, a space and a reason phrase"
        if status[:3].isascii() and status[:3].isdigit():
            code = int(status[:3])
    else:
        code = int(match.group(1))
        reason = match.group(2)
        if _CONTROL.search(status):
            problem = "contains a control character"
        elif reason[:1].isspace() or reason[-1:].isspace():
            problem = "has whitespace around the reason phrase"
    if problem:
        state.flag("status-format", f"{by} the status {status!r}, which {problem}.")
    if code is not None and not 200 <= code <= 599:
        kind = "an interim 1xx status" if 100 <= code < 200 else "outside 100..599"
        state.flag("status-code-range", f"{by} the status {status!r}: {kind}.")
    return code


def _check_headers(state: _Request, headers: object, by: str) -> int | None:
    """Flag what is wrong with response headers; the declared Content-Length if any."""
    if type(headers) is not list:
        state.flag(
            "headers-type",
            f"{by} the headers as a {type(headers).__qualname__}: {_show(headers)}.",
        )
        if not isinstance(headers, (list, tuple)):
            return None
    lengths: set[int] = set()
    bad_length = False
    for item in list(headers):
        if type(item) is not tuple or len(item) != 2:
            state.flag(
                "header-item",
                f"{by} the header {_show(item)}, not a (name, value) tuple.",
            )
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                continue
        name, value = item
        if not isinstance(name, str) or not isinstance(value, str):
            state.flag(
                "header-type",
                f"{by} the header {_show(item)}: a {type(name).__name__} name and a"
                f" {type(value).__name__} value.",
                _show(name),
            )
            continue
        key = name.lower()
        if not (_latin1(name) and _latin1(value)):
            state.flag(
                "response-not-latin1",
                f"{by} the header {name!r}: {value!r}, with characters beyond U+00FF.",
                key,
            )
        if _TOKEN.fullmatch(name) is None:
            state.flag("header-name", f"{by} the header name {name!r}.", key)
        if _CONTROL.search(value):
            state.flag(
                "header-value",
                f"{by} the header {name!r} the value {value!r}, with a control character.",
                key,
            )
        if key in HOP_BY_HOP:
            state.flag(
                "hop-by-hop",
                f"{by} the hop-by-hop header {name!r}: {value!r}.",
                key,
            )
        if key == "content-length":
            length = _content_length(value)
            if length is None:
                bad_length = True
                state.flag(
                    "content-length-value",
                    f"{by} Content-Length: {value!r}.",
                    "value",
                )
            else:
                lengths.add(length)
    if len(lengths) > 1:
        bad_length = True
        state.flag(
            "content-length-value",
            f"{by} different Content-Length values: {sorted(lengths)}.",
            "several",
        )
    if bad_length or not lengths:
        return None
    return lengths.pop()


def _valid_exc_info(exc_info: object) -> bool:
    return (
        type(exc_info) is tuple
        and len(exc_info) == 3
        and isinstance(exc_info[0], type)
        and issubclass(exc_info[0], BaseException)
        and isinstance(exc_info[1], exc_info[0])
        and (exc_info[2] is None or isinstance(exc_info[2], TracebackType))
    )


class _StartResponse:
    """The ``start_response`` the application is given: checks, then calls the real one."""

    def __init__(self, inner: Callable[..., Any], state: _Request) -> None:
        self._inner = inner
        self._state = state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        frame = sys._getframe(1)
        state = self._state
        has_exc_info = False
        with _checking("start_response"):
            has_exc_info = self._check(args, kwargs, frame)
        state.deliver()
        state.start_calls += 1  # "This includes the case where the first call ... raised"
        try:
            write = self._inner(*args, **kwargs)
        except BaseException:
            if has_exc_info:
                state.raised_exc_info = True
            raise
        finally:
            del frame
        usable = True
        with _checking("start_response's return value"):
            usable = callable(write)
            if not usable:
                state.flag(
                    "start-response-no-write",
                    f"the start_response that {state.upstream} passed down returned"
                    f" {_show(write)}, not a write callable.",
                )
        state.deliver()
        return _Write(write, state) if usable else write

    def _check(self, args: tuple[Any, ...], kwargs: dict[str, Any], frame: FrameType) -> bool:
        """Check one call; True if it carries exc_info."""
        state = self._state
        by = f"{_where(frame)} passed start_response"
        if kwargs or len(args) not in (2, 3):
            given = [_show(a) for a in args] + [f"{k}={_show(v)}" for k, v in kwargs.items()]
            state.flag(
                "start-response-arguments",
                f"{_where(frame)} called start_response({', '.join(given)}).",
            )
        status = args[0] if args else kwargs.get("status")
        headers = (
            args[1] if len(args) > 1 else kwargs.get("response_headers", kwargs.get("headers"))
        )
        exc_info = args[2] if len(args) > 2 else kwargs.get("exc_info")
        try:
            has_exc_info = bool(exc_info)
        except Exception:
            has_exc_info = True
        if exc_info is not None and not _valid_exc_info(exc_info):
            hint = (
                " (sys.exc_info() called outside an except block)"
                if exc_info == (None, None, None)
                else ""
            )
            state.flag("exc-info-type", f"{by} exc_info={_show(exc_info)}{hint}.")
        if state.start_calls and not has_exc_info:
            state.flag(
                "start-response-twice",
                f"{_where(frame)} called start_response({_show(status)}, ...) a second time"
                " without exc_info.",
            )
        code = _check_status(state, status, by)
        declared = _check_headers(state, headers, by)
        if not state.start_calls or has_exc_info:
            # the headers that count: the first call's, or an exc_info call's replacement
            state.status_code = code
            state.declared = declared
        return has_exc_info


class _Write:
    """The ``write`` callable the application is given."""

    def __init__(self, inner: Callable[..., Any], state: _Request) -> None:
        self._inner = inner
        self._state = state

    def __call__(self, data: Any) -> Any:
        state = self._state
        with _checking("write"):
            frame = sys._getframe(1)
            by = _where(frame)
            if state.returned:
                state.flag(
                    "write-after-iteration",
                    f"{by} called write() after the application had returned its iterable"
                    " (from inside the iterable, or later).",
                )
            if isinstance(data, bytes):
                state.body(data, f"write() from {by}")
            else:
                state.flag(
                    "write-not-bytes",
                    f"{by} called write() with a {type(data).__qualname__}: {_show(data)}.",
                )
            del frame
        state.deliver()
        return self._inner(data)


# -- the result ------------------------------------------------------------------------------


class _Result:
    """The app's iterable, proxied: checks what it yields and records ``close()``."""

    def __init__(self, result: Any, state: _Request) -> None:
        self._closed = True  # until fully set up: __del__ must not report
        self._result = result
        self._state = state
        self._iterator: Iterator[Any] | None = None
        self._exhausted = False
        self._count = 0
        self._expected_len: int | None = None
        self._unclosed_reported = False
        self._name = _describe(result)
        self._has_close = hasattr(result, "close")
        if hasattr(type(result), "__len__"):
            try:
                self._expected_len = len(result)
            except Exception:
                self._expected_len = None
        self._closed = False

    def __iter__(self) -> _Result:
        return self

    def __next__(self) -> Any:
        state = self._state
        if self._closed:
            with _checking("the iterable"):
                state.flag(
                    "iterate-after-close",
                    f"{_where(sys._getframe(1))} asked the application's iterable for more"
                    " after calling its close().",
                )
            state.deliver()
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = iter(self._result)
            value = next(iterator)
        except StopIteration:
            if not self._exhausted and not self._closed:
                self._exhausted = True
                with _checking("the end of the body"):
                    self._ended()
                state.deliver()
            raise
        self._count += 1
        with _checking("a body chunk"):
            state.trapped("went on yielding")
            if state.start_calls == 0:
                state.flag(
                    "body-before-start-response",
                    f"{self._name} yielded {_show(value)} before start_response was called.",
                )
            if isinstance(value, bytes):
                state.body(value, self._name)
            else:
                state.flag(
                    "body-not-bytes",
                    f"{self._name} yielded a {type(value).__qualname__}: {_show(value)}.",
                )
        state.deliver()
        return value

    def _ended(self) -> None:
        state = self._state
        state.trapped("ended the body normally")
        state.end(self._name)
        expected = self._expected_len
        if expected is not None and expected != self._count:
            state.flag(
                "result-len-wrong",
                f"len() of {self._name} said {expected}, but it yielded {self._count} items.",
            )

    def close(self) -> None:
        state = self._state
        if self._closed:
            with _checking("close()"):
                state.flag(
                    "close-called-twice",
                    f"{_where(sys._getframe(1))} called close() on the application's iterable"
                    " a second time (the application's close() was not called again).",
                )
            state.deliver()
            return
        self._closed = True
        if self._has_close:
            self._result.close()

    def __del__(self) -> None:
        try:
            if self._closed or not self._has_close or self._unclosed_reported:
                return
            self._unclosed_reported = True
            state = self._state
            state.flag(
                "close-not-called",
                f"the iterable ({self._name}) returned to {state.upstream} was dropped without"
                " its close() being called.",
            )
        except Exception:
            return
        state.deliver()

    def _report_unclosed(self) -> bool:
        """For :meth:`LintMiddleware.check_closed`: report now if close() is still missing."""
        if self._closed or not self._has_close or self._unclosed_reported:
            return False
        self._unclosed_reported = True
        state = self._state
        state.flag(
            "close-not-called",
            f"the iterable ({self._name}) returned to {state.upstream} is still open: its"
            " close() has not been called.",
        )
        state.deliver()
        return True

    def __repr__(self) -> str:
        return f"<lint iterable around {self._name}>"


# -- the middleware --------------------------------------------------------------------------


class LintMiddleware:
    """Wrap a WSGI app; check it (and whatever it wraps) against PEP 3333 as requests run.

    Each violation goes to ``report`` (default :func:`default_report`: a log line and a
    :class:`WSGILintWarning`), once per rule (and header, key...) per request.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        report: Callable[[LintViolation], None] = default_report,
    ) -> None:
        self.app = app
        self.report = report
        self._live: weakref.WeakSet[_Result] = weakref.WeakSet()
        self._lock = threading.Lock()

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        frame = sys._getframe(1)
        state = _Request(self.report, _request_line(environ), _where(frame), _describe(self.app))
        del frame
        file_wrapper: Any = None
        with _checking("the environ"):
            _check_environ(state, environ)
            if isinstance(environ, MutableMapping):
                method = environ.get("REQUEST_METHOD")
                state.method = method if isinstance(method, str) else ""
                file_wrapper = environ.get("wsgi.file_wrapper")
                stream = environ.get("wsgi.input")
                if stream is not None:
                    terminated = bool(environ.get("wsgi.input_terminated"))
                    declared = _content_length(environ.get("CONTENT_LENGTH"))
                    environ["wsgi.input"] = _Input(stream, state, declared, terminated)
                errors = environ.get("wsgi.errors")
                if errors is not None:
                    environ["wsgi.errors"] = _Errors(errors, state)
        state.deliver()
        result = self.app(environ, _StartResponse(start_response, state))
        state.returned = True
        proxy: _Result | None = None
        with _checking("the application's return value"):
            proxy = self._returned(state, result, file_wrapper)
        state.deliver()
        if proxy is None:
            return result  # type: ignore[no-any-return]
        with self._lock:
            self._live.add(proxy)
        return proxy

    def _returned(self, state: _Request, result: Any, file_wrapper: Any) -> _Result | None:
        """Check what the app returned; the proxy to return, or None for the result itself."""
        state.trapped("returned normally")
        app = state.app
        if isinstance(result, (str, bytes, bytearray, memoryview)):
            state.flag(
                "result-is-string",
                f"{app} returned a {type(result).__qualname__} ({_show(result)}), which iterates"
                " one character or one int at a time.",
            )
            return None
        if result is None or not _iterable(result):
            state.flag(
                "result-not-iterable",
                f"{app} returned {_show(result)}, which is not iterable.",
            )
            return None
        if type(result) in (list, tuple):
            # Nothing can run later: check it all now and keep the server's fast path.
            for item in result:
                if isinstance(item, bytes):
                    state.body(item, f"the {type(result).__name__} returned by {app}")
                else:
                    state.flag(
                        "body-not-bytes",
                        f"{app} returned a {type(result).__name__} holding a"
                        f" {type(item).__qualname__}: {_show(item)}.",
                    )
            state.end(f"the {type(result).__name__} returned by {app}")
            return None
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            if state.start_calls == 0:
                state.end(f"the wsgi.file_wrapper returned by {app}")
            return None  # the server may send it with sendfile: pass it through
        return _Result(result, state)

    def check_closed(self) -> int:
        """Report ``close-not-called`` for every iterable still alive and not closed.

        Call it when no request is in flight (an iterable being sent is not closed
        yet). Returns the number of violations reported.
        """
        with self._lock:
            live = list(self._live)
        return sum(proxy._report_unclosed() for proxy in live)

    def __repr__(self) -> str:
        return f"LintMiddleware({self.app!r})"
