"""ResponseWriter and the framing rules, on a fake sink: no sockets."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from http import HTTPStatus
from typing import Any

import pytest

from wsgibridge.errors import AppError, ClientDisconnected, PayloadTooLarge, ResponseHeaderError
from wsgibridge.http.response import (
    Framing,
    ResponseWriter,
    choose_framing,
    error_body,
    error_response,
    validate_headers,
    validate_status,
)


class Sink:
    """Records what the writer sends."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.head: tuple[int, str, list[tuple[str, str]]] | None = None
        self.data = b""
        self.writes = 0
        self.fail_after = fail_after

    def _count(self) -> None:
        self.writes += 1
        if self.fail_after is not None and self.writes > self.fail_after:
            raise BrokenPipeError("client went away")

    def send_head(
        self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        self._count()
        self.head = (status_code, reason, headers)
        self.data += body

    def send_body(self, data: bytes) -> None:
        self._count()
        self.data += data

    def send_file(self, file: Any, offset: int, count: int) -> int:
        file.seek(offset)
        data = file.read(count)
        self.data += data
        return len(data)

    def header(self, name: str) -> list[str]:
        assert self.head is not None
        return [v for k, v in self.head[2] if k.lower() == name.lower()]


def run(
    app: Any, *, method: str = "GET", http11: bool = True, keep_alive: bool = True, **kw: Any
) -> tuple[ResponseWriter, Sink]:
    sink = Sink(kw.pop("fail_after", None))
    writer = ResponseWriter(sink, method=method, http11=http11, client_keep_alive=keep_alive, **kw)
    writer.respond(app, {})
    return writer, sink


def app_with(
    status: str = "200 OK",
    headers: list[tuple[str, str]] | None = None,
    body: Any = (b"hello",),
) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response(status, list(headers or []))
        return body

    return app


def gen(*chunks: bytes) -> Iterator[bytes]:
    yield from chunks


# -- choose_framing: the truth table -----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "http11", "length", "expected"),
    [
        ("GET", 200, True, 5, Framing.LENGTH),
        ("GET", 200, True, None, Framing.CHUNKED),
        ("GET", 200, False, None, Framing.CLOSE),
        ("GET", 200, False, 5, Framing.LENGTH),
        ("HEAD", 200, True, None, Framing.EMPTY),
        ("HEAD", 200, True, 5, Framing.EMPTY),
        ("GET", 204, True, None, Framing.EMPTY),
        ("GET", 304, True, 5, Framing.EMPTY),
        ("GET", 100, True, None, Framing.EMPTY),
        ("POST", 500, False, 3, Framing.LENGTH),
    ],
)
def test_choose_framing(
    method: str, status: int, http11: bool, length: int | None, expected: Framing
) -> None:
    """RFC 9112 §6.3 from the server's side: empty, length, chunked (1.1) or close (1.0)."""
    assert (
        choose_framing(method=method, status_code=status, http11=http11, content_length=length)
        is expected
    )


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["200 OK", "404 Not Found", "599 ", "200 Caf\xe9"])
def test_valid_status(status: str) -> None:
    code, reason = validate_status(status)
    assert code == int(status[:3])
    assert reason == status[4:]


@pytest.mark.parametrize(
    "status",
    [
        "200",
        "20 OK",
        "2000 OK",
        "200OK",
        "200 OK\r\nX: y",
        "200 \x00",
        b"200 OK",
        200,
        "099 Low",
        "100 Continue",
        "101 Switching Protocols",
        "103 Early Hints",
        "600 High",
        "999 Beyond",
        " 200 OK",
    ],
)
def test_invalid_status(status: Any) -> None:
    """PEP 3333: a str, three digits, one space, a reason without control characters."""
    with pytest.raises(ResponseHeaderError):
        validate_status(status)


@pytest.mark.parametrize(
    "headers",
    [
        [("X-A", "x\r\nInjected: 1")],
        [("X-A", "x\nInjected: 1")],
        [("X-A", "x\rInjected: 1")],
        [("X-A", "nul\x00")],
        [("X-A", "del\x7f")],
        [("X-A", "\u20ac")],
        [("X A", "v")],
        [("X-A:", "v")],
        [("", "v")],
        [("X-A", b"bytes")],
        [("X-A", ["not", "hashable"])],
        [(b"X-A", "v")],
        [("X-A", "v", "extra")],
        [["X-A", "v"]],
        (("X-A", "v"),),
        [("Connection", "close")],
        [("Transfer-Encoding", "chunked")],
        [("keep-alive", "timeout=5")],
        [("Upgrade", "websocket")],
        [("Trailer", "X")],
    ],
)
def test_invalid_headers(headers: Any) -> None:
    """Headers that would inject, mis-frame or break PEP 3333 types are refused."""
    with pytest.raises(ResponseHeaderError):
        validate_headers(headers)


def test_valid_headers_pass_through() -> None:
    headers = [("Content-Type", "text/plain"), ("X-Tab", "a\tb"), ("X-Latin", "caf\xe9")]
    assert validate_headers(headers) is headers


# -- framing through the writer -----------------------------------------------------------


def test_one_element_list_gets_content_length_and_one_write() -> None:
    writer, sink = run(app_with(body=[b"hello"]))
    assert sink.header("Content-Length") == ["5"]
    assert sink.data == b"hello"
    assert sink.writes == 1
    assert writer.keep_alive


def test_generator_on_http11_is_chunked() -> None:
    writer, sink = run(app_with(body=gen(b"ab", b"", b"cde")))
    assert sink.header("Transfer-Encoding") == ["chunked"]
    assert sink.header("Content-Length") == []
    assert sink.data == b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
    assert writer.keep_alive
    assert writer.body_bytes == 5


def test_generator_on_http10_is_close_delimited() -> None:
    writer, sink = run(app_with(body=gen(b"ab", b"cd")), http11=False)
    assert sink.header("Transfer-Encoding") == []
    assert sink.data == b"abcd"
    assert not writer.keep_alive


def test_http10_keep_alive_with_length_says_so() -> None:
    writer, sink = run(app_with(body=[b"ab"]), http11=False)
    assert sink.header("Connection") == ["keep-alive"]
    assert writer.keep_alive


def test_http11_close_requested_says_close() -> None:
    writer, sink = run(app_with(body=[b"ab"]), keep_alive=False)
    assert sink.header("Connection") == ["close"]
    assert not writer.keep_alive


def test_will_close_hook_adds_connection_close() -> None:
    writer, sink = run(app_with(body=[b"ab"]), will_close=lambda complete: True)
    assert sink.header("Connection") == ["close"]
    assert not writer.keep_alive


def test_will_close_is_told_whether_the_app_has_returned() -> None:
    """The handler may settle the request body before the head only once the app can no
    longer read it: a one-element list is complete, a generator's first chunk is not."""
    asked: list[bool] = []

    def will_close(complete: bool) -> bool:
        asked.append(complete)
        return False

    run(app_with(body=[b"ab"]), will_close=will_close)
    run(app_with(body=gen(b"a", b"b")), will_close=will_close)
    assert asked == [True, False]


def test_empty_generator_gets_content_length_zero() -> None:
    writer, sink = run(app_with(body=gen(b"", b"")))
    assert sink.header("Content-Length") == ["0"]
    assert sink.data == b""
    assert writer.keep_alive


def test_declared_length_truncates_excess() -> None:
    writer, sink = run(app_with(headers=[("Content-Length", "3")], body=gen(b"ab", b"cdef")))
    assert sink.data == b"abc"
    assert writer.keep_alive
    assert writer.body_bytes == 3


def test_short_body_closes_connection() -> None:
    writer, sink = run(app_with(headers=[("Content-Length", "10")], body=gen(b"ab")))
    assert sink.data == b"ab"
    assert not writer.keep_alive


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "5 ", "0x5", "\uff15"])
def test_bad_app_content_length_is_500(value: str) -> None:
    writer, sink = run(app_with(headers=[("Content-Length", value)]))
    assert writer.status_code == 500
    assert sink.head is not None and sink.head[0] == 500


def test_head_keeps_computed_length_and_sends_no_body() -> None:
    writer, sink = run(app_with(body=[b"hello"]), method="HEAD")
    assert sink.header("Content-Length") == ["5"]
    assert sink.data == b""
    assert writer.keep_alive


@pytest.mark.parametrize(
    "body", [[], [b""], iter([b"", b""])], ids=["empty-list", "one-empty", "iter"]
)
def test_head_of_an_empty_body_claims_no_length(body: Iterable[bytes]) -> None:
    """RFC 9110 §8.6: Content-Length in a HEAD response must be the length a GET would
    carry; an app (or framework) that returns no body for HEAD does not tell it, so
    none is sent."""
    writer, sink = run(app_with(body=body), method="HEAD")
    assert sink.header("Content-Length") == []
    assert sink.header("Transfer-Encoding") == []
    assert sink.data == b""
    assert writer.keep_alive


def test_head_keeps_declared_length() -> None:
    writer, sink = run(
        app_with(headers=[("Content-Length", "5")], body=gen(b"hello")), method="HEAD"
    )
    assert sink.header("Content-Length") == ["5"]
    assert sink.data == b""
    assert writer.keep_alive


def test_204_drops_content_length_and_body() -> None:
    writer, sink = run(app_with("204 No Content", [("Content-Length", "5")], [b"hello"]))
    assert sink.header("Content-Length") == []
    assert sink.data == b""
    assert writer.keep_alive


def test_304_sends_no_body() -> None:
    writer, sink = run(app_with("304 Not Modified", [], gen(b"stale")))
    assert sink.data == b""
    assert sink.header("Transfer-Encoding") == []
    assert writer.keep_alive


def test_date_and_server_added_once() -> None:
    _, sink = run(app_with(body=[b"x"]))
    assert len(sink.header("Date")) == 1
    assert sink.header("Server")[0].startswith("wsgibridge/")
    _, sink = run(app_with(headers=[("Server", "mine"), ("date", "yesterday")], body=[b"x"]))
    assert sink.header("Server") == ["mine"]
    assert sink.header("Date") == ["yesterday"]


# -- the PEP 3333 state machine -----------------------------------------------------------


def test_write_callable_and_iterable_mix() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        write = start_response("200 OK", [])
        write(b"first-")
        return [b"second"]

    _, sink = run(app)
    assert sink.data == b"6\r\nfirst-\r\n6\r\nsecond\r\n0\r\n\r\n"


def test_second_start_response_without_exc_info_is_500() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return [b"x"]

    writer, _ = run(app)
    assert writer.status_code == 500


def test_exc_info_before_headers_replaces_status() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("X-Old", "1")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("503 Busy", [("X-New", "1")], sys.exc_info())
        return [b"sorry"]

    _, sink = run(app)
    assert sink.head is not None
    assert sink.head[:2] == (503, "Busy")
    assert sink.header("X-Old") == [] and sink.header("X-New") == ["1"]


def test_exc_info_after_headers_reraises_and_truncates() -> None:
    raised: list[BaseException] = []

    def body(start_response: Any) -> Iterator[bytes]:
        yield b"partial"
        try:
            raise KeyError("late")
        except KeyError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except KeyError as exc:
                raised.append(exc)
                raise

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return body(start_response)

    writer, sink = run(app)
    assert raised, "start_response must re-raise exc_info once headers are sent"
    assert sink.data == b"7\r\npartial\r\n"  # no last-chunk: the client sees truncation
    assert not writer.keep_alive


def test_exception_before_headers_is_plain_500_without_traceback() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("secret detail")

    writer, sink = run(app)
    assert writer.status_code == 500
    assert b"secret detail" not in sink.data
    assert sink.data == b"500 Internal Server Error\n"
    assert writer.keep_alive


def test_expose_tracebacks_puts_traceback_in_body() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("secret detail")

    _, sink = run(app, expose_tracebacks=True)
    assert b"RuntimeError: secret detail" in sink.data


def test_a_500_has_the_body_of_the_servers_own_errors() -> None:
    """One body builder: the app's 500 reads like error_response's (code, phrase, newline)."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("secret detail")

    _, sink = run(app)
    headers, body = error_response(500)
    assert sink.data == body == error_body(500, None, encoding="utf-8")
    assert sink.header("Content-Type") == [dict(headers)["Content-Type"]]
    assert sink.header("Content-Length") == [str(len(body))]
    assert len(sink.header("Date")) == len(sink.header("Server")) == 1


def test_a_traceback_follows_the_status_line_in_utf8() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        raise RuntimeError("caf\u00e9 \u2603")

    _, sink = run(app, expose_tracebacks=True)
    assert sink.data.startswith(b"500 Internal Server Error\nTraceback (most recent call last):\n")
    assert sink.data.endswith("RuntimeError: caf\u00e9 \u2603\n\n".encode())
    assert sink.header("Content-Length") == [str(len(sink.data))]


def test_an_http_error_from_the_apps_read_gets_its_status_and_the_same_body() -> None:
    """A body refused while the app reads it (here 413) is answered as the server's own errors."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("X-From-App", "1")])
        raise PayloadTooLarge("the body is larger than 10 bytes")

    writer, sink = run(app)
    phrase = HTTPStatus(413).phrase
    assert sink.head is not None
    assert sink.head[:2] == (413, phrase)
    assert sink.data == f"413 {phrase}\nthe body is larger than 10 bytes\n".encode()
    assert sink.data == error_response(413, "the body is larger than 10 bytes")[1]
    assert sink.header("X-From-App") == []
    assert sink.header("Connection") == ["close"]
    assert not writer.keep_alive


def test_error_body_replaces_what_its_encoding_cannot_say() -> None:
    assert (
        error_body(400, "caf\u00e9 \u2603", encoding="latin-1") == b"400 Bad Request\ncaf\xe9 ?\n"
    )
    assert error_body(400, "", encoding="utf-8") == b"400 Bad Request\n"


def test_str_chunk_is_an_app_error() -> None:
    writer, _ = run(app_with(body=["text"]))
    assert writer.status_code == 500


def test_body_before_start_response_is_an_app_error() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        return [b"x"]

    writer, _ = run(app)
    assert writer.status_code == 500


def test_write_rejects_non_bytes() -> None:
    writer = ResponseWriter(Sink(), method="GET", http11=True, client_keep_alive=True)
    writer.start_response("200 OK", [])
    with pytest.raises(AppError):
        writer.write("text")


class Closing:
    def __init__(self, chunks: list[bytes], fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[bytes]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise RuntimeError("mid-stream")
            yield chunk

    def close(self) -> None:
        self.closed += 1


@pytest.mark.parametrize("fail_at", [None, 0, 1])
def test_close_called_exactly_once(fail_at: int | None) -> None:
    body = Closing([b"a", b"b"], fail_at)
    run(app_with(body=body))
    assert body.closed == 1


def test_close_called_once_when_client_disconnects() -> None:
    body = Closing([b"a", b"b", b"c"])
    writer, _ = run(app_with(body=body), fail_after=1)
    assert body.closed == 1
    assert writer.client_gone and not writer.keep_alive


def test_write_after_client_gone_raises_client_disconnected() -> None:
    sink = Sink(fail_after=0)
    writer = ResponseWriter(sink, method="GET", http11=True, client_keep_alive=True)
    write = writer.start_response("200 OK", [])
    with pytest.raises(ClientDisconnected):
        write(b"x")
    with pytest.raises(ClientDisconnected):
        write(b"y")
