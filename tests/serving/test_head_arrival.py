"""When a request head counts as arrived: bare LFs, empty lines, slow heads, busy workers.

What a client sees, over real sockets, of the rules in ``parser.py`` (the end
of a head, the one empty line before it) and of the head deadline kept by the
handler and the reactor:

* a head with bare-LF line endings is refused at once (or served with
  ``allow_bare_lf``), whether it arrives whole or a byte at a time;
* one empty line before a request is ignored, never more, so empty lines
  dripped on an idle connection cannot hold it open, and a head is read the
  same in one segment or split anywhere;
* a head that is not complete by its deadline gets a ``408`` built like every
  other error response (``Date`` included), closed lingeringly so that no
  reset destroys it;
* a request that has arrived while every worker was busy is served when one
  frees up, however long that takes past the head and keep-alive timeouts.

Every socket has a timeout, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest

from wsgibridge import WSGIServer

from ..conftest import Recorder, ResponseReader, ServerFactory, connect

TIMEOUT = 5.0
REQUEST = b"GET /r HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def drip(sock: socket.socket, raw: bytes, pause: float = 0.0) -> None:
    """Send ``raw`` one byte per segment (TCP_NODELAY, so each byte leaves on its own)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(raw)):
        sock.sendall(raw[i : i + 1])
        if pause:
            time.sleep(pause)


def closed_cleanly(sock: socket.socket) -> bool:
    """True if the server's side ended with a FIN (EOF), not a reset."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return False


# -- bare LF -------------------------------------------------------------------------------

BARE_LF_HEAD = b"GET /lf HTTP/1.1\nHost: x\nConnection: close\n\n"


@pytest.mark.parametrize("delivery", ["whole", "byte-by-byte"])
@pytest.mark.parametrize(
    "raw",
    [BARE_LF_HEAD, b"GET /lf HTTP/1.1\r\nHost: x\nConnection: close\r\n\r\n"],
    ids=["all-bare-lf", "mixed"],
)
def test_a_bare_lf_head_is_refused_at_once(serve: ServerFactory, raw: bytes, delivery: str) -> None:
    """RFC 9112 §2.2: a recipient "MAY recognize a single LF as a line terminator"; we do
    not (a proxy in front may not either), and say so with a 400 as soon as the bare LF
    arrives - a head ending in LF LF never reaches the CRLF CRLF that would end it, so
    waiting would hang the client until the head timeout."""
    app = Recorder()
    server = serve(app, header_timeout=30.0)
    with connect(server, timeout=TIMEOUT) as sock:
        if delivery == "whole":
            sock.sendall(raw)
        else:
            drip(sock, raw)
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert response.status == 400, response
        assert b"bare LF" in response.body
        assert response.header("Connection") == "close"
        assert response.header("Date") is not None
        assert closed_cleanly(sock)
    assert app.calls == []


@pytest.mark.parametrize("delivery", ["whole", "byte-by-byte"])
def test_allow_bare_lf_serves_a_bare_lf_head(serve: ServerFactory, delivery: str) -> None:
    """With ``allow_bare_lf`` the same head is served, also a byte at a time."""
    app = Recorder()
    server = serve(app, allow_bare_lf=True, header_timeout=30.0)
    with connect(server, timeout=TIMEOUT) as sock:
        if delivery == "whole":
            sock.sendall(BARE_LF_HEAD)
        else:
            drip(sock, BARE_LF_HEAD)
        response = ResponseReader(sock).read_response()
    assert (response.status, response.body) == (200, b"ok:/lf")
    assert app.calls == ["/lf"]


@pytest.mark.parametrize("allow_bare_lf", [False, True], ids=["strict", "allow-bare-lf"])
def test_a_chunk_line_with_a_bare_lf_is_refused_even_with_allow_bare_lf(
    serve: ServerFactory, allow_bare_lf: bool
) -> None:
    """``allow_bare_lf`` is about request heads.  A chunk extension ended by a bare LF,
    ``2;a\\nXY\\r\\n``, is one line to a front end that ends lines at CRLF only, but two
    to a lenient server: the bytes after it would be read as another request.  RFC 9112
    §7.1: chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF - refused either way."""
    seen: list[str] = []
    errors: list[BaseException] = []

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.append(environ["PATH_INFO"])
        try:
            environ["wsgi.input"].read()
        except Exception as exc:
            errors.append(exc)
            raise
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]

    server = serve(app, allow_bare_lf=allow_bare_lf)
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"2;a\nXY\r\n"
        + b"0\r\n\r\n"
        + smuggled
    )
    with connect(server, timeout=TIMEOUT) as sock:
        sock.sendall(raw)
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert response.status == 400, response
        assert reader.at_eof()
    assert seen == ["/upload"]
    assert len(errors) == 1


# -- empty lines before a request ----------------------------------------------------------


@pytest.mark.parametrize("split", [1, 2, 3])
def test_one_empty_line_before_a_request_is_ignored_however_it_is_split(
    serve: ServerFactory, split: int
) -> None:
    """RFC 9112 §2.2: a server "SHOULD ignore at least one empty line (CRLF) received prior
    to the request-line" - in one segment or split inside or just after it."""
    app = Recorder()
    server = serve(app)
    raw = b"\r\n" + REQUEST
    with connect(server, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw[:split])
        time.sleep(0.05)
        sock.sendall(raw[split:])
        response = ResponseReader(sock).read_response()
    assert (response.status, response.body) == (200, b"ok:/r")


@pytest.mark.parametrize("split", [None, 2, 3])
def test_two_empty_lines_are_refused_however_they_are_split(
    serve: ServerFactory, split: int | None
) -> None:
    """Exactly one empty line is ignored per request: the second one is an empty request
    line, refused with 400 whether the bytes arrive in one segment or in two."""
    app = Recorder()
    server = serve(app)
    raw = b"\r\n\r\n" + REQUEST
    with connect(server, timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if split is None:
            sock.sendall(raw)
        else:
            sock.sendall(raw[:split])
            time.sleep(0.05)
            sock.sendall(raw[split:])
        response = ResponseReader(sock).read_response()
    assert response.status == 400, response
    assert app.calls == []


def test_empty_lines_dripped_on_an_idle_connection_do_not_keep_it_open(
    serve: ServerFactory,
) -> None:
    """An idle keep-alive connection that receives ``\\r\\n`` every 0.3 s: the first is the
    one empty line RFC 9112 §2.2 lets a server ignore, the second starts a head (bytes
    that are not a request are not idleness), and the server ends the connection with an
    answer instead of holding it open forever."""
    app = Recorder()
    server = serve(app, keepalive_timeout=0.5, header_timeout=1.0)
    with connect(server, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(sock)
        assert reader.read_response().status == 200
        started = time.monotonic()
        answer = b""
        while time.monotonic() - started < 4.0:
            try:
                sock.sendall(b"\r\n")
            except OSError:
                break  # the server closed: the bytes we keep sending are refused
            sock.settimeout(0.3)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"the connection stayed open {elapsed:.1f} s"
    # The second and third empty lines make an empty request line: 400 (a 408 if the
    # head deadline comes first on a slow machine).
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 408 ")), answer
    assert app.calls == ["/first"]


def test_one_empty_line_after_a_body_leaves_the_connection_idle(serve: ServerFactory) -> None:
    """RFC 9112 §2.2 ignores the empty line some clients send after a POST body: it does
    not start a head (no 408 at the short head deadline), nor does it restart the
    keep-alive timeout - the connection closes, silently, when the keep-alive timeout
    counted from the response runs out."""
    app = Recorder()
    server = serve(app, keepalive_timeout=1.0, header_timeout=0.3)
    with connect(server, timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        reader = ResponseReader(sock)
        assert reader.read_response().status == 200
        answered = time.monotonic()
        time.sleep(0.6)
        sock.sendall(b"\r\n")
        assert sock.recv(65536) == b""  # no 408: a clean close, nothing said
        closed = time.monotonic() - answered
    # Closed at the keep-alive timeout after the response, not 1 s after the CRLF.
    assert 0.9 <= closed < 1.45, closed
    assert app.calls == ["/first"]


# -- the head deadline ---------------------------------------------------------------------


def test_an_incomplete_head_gets_a_408_with_date_and_a_clean_close(serve: ServerFactory) -> None:
    """RFC 9110 §15.5.9 (408) after the head deadline, with ``Date`` (RFC 9110 §6.6.1: an
    origin server with a clock "MUST generate a Date header field in all ... 4xx
    responses") and the other fields of every error response; the connection closes
    with a FIN after it, never a reset, also when the client keeps sending."""
    server = serve(Recorder(), header_timeout=0.5)
    with connect(server, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n")
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert response.status == 408, response
        for name in ("Date", "Server", "Content-Length", "Content-Type"):
            assert response.header(name) is not None, name
        assert response.header("Connection") == "close"
        assert response.body.startswith(b"408 Request Timeout\n")
        # The rest of the head arrives late: discarded, no reset.
        sock.sendall(b"X-Late: 1\r\n\r\n")
        assert closed_cleanly(sock)


def test_a_silent_connection_is_closed_without_an_answer(serve: ServerFactory) -> None:
    """A client that connects and says nothing gets no 408 (it sent no request to answer,
    RFC 9112 §9.5), only a clean close at the head deadline."""
    server = serve(Recorder(), header_timeout=0.3)
    with connect(server, timeout=TIMEOUT) as sock:
        assert sock.recv(65536) == b""


# -- busy workers -----------------------------------------------------------------------


class Gate:
    """An app whose ``/hold`` requests wait for ``release`` (bounded), others answer at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = threading.Semaphore(0)
        self.calls: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path: str = environ["PATH_INFO"]
        self.calls.append(path)
        if path == "/hold":
            self.holding.release()
            assert self.release.wait(TIMEOUT), "never released"
        body = path.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]


def hold_every_worker(server: WSGIServer, gate: Gate, count: int) -> list[socket.socket]:
    """``count`` connections whose requests occupy a worker each, until ``gate.release``."""
    socks = []
    for _ in range(count):
        sock = connect(server, timeout=TIMEOUT)
        sock.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(sock)
    for _ in range(count):
        assert gate.holding.acquire(timeout=TIMEOUT)
    return socks


def test_a_request_waiting_behind_busy_workers_is_served_past_the_head_timeout(
    serve: ServerFactory,
) -> None:
    """Every worker busy for longer than the head timeout: a client that sent its whole
    request meanwhile met its deadline, and is answered when a worker frees up - not reset
    at the head timeout with no bytes."""
    gate = Gate()
    server = serve(gate, threads=2, header_timeout=0.3)
    holders = hold_every_worker(server, gate, 2)
    try:
        with connect(server, timeout=TIMEOUT) as waiting:
            waiting.sendall(REQUEST)
            time.sleep(1.0)  # three head timeouts with every worker busy
            gate.release.set()
            response = ResponseReader(waiting).read_response()
            assert (response.status, response.body) == (200, b"/r")
        for sock in holders:
            assert ResponseReader(sock).read_response().status == 200
    finally:
        gate.release.set()
        for sock in holders:
            sock.close()


def test_a_keepalive_request_waiting_behind_busy_workers_is_served(
    serve: ServerFactory,
) -> None:
    """The next request on an idle keep-alive connection, sent while every worker is busy,
    is served when one frees up, even past the keep-alive timeout."""
    gate = Gate()
    server = serve(gate, threads=1, keepalive_timeout=0.3, header_timeout=0.3)
    with connect(server, timeout=TIMEOUT) as idle:
        idle.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = ResponseReader(idle)
        assert reader.read_response().body == b"/one"
        holders = hold_every_worker(server, gate, 1)
        try:
            idle.sendall(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1.0)
            gate.release.set()
            response = reader.read_response()
            assert (response.status, response.body) == (200, b"/two")
        finally:
            gate.release.set()
            for sock in holders:
                sock.close()


def test_a_partial_head_behind_busy_workers_gets_its_408_when_a_worker_frees(
    serve: ServerFactory,
) -> None:
    """A head still incomplete when a worker finally reads it, past its deadline, gets the
    408 the deadline promised (RFC 9110 §15.5.9), cleanly closed; the server then serves
    as before."""
    gate = Gate()
    server = serve(gate, threads=1, header_timeout=0.3)
    holders = hold_every_worker(server, gate, 1)
    try:
        with connect(server, timeout=TIMEOUT) as partial:
            partial.sendall(b"GET /partial HTTP/1.1\r\nHost: x\r\n")
            time.sleep(1.0)
            gate.release.set()
            response = ResponseReader(partial).read_response()
            assert response.status == 408, response
            assert response.header("Date") is not None
            assert closed_cleanly(partial)
    finally:
        gate.release.set()
        for sock in holders:
            sock.close()
    with connect(server, timeout=TIMEOUT) as fresh:
        fresh.sendall(REQUEST)
        assert ResponseReader(fresh).read_response().body == b"/r"
    assert "/partial" not in gate.calls
