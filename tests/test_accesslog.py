"""The access log format (``wsgibridge.accesslog``): fields, escaping, templates, sinks.

Pure tests: records are built by hand, lines rendered directly; the sinks are
exercised through a real ``logging.Logger`` (``propagate=False``) writing to the
captured standard streams or to a file under ``tmp_path``.
"""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import re
import threading
import time
import unicodedata
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wsgibridge.accesslog import (
    DEFAULT_FORMAT,
    FIELD_NAMES,
    JSON_FIELD_NAMES,
    JSON_FORMAT,
    AccessLogFormat,
    AccessRecord,
    clf_time,
    default_json_line,
    escape_log,
    escape_value,
    iso_time,
    json_text,
    rfc3339_ms,
)

# 2026-11-23 00:42:24 UTC, plus a fraction that must not show.
STAMP = calendar.timegm((2026, 11, 23, 0, 42, 24)) + 0.987


def record(**changes: Any) -> AccessRecord:
    """A plain GET, with any field changed."""
    base = AccessRecord(
        client="127.0.0.1",
        remote_port="51234",
        request_line="GET /x?a=1&b=2 HTTP/1.1",
        method="GET",
        path="/x",
        query="a=1&b=2",
        protocol="HTTP/1.1",
        status=200,
        bytes_sent=13,
        duration=0.000561,
        request_headers=[("Host", "example.com"), ("User-Agent", "curl/8.5.0")],
        response_headers=[("Content-Type", "text/plain"), ("Content-Length", "13")],
        timestamp=STAMP,
    )
    return dataclasses.replace(base, **changes)


def render(template: str, **changes: Any) -> str:
    return AccessLogFormat(template).render(record(**changes))


def old_line(rec: AccessRecord) -> str:
    """The line handler.log_access wrote before the format option, computed its way."""
    clf = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(int(rec.timestamp)))
    return '%s - - [%s] "%s" %d %d %.2fms' % (  # noqa: UP031  # the old code, verbatim
        rec.client,
        clf,
        reference_escape_log(rec.request_line),
        rec.status,
        rec.bytes_sent,
        rec.duration * 1000,
    )


def reference_escape_log(text: str) -> str:
    """The escaping rule, spelled out character by character."""
    out = []
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif char == "\\":
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)


_ESCAPE = re.compile(r'\\(?:x([0-9a-f]{2})|(\\)|("))')


def unescape(text: str) -> str:
    """Undo escape_value (what a log reader would do)."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 16)) if m[1] else m[2] or m[3], text)


def has_control(text: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in text)


# -- DEFAULT_FORMAT: today's line, byte for byte -----------------------------------------


def test_default_format_is_todays_line() -> None:
    assert DEFAULT_FORMAT == '{client} - - [{time}] "{request}" {status} {bytes} {duration_ms}ms'
    line = AccessLogFormat(DEFAULT_FORMAT).render(
        record(request_line="GET /x HTTP/1.1", duration=0.00056)
    )
    assert line == '127.0.0.1 - - [23/Nov/2026:00:42:24 +0000] "GET /x HTTP/1.1" 200 13 0.56ms'


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"status": 404, "bytes_sent": 0, "duration": 12.3456},
        {"client": "::1", "request_line": "HEAD / HTTP/1.0", "duration": 0.0},
        {"request_line": "GET /\x1b[31m\\ HTTP/1.1", "status": 400},  # escaped the same way
        {"timestamp": calendar.timegm((2027, 2, 28, 23, 59, 59)), "duration": 0.004999},
        {"timestamp": 0.0, "duration": 1e-9},
    ],
)
def test_default_format_matches_the_old_code(changes: dict[str, Any]) -> None:
    rec = record(**changes)
    assert AccessLogFormat(DEFAULT_FORMAT).render(rec) == old_line(rec)


def test_default_format_differs_only_by_escaping_quotes() -> None:
    # The one deliberate change: a quote cannot close the quoted request field.
    rec = record(request_line='GET /"a HTTP/1.1')
    assert AccessLogFormat(DEFAULT_FORMAT).render(rec) == old_line(rec).replace('/"a', '/\\"a')


# -- every field ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{client}", "127.0.0.1"),
        ("{remote_port}", "51234"),
        ("{time}", "23/Nov/2026:00:42:24 +0000"),
        ("{iso_time}", "2026-11-23T00:42:24Z"),
        ("{request}", "GET /x?a=1&b=2 HTTP/1.1"),
        ("{method}", "GET"),
        ("{path}", "/x"),
        ("{query}", "a=1&b=2"),
        ("{protocol}", "HTTP/1.1"),
        ("{status}", "200"),
        ("{bytes}", "13"),
        ("{bytes_in}", "0"),
        ("{duration}", "0.000561"),
        ("{duration_ms}", "0.56"),
        ("{duration_us}", "561"),
        ("{pid}", str(os.getpid())),
        ("{request_id}", "-"),
        ("{i:User-Agent}", "curl/8.5.0"),
        ("{header:User-Agent}", "curl/8.5.0"),
        ("{o:Content-Type}", "text/plain"),
    ],
)
def test_field(template: str, expected: str) -> None:
    assert render(template) == expected


def test_every_plain_field_is_tested() -> None:
    assert set(FIELD_NAMES) == {
        "client",
        "remote_port",
        "time",
        "iso_time",
        "request",
        "method",
        "path",
        "query",
        "protocol",
        "status",
        "bytes",
        "bytes_in",
        "duration",
        "duration_ms",
        "duration_us",
        "pid",
        "request_id",
    }
    assert AccessLogFormat(" ".join(f"{{{name}}}" for name in FIELD_NAMES)).fields == FIELD_NAMES


def test_all_fields_in_one_line() -> None:
    template = " ".join(f"{{{name}}}" for name in FIELD_NAMES) + " {i:Host} {o:Content-Length}"
    assert render(template) == (
        "127.0.0.1 51234 23/Nov/2026:00:42:24 +0000 2026-11-23T00:42:24Z"
        " GET /x?a=1&b=2 HTTP/1.1 GET /x a=1&b=2 HTTP/1.1 200 13 0 0.000561 0.56 561"
        f" {os.getpid()} - example.com 13"
    )


def test_empty_values_render_empty() -> None:
    assert render("[{query}] [{remote_port}]", query="", remote_port="") == "[] []"


def test_bytes_is_zero_when_no_body_was_sent() -> None:
    assert render("{bytes}", bytes_sent=0) == "0"


@pytest.mark.parametrize(
    ("duration", "seconds", "ms", "us"),
    [
        (0.0, "0.000000", "0.00", "0"),
        (1.5, "1.500000", "1500.00", "1500000"),
        (0.0000004, "0.000000", "0.00", "0"),
        (0.0000006, "0.000001", "0.00", "1"),
        (0.004999, "0.004999", "5.00", "4999"),
        (123.456789, "123.456789", "123456.79", "123456789"),
    ],
)
def test_durations(duration: float, seconds: str, ms: str, us: str) -> None:
    assert render("{duration} {duration_ms} {duration_us}", duration=duration) == (
        f"{seconds} {ms} {us}"
    )


@pytest.mark.parametrize(
    ("when", "clf", "iso"),
    [
        ((1970, 1, 1, 0, 0, 0), "01/Jan/1970:00:00:00 +0000", "1970-01-01T00:00:00Z"),
        ((2024, 2, 29, 12, 5, 9), "29/Feb/2024:12:05:09 +0000", "2024-02-29T12:05:09Z"),
        ((2026, 12, 31, 23, 59, 59), "31/Dec/2026:23:59:59 +0000", "2026-12-31T23:59:59Z"),
    ],
)
def test_times(when: tuple[int, ...], clf: str, iso: str) -> None:
    stamp = calendar.timegm(when) + 0.5
    assert clf_time(stamp) == clf
    assert iso_time(stamp) == iso
    assert render("{time}|{iso_time}", timestamp=stamp) == f"{clf}|{iso}"


def test_clf_months_match_strftime_in_the_c_locale() -> None:
    for month in range(1, 13):
        stamp = calendar.timegm((2025, month, 1, 0, 0, 0))
        assert clf_time(stamp) == time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(stamp))


def test_times_are_formatted_once_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_gmtime = time.gmtime

    def counting_gmtime(seconds: float | None = None) -> time.struct_time:
        calls.append(seconds)
        return real_gmtime(seconds)

    monkeypatch.setattr(time, "gmtime", counting_gmtime)  # what accesslog calls
    fmt = AccessLogFormat("{time} {iso_time}")
    base = calendar.timegm((2031, 5, 6, 7, 8, 9))
    lines = {fmt.render(record(timestamp=base + i / 1000)) for i in range(1000)}
    assert lines == {"06/May/2031:07:08:09 +0000 2031-05-06T07:08:09Z"}
    assert len(calls) == 1
    fmt.render(record(timestamp=base + 1))
    assert len(calls) == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_pid_follows_fork() -> None:
    if threading.active_count() > 1:
        pytest.skip("fork() with other threads running is unsafe (and warns on 3.12+)")
    fmt = AccessLogFormat("{pid}")
    as_json = AccessLogFormat(JSON_FORMAT)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover  # the child
        try:
            pid_in_json = json.loads(as_json.render(record()))["pid"]
            os.write(write_end, f"{fmt.render(record())} {pid_in_json} {os.getpid()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        rendered, in_json, actual = pipe.read().decode().split()
    os.waitpid(child, 0)
    assert rendered == in_json == actual == str(child)
    assert fmt.render(record()) == str(os.getpid())
    assert json.loads(as_json.render(record()))["pid"] == os.getpid()


# -- header fields ---------------------------------------------------------------------------


def test_absent_header_is_a_dash() -> None:
    assert render("{i:Referer} {o:Location} {header:X-None}") == "- - -"
    assert render("{i:Host}", request_headers=[]) == "-"


def test_header_lookup_is_case_insensitive() -> None:
    headers = [("uSeR-aGeNt", "ua")]
    for name in ("User-Agent", "user-agent", "USER-AGENT"):
        assert render(f"{{i:{name}}}", request_headers=headers) == "ua"
        assert render(f"{{o:{name}}}", response_headers=headers) == "ua"


def test_repeated_headers_are_comma_joined_in_order() -> None:
    headers = [("Accept", "a/b"), ("X-Other", "no"), ("accept", "c/d"), ("ACCEPT", "e/f")]
    assert render("{i:Accept}", request_headers=headers) == "a/b, c/d, e/f"
    cookies = [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert render("{o:set-cookie}", response_headers=cookies) == "a=1, b=2"


def test_present_empty_header_is_empty_not_a_dash() -> None:
    assert render("[{i:X-Empty}]", request_headers=[("X-Empty", "")]) == "[]"


def test_request_and_response_headers_are_separate() -> None:
    rec = {"request_headers": [("X-Id", "req")], "response_headers": [("X-Id", "resp")]}
    assert render("{i:X-Id} {header:X-Id} {o:X-Id}", **rec) == "req req resp"


# -- escaping of hostile input ------------------------------------------------------------

HOSTILE = [
    ("\r\n", "\\x0d\\x0a"),
    ("\x1b[2J", "\\x1b[2J"),
    ("\x00", "\\x00"),
    ("\\", "\\\\"),
    ('"', '\\"'),
    ("\x7f", "\\x7f"),
    ("\x80\x85\x9b\x9f", "\\x80\\x85\\x9b\\x9f"),
    ("\t\x0b\x0c", "\\x09\\x0b\\x0c"),
    ("caf\xe9 \xa0\xff", "caf\xe9 \xa0\xff"),  # printable Latin-1 (and NBSP) kept as is
    ('\\x41 \\"', '\\\\x41 \\\\\\"'),  # escape-like text cannot pass for an escape
]


@pytest.mark.parametrize(("raw", "escaped"), HOSTILE)
@pytest.mark.parametrize(
    ("template", "field"),
    [
        ("{request}", "request_line"),
        ("{method}", "method"),
        ("{path}", "path"),
        ("{query}", "query"),
        ("{protocol}", "protocol"),
        ("{client}", "client"),
        ("{remote_port}", "remote_port"),
    ],
)
def test_text_fields_are_escaped(template: str, field: str, raw: str, escaped: str) -> None:
    assert render(f"<{template}>", **{field: f"a{raw}b"}) == f"<a{escaped}b>"


@pytest.mark.parametrize(("raw", "escaped"), HOSTILE)
def test_header_values_are_escaped(raw: str, escaped: str) -> None:
    headers = [("X-Evil", f"a{raw}b")]
    assert render("{i:X-Evil}", request_headers=headers) == f"a{escaped}b"
    assert render("{o:X-Evil}", response_headers=headers) == f"a{escaped}b"


def test_a_forged_log_line_stays_on_one_line() -> None:
    evil = 'GET /" 200 0 0.01ms\n10.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET /admin HTTP/1.1'
    line = render(DEFAULT_FORMAT, request_line=evil)
    assert "\n" not in line
    assert line.count('"') - line.count('\\"') == 2  # only the template's two quotes
    assert line == (
        '127.0.0.1 - - [23/Nov/2026:00:42:24 +0000] "GET /\\" 200 0 0.01ms\\x0a10.0.0.1 - -'
        ' [01/Jan/2026:00:00:00 +0000] \\"GET /admin HTTP/1.1" 200 13 0.56ms'
    )


def test_escape_log_keeps_quotes_and_matches_the_rule() -> None:
    every_latin1 = "".join(map(chr, range(256)))
    assert escape_log(every_latin1) == reference_escape_log(every_latin1)
    assert escape_log('"') == '"'
    assert escape_value(every_latin1) == reference_escape_log(every_latin1).replace('"', '\\"')


def test_escape_log_matches_the_handlers() -> None:
    import wsgibridge.serving.handler as handler

    theirs = getattr(handler, "escape_log", None)
    if theirs is None:
        pytest.skip("wsgibridge.serving.handler has no escape_log")
    every_latin1 = "".join(map(chr, range(256)))
    for text in (every_latin1, "", "plain", "a\\b", "\u2028\ud7ff\U0001f600"):
        assert escape_log(text) == theirs(text)


@given(st.text())
@example("\\x00")
@example('\\"')
def test_escaping_is_reversible_and_total(text: str) -> None:
    assert escape_log(text) == reference_escape_log(text)
    escaped = escape_value(text)
    assert unescape(escaped) == text
    assert not has_control(escaped)
    # Every quote left in the output is escaped: drop the \\ pairs, then look.
    assert '"' not in escaped.replace("\\\\", "").replace('\\"', "")


# -- templates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("", ""),
        ("no fields at all", "no fields at all"),
        ("{{", "{"),
        ("}}", "}"),
        ("{{status}}", "{status}"),
        ("{{{status}}}", "{200}"),
        ('{"status": {status}, "q": "{query}"}}', None),  # a single { then a field: malformed
        ('{{"status": {status}, "bytes": {bytes}}}', '{"status": 200, "bytes": 13}'),
        ("{status}{status}", "200200"),
        ("a{{b}}c{method}d{{", "a{b}cGETd{"),
    ],
)
def test_literal_text_and_braces(template: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            AccessLogFormat(template)
    else:
        assert render(template) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{", r"unclosed '\{' at position 0"),
        ("ok {status", r"unclosed '\{' at position 3"),
        ("{a{status}", r"unclosed '\{' at position 0"),
        ("}", r"single '\}' at position 0"),
        ("{status}}", r"single '\}' at position 8"),
        ("x } y", r"single '\}' at position 2"),
        ("{}", r"empty field '\{\}' at position 0"),
        ("{nope}", "unknown access log field 'nope'"),
        ("{Status}", "unknown access log field 'Status'"),
        ("{ status }", "unknown access log field ' status '"),
        ("{status:>5}", "unknown access log field 'status:>5'"),
        ("{e:PATH}", "unknown access log field 'e:PATH'"),
        ("{User-Agent}", "unknown access log field 'User-Agent'"),
        ("{i:}", r"empty header name in \{i:\}"),
        ("{o:}", r"empty header name in \{o:\}"),
        ("{header:}", r"empty header name in \{header:\}"),
        ("{i:User Agent}", "header name 'User Agent' is not a token"),
        ("{o:X:Y}", "header name 'X:Y' is not a token"),
    ],
)
def test_malformed_templates_raise(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AccessLogFormat(template)


def test_fields_in_order_of_first_use_normalised() -> None:
    fmt = AccessLogFormat("{status} {header:X-A} {i:X-A} {o:Server} {status} {client} {{pid}}")
    assert fmt.fields == ("status", "i:X-A", "o:Server", "client")
    assert AccessLogFormat("static").fields == ()
    assert repr(fmt).startswith("AccessLogFormat('{status}")


def test_record_is_slotted_and_keyword_only() -> None:
    rec = record()
    assert not hasattr(rec, "__dict__")
    with pytest.raises(AttributeError):
        rec.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        positional: Any = AccessRecord
        positional(*dataclasses.astuple(rec))


# -- the property: nothing raises, nothing raw gets through ---------------------------------

_text = st.text()  # every code point but surrogates, control characters included
_latin1 = st.text(st.characters(max_codepoint=0xFF))
_headers = st.lists(st.tuples(st.sampled_from(["X-A", "x-a", "X-B", "Host"]) | _latin1, _text))
_EVERYTHING = AccessLogFormat(
    '{client}:{remote_port} [{time}] [{iso_time}] "{request}" {method} "{path}" "{query}"'
    " {protocol} {status} {bytes} {duration} {duration_ms} {duration_us} {pid}"
    ' "{i:X-A}" "{header:X-B}" "{i:Host}" "{o:X-A}" "{o:X-B}" {{}}'
)


@settings(max_examples=300, deadline=None)
@given(
    client=_text,
    remote_port=_text,
    request_line=_text | _latin1,
    method=_text,
    path=_text | _latin1,
    query=_text,
    protocol=_text,
    request_headers=_headers,
    response_headers=_headers,
    status=st.integers(0, 999),
    bytes_sent=st.integers(0, 2**63),
    duration=st.floats(0, 1e6),
    timestamp=st.floats(0, 2**32),
)
def test_render_never_raises_and_never_lets_a_control_character_through(
    **fields: Any,
) -> None:
    line = _EVERYTHING.render(record(**fields))
    assert not has_control(line)
    # The template's 16 quotes are the only unescaped ones.
    assert line.replace("\\\\", "").replace('\\"', "").count('"') == 16


# The default template spelled with one more character: the compiled-template path.
_DEFAULT_COMPILED = AccessLogFormat(DEFAULT_FORMAT + "|")


@settings(max_examples=300, deadline=None)
@given(
    client=_text,
    request_line=_text | _latin1,
    status=st.integers(0, 999),
    bytes_sent=st.integers(0, 2**63),
    duration=st.floats(0, 1e6),
    timestamp=st.floats(0, 2**32),
)
def test_the_default_line_written_out_is_the_compiled_templates_line(**fields: Any) -> None:
    """The default line has its own renderer (it is written per request by every default
    server); it must say exactly what the template's fields say."""
    rec = record(**fields)
    assert AccessLogFormat(DEFAULT_FORMAT).render(rec) + "|" == _DEFAULT_COMPILED.render(rec)


# -- JSON lines --------------------------------------------------------------------------


def dumps(obj: object) -> str:
    """What the JSON line must be: the standard library's encoder, as documented."""
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"))


def test_the_json_line_of_a_plain_get() -> None:
    line = AccessLogFormat(JSON_FORMAT).render(record(request_id="4bf92f3577b34da6"))
    assert line == (
        '{"client":"127.0.0.1","time":"2026-11-23T00:42:24.987Z","method":"GET",'
        '"path":"/x","query":"a=1&b=2","protocol":"HTTP/1.1","status":200,"bytes":13,'
        '"bytes_in":0,"duration_us":561,"user_agent":"curl/8.5.0","referer":null,'
        f'"request_id":"4bf92f3577b34da6","pid":{os.getpid()}}}'
    )
    assert tuple(json.loads(line)) == JSON_FIELD_NAMES


def test_json_keys_and_types_are_the_documented_ones() -> None:
    fmt = AccessLogFormat(JSON_FORMAT)
    assert (
        fmt.fields
        == JSON_FIELD_NAMES
        == (
            "client",
            "time",
            "method",
            "path",
            "query",
            "protocol",
            "status",
            "bytes",
            "bytes_in",
            "duration_us",
            "user_agent",
            "referer",
            "request_id",
            "pid",
        )
    )
    assert fmt.is_json and not fmt.is_default
    obj = json.loads(fmt.render(record(request_headers=[], status=0, bytes_sent=0)))
    assert obj["user_agent"] is None and obj["referer"] is None and obj["request_id"] is None
    assert obj["status"] == 0 and obj["bytes"] == 0
    for key in ("status", "bytes", "bytes_in", "duration_us", "pid"):
        assert type(obj[key]) is int, key


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (STAMP, "2026-11-23T00:42:24.987Z"),
        (calendar.timegm((2026, 12, 4, 3, 0, 0)) + 0.123, "2026-12-04T03:00:00.123Z"),
        (calendar.timegm((2026, 12, 31, 23, 59, 59)) + 0.9999, "2026-12-31T23:59:59.999Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
    ],
)
def test_json_time_is_rfc3339_utc_with_milliseconds(stamp: float, expected: str) -> None:
    """Milliseconds truncated, never rounded into the next second the other fields show."""
    assert rfc3339_ms(stamp) == expected
    assert rfc3339_ms(stamp).startswith(iso_time(stamp)[:-1])
    assert json.loads(AccessLogFormat(JSON_FORMAT).render(record(timestamp=stamp)))["time"] == (
        expected
    )


def test_wire_bytes_come_back_from_the_json_string() -> None:
    """Latin-1-decoded text is written as \\u00XX escapes: the reader gets the bytes back."""
    raw_agent = b'ua \xc3\x28 \xff\xfe " \\ \t \x7f {"a":1}'
    agent = raw_agent.decode("latin-1")
    line = AccessLogFormat(JSON_FORMAT).render(record(request_headers=[("User-Agent", agent)]))
    assert line.isascii() and "\\u00c3(" in line and "\\u00ff\\u00fe" in line
    assert json.loads(line)["user_agent"].encode("latin-1") == raw_agent


def test_extra_fields_come_after_the_defaults_in_their_order() -> None:
    fmt = AccessLogFormat(
        JSON_FORMAT,
        ["i:Host", "o:Content-Type", "request", "remote_port", "duration", "duration_ms"],
    )
    obj = json.loads(fmt.render(record()))
    assert tuple(obj) == (
        *JSON_FIELD_NAMES,
        "i:Host",
        "o:Content-Type",
        "request",
        "remote_port",
        "duration",
        "duration_ms",
    )
    assert obj["i:Host"] == "example.com" and obj["o:Content-Type"] == "text/plain"
    assert obj["request"] == "GET /x?a=1&b=2 HTTP/1.1"
    assert obj["remote_port"] == 51234 and obj["duration"] == 0.000561
    assert obj["duration_ms"] == 0.56
    assert fmt.fields == tuple(obj)


def test_extra_fields_spelling_absence_repeats_and_leaving_out() -> None:
    headers = [("X-A", "1"), ("x-a", "2")]
    fmt = AccessLogFormat(
        JSON_FORMAT,
        ["header:X-A", "i:X-Missing", "-referer", "-pid", "status", "remote_port", "i:X-A"],
    )
    obj = json.loads(fmt.render(record(request_headers=headers, remote_port="")))
    assert "referer" not in obj and "pid" not in obj
    assert obj["i:X-A"] == "1, 2"  # header: is spelled i:, and each key comes once
    assert obj["i:X-Missing"] is None
    assert obj["remote_port"] is None  # a Unix socket's peer has no port
    assert list(obj).count("status") == 1
    nothing = AccessLogFormat(JSON_FORMAT, [f"-{name}" for name in JSON_FIELD_NAMES])
    assert nothing.render(record()) == "{}"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["nope"], "unknown access log field 'nope' in the access log fields"),
        (["Status"], "unknown access log field 'Status'"),
        (["-request"], "cannot leave out '-request'"),
        (["-nope"], "cannot leave out '-nope'"),
        (["i:"], r"empty header name in \{i:\}"),
        (["o:X Y"], "header name 'X Y' is not a token"),
        (["time:x"], "unknown access log field 'time:x'"),
    ],
)
def test_bad_extra_fields_raise(fields: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AccessLogFormat(JSON_FORMAT, fields)
    with pytest.raises(ValueError, match=message):  # checked whatever the template
        AccessLogFormat(DEFAULT_FORMAT, fields)


def test_json_object_is_the_lines_object_for_any_template() -> None:
    rec = record(request_id="abc")
    for template in (JSON_FORMAT, DEFAULT_FORMAT, "{status}"):
        fmt = AccessLogFormat(template, ["i:Host"])
        assert json.loads(AccessLogFormat(JSON_FORMAT, ["i:Host"]).render(rec)) == (
            fmt.json_object(rec)
        )
    assert repr(AccessLogFormat(JSON_FORMAT, ["i:Host"])) == "AccessLogFormat('json', ('i:Host',))"


def test_request_id_text_field() -> None:
    assert render("{request_id}", request_id="") == "-"
    assert render('"{request_id}"', request_id='a"b\\c') == '"a\\"b\\\\c"'


_json_scalars = (
    st.none() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_text, _text | _latin1 | _json_scalars))
def test_json_text_is_json_dumps(obj: dict[str, Any]) -> None:
    assert json_text(obj) == dumps(obj)


_JSON_EVERYTHING = AccessLogFormat(
    JSON_FORMAT,
    ["remote_port", "request", "iso_time", "duration", "duration_ms", "i:X-A", "o:X-B"],
)


@settings(max_examples=300, deadline=None)
@given(
    client=_text,
    remote_port=_text,
    request_line=_text | _latin1,
    method=_text,
    path=_text | _latin1,
    query=_text | _latin1,
    protocol=_text,
    request_headers=st.lists(
        st.tuples(st.sampled_from(["X-A", "User-Agent", "referer", "REFERER"]) | _latin1, _text)
    ),
    response_headers=_headers,
    status=st.integers(0, 999),
    bytes_sent=st.integers(0, 2**63),
    bytes_received=st.integers(0, 2**63),
    duration=st.floats(0, 1e6),
    timestamp=st.floats(0, 2**32),
    request_id=_text,
)
def test_every_json_line_is_one_line_of_json_dumps(**fields: Any) -> None:
    """Whatever the record holds: one ASCII line, what json.dumps makes of the object,
    and json.loads gives the record's values back."""
    rec = record(**fields)
    for fmt in (AccessLogFormat(JSON_FORMAT), _JSON_EVERYTHING):
        line = fmt.render(rec)
        obj = fmt.json_object(rec)
        assert line == dumps(obj)
        assert line.isascii() and line.isprintable()  # no newline, no control character
        assert json.loads(line) == obj
    assert default_json_line(rec) == json_text(AccessLogFormat(JSON_FORMAT).json_object(rec))
    obj = json.loads(_JSON_EVERYTHING.render(rec))
    assert (obj["client"], obj["method"], obj["path"], obj["query"]) == (
        rec.client,
        rec.method,
        rec.path,
        rec.query,
    )
    assert obj["request"] == rec.request_line and obj["status"] == rec.status
    assert obj["bytes"] == rec.bytes_sent and obj["bytes_in"] == rec.bytes_received
    assert obj["request_id"] == (rec.request_id or None)
