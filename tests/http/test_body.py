"""wsgi.input streams over an in-memory rfile: bounds, EOF, disconnects, draining."""

from __future__ import annotations

import io
from typing import Any

import pytest

from wsgibridge.errors import ClientDisconnected, RequestTimeout
from wsgibridge.http.body import ChunkedInput, ContentLengthInput
from wsgibridge.http.parser import Limits
from wsgibridge.http.reader import SocketReader

NEXT = b"GET /next HTTP/1.1\r\n\r\n"


def stream(
    body: bytes, length: int | None = None, after: bytes = NEXT
) -> tuple[ContentLengthInput, SocketReader]:
    rfile = SocketReader(io.BytesIO(body + after).read)
    return ContentLengthInput(rfile, len(body) if length is None else length), rfile


def test_read_all_stops_at_body_end() -> None:
    body, rfile = stream(b"hello world")
    assert body.read() == b"hello world"
    assert body.read() == b""
    assert body.read(10) == b""
    assert rfile.read() == NEXT


def test_read_n_in_pieces() -> None:
    body, rfile = stream(b"abcdefghij")
    assert body.read(3) == b"abc"
    assert body.read(0) == b""
    assert body.read(100) == b"defghij"
    assert body.read(1) == b""
    assert rfile.read() == NEXT


def test_readline_and_limit() -> None:
    body, rfile = stream(b"line one\nline two\nlast")
    assert body.readline() == b"line one\n"
    assert body.readline(4) == b"line"
    assert body.readline() == b" two\n"
    assert body.readline() == b"last"
    assert body.readline() == b""
    assert rfile.read() == NEXT


def test_readlines_and_iteration() -> None:
    body, _ = stream(b"a\nb\nc")
    assert body.readlines() == [b"a\n", b"b\n", b"c"]
    body, _ = stream(b"a\nb\nc")
    assert list(body) == [b"a\n", b"b\n", b"c"]
    body, _ = stream(b"a\nb\nc")
    assert body.readlines(1) == [b"a\n"]


def test_disconnect_mid_body_raises() -> None:
    """A cut-off upload must never look complete to the app."""
    body, _ = stream(b"short", length=100, after=b"")
    with pytest.raises(ClientDisconnected):
        body.read()
    body, _ = stream(b"no newline", length=100, after=b"")
    with pytest.raises(ClientDisconnected):
        body.readline()


def test_first_read_callback_once_and_lazily() -> None:
    calls: list[int] = []
    rfile = SocketReader(io.BytesIO(b"abcdef").read)
    body = ContentLengthInput(rfile, 6, lambda: calls.append(1))
    assert calls == [] and not body.started
    body.read(2)
    body.readline()
    assert calls == [1] and body.started


def test_no_callback_for_empty_body() -> None:
    calls: list[int] = []
    body = ContentLengthInput(SocketReader(io.BytesIO(b"").read), 0, lambda: calls.append(1))
    assert body.read() == b""
    assert calls == [] and body.started


def test_drain_within_cap() -> None:
    body, rfile = stream(b"x" * 1000)
    body.read(10)
    assert body.drain(limit=2000)
    assert rfile.read() == NEXT


def test_drain_refuses_past_cap() -> None:
    body, _ = stream(b"x" * 1000)
    assert not body.drain(limit=100)


def test_drain_refuses_when_continue_not_sent() -> None:
    """The client may be waiting for 100 Continue and never send the body."""
    rfile = SocketReader(io.BytesIO(b"abc").read)
    body = ContentLengthInput(rfile, 3, lambda: None)
    assert not body.drain(limit=1000)


def test_drain_short_body_fails() -> None:
    body, _ = stream(b"abc", length=10, after=b"")
    assert not body.drain(limit=1000)


def test_a_huge_declared_length_is_never_one_allocation() -> None:
    """``BufferedReader.read(n)`` would allocate ``n`` bytes up front, so ``read()`` on a
    body that claims 10**15 bytes must ask for it in bounded pieces: the short body
    raises ClientDisconnected instead of MemoryError."""
    body, _ = stream(b"only this", length=10**15, after=b"")
    with pytest.raises(ClientDisconnected):
        body.read()


def test_a_broken_body_stays_broken() -> None:
    """A retry after a cut-off must not return b"" as if the body had ended."""
    body, _ = stream(b"short", length=100, after=b"")
    with pytest.raises(ClientDisconnected):
        body.read(50)
    with pytest.raises(ClientDisconnected):
        body.read()
    with pytest.raises(ClientDisconnected):
        body.readline()
    assert not body.drain(limit=1000)


class _Failing(io.RawIOBase):
    def __init__(self, error: OSError) -> None:
        self.error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise self.error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TimeoutError("timed out"), RequestTimeout),
        (ConnectionResetError("reset"), ClientDisconnected),
    ],
)
def test_socket_errors_become_the_stream_error(error: OSError, expected: type[Exception]) -> None:
    """A body read that times out is a 408 (RequestTimeout); a reset is ClientDisconnected."""
    body = ContentLengthInput(SocketReader(_Failing(error).read), 10)
    with pytest.raises(expected):
        body.read()
    assert isinstance(body.failed, expected)
    assert not body.drain(limit=1000)


def test_client_gone_before_100_continue_is_a_disconnect() -> None:
    def send_continue() -> None:
        raise BrokenPipeError("gone")

    body = ContentLengthInput(SocketReader(io.BytesIO(b"abc").read), 3, send_continue)
    with pytest.raises(ClientDisconnected):
        body.read()


def chunked(raw: bytes) -> ChunkedInput:
    return ChunkedInput(SocketReader(io.BytesIO(raw).read), Limits())


def test_chunked_readline_over_a_huge_chunk_is_bounded() -> None:
    """A chunk that claims 2**60 bytes must not reach ``readline`` as one C-sized limit
    (OverflowError) or allocation: the cut-off body is a ClientDisconnected."""
    body = chunked(b"fffffffffffffff\r\nab\ncd")
    assert body.readline() == b"ab\n"
    with pytest.raises(ClientDisconnected):
        body.readline()


def test_chunked_sizes_with_leading_zeros_are_fine() -> None:
    body = chunked(b"0000000000000000000005\r\nhello\r\n0\r\n\r\n")
    assert body.read() == b"hello"


def test_reading_nothing_sends_no_100_continue() -> None:
    calls: list[int] = []
    body = ContentLengthInput(SocketReader(io.BytesIO(b"abc").read), 3, lambda: calls.append(1))
    assert body.read(0) == b"" and body.readline(0) == b""
    assert calls == [] and not body.started
    assert body.read() == b"abc" and calls == [1]


def test_disconnect_message_is_not_wrapped_twice() -> None:
    body, _ = stream(b"short", length=100, after=b"")
    with pytest.raises(ClientDisconnected) as info:
        body.read()
    assert str(info.value) == "the client closed the connection after 5 of 100 body bytes"
