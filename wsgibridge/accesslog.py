"""Access log lines from a template of named fields.

Pure formatting: an :class:`AccessRecord` (what the handler knows once a
response is over) goes through an :class:`AccessLogFormat` (a template compiled
once) and comes out as one line.  Where the line goes is
``serving/accesssink.py``'s business; nothing here writes or configures a logger.

A template is text with ``{field}`` placeholders; ``{{`` and ``}}`` are literal
braces.  :data:`DEFAULT_FORMAT` is the line wsgibridge has always written::

    127.0.0.1 - - [23/Nov/2026:00:42:24 +0000] "GET /x HTTP/1.1" 200 13 0.56ms

Fields (the names are case-sensitive):

=================  ============================================================
Field              Value
=================  ============================================================
``client``         The client's address: REMOTE_ADDR, after proxy rewriting.
``remote_port``    The client's port (REMOTE_PORT; empty for a Unix socket).
``time``           End of the response, CLF, UTC: ``23/Nov/2026:00:42:24 +0000``.
``iso_time``       The same instant in ISO 8601, UTC: ``2026-11-23T00:42:24Z``.
``request``        The request line as received: ``GET /x?y=1 HTTP/1.1``.
``method``         The request method: ``GET``.
``path``           The target's path, before any ``?``, undecoded: ``/x``.
``query``          The target's query, after the ``?`` (empty when none): ``y=1``.
``protocol``       The request's version: ``HTTP/1.1``.
``status``         The response status code: ``200``.
``bytes``          Body bytes actually sent, in digits; ``0`` when none (HEAD,
                   304, a client gone before the body).  Headers not counted.
``bytes_in``       Request body bytes received (read by the app, or discarded
                   to keep the connection), in digits.
``duration``       Seconds the request took, from the start of reading it to the
                   end of the response, 6 decimals: ``0.000561``.
``duration_ms``    The same in milliseconds, 2 decimals: ``0.56``.
``duration_us``    The same in microseconds, rounded to an integer: ``561``.
``pid``            The serving process's id (right in forked workers too).
``i:Name``         A request header, by name, case-insensitively (``Name`` must
                   be a token).  Repeated fields are joined with ``", "``; an
                   absent one is ``-``, a present empty one is empty.
``header:Name``    The same as ``i:Name``.
``o:Name``         A response header, the same way.
``request_id``     The request id (``--request-id-header``), ``-`` when none.
=================  ============================================================

Escaping: every text value (all but the numbers and the times) is escaped
before it is put in the line, so no client can forge a log entry, send a
terminal escape, or end a quoted field early.  Control characters (U+0000 to
U+001F and U+007F to U+009F) become ``\\xNN`` (two lowercase hex digits), a
backslash becomes ``\\\\`` and a double quote becomes ``\\"``.  The escaping is
unambiguous: a reader of the log can undo it.  :func:`escape_log` is the same
rule without the quote (the rule of the server's other log messages).

The text reaching this module comes from bytes decoded as Latin-1, so the
control characters above are every non-printing character a client can send.

JSON lines
----------

The template :data:`JSON_FORMAT` (``"json"``) makes each line one JSON object
(RFC 8259), exactly as ``json.dumps(obj, ensure_ascii=True, separators=(",",
":"))`` writes it (:func:`json_text` builds the same text without the
encoder object; the tests check it against ``json.dumps``).  Its keys, in this
order, and their JSON types:

=================  ============================================================
Key                Value
=================  ============================================================
``client``         string: REMOTE_ADDR, after proxy rewriting.
``time``           string: end of the response, RFC 3339 UTC with milliseconds,
                   ``2026-11-23T00:42:24.987Z``.
``method``         string: ``GET``.
``path``           string: the target's path, undecoded.
``query``          string: after the ``?``, ``""`` when none.
``protocol``       string: ``HTTP/1.1``.
``status``         number: the status code (``0``: the response never started).
``bytes``          number: body bytes actually sent.
``bytes_in``       number: request body bytes received.
``duration_us``    number: microseconds, an integer.
``user_agent``     string, or null when the request had no User-Agent.
``referer``        string, or null when the request had no Referer.
``request_id``     string, or null when request ids are off.
``pid``            number: the serving process.
=================  ============================================================

``extra_fields`` (``--access-log-fields``) adds keys after these: any field
of the text table (``remote_port``, ``request``, ``iso_time``, ``duration``,
``duration_ms`` ...; ``status``, ``bytes``, ``bytes_in``, ``duration_us``,
``duration``, ``duration_ms`` and ``pid`` as numbers, ``remote_port`` a
number or null, the rest strings) and headers as ``i:Name``/``o:Name``
(the key is the field as written, ``header:`` spelled ``i:``; a string, or
null when absent).  ``-name`` leaves a default key out.

Escaping in JSON is JSON's: ``"`` and ``\\`` get a backslash, control
characters and every character above U+007E are ``\\uXXXX`` escapes (so a
line is pure ASCII and no client byte can end a string, add a key or start a
line).  Text from the wire is bytes decoded as Latin-1, so a byte 0x80-0xFF
is the escape ``\\u0080``-``\\u00ff``: ``json.loads(line)["path"].encode("latin-1")``
gives back the bytes the client sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from operator import attrgetter
from typing import TypeAlias

from .http.grammar import TCHARS

DEFAULT_FORMAT = '{client} - - [{time}] "{request}" {status} {bytes} {duration_ms}ms'
JSON_FORMAT = "json"

_CONTROL = [*range(0x20), *range(0x7F, 0xA0)]
_LOG_ESCAPES = str.maketrans({c: f"\\x{c:02x}" for c in _CONTROL} | {ord("\\"): "\\\\"})
_VALUE_ESCAPES = str.maketrans(
    {c: f"\\x{c:02x}" for c in _CONTROL} | {ord("\\"): "\\\\", ord('"'): '\\"'}
)


def escape_log(text: str) -> str:
    """``text`` with control characters and backslashes escaped for a log line."""
    # Fast path: every character the table rewrites is either non-printable or "\\".
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(_LOG_ESCAPES)


def escape_value(text: str) -> str:
    """:func:`escape_log`, and ``"`` as ``\\"``: a value safe inside a quoted log field."""
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return text.translate(_VALUE_ESCAPES)


@dataclass(slots=True, kw_only=True)
class AccessRecord:
    """What the access log knows about one finished request (all text raw, unescaped).

    One is made per request, so it is not frozen: a frozen dataclass sets each
    field through ``object.__setattr__``, which made building it cost three
    times as much.  Observers receive it to read, not to change.
    """

    client: str  # REMOTE_ADDR (after proxy rewriting)
    remote_port: str
    request_line: str  # as received
    method: str
    path: str  # the target's path part, before "?"
    query: str  # after "?", "" when none
    protocol: str  # "HTTP/1.1"
    status: int
    bytes_sent: int  # body bytes actually sent
    duration: float  # seconds
    request_headers: Sequence[tuple[str, str]]  # as received, name case as sent
    response_headers: Sequence[tuple[str, str]]
    timestamp: float  # time.time() at the end of the response
    bytes_received: int = 0  # request body bytes received (read by the app or drained)
    request_id: str = ""  # "" when request ids are off


# -- times: formatted once per second, whatever the number of lines ------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _SecondCache:
    """The CLF, ISO 8601 and RFC 3339 (without the fraction) strings of the last second.

    One tuple in one attribute, so threads racing across a second boundary can
    make the cache miss again but never pair a second with another's strings.
    Month names come from a table, not ``%b``: a locale set by the app must not
    change the log.
    """

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[int, str, str, str] = (-1, "", "", "")

    def get(self, timestamp: float) -> tuple[int, str, str, str]:
        second = int(timestamp)
        entry = self.entry
        if entry[0] != second:
            t = time.gmtime(second)
            clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            clf = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:{clock} +0000"
            stamp = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{clock}"
            self.entry = entry = (second, clf, stamp + "Z", stamp)
        return entry


_seconds = _SecondCache()


def clf_time(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as a CLF date: ``23/Nov/2026:00:42:24 +0000``."""
    return _seconds.get(timestamp)[1]


def iso_time(timestamp: float) -> str:
    """``timestamp`` as ISO 8601 in UTC, to the second: ``2026-11-23T00:42:24Z``."""
    return _seconds.get(timestamp)[2]


def rfc3339_ms(timestamp: float) -> str:
    """``timestamp`` as RFC 3339 in UTC with milliseconds: ``2026-11-23T00:42:24.987Z``.

    The milliseconds are truncated, not rounded, so the second is the one
    the other time fields show; half a microsecond is added first, more than
    a float's error on today's timestamps (0.987 is stored as 0.98699...).
    """
    entry = _seconds.get(timestamp)
    millis = min(int((timestamp - entry[0]) * 1000 + 0.0005), 999)
    return f"{entry[3]}.{millis:03d}Z"


# -- the process id, kept right across fork() ------------------------------------------------

_pid = str(os.getpid())
_pid_number = os.getpid()


def _refresh_pid() -> None:
    global _pid, _pid_number
    _pid_number = os.getpid()
    _pid = str(_pid_number)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_refresh_pid)


# -- the fields ------------------------------------------------------------------------------

_Getter = Callable[[AccessRecord], str]

_FIELDS: dict[str, _Getter] = {
    "client": lambda r: escape_value(r.client),
    "remote_port": lambda r: escape_value(r.remote_port),
    "time": lambda r: _seconds.get(r.timestamp)[1],
    "iso_time": lambda r: _seconds.get(r.timestamp)[2],
    "request": lambda r: escape_value(r.request_line),
    "method": lambda r: escape_value(r.method),
    "path": lambda r: escape_value(r.path),
    "query": lambda r: escape_value(r.query),
    "protocol": lambda r: escape_value(r.protocol),
    "status": lambda r: str(r.status),
    "bytes": lambda r: str(r.bytes_sent),
    "bytes_in": lambda r: str(r.bytes_received),
    "duration": lambda r: f"{r.duration:.6f}",
    "duration_ms": lambda r: f"{r.duration * 1000:.2f}",
    "duration_us": lambda r: str(round(r.duration * 1_000_000)),
    "pid": lambda r: _pid,
    "request_id": lambda r: escape_value(r.request_id) if r.request_id else "-",
}

FIELD_NAMES: tuple[str, ...] = tuple(_FIELDS)
"""The plain field names (the header fields ``i:``, ``header:`` and ``o:`` come on top)."""

_Headers = Callable[[AccessRecord], Sequence[tuple[str, str]]]
_REQUEST_HEADERS: _Headers = attrgetter("request_headers")
_RESPONSE_HEADERS: _Headers = attrgetter("response_headers")
_HEADER_SOURCES: dict[str, tuple[str, _Headers]] = {
    "i": ("i", _REQUEST_HEADERS),
    "header": ("i", _REQUEST_HEADERS),
    "o": ("o", _RESPONSE_HEADERS),
}


def find_header(headers: Sequence[tuple[str, str]], key: str) -> str | None:
    """The value of the field ``key`` (lower case) in ``headers``, repeated fields joined
    with ``", "``; None when absent."""
    found: str | None = None
    for field_name, value in headers:
        if field_name.lower() == key:
            found = value if found is None else f"{found}, {value}"
    return found


def _header_getter(name: str, headers_of: _Headers) -> _Getter:
    key = name.lower()

    def get(record: AccessRecord) -> str:
        found = find_header(headers_of(record), key)
        return "-" if found is None else escape_value(found)

    return get


def _header_spec(spec: str, where: str, known: Iterable[str]) -> tuple[str, str, _Headers]:
    """(normalised spec, header name, headers of the record) of an ``i:``/``o:`` spec."""
    prefix, colon, name = spec.partition(":")
    source = _HEADER_SOURCES.get(prefix) if colon else None
    if source is None:
        raise ValueError(
            f"unknown access log field {spec!r} in {where}"
            f" (fields: {', '.join(known)}, i:Name, header:Name, o:Name)"
        )
    if not name:
        raise ValueError(f"empty header name in {{{spec}}} in {where}")
    if not TCHARS.issuperset(name):
        raise ValueError(f"header name {name!r} is not a token in {where}")
    kind, headers_of = source
    return f"{kind}:{name}", name, headers_of


def _compile_field(spec: str, template: str) -> tuple[str, _Getter]:
    """The normalised name and the getter of one ``{spec}``."""
    getter = _FIELDS.get(spec)
    if getter is not None:
        return spec, getter
    normalised, name, headers_of = _header_spec(
        spec, f"access log format {template!r}", FIELD_NAMES
    )
    return normalised, _header_getter(name, headers_of)


# -- JSON ------------------------------------------------------------------------------------

JSONValue: TypeAlias = "str | int | float | None"
_JSONGetter = Callable[[AccessRecord], JSONValue]


def _json_header(name: str, headers_of: _Headers) -> _JSONGetter:
    key = name.lower()
    return lambda r: find_header(headers_of(r), key)


def _port_number(record: AccessRecord) -> int | None:
    port = record.remote_port
    return int(port) if port.isdigit() and port.isascii() else None


_JSON_FIELDS: dict[str, _JSONGetter] = {
    "client": attrgetter("client"),
    "time": lambda r: rfc3339_ms(r.timestamp),
    "method": attrgetter("method"),
    "path": attrgetter("path"),
    "query": attrgetter("query"),
    "protocol": attrgetter("protocol"),
    "status": attrgetter("status"),
    "bytes": attrgetter("bytes_sent"),
    "bytes_in": attrgetter("bytes_received"),
    "duration_us": lambda r: round(r.duration * 1_000_000),
    "user_agent": _json_header("User-Agent", _REQUEST_HEADERS),
    "referer": _json_header("Referer", _REQUEST_HEADERS),
    "request_id": lambda r: r.request_id or None,
    "pid": lambda r: _pid_number,
}

JSON_FIELD_NAMES: tuple[str, ...] = tuple(_JSON_FIELDS)
"""The keys of a JSON line, in order, when no ``extra_fields`` change them."""

# The text fields a JSON line may add, as JSON values (the rest have a JSON key above).
_JSON_EXTRAS: dict[str, _JSONGetter] = {
    "remote_port": _port_number,
    "iso_time": lambda r: _seconds.get(r.timestamp)[2],
    "request": attrgetter("request_line"),
    "duration": lambda r: round(r.duration, 6),
    "duration_ms": lambda r: round(r.duration * 1000, 2),
}


def _compile_json(extra_fields: Iterable[str]) -> tuple[tuple[str, _JSONGetter], ...]:
    """(key, getter) of each key of the JSON object, after ``extra_fields``."""
    chosen = dict(_JSON_FIELDS)
    where = "the access log fields"
    known = (*JSON_FIELD_NAMES, *_JSON_EXTRAS)
    for spec in extra_fields:
        if spec.startswith("-"):
            name = spec[1:]
            if name not in _JSON_FIELDS:
                raise ValueError(
                    f"cannot leave out {spec!r} in {where}: not one of the default keys"
                    f" ({', '.join(JSON_FIELD_NAMES)})"
                )
            chosen.pop(name, None)
            continue
        getter = _JSON_FIELDS.get(spec) or _JSON_EXTRAS.get(spec)
        if getter is not None:
            chosen.setdefault(spec, getter)
            continue
        normalised, name, headers_of = _header_spec(spec, where, known)
        chosen.setdefault(normalised, _json_header(name, headers_of))
    return tuple(chosen.items())


def json_text(obj: dict[str, JSONValue]) -> str:
    """``json.dumps(obj, ensure_ascii=True, separators=(",", ":"))`` for a flat object of
    strings, integers, finite floats and None, made without an encoder object.

    The same text by construction: the standard library's encoder writes a
    string key or value with ``json.encoder.encode_basestring_ascii`` when
    ``ensure_ascii`` is true, an int with ``int.__repr__``, a float with
    ``float.__repr__`` and None as ``null``, and joins the items with the
    separators in the dict's order.  (The tests compare the two.)
    """
    encode = encode_basestring_ascii
    items = []
    for key, value in obj.items():
        if isinstance(value, str):
            text = encode(value)
        elif value is None:
            text = "null"
        elif isinstance(value, int):  # a bool is no value of ours
            text = int.__repr__(value)
        else:
            text = float.__repr__(value)
        items.append(f"{encode(key)}:{text}")
    return "{" + ",".join(items) + "}"


def default_json_line(record: AccessRecord) -> str:
    """:func:`json_text` of the default keys' object (:data:`JSON_FIELD_NAMES`), written out:
    the same text without a dict or a call per key (the line ``--access-log-format json``
    writes per request).

    Literal where the encoder's output is known: the time has only
    ``0-9-:.TZ``, the numbers are ints.
    """
    encode = encode_basestring_ascii
    user_agent = referer = None
    for name, value in record.request_headers:
        size = len(name)
        if size == 10 and name.lower() == "user-agent":
            user_agent = value if user_agent is None else f"{user_agent}, {value}"
        elif size == 7 and name.lower() == "referer":
            referer = value if referer is None else f"{referer}, {value}"
    request_id = record.request_id
    return (
        f'{{"client":{encode(record.client)},"time":"{rfc3339_ms(record.timestamp)}",'
        f'"method":{encode(record.method)},"path":{encode(record.path)},'
        f'"query":{encode(record.query)},"protocol":{encode(record.protocol)},'
        f'"status":{int.__repr__(record.status)},"bytes":{int.__repr__(record.bytes_sent)},'
        f'"bytes_in":{int.__repr__(record.bytes_received)},'
        f'"duration_us":{int.__repr__(round(record.duration * 1_000_000))},'
        f'"user_agent":{"null" if user_agent is None else encode(user_agent)},'
        f'"referer":{"null" if referer is None else encode(referer)},'
        f'"request_id":{encode(request_id) if request_id else "null"},"pid":{_pid}}}'
    )


def _parse(template: str) -> tuple[list[str], list[tuple[str, _Getter]]]:
    """Literals and fields, alternating: ``len(literals) == len(fields) + 1``."""
    literals: list[str] = []
    fields: list[tuple[str, _Getter]] = []
    text: list[str] = []
    i, n = 0, len(template)
    while i < n:
        char = template[i]
        if char == "{":
            if template.startswith("{", i + 1):
                text.append("{")
                i += 2
                continue
            end = template.find("}", i + 1)
            opening = template.find("{", i + 1)
            if end < 0 or 0 <= opening < end:
                raise ValueError(f"unclosed '{{' at position {i} in access log format {template!r}")
            spec = template[i + 1 : end]
            if not spec:
                raise ValueError(
                    f"empty field '{{}}' at position {i} in access log format {template!r}"
                )
            literals.append("".join(text))
            text = []
            fields.append(_compile_field(spec, template))
            i = end + 1
        elif char == "}":
            if not template.startswith("}", i + 1):
                raise ValueError(
                    f"single '}}' at position {i} in access log format {template!r}"
                    " (write '}}' for a literal brace)"
                )
            text.append("}")
            i += 2
        else:
            # Copy the run of plain text up to the next brace in one slice.
            stops = [p for p in (template.find("{", i), template.find("}", i)) if p >= 0]
            stop = min(stops) if stops else n
            text.append(template[i:stop])
            i = stop
    literals.append("".join(text))
    return literals, fields


def default_line(
    client: str, timestamp: float, request_line: str, status: int, bytes_sent: int, duration: float
) -> str:
    """:data:`DEFAULT_FORMAT`'s line, written out: the same fields and escaping, without a
    record or a call per field (the line every default server writes per request)."""
    return (
        f"{escape_value(client)} - - [{_seconds.get(timestamp)[1]}]"
        f' "{escape_value(request_line)}" {status} {bytes_sent} {duration * 1000:.2f}ms'
    )


class AccessLogFormat:
    """An access log template compiled once; :meth:`render` makes one line of it.

    ``template`` is text with fields, or :data:`JSON_FORMAT` for JSON lines;
    ``extra_fields`` (``--access-log-fields``) changes the keys of the JSON
    object - the JSON line's and :meth:`json_object`'s, whatever the template.
    Raises ``ValueError`` for an unknown field, an empty or invalid header name,
    an unclosed ``{`` or a single ``}``.
    """

    __slots__ = (
        "_first",
        "_json",
        "_json_default",
        "_pairs",
        "extra_fields",
        "fields",
        "is_default",
        "is_json",
        "template",
    )

    def __init__(self, template: str, extra_fields: Sequence[str] = ()) -> None:
        self.template = template
        self.extra_fields = tuple(extra_fields)
        self._json = _compile_json(self.extra_fields)
        self._json_default = tuple(key for key, _ in self._json) == JSON_FIELD_NAMES
        #: The template is :data:`JSON_FORMAT`: :meth:`render` writes JSON.
        self.is_json = template == JSON_FORMAT
        #: The template is :data:`DEFAULT_FORMAT` (rendered by :func:`default_line`).
        self.is_default = template == DEFAULT_FORMAT
        if self.is_json:
            literals: list[str] = [""]
            fields: list[tuple[str, _Getter]] = []
            #: The JSON keys, for a JSON template.
            self.fields: tuple[str, ...] = tuple(key for key, _ in self._json)
        else:
            literals, fields = _parse(template)
            #: The fields the template uses, in order of first use, each once;
            #: header fields as ``i:Name`` or ``o:Name`` (``header:`` is spelled ``i:``).
            self.fields = tuple(dict.fromkeys(name for name, _ in fields))
        self._first = literals[0]
        self._pairs: tuple[tuple[_Getter, str], ...] = tuple(
            (getter, literal) for (_, getter), literal in zip(fields, literals[1:], strict=True)
        )

    def render(self, record: AccessRecord) -> str:
        """The log line for ``record`` (no trailing newline)."""
        if self.is_default:
            return default_line(
                record.client,
                record.timestamp,
                record.request_line,
                record.status,
                record.bytes_sent,
                record.duration,
            )
        if self.is_json:
            if self._json_default:
                return default_json_line(record)
            return json_text(self.json_object(record))
        out = [self._first]
        append = out.append
        for getter, literal in self._pairs:
            append(getter(record))
            append(literal)
        return "".join(out)

    def json_object(self, record: AccessRecord) -> dict[str, JSONValue]:
        """The JSON line's object for ``record``, as a dict (raw values, nothing escaped)."""
        return {key: getter(record) for key, getter in self._json}

    def __repr__(self) -> str:
        if self.extra_fields:
            return f"AccessLogFormat({self.template!r}, {self.extra_fields!r})"
        return f"AccessLogFormat({self.template!r})"
