"""Property tests (hypothesis) for the request parser, the body streams and the live server.

Four properties, two pure (a ``SocketReader`` over ``io.BytesIO`` stands in
for the connection's ``rfile``) and two over real sockets to 127.0.0.1:

1. a valid request serialised to bytes parses back exactly, and its body stream
   ends exactly at the body's last byte, whatever mix of reads the app uses;
2. the same requests, cut into random slices and sometimes pipelined, reach a
   live app exactly as sent, and the responses come back in order;
3. no byte string makes the parser or a body stream raise anything but an
   ``HTTPError`` with a 4xx/5xx status we promise, or ``ClientDisconnected``;
4. no byte string makes a live server hang, answer malformed HTTP, answer a
   status outside that set, or lose a worker thread.

The generators follow the ABNF of RFC 9112 §3 (request line), RFC 9110 §5
(fields: token names, field-values of VCHAR / obs-text / SP / HTAB, OWS around
them) and RFC 9112 §7.1 (chunked: hex sizes, chunk-ext with BWS, token or
quoted-string values, trailer fields).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import itertools
import json
import logging
import random
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wsgibridge import WSGIServer
from wsgibridge._types import Environ, StartResponse
from wsgibridge.errors import ClientDisconnected, HTTPError
from wsgibridge.http import grammar, parser
from wsgibridge.http.body import ChunkedInput, ContentLengthInput, InputStream
from wsgibridge.http.parser import FORBIDDEN_TRAILERS, Limits, read_request_head
from wsgibridge.http.reader import SocketReader

from ..conftest import ResponseReader, connect, exchange, response_statuses, running_server

# Every status the server may answer a request it refuses with (errors.py).
REFUSED = frozenset({400, 413, 414, 417, 431, 501, 505})
# One call into the parser or a body stream over at most a few KiB in memory:
# anything near a second is a regular expression gone quadratic or worse.
SLOW_CALL = 1.0

# -- alphabets (RFC 9110 §5.6.2, §5.5; RFC 3986 §3.3) ---------------------------------

DIGIT = "0123456789"
ALPHA = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TCHAR = "!#$%&'*+-.^_`|~" + DIGIT + ALPHA
VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
OBS_TEXT = "".join(chr(c) for c in range(0x80, 0x100))
FIELD_CHARS = VCHAR + OBS_TEXT + " \t"
# qdtext (RFC 9110 §5.6.4): HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
QDTEXT = "\t !" + "".join(chr(c) for c in [*range(0x23, 0x5C), *range(0x5D, 0x7F)]) + OBS_TEXT
QUOTABLE = "\t " + VCHAR + OBS_TEXT  # quoted-pair = "\\" ( HTAB / SP / VCHAR / obs-text )
# pchar without "%" (escapes are generated separately): unreserved / sub-delims / ":" / "@"
PCHAR = ALPHA + DIGIT + "-._~" + "!$&'()*+,;=" + ":@"
QUERY_CHARS = PCHAR + "/?"

# Fields that change how a request is framed or answered; the generator adds its
# own Host and framing field and leaves these out of the random extra fields.
RESERVED_NAMES = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "expect", "content-type"}
)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
SENTINEL = b"GET /next HTTP/1.1\r\nHost: next.example\r\n\r\n"


@dataclass(frozen=True)
class Request:
    """A valid request, its wire bytes, and what a parser must make of them."""

    method: str
    target: str
    path: str  # the percent-decoded path, as latin-1 code points (PATH_INFO)
    query: str
    version: str
    headers: list[tuple[str, str]]  # (name, value) in wire order, OWS removed
    body: bytes
    chunked: bool
    content_length: str | None  # the Content-Length field's value, if one was sent
    raw: bytes


# -- strategies -----------------------------------------------------------------------


# Strategies are built once: building one per draw costs more than the draw.
ints = functools.lru_cache(maxsize=None)(st.integers)
booleans = st.booleans()
tokens = st.text(TCHAR, min_size=1, max_size=16)
ows = st.text(" \t", max_size=2)
field_values = st.text(FIELD_CHARS, max_size=40).map(lambda v: v.strip(" \t"))
extra_names = tokens.filter(lambda name: name.lower() not in RESERVED_NAMES)
extra_fields = st.lists(st.tuples(extra_names, field_values), max_size=10)
host_names = st.text(ALPHA + DIGIT + "-.", min_size=1, max_size=20)
versions = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])
custom_methods = tokens.filter(lambda m: m not in ("CONNECT", "HEAD"))
all_methods = st.one_of(st.sampled_from(METHODS), custom_methods)
live_methods = st.one_of(st.sampled_from([m for m in METHODS if m != "HEAD"]), custom_methods)

# RFC 9110 §6.5.1: fields that must not be trailers are refused there (a valid
# chunked body carries none of them).
trailer_names = tokens.filter(lambda name: name.lower() not in FORBIDDEN_TRAILERS)


def mixed_case(draw: st.DrawFn, word: str) -> str:
    """``word`` with each letter's case drawn (field names and codings are case-insensitive)."""
    mask = draw(ints(0, 2 ** len(word) - 1))
    return "".join(c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(word))


# A percent-escape is drawn as one code point past latin-1, so that a whole path
# segment is a single (fast, well shrinking) text draw: U+0100+b is "%XX" for the
# byte b, U+0200+b the same in lower-case hex.
ESCAPES = "".join(chr(c) for c in range(0x100, 0x300))
segment_lists = st.lists(st.text(PCHAR + ESCAPES, max_size=8), max_size=5)
query_texts = st.text(QUERY_CHARS + ESCAPES, max_size=20)
# A code point past latin-1 stands for a quoted-pair: "\\" and the octet it quotes.
quoted_texts = st.text(QDTEXT + "".join(chr(0x100 + ord(c)) for c in QUOTABLE), max_size=10)


def percent_decoded(drawn: str) -> tuple[str, str]:
    """(as sent, as decoded to latin-1 code points) for a drawn path or query string."""
    sent = []
    decoded = []
    for char in drawn:
        code = ord(char)
        if code < 0x100:
            sent.append(char)
            decoded.append(char)
        else:
            byte = code & 0xFF
            sent.append(f"%{byte:02X}" if code < 0x200 else f"%{byte:02x}")
            decoded.append(chr(byte))
    return "".join(sent), "".join(decoded)


@st.composite
def targets(draw: st.DrawFn) -> tuple[str, str, str]:
    """An origin-form request-target (RFC 9112 §3.2.1): (target, decoded path, query)."""
    segments = draw(segment_lists)
    pairs = [percent_decoded(segment) for segment in segments]
    target = "/" + "/".join(sent for sent, _ in pairs)
    path = "/" + "/".join(decoded for _, decoded in pairs)
    query = ""
    if draw(booleans):
        query = percent_decoded(draw(query_texts))[0]
        target += "?" + query
    return target, path, query


newline_gaps = st.sampled_from([0, 3, 40, 500])


@st.composite
def bodies(draw: st.DrawFn, max_size: int = 5000) -> bytes:
    """0..max_size bytes: hypothesis' own (short, well shrunk) or a long random run with lines."""
    if draw(booleans):
        return draw(st.binary(max_size=max_size))
    length = draw(ints(0, max_size))
    rng = random.Random(draw(ints(0, 2**32)))
    data = bytearray(rng.randbytes(length))
    newline_every = draw(newline_gaps)
    if newline_every and length:
        for i in rng.choices(range(length), k=length // newline_every):
            data[i] = 0x0A
    return bytes(data)


@st.composite
def quoted_strings(draw: st.DrawFn) -> str:
    """RFC 9110 §5.6.4: DQUOTE *( qdtext / quoted-pair ) DQUOTE."""
    drawn = draw(quoted_texts)
    return '"' + "".join(c if c < "\u0100" else "\\" + chr(ord(c) - 0x100) for c in drawn) + '"'


@st.composite
def chunk_exts(draw: st.DrawFn) -> str:
    """RFC 9112 §7.1.1: *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )."""
    out = []
    for _ in range(draw(ints(0, 3))):
        ext = draw(ows) + ";" + draw(ows) + draw(tokens)
        if draw(booleans):
            value = draw(ext_values)
            ext += draw(ows) + "=" + draw(ows) + value
        out.append(ext)
    return "".join(out)


ext_values = st.one_of(tokens, quoted_strings())
chunk_ext_texts = chunk_exts()
bodies_up_to = functools.lru_cache(maxsize=None)(bodies)


def field_line(draw: st.DrawFn, name: str, value: str) -> bytes:
    """``name ":" OWS field-value OWS CRLF`` with the OWS drawn."""
    return f"{name}:{draw(ows)}{value}{draw(ows)}\r\n".encode("latin-1")


def chunked_body(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` in the chunked coding: random chunk sizes, extensions and trailer fields."""
    cuts = sorted({c for c in draw(st.lists(ints(1, max(1, len(body))), max_size=10))})
    bounds = [0, *[c for c in cuts if c < len(body)], len(body)]
    out = bytearray()
    for start, end in itertools.pairwise(bounds):
        if end == start:
            continue
        size = "0" * draw(ints(0, 2)) + mixed_case(draw, f"{end - start:x}")
        out += f"{size}{draw(chunk_ext_texts)}\r\n".encode("latin-1")
        out += body[start:end] + b"\r\n"
    out += f"{'0' * draw(ints(1, 3))}{draw(chunk_ext_texts)}\r\n".encode("latin-1")
    for _ in range(draw(ints(0, 3))):
        out += field_line(draw, draw(trailer_names), draw(field_values))
    out += b"\r\n"
    return bytes(out)


@st.composite
def requests(draw: st.DrawFn, live: bool = False, max_body: int = 5000) -> Request:
    """A valid HTTP/1.x request with an origin-form target, a Host field and a framed body.

    ``live`` leaves out HEAD, whose response has no body to echo the request in.
    """
    method = draw(live_methods if live else all_methods)
    target, path, query = draw(targets())
    version = draw(versions)
    headers = draw(extra_fields)
    host = draw(host_names)
    if draw(booleans):
        host += f":{draw(ints(0, 65535))}"
    headers.insert(draw(ints(0, len(headers))), (mixed_case(draw, "Host"), host))
    body = draw(bodies_up_to(max_body))
    chunked = version == "HTTP/1.1" and draw(booleans)
    content_length = None
    if chunked:
        coding = mixed_case(draw, "chunked")
        framing: tuple[str, str] | None = (mixed_case(draw, "Transfer-Encoding"), coding)
        body_bytes = chunked_body(draw, body)
    else:
        framing = None
        if body or draw(booleans):
            content_length = "0" * draw(ints(0, 2)) + str(len(body))
            framing = (mixed_case(draw, "Content-Length"), content_length)
        body_bytes = body
    if framing is not None:
        headers.insert(draw(ints(0, len(headers))), framing)
    raw = bytearray(b"\r\n" if draw(ints(0, 9)) == 0 else b"")
    raw += f"{method} {target} {version}\r\n".encode("ascii")
    for name, value in headers:
        raw += field_line(draw, name, value)
    raw += b"\r\n" + body_bytes
    return Request(
        method, target, path, query, version, headers, body, chunked, content_length, bytes(raw)
    )


small_requests = requests(max_body=300)
# A number standing alone: a Content-Length value, a chunk size, a port.
NUMBER = re.compile(rb"(?<![0-9A-Za-z.%/])[0-9A-Fa-f]+(?![0-9A-Za-z.])")
INTERESTING = [0, 1, 255, 256, 2**31, 2**32, 2**63, 2**64, 10**12, 10**15, 10**18 - 1]
mutation_bytes = st.sampled_from([b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"\r\n"])
short_binaries = st.binary(min_size=1, max_size=4)
numbers = st.one_of(st.sampled_from(INTERESTING), ints(0, 10**20))


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid request's bytes after 1-6 random mutations (the classic fuzzer moves)."""
    raw = bytearray(draw(small_requests).raw)
    for _ in range(draw(ints(1, 6))):
        move = draw(ints(0, 6))
        size = len(raw)
        at = draw(ints(0, size))
        if move == 0 and size:  # flip bits of one byte
            raw[at % size] ^= draw(ints(1, 255))
        elif move == 1:  # insert a separator or line-ending byte
            raw[at:at] = draw(mutation_bytes)
        elif move == 2:  # insert random bytes
            raw[at:at] = draw(short_binaries)
        elif move == 3:  # delete a run
            del raw[at : at + draw(ints(1, 4))]
        elif move in (4, 5):  # duplicate or drop a line
            lines = bytes(raw).splitlines(keepends=True)
            if lines:
                index = at % len(lines)
                if move == 4:
                    lines.insert(index, lines[index])
                else:
                    del lines[index]
                raw = bytearray(b"".join(lines))
        else:  # replace a number (a length, a chunk size ...) by an interesting one
            runs = list(NUMBER.finditer(raw)) or list(re.finditer(rb"[0-9]+", raw))
            if runs:
                run = runs[at % len(runs)]
                number = draw(numbers)
                text = f"{number:x}" if draw(booleans) else str(number)
                raw[run.start() : run.end()] = text.encode("ascii")
    return bytes(raw)


hostile_bytes = st.one_of(st.binary(max_size=2000), mutated_requests())

ReadOp = tuple[str, int | None]
read_ops = st.lists(
    st.tuples(
        st.sampled_from(["read", "readline"]),
        st.one_of(ints(0, 700), st.just(-1), st.none()),
    ),
    min_size=1,
    max_size=8,
).map(lambda ops: ops if any(size != 0 for _, size in ops) else [*ops, ("read", None)])


# -- helpers --------------------------------------------------------------------------


def expected_read(kind: str, size: int | None, rest: bytes) -> bytes:
    """What ``read(size)`` / ``readline(size)`` must return with ``rest`` left in the body."""
    limit = len(rest) if size is None or size < 0 else size
    if kind == "readline":
        newline = rest.find(b"\n")
        if newline >= 0:
            limit = min(limit, newline + 1)
    return rest[:limit]


def open_body(head_chunked: bool, length: int | None, rfile: Any, limits: Limits) -> InputStream:
    """The body stream the handler would give the app (no max_body, as by default)."""
    if head_chunked:
        return ChunkedInput(rfile, limits)
    return ContentLengthInput(rfile, length or 0)


def timed(call: Callable[[], Any]) -> Any:
    """``call()``, failing if it takes longer than SLOW_CALL seconds."""
    start = time.perf_counter()
    try:
        return call()
    finally:
        elapsed = time.perf_counter() - start
        assert elapsed < SLOW_CALL, f"one parser call took {elapsed:.2f} s"


def expected_cgi(request: Request) -> dict[str, str]:
    """The HTTP_* / CONTENT_* environ keys for ``request`` (RFC 3875 §4.1.18, PEP 3333).

    Names with "_" are dropped (documented in environ.py, so that ``X_Forwarded_For``
    cannot pose as ``X-Forwarded-For``); repeated fields join with "," (RFC 9110
    §5.3), cookies with "; " (RFC 6265 §5.4).
    """
    cgi: dict[str, str] = {}
    for name, value in request.headers:
        if name.lower() == "content-length" or "_" in name:
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        if key in cgi:
            cgi[key] += ("; " if key == "HTTP_COOKIE" else ",") + value
        else:
            cgi[key] = value
    if request.content_length is not None:
        cgi["CONTENT_LENGTH"] = str(len(request.body))
    return cgi


def expected_echo(request: Request) -> dict[str, Any]:
    """What :func:`echo_app` must report for ``request``."""
    return {
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "protocol": request.version,
        "cgi": expected_cgi(request),
        "length": len(request.body),
        "sha256": hashlib.sha256(request.body).hexdigest(),
    }


def echo_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Reads wsgi.input to the end; answers with what it saw as JSON."""
    body = environ["wsgi.input"].read()
    seen = {
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "protocol": environ["SERVER_PROTOCOL"],
        "cgi": {
            key: value
            for key, value in environ.items()
            if key.startswith("HTTP_") or key in ("CONTENT_LENGTH", "CONTENT_TYPE")
        },
        "length": len(body),
        "sha256": hashlib.sha256(body).hexdigest(),
    }
    payload = json.dumps(seen).encode("ascii")
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
    )
    return [payload]


def drain_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """Reads wsgi.input to the end; answers 200 with an empty body (safe for HEAD too)."""
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b""]


@contextlib.contextmanager
def client(server: WSGIServer) -> Iterator[socket.socket]:
    """A connection that sends each piece at once (no Nagle coalescing on our side)."""
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        yield sock


@pytest.fixture(scope="module")
def echo_server() -> Iterator[WSGIServer]:
    """One live server running :func:`echo_app` for every example of the module."""
    with running_server(echo_app) as server:
        yield server


# -- 1. round trip, pure ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(request=requests(), ops=read_ops)
def test_round_trip_in_memory(request: Request, ops: list[ReadOp]) -> None:
    """Property: parse(serialise(request)) == request, and the body stream ends exactly at its end.

    Whatever mix of read(n) / readline(n) / read() the app uses, it gets the body
    back byte for byte, then end-of-file, and the next request's bytes are untouched.
    """
    rfile = SocketReader(io.BytesIO(request.raw + SENTINEL).read)
    limits = Limits()
    head = read_request_head(rfile, limits)
    assert head is not None
    assert (head.method, head.target, head.version) == (
        request.method,
        request.target,
        request.version,
    )
    assert head.headers == request.headers
    assert head.chunked == request.chunked
    declared = request.content_length
    assert head.content_length == (None if declared is None else int(declared))
    assert head.keep_alive == (request.version == "HTTP/1.1")
    stream = open_body(head.chunked, head.content_length, rfile, limits)
    rest = request.body
    calls = 0
    while rest:
        kind, size = ops[calls % len(ops)]
        calls += 1
        got = getattr(stream, kind)(size)
        want = expected_read(kind, size, rest)
        assert got == want, (kind, size, calls)
        rest = rest[len(want) :]
    assert stream.read() == b""
    assert stream.readline() == b""
    assert stream.read(1) == b""
    assert stream.failed is None
    assert rfile.read() == SENTINEL


# -- 2. round trip, live ----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    batch=st.lists(requests(live=True), min_size=1, max_size=2),
    cuts=st.lists(ints(0, 10**6), max_size=16),
)
def test_round_trip_live(echo_server: WSGIServer, batch: list[Request], cuts: list[int]) -> None:
    """Property: requests sent in arbitrary slices, pipelined or not, reach the app exactly.

    Each response answers its own request, in order; after an HTTP/1.0 request
    (no keep-alive) the server closes the connection and answers nothing more.
    """
    # A client does not pipeline past a request that ends the connection (an HTTP/1.0
    # one without keep-alive): the bytes after it are sent once its response is in, and
    # may meet a closed socket - they are never answered either way.
    closing = next((i for i, r in enumerate(batch) if r.version == "HTTP/1.0"), len(batch) - 1)
    data = b"".join(request.raw for request in batch[: closing + 1])
    rest = b"".join(request.raw for request in batch[closing + 1 :])
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {len(data)})
    with client(echo_server) as sock:
        start = 0
        for point in points:
            if point > start:
                sock.sendall(data[start:point])
                start = point
        reader = ResponseReader(sock)
        for request in batch[: closing + 1]:
            response = reader.read_response(request.method)
            assert response.status == 200, response
            assert json.loads(response.body) == expected_echo(request)
        if batch[closing].version == "HTTP/1.0":
            assert response.header("Connection") in (None, "close")
            if rest:
                with contextlib.suppress(OSError):
                    sock.sendall(rest)
            assert reader.at_eof(), reader.buffer
        else:
            assert reader.buffer == b""


# -- 3. never a crash, never a hang, pure ------------------------------------------------


# Found by these properties (the first two as hypothesis shrank them, the others the
# same inputs in their CRLF forms, large enough to fail on any machine).  An
# unbounded read() of wsgi.input hands the length the *client declared* (an
# 18-digit Content-Length, a 16-hex-digit chunk size) straight to rfile.read(),
# which allocates that many bytes before receiving any: MemoryError, or an
# OverflowError past sys.maxsize.  The app sees neither ClientDisconnected nor a
# 400 but a MemoryError, and the client gets a 500.  RFC 9110 §8.6 / RFC 9112
# §7.1: recipients "MUST anticipate potentially large decimal [hexadecimal]
# numerals and prevent parsing errors due to integer conversion overflows".
LENGTH_BUG_EXAMPLES = [
    b"! / HTTP/1.0\ncontent-length:100000000000\n\n",
    b"! / HTTP/1.1\ntransfer-encoding:chunked\nhost:\n\n8000000000000000\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 999999999999999999\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\nhello",
    b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000\r\nhi",
]


def pin(examples: list[bytes]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """``@example(raw=...)`` for each of ``examples``."""

    def decorate(test: Callable[..., None]) -> Callable[..., None]:
        for raw in reversed(examples):
            test = example(raw=raw)(test)
        return test

    return decorate


@settings(max_examples=1000, deadline=None)
@given(raw=hostile_bytes)
@pin(LENGTH_BUG_EXAMPLES)
def test_hostile_bytes_in_memory(raw: bytes) -> None:
    """Property: for any bytes, parsing raises only a promised HTTPError or ClientDisconnected.

    Successive requests are parsed as the server would (each body read to its
    end before the next head), with bare LF refused and accepted; no single call
    may take SLOW_CALL seconds.
    """
    for limits in (Limits(), Limits(allow_bare_lf=True)):
        rfile = SocketReader(io.BytesIO(raw).read)
        while True:
            try:
                head = timed(lambda: read_request_head(rfile, limits))  # noqa: B023
            except HTTPError as exc:
                assert exc.status in REFUSED, exc.status
                break
            if head is None:
                break
            stream = open_body(head.chunked, head.content_length, rfile, limits)
            # Strict limits: read(); relaxed ones: line by line, as multipart parsers do.
            consume = stream.read if not limits.allow_bare_lf else stream.readlines
            try:
                timed(consume)
            except HTTPError as exc:
                assert exc.status in REFUSED, exc.status
                break
            except ClientDisconnected:
                break


# -- 4. never a crash, never a hang, live ------------------------------------------------


def test_hostile_bytes_live(caplog: pytest.LogCaptureFixture) -> None:
    """Property: for any bytes, a live server answers well-formed HTTP/1.1 or closes, in time.

    Every status it sends is 100, 200 (the app's) or a promised refusal; after
    all the examples it still serves a normal GET and no worker died of an
    unexpected exception.
    """
    caplog.set_level(logging.ERROR, logger="wsgibridge.server")
    try:
        with running_server(drain_app) as server:

            @settings(
                max_examples=150,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(raw=hostile_bytes)
            @pin(LENGTH_BUG_EXAMPLES)
            def check(raw: bytes) -> None:
                try:
                    data = exchange(server, raw, timeout=5.0)
                except TimeoutError:
                    pytest.fail(f"no answer and no close within 5 s for {raw!r}")
                statuses = response_statuses(data)
                allowed = REFUSED | {100, 200}
                assert set(statuses) <= allowed, (statuses, raw)

            try:
                check()
            finally:
                # Checked even when an example failed (a failure here chains to that one).
                response = exchange(
                    server, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                )
                assert response.startswith(b"HTTP/1.1 200 "), response
    finally:
        # No worker thread may have died, whatever else failed.
        died = [
            record
            for record in caplog.records
            if record.name == "wsgibridge.server" and "unexpected error" in record.getMessage()
        ]
        assert not died, [record.getMessage() for record in died]


# -- the header section's one-pass check agrees with the line-by-line one ----------------

_FIELD_BYTES = st.sampled_from(
    [b"a", b"Host", b"X-1", b":", b" ", b"\t", b"\r", b"\n", b"\x00", b"\x7f", b"\xe9", b"v", b","]
)
_FIELD_LINE = st.lists(_FIELD_BYTES, max_size=12).map(b"".join)


def _line_by_line(head: bytes) -> list[tuple[str, str]] | HTTPError:
    """parse_head's answer when it must take the line-by-line path (the fast check off)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parser, "FIELD_SECTION", re.compile(b"(?!)"))  # never matches
        try:
            return parser.parse_head(head, Limits()).headers
        except HTTPError as exc:
            return exc


@settings(max_examples=1000, deadline=None)
@given(st.lists(_FIELD_LINE, max_size=5))
@example([b"Host: x", b" folded"])
@example([b"Name : v"])
@example([b"A:\tb\t"])
def test_the_one_pass_check_and_the_line_by_line_parse_agree(lines: list[bytes]) -> None:
    """A header section the one-pass FIELD_SECTION check lets through has only lines
    that the line-by-line parse accepts, and parse_head answers the same (the same
    fields, or the same refusal with the same reason) whichever path it takes."""
    head = b"GET / HTTP/1.0\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    if b"\r\n\r\n" in head[:-2] or b"\n" in head.replace(b"\r\n", b""):
        return  # find_head_end would end the head earlier, or refuse a bare LF first
    fields = head[len(b"GET / HTTP/1.0\r\n") : -2]
    if grammar.FIELD_SECTION.fullmatch(fields) is not None:
        for line in lines:
            parser.parse_field_line(line, "header section")  # raises if it disagrees
    slow = _line_by_line(head)
    try:
        fast: list[tuple[str, str]] | HTTPError = parser.parse_head(head, Limits()).headers
    except HTTPError as exc:
        fast = exc
    if isinstance(slow, HTTPError):
        assert isinstance(fast, HTTPError) and str(fast) == str(slow)
    else:
        assert fast == slow
