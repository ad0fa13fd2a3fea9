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
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter

from .http.grammar import TCHARS

DEFAULT_FORMAT = '{client} - - [{time}] "{request}" {status} {bytes} {duration_ms}ms'

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


# -- times: formatted once per second, whatever the number of lines ------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _SecondCache:
    """The CLF and ISO 8601 strings of the last second asked for.

    One tuple in one attribute, so threads racing across a second boundary can
    make the cache miss again but never pair a second with another's strings.
    Month names come from a table, not ``%b``: a locale set by the app must not
    change the log.
    """

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[int, str, str] = (-1, "", "")

    def get(self, timestamp: float) -> tuple[int, str, str]:
        second = int(timestamp)
        entry = self.entry
        if entry[0] != second:
            t = time.gmtime(second)
            clock = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
            clf = f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year:04d}:{clock} +0000"
            iso = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{clock}Z"
            self.entry = entry = (second, clf, iso)
        return entry


_seconds = _SecondCache()


def clf_time(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as a CLF date: ``23/Nov/2026:00:42:24 +0000``."""
    return _seconds.get(timestamp)[1]


def iso_time(timestamp: float) -> str:
    """``timestamp`` as ISO 8601 in UTC, to the second: ``2026-11-23T00:42:24Z``."""
    return _seconds.get(timestamp)[2]


# -- the process id, kept right across fork() ------------------------------------------------

_pid = str(os.getpid())


def _refresh_pid() -> None:
    global _pid
    _pid = str(os.getpid())


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
}

FIELD_NAMES: tuple[str, ...] = tuple(_FIELDS)
"""The plain field names (the header fields ``i:``, ``header:`` and ``o:`` come on top)."""

_HEADER_SOURCES = {
    "i": ("i", attrgetter("request_headers")),
    "header": ("i", attrgetter("request_headers")),
    "o": ("o", attrgetter("response_headers")),
}


def _header_getter(
    name: str, headers_of: Callable[[AccessRecord], Sequence[tuple[str, str]]]
) -> _Getter:
    key = name.lower()

    def get(record: AccessRecord) -> str:
        found: str | None = None
        for field_name, value in headers_of(record):
            if field_name.lower() == key:
                found = value if found is None else f"{found}, {value}"
        return "-" if found is None else escape_value(found)

    return get


def _compile_field(spec: str, template: str) -> tuple[str, _Getter]:
    """The normalised name and the getter of one ``{spec}``."""
    getter = _FIELDS.get(spec)
    if getter is not None:
        return spec, getter
    prefix, colon, name = spec.partition(":")
    source = _HEADER_SOURCES.get(prefix) if colon else None
    if source is None:
        raise ValueError(
            f"unknown access log field {spec!r} in access log format {template!r}"
            f" (fields: {', '.join(FIELD_NAMES)}, i:Name, header:Name, o:Name)"
        )
    if not name:
        raise ValueError(f"empty header name in {{{spec}}} in access log format {template!r}")
    if not TCHARS.issuperset(name):
        raise ValueError(f"header name {name!r} is not a token in access log format {template!r}")
    kind, headers_of = source
    return f"{kind}:{name}", _header_getter(name, headers_of)


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

    Raises ``ValueError`` for an unknown field, an empty or invalid header name,
    an unclosed ``{`` or a single ``}``.
    """

    __slots__ = ("_first", "_pairs", "fields", "is_default", "template")

    def __init__(self, template: str) -> None:
        literals, fields = _parse(template)
        self.template = template
        #: The template is :data:`DEFAULT_FORMAT` (rendered by :func:`default_line`).
        self.is_default = template == DEFAULT_FORMAT
        #: The fields the template uses, in order of first use, each once;
        #: header fields as ``i:Name`` or ``o:Name`` (``header:`` is spelled ``i:``).
        self.fields: tuple[str, ...] = tuple(dict.fromkeys(name for name, _ in fields))
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
        out = [self._first]
        append = out.append
        for getter, literal in self._pairs:
            append(getter(record))
            append(literal)
        return "".join(out)

    def __repr__(self) -> str:
        return f"AccessLogFormat({self.template!r})"
