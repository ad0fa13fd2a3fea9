"""The HTTP grammar: RFC 9110 and RFC 9112 ABNF as compiled patterns and constants.

Rule: this is the only place a rule of the HTTP grammar is spelled.  The
parser, the body streams, the response checks, the forwarded-header parser
and the access log import their rules from here, so the server cannot accept
a token, a field value or a quoted-string in one place that it refuses in
another.

Each character class is spelled once, as ``str`` regex source, and compiled
in the forms its users need: over ``bytes`` for what comes off the wire (the
request head, chunk lines: names without a suffix) and over ``str`` for
values already decoded as latin-1 (the app's response headers, forwarded
headers read from the environ: names ending in ``_STR``).  A ``str`` class
such as ``\\x80-\\xff`` means the same code points over ``str`` as the bytes
over ``bytes``, since the values are latin-1.  Sets of characters
(:data:`TCHARS`, :data:`OWS_STR`) are derived from the same classes.

No pattern repeats a group whose alternatives can match the same text, so
matching is linear on hostile input (the CVE-2020-5236 shape).
"""

from __future__ import annotations

import re

__all__ = [
    "ABSOLUTE",
    "AUTHORITY",
    "CHUNK_EXT",
    "CHUNK_SIZE",
    "DIGITS",
    "FIELD_SECTION",
    "FIELD_VALUE",
    "FIELD_VALUE_STR",
    "HIGHER_VERSION",
    "HOST",
    "OWS",
    "OWS_STR",
    "QUOTED_PAIR_STR",
    "QUOTED_STRING",
    "QUOTED_STRING_STR",
    "REASON_PHRASE_STR",
    "TARGET",
    "TCHARS",
    "TOKEN",
    "TOKEN_STR",
]


def _chars(char_class: str) -> str:
    """The latin-1 characters a regex character class (its contents) matches, in order."""
    pattern = re.compile(f"[{char_class}]")
    return "".join(c for c in map(chr, range(256)) if pattern.fullmatch(c))


def _over_bytes(pattern: re.Pattern[str]) -> re.Pattern[bytes]:
    """The same pattern over bytes (its source is ASCII: escapes, never raw 8-bit characters)."""
    return re.compile(pattern.pattern.encode("ascii"))


# -- character classes (regex class contents) ------------------------------------

# RFC 5234 B.1: WSP = SP / HTAB
_WSP = r"\t\x20"
# RFC 5234 B.1: VCHAR = %x21-7E
_VCHAR = r"\x21-\x7e"
# RFC 9110 §5.5: obs-text = %x80-FF
_OBS_TEXT = r"\x80-\xff"
# RFC 9110 §5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" /
#   "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
_TCHAR = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
# HTAB / SP / VCHAR / obs-text: the characters of a field value (RFC 9110 §5.5
# field-content, SP and HTAB between field-vchars), of a reason-phrase (RFC 9112
# §4) and after the backslash of a quoted-pair (RFC 9110 §5.6.4).
_TEXT = f"[{_WSP}{_VCHAR}{_OBS_TEXT}]"

# -- whitespace ------------------------------------------------------------------

# RFC 9110 §5.6.3: OWS = *( SP / HTAB ); BWS = OWS.  The characters, to strip:
OWS_STR = _chars(_WSP)
OWS = OWS_STR.encode("ascii")
_OWS = f"[{_WSP}]*"

# -- tokens ----------------------------------------------------------------------

# RFC 9110 §5.6.2: token = 1*tchar
TCHARS = frozenset(_chars(_TCHAR))
TOKEN_STR = re.compile(f"[{_TCHAR}]+")
TOKEN = _over_bytes(TOKEN_STR)

# -- field values ----------------------------------------------------------------

# RFC 9110 §5.5: field-value = *field-content;
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ];
#   field-vchar = VCHAR / obs-text.
# No CR, LF, NUL, other controls or DEL.  (The parser strips the value's OWS
# first; a response header value is checked as the app gave it.)
FIELD_VALUE_STR = re.compile(f"{_TEXT}*")
FIELD_VALUE = _over_bytes(FIELD_VALUE_STR)

# RFC 9112 §5: field-line = field-name ":" OWS field-value OWS, each line ended
# by CRLF.  A whole header section (without its final empty line) checked in
# one pass: names are tokens (so no obs-fold, no space before the colon) and
# every character after the colon is SP, HTAB, VCHAR or obs-text.
FIELD_SECTION = re.compile(f"(?:[{_TCHAR}]+:{_TEXT}*\r\n)*".encode("ascii"))

# -- quoted strings --------------------------------------------------------------

# RFC 9110 §5.6.4: quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE;
#   qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text;
#   quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ).
# The two alternatives start with different characters, so matching is linear.
_QDTEXT = rf"[{_WSP}\x21\x23-\x5b\x5d-\x7e{_OBS_TEXT}]"
_QUOTED_PAIR = rf"\\{_TEXT}"
QUOTED_STRING_STR = re.compile(f'"(?:{_QDTEXT}|{_QUOTED_PAIR})*"')
QUOTED_STRING = _over_bytes(QUOTED_STRING_STR)
# One quoted-pair, the escaped character as group 1: ``QUOTED_PAIR_STR.sub(r"\1",
# inside)`` unescapes the inside of a matched quoted-string (RFC 9110 §5.6.4:
# "Recipients that process the value of a quoted-string MUST handle a
# quoted-pair as if it were replaced by the octet following the backslash").
QUOTED_PAIR_STR = re.compile(rf"\\({_TEXT})")

# -- the request line ------------------------------------------------------------

# RFC 9112 §3.2: request-target; every form of it is built from RFC 3986's
# ASCII characters, so controls, SP, DEL and 8-bit bytes are refused anywhere
# in it ("a recipient ... SHOULD respond with a 400 (Bad Request)" to an
# invalid one): 1*VCHAR.  Clients percent-encode; a proxy in front that
# normalised raw 8-bit bytes differently would route on another path than the
# app sees.
TARGET = re.compile(f"[{_VCHAR}]+".encode("ascii"))
# RFC 9112 §3.2.3: authority-form = uri-host ":" port (CONNECT only).
AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[^\s/?#@\[\]:]+):[0-9]+")
# RFC 9112 §3.2.2 absolute-form, for the schemes an origin server serves; RFC
# 9110 §4.2.1: "A sender MUST NOT generate an "http" URI with an empty host
# identifier. A recipient that processes such a URI reference MUST reject it".
# Group 1 is the authority.
ABSOLUTE = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/?#@\s]+)(?:[/?][^#\s]*)?")
# RFC 9112 §2.3: HTTP-version = HTTP-name "/" DIGIT "." DIGIT, for the major
# versions above 1 (answered 505, not 400).
HIGHER_VERSION = re.compile(rb"HTTP/[2-9]\.[0-9]")

# -- header fields ---------------------------------------------------------------

# RFC 9110 §7.2: Host = uri-host [ ":" port ]; RFC 3986 §3.2.2: uri-host =
# IP-literal / IPv4address / reg-name, reg-name = *( unreserved / pct-encoded /
# sub-delims ).  No spaces, no "/", "@", "?" or "#": anything else is refused.
HOST = re.compile(r"(?:\[[0-9A-Za-z:._~%!$&'()*+,;=-]+\]|[0-9A-Za-z._~%!$&'()*+,;=-]*)(?::[0-9]*)?")
# RFC 9110 §8.6: Content-Length = 1*DIGIT
DIGITS = re.compile(rb"[0-9]+")

# -- the status line -------------------------------------------------------------

# RFC 9112 §4: reason-phrase = 1*( HTAB / SP / VCHAR / obs-text ), optional
# after the status code's SP (status-line = HTTP-version SP status-code SP
# [ reason-phrase ]), so zero or more here.
REASON_PHRASE_STR = re.compile(f"{_TEXT}*")

# -- chunked transfer coding -----------------------------------------------------

# RFC 9112 §7.1: chunk-size = 1*HEXDIG
CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS chunk-ext-name
#   [ BWS "=" BWS chunk-ext-val ] ); chunk-ext-name = token;
#   chunk-ext-val = token / quoted-string.
# No nested repetition, so no catastrophic backtracking on hostile input.
CHUNK_EXT = _over_bytes(
    re.compile(
        f"(?:{_OWS};{_OWS}{TOKEN_STR.pattern}"
        f"(?:{_OWS}={_OWS}(?:{TOKEN_STR.pattern}|{QUOTED_STRING_STR.pattern}))?)*"
    )
)
