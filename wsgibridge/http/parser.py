"""The strict HTTP/1.1 request parser: request line, header section, framing decision.

Rule: a request is either parsed exactly as RFC 9112 describes it or refused
with an :class:`~wsgibridge.errors.HTTPError` carrying its status.  There is
no third outcome: no line silently skipped, no header split at a bare CR, no
value "repaired".  Every leniency of ``http.client.parse_headers`` that a
front-end proxy could disagree with is a request-smuggling hole: a proxy
that reads a bare LF, a bare CR, an obs-fold, whitespace before a colon or a
second Content-Length differently from us frames the bytes as another
request than we do (RFC 9112 §2.2, §5.1, §5.2, §6.3 and §11.2, "Request
Smuggling"), so each is refused here.

A request head is parsed from bytes (:func:`find_head_end` finds its end in
a buffer, :func:`parse_head` parses it) or taken from a buffered reader
(:func:`take_head`, :func:`read_request_head`: ``peek``/``consume``/``fill``,
the connection's ``reader.SocketReader``); a trailer section is read line by
line from any object with ``readline(limit)`` (``io.BytesIO`` in tests).  The
rules themselves are spelled in :mod:`.grammar`.  Nothing here touches a
socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import (
    BadRequest,
    ExpectationFailed,
    HeaderFieldsTooLarge,
    HTTPError,
    IncompleteMessage,
    NotImplementedByServer,
    URITooLong,
    VersionNotSupported,
)
from .grammar import (
    ABSOLUTE,
    AUTHORITY,
    DIGITS,
    FIELD_SECTION,
    FIELD_VALUE,
    HIGHER_VERSION,
    HOST,
    OWS,
    OWS_STR,
    TARGET,
    TOKEN,
)

# Longest Content-Length we agree to parse, in digits after any leading zeros (under
# 10**18 bytes).  Chunk sizes have their own bound, body.MAX_CHUNK_SIZE_DIGITS.
MAX_LENGTH_DIGITS = 18


class Reader(Protocol):
    """What the parser and the body streams need of the connection's buffered ``rfile``."""

    def read(self, size: int | None = -1, /) -> bytes: ...

    def readline(self, size: int | None = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Limits:
    """The parser's bounds (filled from :class:`~wsgibridge.config.Config`)."""

    max_request_line: int = 8 * 1024
    max_header_count: int = 100
    max_header_bytes: int = 64 * 1024
    allow_bare_lf: bool = False


@dataclass
class RequestHead:
    """A parsed request line and header section, with its framing decided."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    content_length: int | None = None  # declared Content-Length
    chunked: bool = False  # Transfer-Encoding: chunked
    keep_alive: bool = True  # as far as the client is concerned
    expect_continue: bool = False
    connection_tokens: set[str] = field(default_factory=set)
    raw_request_line: bytes = b""  # as received, CRLF included

    @property
    def http11(self) -> bool:
        return self.version == "HTTP/1.1"


def line_content(line: bytes, what: str) -> bytes:
    """``line`` without its CRLF; a bare CR, a bare LF and no ending are refused.

    For the lines of a chunked body (chunk-size lines, trailer fields), which
    always need CRLF: ``--allow-bare-lf`` is about request heads only.  A
    front end that ends chunk lines at CRLF only would read ``2;a\\nXY\\r\\n``
    as one line where a lenient server reads two, and the bytes after it as
    another request.
    """
    if line.endswith(b"\r\n"):
        content = line[:-2]
    elif line.endswith(b"\n"):
        # RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line
        # terminator" - we do not, because a proxy in front may not either.
        raise BadRequest(f"{what} ends in a bare LF, not CRLF")
    else:
        # Callers read at most their limit plus one byte, and check the limit
        # first: a line without its ending is one the connection cut short.
        raise IncompleteMessage(f"the connection closed in the middle of the {what}")
    if b"\r" in content:
        # RFC 9112 §2.2: "A recipient of such a bare CR MUST consider that
        # element to be invalid or replace each bare CR with SP".
        raise BadRequest(f"bare CR in the {what}")
    return content


def parse_request_line(content: bytes) -> tuple[str, str, str]:
    """(method, target, version) from one request line without its CRLF."""
    if b"\r" in content:
        raise BadRequest("bare CR in the request line")
    parts = content.split(b" ")
    if len(parts) != 3:
        # RFC 9112 §3: request-line = method SP request-target SP HTTP-version.
        # HTTP/0.9's "GET /" has no version and is refused too.
        raise BadRequest("the request line is not 'method SP target SP version'")
    method, target, version = parts
    if version != b"HTTP/1.1" and version != b"HTTP/1.0":
        if HIGHER_VERSION.fullmatch(version):
            raise VersionNotSupported(f"{version.decode('latin-1')} is not supported")
        raise BadRequest("the HTTP version is not HTTP/1.0 or HTTP/1.1")
    if TOKEN.fullmatch(method) is None:
        raise BadRequest("the method is not a token")
    if TARGET.fullmatch(target) is None:
        raise BadRequest("the request target is empty or has controls, spaces or 8-bit bytes")
    if b"#" in target:
        # RFC 9112 §3.2: the request-target has no fragment ("#" ends a URI).
        raise BadRequest("the request target has a fragment")
    first = target[0]
    if first == 0x2F:  # "/": origin-form, the common case
        if method == b"CONNECT":
            raise BadRequest("CONNECT needs an authority-form target")
    elif target == b"*":
        # RFC 9112 §3.2.4: asterisk-form is only used for a server-wide OPTIONS.
        if method != b"OPTIONS":
            raise BadRequest("an asterisk-form target is only allowed with OPTIONS")
    elif method == b"CONNECT":
        # RFC 9112 §3.2.3: authority-form is only used for CONNECT.
        if AUTHORITY.fullmatch(target) is None:
            raise BadRequest("CONNECT needs an authority-form target")
    elif ABSOLUTE.fullmatch(target) is None:
        raise BadRequest("the request target is not in origin, absolute or asterisk form")
    if method == b"CONNECT":
        # A well-formed CONNECT asks for a tunnel; we are an origin server, not
        # a proxy.  RFC 9110 §15.6.2: 501 when the server "does not recognize
        # the request method and is not capable of supporting it".
        raise NotImplementedByServer("CONNECT (tunnelling) is not supported")
    return method.decode("ascii"), target.decode("latin-1"), version.decode("ascii")


def parse_field_line(content: bytes, what: str) -> tuple[str, str]:
    """(name, value) from one field line without its line ending, or BadRequest."""
    first = content[0]
    if first == 0x20 or first == 0x09:
        # RFC 9112 §5.2: obs-fold; "A server that receives an obs-fold in a
        # request message ... MUST either reject the message by sending a
        # 400 (Bad Request) ... or replace each received obs-fold with one
        # or more SP octets".  We reject.
        raise BadRequest(f"obsolete line folding in the {what}")
    colon = content.find(b":")
    if colon <= 0:
        raise BadRequest(f"a field line without a name and colon in the {what}")
    name = content[:colon]
    if TOKEN.fullmatch(name) is None:
        # Includes whitespace before the colon - RFC 9112 §5.1: "A server
        # MUST reject, with a response status code of 400 (Bad Request),
        # any received request message that contains whitespace between a
        # header field name and colon."
        raise BadRequest(f"a field name is not a token in the {what}")
    value = content[colon + 1 :].strip(OWS)
    if FIELD_VALUE.fullmatch(value) is None:
        raise BadRequest(f"a control character in a field value in the {what}")
    return name.decode("ascii"), value.decode("latin-1")


# RFC 9110 §6.5.1: many fields "cannot be processed outside the header section
# because their evaluation is necessary prior to receiving the content, such
# as those that describe message framing, routing, authentication, request
# modifiers, response controls, or content format".  A trailer section is
# discarded here, but a proxy in front may merge it into the header section:
# a trailer carrying one of these is refused, not ignored.
FORBIDDEN_TRAILERS = frozenset(
    {
        # framing
        "content-length",
        "transfer-encoding",
        "trailer",
        "te",
        "connection",
        "keep-alive",
        "upgrade",
        # routing
        "host",
        "max-forwards",
        # authentication
        "authorization",
        "proxy-authorization",
        "cookie",
        "www-authenticate",
        "proxy-authenticate",
        # request modifiers: controls and conditionals
        "expect",
        "range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        "cache-control",
        "pragma",
        # content format
        "content-type",
        "content-encoding",
        "content-range",
    }
)


def read_trailer_section(rfile: Reader, limits: Limits) -> list[tuple[str, str]]:
    """A chunked body's trailer section, up to its empty line, each field checked.

    Read line by line as it arrives, under the header section's limits (its
    byte and field counts), CRLF only, and fields that must not be trailers
    refused (:data:`FORBIDDEN_TRAILERS`).
    """
    headers: list[tuple[str, str]] = []
    max_count = limits.max_header_count
    budget = limits.max_header_bytes
    what = "trailer section"
    while True:
        line = rfile.readline(budget + 1)
        budget -= len(line)
        if budget < 0:
            raise HeaderFieldsTooLarge(f"the {what} is larger than {limits.max_header_bytes} bytes")
        if line == b"\r\n":
            return headers
        content = line_content(line, what)
        if len(headers) >= max_count:
            raise HeaderFieldsTooLarge(f"more than {max_count} fields in the {what}")
        name, value = parse_field_line(content, what)
        if name.lower() in FORBIDDEN_TRAILERS:
            raise BadRequest(f"{name} is not allowed in a trailer section")
        headers.append((name, value))


def _list_tokens(values: list[str]) -> list[str]:
    """Elements of a comma-separated list field (RFC 9110 §5.6.1), empty ones skipped."""
    items: list[str] = []
    for value in values:
        for item in value.split(","):
            item = item.strip(OWS_STR)
            if item:
                items.append(item)
    return items


def parse_length(text: str, what: str = "Content-Length") -> int:
    """RFC 9110 §8.6: Content-Length = 1*DIGIT - no sign, no spaces, no list, no hex."""
    raw = text.encode("latin-1")
    if DIGITS.fullmatch(raw) is None:
        raise BadRequest(f"{what} is not a plain decimal number")
    if len(raw.lstrip(b"0")) > MAX_LENGTH_DIGITS:
        raise BadRequest(f"{what} is absurdly large")
    return int(raw)


def decide_framing(head: RequestHead) -> None:
    """Fill in the head's framing and connection facts from its fields (RFC 9112 §6)."""
    lengths: list[str] = []
    encodings: list[str] = []
    connection: list[str] = []
    expect: list[str] = []
    hosts: list[str] = []
    content_types = 0
    for name, value in head.headers:
        lower = name.lower()
        if lower == "content-length":
            lengths.append(value)
        elif lower == "transfer-encoding":
            encodings.append(value)
        elif lower == "connection":
            connection.append(value)
        elif lower == "host":
            hosts.append(value)
        elif lower == "expect":
            expect.append(value)
        elif lower == "content-type":
            content_types += 1
    http11 = head.version == "HTTP/1.1"
    # RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code
    # to any HTTP/1.1 request message that lacks a Host header field and to any
    # request message that contains more than one Host header field".
    if len(hosts) > 1 or (http11 and not hosts):
        raise BadRequest("an HTTP/1.1 request needs exactly one Host field")
    # "... and to any request message that contains ... a Host header field
    # with an invalid field value."
    if hosts and HOST.fullmatch(hosts[0]) is None:
        raise BadRequest("the Host field is not host[:port]")
    absolute = ABSOLUTE.fullmatch(head.target.encode("latin-1")) if head.target[0] != "/" else None
    if absolute is not None:
        # RFC 9112 §3.2.2: "When an origin server receives a request with an
        # absolute-form of request-target, the origin server MUST ignore the
        # received Host header field (if any) and instead use the host
        # information of the request-target."
        authority = absolute.group(1).decode("latin-1")
        if HOST.fullmatch(authority) is None:
            raise BadRequest("the request target's authority is not host[:port]")
        if hosts:
            head.headers = [(n, authority if n.lower() == "host" else v) for n, v in head.headers]
        else:
            head.headers.append(("Host", authority))
    if content_types > 1:
        raise BadRequest("more than one Content-Type field")
    if encodings:
        if lengths:
            # RFC 9112 §6.1: "A server MAY reject a request that contains both
            # Content-Length and Transfer-Encoding" - the classic smuggling
            # shape, so we do.
            raise BadRequest("both Content-Length and Transfer-Encoding")
        if not http11:
            # RFC 9112 §6.1: TE in an HTTP/1.0 message must be treated as faulty.
            raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
        codings = [c.lower() for c in _list_tokens(encodings)]
        if not codings or any(TOKEN.fullmatch(c.encode("latin-1")) is None for c in codings):
            raise BadRequest("Transfer-Encoding is not a list of codings")
        if codings[-1] != "chunked" or codings.count("chunked") != 1:
            # RFC 9112 §6.3: chunked must be the final coding, and only once.
            raise BadRequest("Transfer-Encoding must end in one 'chunked'")
        if len(codings) > 1:
            raise NotImplementedByServer(f"transfer coding {codings[0]!r} is not supported")
        head.chunked = True
    elif lengths:
        if len(lengths) > 1:
            # RFC 9110 §8.6 lets a recipient accept identical duplicates; a
            # proxy that picked the other one would disagree, so we refuse all.
            raise BadRequest("more than one Content-Length field")
        head.content_length = parse_length(lengths[0])
    tokens = {t.lower() for t in _list_tokens(connection)}
    head.connection_tokens = tokens
    if "close" in tokens:
        head.keep_alive = False
    else:
        head.keep_alive = http11 or "keep-alive" in tokens
    if expect and http11:
        # RFC 9110 §10.1.1: 100-continue is the only expectation defined; "A
        # server that receives an Expect field value containing a member other
        # than 100-continue MAY respond with a 417 (Expectation Failed)".  An
        # HTTP/1.0 request's expectation must be ignored.
        members = [m.lower() for m in _list_tokens(expect)]
        if any(m != "100-continue" for m in members):
            raise ExpectationFailed("only 'Expect: 100-continue' is supported")
        head.expect_continue = bool(members)


# The end of a head: the empty line.  With bare LF allowed, any mix of LF and
# CRLF (RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line
# terminator and ignore any preceding CR").
_BLANK_LINE = re.compile(rb"\n\r?\n")
_LINE_BREAK = re.compile(rb"\r?\n")


def find_head_end(buffer: bytes | bytearray, limits: Limits, scanned: int = 0) -> int:
    """The index just past the empty line that ends the head in ``buffer``; -1 if not there yet.

    ``scanned`` bytes at the start are known to hold no end of head (an earlier
    call saw them), so a head that arrives a byte at a time costs linear, not
    quadratic, time.  Refuses a head that is already too long although
    incomplete: 414 for a request line past ``max_request_line`` bytes (CRLF
    included), 431 for a header section past ``max_header_bytes`` (its CRLFs
    included); and, unless bare LF is allowed, a head with a bare LF as soon
    as the LF arrives, since its CRLF CRLF end may never come.
    """
    max_line = limits.max_request_line
    line_end = buffer.find(b"\n", 0, max_line)
    if line_end < 0:
        if len(buffer) >= max_line:
            raise URITooLong(f"the request line is longer than {max_line} bytes")
        return -1
    if limits.allow_bare_lf:
        match = _BLANK_LINE.search(buffer, max(line_end, scanned - 2))
        end = match.end() if match is not None else -1
    else:
        start = max(line_end - 1, scanned - 3, 0)
        end = buffer.find(b"\r\n\r\n", start)
        if end >= 0:
            end += 4
        # RFC 9112 §2.2: "a recipient MAY recognize a single LF as a line
        # terminator" - we do not, because a proxy in front may not either.
        # Every LF of the head so far must follow a CR: as many LFs from
        # ``start`` on as CRLFs from the byte before (``start`` is at or
        # before the first LF not yet checked).
        stop = len(buffer) if end < 0 else end
        if buffer.count(b"\n", start, stop) != buffer.count(b"\r\n", max(start - 1, 0), stop):
            line = bytes(buffer[:line_end])
            what = "header section" if line.endswith(b"\r") else "request line"
            exc = BadRequest(f"a line in the {what} ends in a bare LF, not CRLF")
            # For the logs, and so that a refused HEAD gets no body.
            exc.request_line = line.rstrip(b"\r") + b"\r\n"
            method = line.split(b" ", 1)[0]
            if TOKEN.fullmatch(method) is not None:
                exc.method = method.decode("ascii")
            raise exc
    size = (len(buffer) if end < 0 else end) - line_end - 1
    if size > limits.max_header_bytes:
        raise HeaderFieldsTooLarge(
            f"the header section is larger than {limits.max_header_bytes} bytes"
        )
    return end


def parse_head(block: bytes, limits: Limits) -> RequestHead:
    """The request head in ``block`` (as :func:`find_head_end` delimited it).

    Request line, field lines and the empty line; bare LFs were refused (or,
    when allowed, are line endings) by :func:`find_head_end`.
    """
    bare_lf = limits.allow_bare_lf
    if bare_lf:
        lines = _LINE_BREAK.split(block)[:-2]
        request_line = lines[0]
        fields = b""
    else:
        line_end = block.index(b"\r\n")
        request_line = block[:line_end]
        fields = block[line_end + 2 : -2]  # the field lines, each with its CRLF
    method = ""
    try:
        method, target, version = parse_request_line(request_line)
        max_count = limits.max_header_count
        if (len(lines) - 1 if bare_lf else fields.count(b"\r\n")) > max_count:
            raise HeaderFieldsTooLarge(f"more than {max_count} fields in the header section")
        headers: list[tuple[str, str]] = []
        if not bare_lf and FIELD_SECTION.fullmatch(fields) is not None:
            # Every line checked in that one pass (the common case): only split.
            for line in fields[:-2].split(b"\r\n") if fields else ():
                name, _, value = line.partition(b":")
                headers.append((name.decode("ascii"), value.strip(OWS).decode("latin-1")))
        else:
            # Line by line, to say what is wrong (or for bare-LF line endings).
            if not bare_lf:
                lines = block[:-4].split(b"\r\n")
            for line in lines[1:]:
                if b"\r" in line:
                    # RFC 9112 §2.2: "A recipient of such a bare CR MUST consider that
                    # element to be invalid or replace each bare CR with SP".
                    raise BadRequest("bare CR in the header section")
                headers.append(parse_field_line(line, "header section"))
        raw_line = block[: len(request_line) + 2]
        head = RequestHead(method, target, version, headers, raw_request_line=raw_line)
        decide_framing(head)
    except HTTPError as exc:
        exc.request_line = request_line[: limits.max_request_line] + b"\r\n"
        exc.method = method
        raise
    return head


class BufferedReader(Reader, Protocol):
    """What :func:`take_head` needs of the connection's reader (``reader.SocketReader``)."""

    eof: bool

    def peek(self) -> bytes | bytearray: ...

    def consume(self, n: int, /) -> None: ...

    def fill(self) -> int: ...


def skip_empty_line(reader: BufferedReader, limits: Limits) -> bool | None:
    """Consume one empty line before a request line; None while that cannot be told yet.

    RFC 9112 §2.2: a server "SHOULD ignore at least one empty line (CRLF)
    received prior to the request-line".  We ignore exactly one per request:
    the caller calls this once per request (until it returns True or False),
    so empty lines dripped onto an idle connection cannot keep it open, and a
    head is read the same whether its bytes come in one segment or several.
    """
    buffer = reader.peek()
    if buffer[:2] == b"\r\n":
        reader.consume(2)
        return True
    if buffer[:1] == b"\n" and limits.allow_bare_lf:
        reader.consume(1)
        return True
    if buffer == b"\r" and not reader.eof:
        return None  # a CR: the start of an empty line, or of a refusal
    return False


def take_head(reader: BufferedReader, limits: Limits, scanned: int = 0) -> RequestHead | None:
    """The next request head if the reader's buffer holds all of it (consumed); else None.

    Reads nothing from the socket, so the caller decides whether to wait for
    more (or park the connection); at end-of-file a partial head is refused.
    ``scanned``: buffered bytes an earlier call already looked at.  A leading
    empty line is not skipped here (:func:`skip_empty_line`).
    """
    buffer = reader.peek()
    end = find_head_end(buffer, limits, scanned)
    if end < 0:
        if reader.eof and buffer:
            raise IncompleteMessage("the connection closed in the middle of the request head")
        return None
    block = bytes(buffer[:end])
    reader.consume(end)
    return parse_head(block, limits)


def read_request_head(reader: BufferedReader, limits: Limits) -> RequestHead | None:
    """The next request head, reading as needed; None if the client closed cleanly first."""
    skipped: bool | None = None
    while True:
        if skipped is None and reader.peek():
            skipped = skip_empty_line(reader, limits)
        if skipped is not None:
            head = take_head(reader, limits)
            if head is not None:
                return head
        if reader.eof or not reader.fill():
            if reader.peek():
                raise IncompleteMessage("the connection closed in the middle of the request head")
            return None
