"""Static files as values: which names are refused, and conditional and range answers."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from wsgibridge.errors import MethodNotAllowed, NotFound
from wsgibridge.http.static import (
    Plan,
    byte_range,
    check_method,
    content_type,
    entity_tag,
    file_name,
    plan,
    refusal,
)

SIZE = 1000
MTIME_NS = 1_700_000_000_123_456_789
MTIME = MTIME_NS // 1_000_000_000
ETAG = entity_tag(SIZE, MTIME_NS)
LAST_MODIFIED = formatdate(MTIME, usegmt=True)


def answer(*fields: tuple[str, str], method: str = "GET", size: int = SIZE) -> Plan:
    return plan(
        method=method,
        headers=list(fields),
        name=b"css/site.css",
        size=size,
        mtime_ns=MTIME_NS,
        cache_control="public, max-age=60",
    )


def field(result: Plan, name: str) -> str | None:
    values = [value for key, value in result.headers if key.lower() == name.lower()]
    assert len(values) <= 1, result.headers
    return values[0] if values else None


# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rest", "name"),
    [
        ("css/site.css", b"css/site.css"),
        ("caf%C3%A9.txt", "café.txt".encode()),
        ("a%20b.txt", b"a b.txt"),
        ("a..b.txt", b"a..b.txt"),
        ("%25.txt", b"%.txt"),  # decoded once: %25 is a literal %, never decoded again
        ("%252e%252e/x", b"%2e%2e/x"),
        ("caf\xc3\xa9%20x", "café x".encode()),  # raw bytes (as latin-1) beside an escape
    ],
)
def test_a_plain_name_is_decoded_once(rest: str, name: bytes) -> None:
    assert file_name(rest) == name


@pytest.mark.parametrize(
    "rest",
    [
        "../secret",
        "css/../../secret",
        "%2e%2e/secret",
        "%2E%2E/secret",
        ".%2e/secret",
        "..%2fsecret",
        "..%2Fsecret",
        "%2e%2e%5csecret",
        "a%5c..%5cb",
        "a\\..\\b",
        "a%00.css",
        "a%0a.css",
        "a%7f.css",
        "./site.css",
        "css//site.css",
        "css/",
        "",
        ".env",
        "css/.git/config",
        "%2egit/config",
    ],
)
def test_a_name_that_could_climb_or_hide_is_refused_with_404(rest: str) -> None:
    with pytest.raises(NotFound) as caught:
        file_name(rest)
    assert caught.value.status == 404


def test_only_get_and_head_are_allowed() -> None:
    check_method("GET")
    check_method("HEAD")
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "get"):
        with pytest.raises(MethodNotAllowed) as caught:
            check_method(method)
        refused = refusal(caught.value)
        assert refused.status == 405
        assert field(refused, "Allow") == "GET, HEAD"
        assert refused.body == b"405 Method Not Allowed\n"
        assert field(refused, "Content-Length") == str(len(refused.body))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (b"site.css", "text/css; charset=utf-8"),
        (b"app.js", "charset=utf-8"),
        (b"logo.png", "image/png"),
        (b"font.woff2", "font/woff2"),
        (b"data", "application/octet-stream"),
        (b"site.css.gz", "application/gzip"),
    ],
)
def test_content_type_from_mimetypes(name: bytes, expected: str) -> None:
    assert expected in content_type(name)


# -- the whole file ---------------------------------------------------------------------


def test_a_get_is_the_whole_file_with_its_validators() -> None:
    result = answer()
    assert (result.status, result.offset, result.count, result.body) == (200, 0, SIZE, b"")
    assert field(result, "Content-Length") == str(SIZE)
    assert field(result, "Content-Type") == "text/css; charset=utf-8"
    assert field(result, "ETag") == ETAG
    assert field(result, "Last-Modified") == LAST_MODIFIED
    assert field(result, "Accept-Ranges") == "bytes"
    assert field(result, "Cache-Control") == "public, max-age=60"


def test_the_etag_is_strong_and_changes_with_size_or_time() -> None:
    assert not ETAG.startswith("W/") and ETAG.startswith('"') and ETAG.endswith('"')
    assert entity_tag(SIZE + 1, MTIME_NS) != ETAG
    assert entity_tag(SIZE, MTIME_NS + 1) != ETAG


def test_no_cache_control_when_it_is_empty() -> None:
    result = plan(method="GET", headers=[], name=b"a", size=1, mtime_ns=0, cache_control="")
    assert field(result, "Cache-Control") is None


# -- conditional requests ---------------------------------------------------------------


@pytest.mark.parametrize("value", [ETAG, f"W/{ETAG}", f'"other", {ETAG}', "*", f'"x",W/{ETAG}'])
def test_if_none_match_that_matches_is_304_with_the_validators(value: str) -> None:
    result = answer(("If-None-Match", value))
    assert result.status == 304
    assert (result.count, result.body) == (0, b"")
    assert field(result, "ETag") == ETAG
    assert field(result, "Last-Modified") == LAST_MODIFIED
    assert field(result, "Cache-Control") == "public, max-age=60"
    assert field(result, "Content-Length") is None


def test_if_none_match_that_does_not_match_is_200() -> None:
    assert answer(("If-None-Match", '"other"')).status == 200


def test_if_none_match_in_two_fields_is_one_list() -> None:
    assert answer(("If-None-Match", '"a"'), ("If-None-Match", ETAG)).status == 304


@pytest.mark.parametrize(
    ("date", "status"),
    [
        (LAST_MODIFIED, 304),
        (formatdate(MTIME + 60, usegmt=True), 304),
        (formatdate(MTIME - 1, usegmt=True), 200),
        ("not a date", 200),
        ("", 200),
    ],
)
def test_if_modified_since(date: str, status: int) -> None:
    assert answer(("If-Modified-Since", date)).status == status


def test_if_none_match_wins_over_if_modified_since() -> None:
    """RFC 9110 §13.1.3: If-Modified-Since is ignored when If-None-Match is there."""
    result = answer(("If-None-Match", '"other"'), ("If-Modified-Since", LAST_MODIFIED))
    assert result.status == 200


def test_if_modified_since_given_twice_is_ignored() -> None:
    result = answer(("If-Modified-Since", LAST_MODIFIED), ("If-Modified-Since", LAST_MODIFIED))
    assert result.status == 200


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ((("If-Match", ETAG),), 200),
        ((("If-Match", "*"),), 200),
        ((("If-Match", '"other"'),), 412),
        ((("If-Match", f"W/{ETAG}"),), 412),  # strong comparison: a weak tag never matches
        ((("If-Unmodified-Since", LAST_MODIFIED),), 200),
        ((("If-Unmodified-Since", formatdate(MTIME - 1, usegmt=True)),), 412),
        ((("If-Match", ETAG), ("If-Unmodified-Since", formatdate(0, usegmt=True))), 200),
    ],
)
def test_if_match_and_if_unmodified_since(fields: tuple[tuple[str, str], ...], status: int) -> None:
    result = answer(*fields)
    assert result.status == status
    if status == 412:
        assert result.count == 0 and result.body.startswith(b"412 Precondition Failed")


# -- ranges -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=-5000", 0, SIZE - 1),
        ("bytes=990-5000", 990, SIZE - 1),
        ("bytes=999-999", 999, 999),
        ("BYTES = 5-6", 5, 6),
    ],
)
def test_one_range_is_206_with_its_content_range(value: str, first: int, last: int) -> None:
    result = answer(("Range", value))
    assert result.status == 206
    assert (result.offset, result.count) == (first, last - first + 1)
    assert field(result, "Content-Range") == f"bytes {first}-{last}/{SIZE}"
    assert field(result, "Content-Length") == str(last - first + 1)


@pytest.mark.parametrize("value", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_an_unsatisfiable_range_is_416_with_the_length(value: str) -> None:
    result = answer(("Range", value))
    assert result.status == 416
    assert field(result, "Content-Range") == f"bytes */{SIZE}"
    assert result.count == 0 and result.body.startswith(b"416 ")


@pytest.mark.parametrize(
    "value",
    [
        "bytes=0-1,5-6",  # several ranges: sent whole (a server MAY ignore Range)
        "bytes=5-1",  # last before first: invalid, ignored
        "bytes=a-b",
        "bytes=",
        "bytes=-",
        "bytes 0-1",
        "items=0-1",
        "bytes=٣-٤",  # Unicode digits are not DIGIT
        "bytes=1-2-3",
    ],
)
def test_a_range_that_is_invalid_or_multiple_is_ignored(value: str) -> None:
    result = answer(("Range", value))
    assert (result.status, result.offset, result.count) == (200, 0, SIZE)
    assert field(result, "Content-Range") is None


def test_a_range_of_an_empty_file() -> None:
    assert byte_range("bytes=0-", 0) is False
    assert byte_range("bytes=-1", 0) is False
    assert answer(("Range", "bytes=0-"), size=0).status == 416


@pytest.mark.parametrize(
    ("condition", "status"),
    [
        (ETAG, 206),
        (LAST_MODIFIED, 206),
        ('"other"', 200),
        (f"W/{ETAG}", 200),  # If-Range compares strongly
        (formatdate(MTIME + 1, usegmt=True), 200),
    ],
)
def test_if_range(condition: str, status: int) -> None:
    result = answer(("Range", "bytes=0-9"), ("If-Range", condition))
    assert result.status == status
    assert result.count == (10 if status == 206 else SIZE)


def test_a_304_wins_over_a_range() -> None:
    assert answer(("Range", "bytes=0-9"), ("If-None-Match", ETAG)).status == 304
