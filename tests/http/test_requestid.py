"""Request ids as values (``wsgibridge.http.requestid``): generation, what is kept, the echo."""

from __future__ import annotations

import re

import pytest

from wsgibridge.http.requestid import (
    MAX_LENGTH,
    check_header_name,
    choose_request_id,
    echo_request_id,
    new_request_id,
)

NEW = re.compile(r"[0-9a-f]{32}")
KEY = "x-request-id"


def test_a_new_id_is_128_bits_of_hex_and_never_repeats() -> None:
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(NEW.fullmatch(request_id) for request_id in ids)


VISIBLE = "".join(chr(code) for code in range(0x21, 0x7F))


@pytest.mark.parametrize(
    "value",
    [
        "abc-123",
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "!" * MAX_LENGTH,
        VISIBLE,  # every VCHAR, quotes and backslash included (escaped where logged)
        "a,b",  # a comma inside one field is a character like another
    ],
)
def test_a_well_formed_id_from_a_trusted_peer_is_kept(value: str) -> None:
    assert choose_request_id([("Host", "h"), ("X-Request-ID", value)], KEY, True) == value
    assert choose_request_id([("x-REQUEST-id", value)], KEY, True) == value  # any case


@pytest.mark.parametrize(
    "value",
    [
        "",
        "!" * (MAX_LENGTH + 1),
        "a b",
        " abc",
        "a\tb",
        "a\x01b",
        "a\x7fb",
        "caf\xe9",  # an obs-text byte (latin-1)
        "\xc3\x28",  # invalid UTF-8 as latin-1
        "id\u2028",
    ],
    ids=repr,
)
def test_a_malformed_id_is_replaced(value: str) -> None:
    request_id = choose_request_id([("X-Request-ID", value)], KEY, True)
    assert NEW.fullmatch(request_id) and request_id != value


def test_an_id_from_an_untrusted_peer_is_replaced() -> None:
    request_id = choose_request_id([("X-Request-ID", "abc-123")], KEY, False)
    assert NEW.fullmatch(request_id)


def test_an_id_sent_twice_is_replaced() -> None:
    headers = [("X-Request-ID", "one"), ("Accept", "*/*"), ("x-request-id", "two")]
    assert NEW.fullmatch(choose_request_id(headers, KEY, True))


def test_no_id_sent_gets_a_new_one() -> None:
    assert NEW.fullmatch(choose_request_id([("X-Request-IDs", "abc")], KEY, True))
    assert NEW.fullmatch(choose_request_id((), KEY, True))


def test_the_echo_is_added_unless_the_app_set_the_field() -> None:
    headers = [("Content-Type", "text/plain")]
    echo_request_id(headers, "X-Request-ID", KEY, "abc")
    assert headers == [("Content-Type", "text/plain"), ("X-Request-ID", "abc")]
    own = [("x-request-id", "the app's")]
    echo_request_id(own, "X-Request-ID", KEY, "abc")
    assert own == [("x-request-id", "the app's")]
    none: list[tuple[str, str]] = []
    echo_request_id(none, "X-Request-ID", KEY, "")
    assert none == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("X Request", "a header name"),
        ("X-Request-ID:", "a header name"),
        ("X_Request_ID", "never reaches an app"),
        ("Content-Length", "reads or sets"),
        ("connection", "reads or sets"),
        ("Host", "reads or sets"),
    ],
)
def test_a_header_name_that_cannot_carry_ids_is_refused(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_header_name(name)


def test_usual_header_names_are_accepted() -> None:
    for name in ("X-Request-ID", "X-Correlation-ID", "Request-Id", "X-Amzn-Trace-Id"):
        assert check_header_name(name) == name
