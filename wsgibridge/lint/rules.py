"""The rules of the lint as data: each rule's id, who breaks it, the sentence it
enforces and its fix; and the two objects a report is made of.

Rule: data and PEP 3333 / RFC quotes only - no checks, no I/O.  A check flags a
rule by its id (a key of :data:`RULES`); the :class:`LintViolation` it becomes
carries that rule's ``reference`` and ``fix``.
"""

from __future__ import annotations

from dataclasses import dataclass


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
