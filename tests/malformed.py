"""Malformed and hostile requests, each with the status wsgibridge must answer.

Sources: the request-smuggling CVEs and probes published against waitress,
gunicorn, cheroot and CPython's http.server, RFC 9112/9110 MUSTs, and more of
our own.  Each case is complete bytes as a client would send them; ``H`` is a
valid Host line to keep cases short.  The app must never be called for any
of them.
"""

from __future__ import annotations

from typing import NamedTuple

H = b"Host: example.com\r\n"


class Case(NamedTuple):
    id: str
    raw: bytes
    status: int


def req(head: bytes, body: bytes = b"") -> bytes:
    return head + b"\r\n" + body


CASES: list[Case] = [
    # -- request line ---------------------------------------------------------------
    Case("http09", b"GET /\r\n\r\n", 400),
    Case("two-spaces", req(b"GET  / HTTP/1.1\r\n" + H), 400),
    Case("tab-separator", req(b"GET\t/ HTTP/1.1\r\n" + H), 400),
    Case("vt-separator", req(b"GET\x0b/ HTTP/1.1\r\n" + H), 400),
    Case("trailing-space", req(b"GET / HTTP/1.1 \r\n" + H), 400),
    Case("leading-space", req(b" GET / HTTP/1.1\r\n" + H), 400),
    Case("trailing-junk", req(b"GET / HTTP/1.1 junk\r\n" + H), 400),
    Case("empty-method", req(b" / HTTP/1.1\r\n" + H), 400),
    Case("method-not-token", req(b"G(T / HTTP/1.1\r\n" + H), 400),
    Case("method-nul", req(b"GE\x00T / HTTP/1.1\r\n" + H), 400),
    Case("method-utf8", req("GËT / HTTP/1.1\r\n".encode() + H), 400),
    Case("target-nul", req(b"GET /a\x00b HTTP/1.1\r\n" + H), 400),
    Case("target-ctl", req(b"GET /a\x1bb HTTP/1.1\r\n" + H), 400),
    Case("target-del", req(b"GET /a\x7fb HTTP/1.1\r\n" + H), 400),
    # RFC 9112 §3.2 / RFC 3986: no request-target form has a place for 8-bit bytes.
    Case("target-8bit", req(b"GET /a\xffb HTTP/1.1\r\n" + H), 400),
    Case("target-8bit-first", req(b"GET /\x80 HTTP/1.1\r\n" + H), 400),
    Case("target-raw-utf8", req("GET /café HTTP/1.1\r\n".encode() + H), 400),
    Case("target-8bit-query", req(b"GET /a?q=\xe9 HTTP/1.1\r\n" + H), 400),
    Case("target-8bit-absolute", req(b"GET http://example.com/\xff HTTP/1.1\r\n" + H), 400),
    Case("target-8bit-asterisk", req(b"OPTIONS *\xff HTTP/1.1\r\n" + H), 400),
    Case("target-relative", req(b"GET a/b HTTP/1.1\r\n" + H), 400),
    Case("asterisk-get", req(b"GET * HTTP/1.1\r\n" + H), 400),
    Case("authority-get", req(b"GET example.com:80 HTTP/1.1\r\n" + H), 400),
    Case("connect-origin", req(b"CONNECT / HTTP/1.1\r\n" + H), 400),
    Case("connect-no-port", req(b"CONNECT example.com HTTP/1.1\r\n" + H), 400),
    Case("connect-authority", req(b"CONNECT example.com:443 HTTP/1.1\r\n" + H), 501),
    Case("connect-ipv6", req(b"CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n"), 501),
    Case("target-fragment", req(b"GET /a#b HTTP/1.1\r\n" + H), 400),
    Case("absolute-empty-host", req(b"GET http:///a HTTP/1.1\r\n" + H), 400),
    Case("absolute-bare-scheme", req(b"GET http:// HTTP/1.1\r\n" + H), 400),
    Case("absolute-other-scheme", req(b"GET javascript://x/ HTTP/1.1\r\n" + H), 400),
    Case("absolute-ftp", req(b"GET ftp://example.com/ HTTP/1.1\r\n" + H), 400),
    Case("absolute-userinfo", req(b"GET http://user@example.com/ HTTP/1.1\r\n" + H), 400),
    Case("absolute-bad-port", req(b"GET http://example.com:8x/ HTTP/1.1\r\n" + H), 400),
    Case("version-lower", req(b"GET / http/1.1\r\n" + H), 400),
    Case("version-1.10", req(b"GET / HTTP/1.10\r\n" + H), 400),
    Case("version-01.1", req(b"GET / HTTP/01.1\r\n" + H), 400),
    Case("version-1.2", req(b"GET / HTTP/1.2\r\n" + H), 400),
    Case("version-1", req(b"GET / HTTP/1\r\n" + H), 400),
    Case("version-0.9", req(b"GET / HTTP/0.9\r\n" + H), 400),
    Case("version-2.0", req(b"GET / HTTP/2.0\r\n" + H), 505),
    Case("version-3.0", req(b"GET / HTTP/3.0\r\n" + H), 505),
    Case("version-missing-slash", req(b"GET / HTTP1.1\r\n" + H), 400),
    Case("request-line-bare-lf", req(b"GET / HTTP/1.1\n" + H), 400),
    Case("request-line-bare-cr", req(b"GET / HTTP/1.1\r" + H), 400),
    Case("request-line-cr-inside", req(b"GET /a\rb HTTP/1.1\r\n" + H), 400),
    Case("request-line-too-long", req(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H), 414),
    Case("two-blank-lines-first", b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n", 400),
    # A PROXY protocol header where none is expected (no --proxy-protocol, or an
    # untrusted peer): never guessed at ("MUST not try to guess whether the
    # protocol header is present or not"), so no request line.
    Case(
        "proxy-v1-unexpected",
        req(b"PROXY TCP4 203.0.113.7 127.0.0.1 1 80\r\nGET / HTTP/1.1\r\n" + H),
        400,
    ),
    Case(
        "proxy-v2-unexpected",
        req(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes(12) + b"GET / HTTP/1.1\r\n" + H),
        400,
    ),
    # -- header section: syntax -------------------------------------------------------
    Case("bare-lf-header", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\n"), 400),
    Case("bare-lf-end", b"GET / HTTP/1.1\r\n" + H + b"\n", 400),
    # Bare LF everywhere: the head never ends in CRLF CRLF, so it must be refused
    # when the first bare LF arrives, not after the header timeout.
    Case("bare-lf-head", b"GET / HTTP/1.1\nHost: x\nConnection: close\n\n", 400),
    Case("bare-lf-mixed", b"GET / HTTP/1.1\r\nHost: x\nConnection: close\r\n\r\n", 400),
    Case("bare-lf-after-crlf-crlf", b"\r\nGET / HTTP/1.1\n" + H + b"\r\n", 400),
    # RFC 9112 §2.2: at least one empty line before the request line may be
    # ignored; wsgibridge ignores exactly one, so two make an empty request line.
    Case("two-empty-lines-first", b"\r\n\r\n" + req(b"GET / HTTP/1.1\r\n" + H), 400),
    Case(
        "bare-cr-in-value", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rContent-Length: 5\r\n"), 400
    ),
    Case("cr-cr-lf", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\r\nX-B: b\r\n"), 400),
    Case("bare-cr-line-end", b"GET / HTTP/1.1\r\n" + H + b"X-A: a\r\r\n", 400),
    Case("obs-fold", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n two\r\n"), 400),
    Case("obs-fold-tab", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: one\r\n\ttwo\r\n"), 400),
    Case("first-line-fold", req(b"GET / HTTP/1.1\r\n X-A: a\r\n" + H), 400),
    Case(
        "space-before-colon",
        req(b"GET / HTTP/1.1\r\n" + H + b"Content-Length : 5\r\n", b"hello"),
        400,
    ),
    Case(
        "tab-before-colon",
        req(b"GET / HTTP/1.1\r\n" + H + b"Content-Length\t: 5\r\n", b"hello"),
        400,
    ),
    Case("no-colon", req(b"GET / HTTP/1.1\r\n" + H + b"NoColonHere\r\n"), 400),
    Case("empty-name", req(b"GET / HTTP/1.1\r\n" + H + b": value\r\n"), 400),
    Case("name-slash", req(b"GET / HTTP/1.1\r\n" + H + b"X/A: 1\r\n"), 400),
    Case("name-quote", req(b"GET / HTTP/1.1\r\n" + H + b'X"A: 1\r\n'), 400),
    Case("name-del", req(b"GET / HTTP/1.1\r\n" + H + b"X\x7fA: 1\r\n"), 400),
    Case("name-vt", req(b"GET / HTTP/1.1\r\n" + H + b"X\x0bA: 1\r\n"), 400),
    Case("name-utf8", req(b"GET / HTTP/1.1\r\n" + H + "Ñame: 1\r\n".encode()), 400),
    Case("value-nul", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n"), 400),
    Case("value-esc", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x1bb\r\n"), 400),
    Case("value-del", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n"), 400),
    Case("value-vt", req(b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x0bb\r\n"), 400),
    Case("from-envelope", req(b"GET / HTTP/1.1\r\nFrom nobody\r\n" + H), 400),
    Case(
        "redos-value",
        req(b"GET / HTTP/1.1\r\n" + H + b"Bad-Header: " + b"x" * 20000 + b"\x10\r\n"),
        400,
    ),
    Case("eof-mid-headers", b"GET / HTTP/1.1\r\n" + H + b"X-A: 1\r\n", 400),
    # -- header section: limits ---------------------------------------------------------
    Case(
        "too-many-headers",
        req(b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i for i in range(120))),
        431,
    ),
    Case(
        "header-section-too-big",
        req(b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"v" * 70000 + b"\r\n"),
        431,
    ),
    Case(
        "many-medium-headers",
        req(
            b"GET / HTTP/1.1\r\n"
            + H
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 1000) for i in range(80))
        ),
        431,
    ),
    # -- Host -------------------------------------------------------------------------
    Case("no-host-1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    Case("two-hosts", req(b"GET / HTTP/1.1\r\n" + H + b"Host: evil.example\r\n"), 400),
    Case("two-hosts-1.0", req(b"GET / HTTP/1.0\r\n" + H + H), 400),
    Case("host-list", req(b"GET / HTTP/1.1\r\nHost: a, b\r\n"), 400),
    Case("host-space", req(b"GET / HTTP/1.1\r\nHost: a b\r\n"), 400),
    Case("host-path", req(b"GET / HTTP/1.1\r\nHost: a/b\r\n"), 400),
    Case("host-userinfo", req(b"GET / HTTP/1.1\r\nHost: user@a\r\n"), 400),
    Case("host-query", req(b"GET / HTTP/1.1\r\nHost: a?b\r\n"), 400),
    Case("host-bad-port", req(b"GET / HTTP/1.1\r\nHost: a:80x\r\n"), 400),
    Case("host-two-ports", req(b"GET / HTTP/1.1\r\nHost: a:80:81\r\n"), 400),
    Case("host-obs-text", req(b"GET / HTTP/1.1\r\nHost: caf\xe9.example\r\n"), 400),
    # -- Content-Length (CVE-2019-16792, CVE-2022-24761, cheroot#275) --------------------
    Case("cl-plus", req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n", b"hello"), 400),
    Case("cl-minus", req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n", b"hello"), 400),
    Case(
        "cl-list-same", req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 5\r\n", b"hello"), 400
    ),
    Case(
        "cl-list-diff", req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5,6\r\n", b"hello!"), 400
    ),
    Case("cl-hex", req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n", b"hello"), 400),
    Case(
        "cl-underscore",
        req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1_0\r\n", b"helloworld"),
        400,
    ),
    Case(
        "cl-fullwidth",
        req(b"POST / HTTP/1.1\r\n" + H + "Content-Length: \uff15\r\n".encode(), b"hello"),
        400,
    ),
    Case(
        "cl-space-inside",
        req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n", b"helloworld"),
        400,
    ),
    Case("cl-empty", req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length:\r\n"), 400),
    Case("cl-float", req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5.0\r\n", b"hello"), 400),
    Case(
        "cl-duplicate-same",
        req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
        400,
    ),
    Case(
        "cl-duplicate-diff",
        req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!"),
        400,
    ),
    Case(
        "cl-huge",
        req(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999999\r\n"),
        400,
    ),
    # -- Transfer-Encoding (CVE-2019-16786, CVE-2019-16789, CVE-2024-1135, CVE-2024-6827) --
    Case(
        "cl-and-te",
        req(
            b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
        ),
        400,
    ),
    Case(
        "te-and-cl",
        req(
            b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            b"0\r\n\r\n",
        ),
        400,
    ),
    Case("te-http10", req(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"), 400),
    Case(
        "te-xchunked",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    Case(
        "te-chunked-identity",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
        400,
    ),
    Case(
        "te-gzip-chunked",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n"),
        501,
    ),
    Case(
        "te-gzip-only",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n", b"0\r\n\r\n"),
        400,
    ),
    Case("te-identity", req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n"), 400),
    Case(
        "te-chunked-twice",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    Case(
        "te-two-fields",
        req(
            b"POST / HTTP/1.1\r\n"
            + H
            + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
        ),
        400,
    ),
    Case(
        "te-split-gzip",
        req(
            b"POST / HTTP/1.1\r\n"
            + H
            + b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
            b"0\r\n\r\n",
        ),
        501,
    ),
    Case(
        "te-vt-chunked",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \x0bchunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    Case(
        "te-chunked-nel",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\x85\r\n", b"0\r\n\r\n"),
        400,
    ),
    Case("te-empty", req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: \r\n"), 400),
    Case("te-comma-only", req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: ,\r\n"), 400),
    Case(
        "te-quoted",
        req(b"POST / HTTP/1.1\r\n" + H + b'Transfer-Encoding: "chunked"\r\n', b"0\r\n\r\n"),
        400,
    ),
    Case(
        "te-fold",
        req(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip,\r\n chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    # -- Expect ---------------------------------------------------------------------------
    Case(
        "expect-unknown",
        req(b"POST / HTTP/1.1\r\n" + H + b"Expect: something\r\nContent-Length: 5\r\n", b"hello"),
        417,
    ),
    Case(
        "expect-100-and-more",
        req(
            b"POST / HTTP/1.1\r\n" + H + b"Expect: 100-continue, x\r\nContent-Length: 5\r\n",
            b"hello",
        ),
        417,
    ),
    # -- other duplicates ----------------------------------------------------------------
    Case(
        "two-content-types",
        req(
            b"POST / HTTP/1.1\r\n"
            + H
            + b"Content-Type: a/b\r\nContent-Type: c/d\r\nContent-Length: 0\r\n"
        ),
        400,
    ),
]

# The chunked body grammar (RFC 9112 §7.1): these are refused when the app reads
# the body; the app is called, but must see an error, never the data as valid.
CHUNKED_HEAD = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"

BAD_CHUNKED_BODIES: list[Case] = [
    Case("chunk-size-0x", b"0x5\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-size-plus", b"+5\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-size-minus", b"-5\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-size-trailing-space", b"5 \r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-size-leading-space", b" 5\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-size-empty", b"\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-size-huge", b"fffffffffffffffffff\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-size-2**63", b"8000000000000000\r\nab\n\r\n0\r\n\r\n", 400),
    Case("chunk-size-bare-lf", b"5\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-data-bare-lf", b"5\r\nhello\n0\r\n\r\n", 400),
    Case("chunk-data-no-crlf", b"5\r\nhelloXX0\r\n\r\n", 400),
    Case("chunk-data-too-long", b"3\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-ext-bare-cr", b"5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-ext-not-token", b"5;(x)\r\nhello\r\n0\r\n\r\n", 400),
    Case("chunk-ext-bad-quote", b'5;a="x\r\nhello\r\n0\r\n\r\n', 400),
    Case("chunk-ext-nul", b"5;a=\x00\r\nhello\r\n0\r\n\r\n", 400),
    Case("last-chunk-bare-lf", b"5\r\nhello\r\n0\n\r\n", 400),
    Case("trailer-bare-lf", b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n", 400),
    Case("trailer-obs-fold", b"5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n", 400),
    Case("trailer-no-colon", b"5\r\nhello\r\n0\r\njunk\r\n\r\n", 400),
    Case("trailer-too-big", b"5\r\nhello\r\n0\r\nX-T: " + b"v" * 70000 + b"\r\n\r\n", 431),
    # --allow-bare-lf is for request heads only: chunk lines always need CRLF
    # (a front end that ends lines at CRLF only would see other chunk boundaries).
    Case("chunk-ext-bare-lf", b"2;a\nXY\r\n0\r\n\r\n", 400),
    Case("trailer-empty-line-bare-lf", b"5\r\nhello\r\n0\r\n\n", 400),
]

# RFC 9110 §6.5.1: fields that "cannot be processed outside the header section"
# (framing, routing, authentication, request modifiers, response controls,
# content format) are refused in a trailer section, not discarded: a proxy in
# front may have merged them into the header section.
FORBIDDEN_TRAILER_NAMES = [
    "Content-Length",
    "Transfer-Encoding",
    "Host",
    "Trailer",
    "TE",
    "Content-Type",
    "Content-Encoding",
    "Content-Range",
    "Authorization",
    "Proxy-Authorization",
    "Cookie",
    "Expect",
    "Range",
    "Max-Forwards",
    "Cache-Control",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Range",
    "Connection",
]
BAD_CHUNKED_BODIES += [
    Case(
        f"trailer-{name.lower()}",
        b"5\r\nhello\r\n0\r\nX-Ok: 1\r\n" + name.upper().encode() + b": 1\r\n\r\n",
        400,
    )
    for name in FORBIDDEN_TRAILER_NAMES
]
