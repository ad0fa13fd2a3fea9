"""Static files as values: which file a request names, and what the answer's head says.

Rule: pure - no file is opened here.  :func:`file_name` turns the part of a
request target below a ``--static`` prefix into a relative file name (bytes,
as the file system has them) or refuses it with :class:`~wsgibridge.errors.NotFound`;
:func:`plan` turns a request's method and fields and a file's size and
modification time into the status, header fields and byte span to send
(conditional requests, RFC 9110 §13; ranges, RFC 9110 §14).
``serving/staticfiles.py`` opens the file and sends what the plan says.

Every refusal of a name is a 404, whatever the reason (``..``, an encoded
slash, a NUL, a hidden file, a directory): a client learns no more than
"there is no file by that name here", and a scanner cannot tell one rule from another.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

from ..errors import MethodNotAllowed, NotFound
from .response import error_body

ALLOW = "GET, HEAD"
DEFAULT_TYPE = "application/octet-stream"
# Bytes no file name served here may hold: the C0 controls (NUL among them),
# DEL, and the backslash, a separator on Windows and a trick on everything else.
_REFUSED_BYTES = frozenset([*range(0x20), 0x7F, 0x5C])


def file_name(rest: str) -> bytes:
    """The relative file name for ``rest``, the target's path below a mount's prefix.

    ``rest`` is still percent-encoded (its query already removed) and starts
    after the prefix's ``/``.  It is decoded once (RFC 3986 §2.1), then each
    ``/``-separated segment must be a plain name: not empty, not ``.`` or
    ``..`` (RFC 3986 §3.3: "complete path segments "." and ".." are intended
    only for use within relative references"; here they would climb out), not
    hidden (a leading ``.``: ``.git``, ``.env``).  An encoded slash or
    backslash (``%2F``, ``%5C``) is refused before decoding: it would make a
    separator out of what the client sent as data.  Raises :class:`NotFound`.
    """
    lowered = rest.lower()
    if "%2f" in lowered or "%5c" in lowered:
        raise NotFound("an encoded slash in a static file's name")
    # The target's str holds its bytes as latin-1 code points (PEP 3333's
    # "bytes as latin-1"): back to those bytes, then the escapes decoded.
    raw = rest.encode("latin-1")
    name = unquote_to_bytes(raw) if "%" in rest else raw
    for byte in name:
        if byte in _REFUSED_BYTES:
            raise NotFound("a control character or backslash in a static file's name")
    for segment in name.split(b"/"):
        if not segment or segment.startswith(b"."):
            raise NotFound("an empty, dot or hidden segment in a static file's name")
    return name


def content_type(name: bytes) -> str:
    """The Content-Type for a file name, from :mod:`mimetypes` (text gets ``charset=utf-8``)."""
    guessed, encoding = mimetypes.guess_type(name.decode("utf-8", "replace"), strict=False)
    if guessed is None or encoding is not None:
        # A .gz or .br file is sent as what it is, not as its content with a
        # Content-Encoding the client did not ask for.
        return "application/gzip" if encoding == "gzip" else DEFAULT_TYPE
    if guessed.startswith("text/") or guessed == "application/javascript":
        return f"{guessed}; charset=utf-8"
    return guessed


def entity_tag(size: int, mtime_ns: int) -> str:
    """A strong ETag from the file's size and modification time in nanoseconds.

    Strong (RFC 9110 §8.8.1: a strong validator changes whenever the bytes
    do): a file rewritten with the same size in the same nanosecond is what
    it would take to fool it, and a strong tag is what ``If-Range`` needs
    (§13.1.5: "A client MUST NOT generate an If-Range header field
    containing an entity tag that is marked as weak").
    """
    return f'"{size:x}-{mtime_ns:x}"'


def _opaque(tag: str) -> str:
    """An entity tag without its weakness indicator (for the weak comparison)."""
    return tag[2:] if tag.startswith("W/") else tag


def _tags(value: str) -> list[str]:
    """The members of an If-Match / If-None-Match field value (``*`` is one)."""
    return [member.strip() for member in value.split(",") if member.strip()]


def _date(value: str) -> float | None:
    """An HTTP-date as a POSIX timestamp, or None when it is not one."""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.timestamp()


def _one(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """The value of a field that may appear once; None when absent or given twice."""
    found: str | None = None
    count = 0
    for field, value in headers:
        if field.lower() == name:
            found = value
            count += 1
    return found if count == 1 else None


def _joined(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    """A list field's values joined with commas (RFC 9110 §5.3), None when absent."""
    values = [value for field, value in headers if field.lower() == name]
    return ",".join(values) if values else None


def byte_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """The one range a ``Range`` value asks for, as (first, last) inclusive.

    None: ignore the field and send the whole file (RFC 9110 §14.2: "A
    server MUST ignore a Range header field received with a request method
    that is unrecognized or for which range handling is not defined", and
    "An origin server MUST ignore a Range header field that contains a range
    unit it does not understand"; a syntax error and several ranges are
    ignored too: "A server MAY ignore the Range header field").  False: the
    range is unsatisfiable (416; §14.1.1: a first-pos at or past the length,
    or a suffix-length of 0).
    """
    unit, equals, ranges = value.partition("=")
    if not equals or unit.strip().lower() != "bytes" or "," in ranges:
        return None
    first_text, dash, last_text = ranges.strip().partition("-")
    first_text, last_text = first_text.strip(), last_text.strip()
    if not dash or not (first_text.isdigit() or first_text == ""):
        return None
    if not (last_text.isdigit() or last_text == ""):
        return None
    if not first_text.isascii() or not last_text.isascii():
        return None
    if first_text == "":
        if last_text == "":
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return False
        return max(size - suffix, 0), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # §14.1.1: invalid if "the last-pos value is less than first-pos"
    if first >= size:
        return False
    last = int(last_text) if last_text else size - 1
    return first, min(last, size - 1)


class Plan:
    """What to answer: the status, the header fields (without Date and Server) and the
    span of the file to send (``count`` 0 and ``body`` set for an answer without the file)."""

    __slots__ = ("body", "count", "headers", "offset", "status")

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        offset: int = 0,
        count: int = 0,
        body: bytes = b"",
    ) -> None:
        self.status = status
        self.headers = headers
        self.offset = offset
        self.count = count
        self.body = body

    @property
    def reason(self) -> str:
        return HTTPStatus(self.status).phrase


def refusal(exc: NotFound | MethodNotAllowed) -> Plan:
    """The plan for a refused request: a short plain-text error, the connection kept."""
    body = error_body(exc.status.value, None, encoding="ascii")
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        *exc.headers,
    ]
    return Plan(exc.status.value, headers, body=body)


def check_method(method: str) -> None:
    """GET and HEAD only: RFC 9110 §15.5.6, "The origin server MUST generate an Allow
    header field in a 405 response containing a list of the target resource's
    currently supported methods"."""
    if method != "GET" and method != "HEAD":
        raise MethodNotAllowed(
            f"{method} is not allowed on a static file", headers=[("Allow", ALLOW)]
        )


def plan(
    *,
    method: str,
    headers: Sequence[tuple[str, str]],
    name: bytes,
    size: int,
    mtime_ns: int,
    cache_control: str,
) -> Plan:
    """The answer to a GET or HEAD of a file, following RFC 9110 §13.2.2's order.

    The preconditions are evaluated in §13.2.2's order: If-Match, else
    If-Unmodified-Since (412 when false); If-None-Match, else
    If-Modified-Since (304 when false); then Range, subject to If-Range.
    """
    etag = entity_tag(size, mtime_ns)
    mtime = mtime_ns // 1_000_000_000  # an HTTP-date has whole seconds
    last_modified = formatdate(mtime, usegmt=True)
    validators = [("ETag", etag), ("Last-Modified", last_modified)]
    if cache_control:
        validators.append(("Cache-Control", cache_control))
    if_match = _joined(headers, "if-match")
    if if_match is not None:
        # §13.1.1: "An origin server MUST use the strong comparison function
        # when comparing entity tags for If-Match".
        tags = _tags(if_match)
        if "*" not in tags and etag not in tags:
            return _failed(validators)
    else:
        since = _one(headers, "if-unmodified-since")
        when = _date(since) if since is not None else None
        # §13.1.4: false "if the selected representation's last modification
        # date is more recent than the date provided in the field value".
        if when is not None and mtime > when:
            return _failed(validators)
    if_none_match = _joined(headers, "if-none-match")
    if if_none_match is not None:
        # §13.1.2: "A recipient MUST use the weak comparison function when
        # comparing entity tags for If-None-Match".
        tags = _tags(if_none_match)
        if "*" in tags or _opaque(etag) in [_opaque(tag) for tag in tags]:
            return Plan(304, validators)
    else:
        # §13.1.3: "A recipient MUST ignore If-Modified-Since if the request
        # contains an If-None-Match header field", and "MUST ignore the
        # If-Modified-Since header field if the received field value is not a
        # valid HTTP-date, or if the field value has more than one member".
        since = _one(headers, "if-modified-since")
        when = _date(since) if since is not None else None
        if when is not None and mtime <= when:
            return Plan(304, validators)
    fields = [
        ("Content-Type", content_type(name)),
        ("Accept-Ranges", "bytes"),
        *validators,
    ]
    wanted = _one(headers, "range")
    span = byte_range(wanted, size) if wanted is not None else None
    if span is not None and not _if_range(headers, etag, last_modified):
        span = None
    if span is False:
        # §15.5.17: "a server generating a 416 (Range Not Satisfiable)
        # response to a byte-range request SHOULD generate a Content-Range
        # header field specifying the current length of the selected representation".
        body = error_body(416, None, encoding="ascii")
        return Plan(
            416,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Content-Range", f"bytes */{size}"),
                *validators,
            ],
            body=body,
        )
    if isinstance(span, tuple):
        first, last = span
        count = last - first + 1
        fields.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        fields.append(("Content-Length", str(count)))
        return Plan(206, fields, first, count)
    fields.append(("Content-Length", str(size)))
    return Plan(200, fields, 0, size)


def _if_range(headers: Sequence[tuple[str, str]], etag: str, last_modified: str) -> bool:
    """Whether a Range is to be honoured under If-Range (True when there is none).

    RFC 9110 §13.1.5: "the condition is true only if [the entity tag]
    matches the selected representation's current entity tag using the
    strong comparison function", or for a date, if it is "an exact match"
    of the Last-Modified; otherwise "the recipient SHOULD ignore the Range
    header field and respond with 200 (OK) containing the entire selected representation".
    """
    condition = _one(headers, "if-range")
    if condition is None:
        return True
    condition = condition.strip()
    if condition.startswith('"') or condition.startswith("W/"):
        return condition == etag
    return condition == last_modified


def _failed(validators: list[tuple[str, str]]) -> Plan:
    """412: RFC 9110 §13.1.1/§13.1.4, "respond with the 412 (Precondition Failed) status code"."""
    body = error_body(412, None, encoding="ascii")
    return Plan(
        412,
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *validators,
        ],
        body=body,
    )
