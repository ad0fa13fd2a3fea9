"""Shared fixtures: a live wsgibridge server on 127.0.0.1 and raw-socket helpers."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import trustme

from wsgibridge import WSGIServer, make_server
from wsgibridge._types import Environ, StartResponse, WSGIApp

pytest_plugins = ["pytester"]  # tests/testing/test_plugin.py runs pytest on example suites


def can_bind(host: str, *, dual_stack: bool = False) -> bool:
    """Whether a TCP socket can be bound to ``host`` here (``::1`` needs IPv6 loopback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if family == socket.AF_INET6 and not socket.has_ipv6:
        return False
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            if dual_stack:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            probe.bind((host, 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not can_bind("::1"), reason="cannot bind ::1 here")
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")
needs_dual_stack = pytest.mark.skipif(
    not can_bind("::", dual_stack=True), reason="no dual-stack IPv6 socket here"
)


@pytest.fixture(scope="module")
def authority() -> tuple[trustme.CA, trustme.LeafCert, trustme.LeafCert]:
    """Throwaway PKI: a CA, a server certificate for 127.0.0.1/::1/localhost, a client one."""
    ca = trustme.CA(organization_name="Example CA")
    server = ca.issue_cert("127.0.0.1", "::1", "localhost")
    client = ca.issue_cert(
        "client@example.org",
        common_name="client",
        organization_name="Example",
        organization_unit_name="Dev",
    )
    return ca, server, client


def der_of(cert: trustme.LeafCert) -> bytes:
    """A certificate's DER bytes (what ``getpeercert(binary_form=True)`` gives)."""
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode("ascii"))


@contextlib.contextmanager
def running_server(app: WSGIApp, **options: Any) -> Iterator[WSGIServer]:
    """A wsgibridge server on 127.0.0.1:<free port>, serving in a thread, stopped after."""
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    options.setdefault("read_timeout", 5.0)
    options.setdefault("write_timeout", 5.0)
    options.setdefault("graceful_timeout", 2.0)
    with serving(make_server(app, **options)) as server:
        yield server


HandlerT = TypeVar("HandlerT", bound=logging.Handler)


@contextlib.contextmanager
def logging_to(name: str, handler: HandlerT) -> Iterator[HandlerT]:
    """``handler`` on the logger ``name`` at INFO for a test, both restored after.

    A handler on the logger itself, not caplog on the root: the CLI tests leave
    wsgibridge's loggers with ``propagate = False``.
    """
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Records(logging.Handler):
    """Keeps every record it is given (use with :func:`logging_to`)."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[logging.LogRecord]:
        """The records at ``level`` or above."""
        return [record for record in self.records if record.levelno >= level]


@pytest.fixture
def access_logger() -> Iterator[logging.Logger]:
    """``wsgibridge.access`` as the CLI sets it up (no handler yet, not propagating),
    restored after; the handlers a test adds are closed."""
    log = logging.getLogger("wsgibridge.access")
    saved = (log.handlers[:], log.propagate, log.level)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in log.handlers:
        handler.close()
    log.handlers[:], log.propagate, log.level = saved


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """For a test that runs ``logging.config.dictConfig``: wsgibridge's loggers and the
    root (handlers, level, propagation, ``disabled``) and every logger's ``disabled``
    flag put back after, the handlers the test made closed."""
    names = ("", "wsgibridge", "wsgibridge.access", "wsgibridge.error", "wsgibridge.server")
    loggers = [logging.getLogger(name) for name in names]
    saved = [(log, log.handlers[:], log.level, log.propagate, log.disabled) for log in loggers]
    manager = logging.Logger.manager
    flags = {
        name: log.disabled
        for name, log in manager.loggerDict.items()
        if isinstance(log, logging.Logger)
    }
    yield
    for log, handlers, level, propagate, disabled in saved:
        for handler in log.handlers:
            if handler not in handlers:
                handler.close()
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate
        log.disabled = disabled
    for name, disabled in flags.items():
        logger = manager.loggerDict.get(name)
        if isinstance(logger, logging.Logger):
            logger.disabled = disabled


@contextlib.contextmanager
def serving(server: WSGIServer) -> Iterator[WSGIServer]:
    """Run ``server`` (made, perhaps instrumented, by the test) in a thread; stop it after."""
    thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        assert not thread.is_alive()


ServerFactory = Callable[..., WSGIServer]


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """``serve(app, **config)`` starts a live server; all are stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(app: WSGIApp, **options: Any) -> WSGIServer:
            return stack.enter_context(running_server(app, **options))

        yield start


def connect(server: WSGIServer, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to ``server``."""
    return socket.create_connection((server.host, server.port), timeout=timeout)


def recv_all(sock: socket.socket, limit: int = 10 * 1024 * 1024) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    total = 0
    while total < limit:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def exchange(server: WSGIServer, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send ``raw``, half-close, return all bytes until the server closes."""
    with connect(server, timeout) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        return recv_all(sock)


class RawResponse:
    """One HTTP/1.x response parsed off a socket (status, headers, body)."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ",".join(values) if values else None

    def __repr__(self) -> str:
        return f"<RawResponse {self.status} {self.headers} {self.body[:80]!r}>"


class ResponseReader:
    """Reads successive responses from one connection (keep-alive, pipelining)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.closed = False

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            return False
        self.buffer += data
        return True

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            if not self._fill():
                raise EOFError("connection closed mid-line")
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise EOFError("connection closed mid-body")
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def read_response(self, method: str = "GET") -> RawResponse:
        status_line = self._line().decode("latin-1")
        version, code, reason = [*status_line.split(" ", 2), ""][:3]
        assert version == "HTTP/1.1", status_line
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        response = RawResponse(int(code), reason, headers, b"")
        status = int(code)
        if method == "HEAD" or status < 200 or status in (204, 304):
            return response
        te = response.header("Transfer-Encoding")
        cl = response.header("Content-Length")
        if te is not None:
            assert te == "chunked"
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exact(size)
                assert self._exact(2) == b"\r\n"
            response.body = body
        elif cl is not None:
            response.body = self._exact(int(cl))
        else:
            while self._fill():
                pass
            response.body, self.buffer = self.buffer, b""
        return response

    def at_eof(self) -> bool:
        """True if the server has closed the connection with nothing more to read."""
        if self.buffer:
            return False
        try:
            return not self._fill()
        except (ConnectionResetError, TimeoutError):
            return True


def simple_app(body: bytes = b"Hello, World!") -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    return app


class Recorder:
    """A WSGI app that records each call's PATH_INFO and answers ``200 ok:<path>``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        path: str = environ["PATH_INFO"]
        self.calls.append(path)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok:" + path.encode("latin-1")]


def expect_eof(reader: ResponseReader) -> None:
    """The server closed the connection: nothing left over and recv() sees EOF.

    Unlike ``ResponseReader.at_eof`` a socket timeout is a failure here, so a
    connection the server wrongly keeps open cannot pass for a closed one.
    """
    assert reader.buffer == b"", f"unexpected bytes after the response: {reader.buffer!r}"
    try:
        data = reader.sock.recv(65536)
    except ConnectionResetError:
        return
    assert data == b"", f"unexpected bytes after the response: {data!r}"


def fill_until(reader: ResponseReader, marker: bytes) -> None:
    """Receive into ``reader.buffer`` until ``marker`` has arrived (bounded by the timeout)."""
    while marker not in reader.buffer:
        data = reader.sock.recv(65536)
        assert data, f"connection closed before {marker!r}: {reader.buffer!r}"
        reader.buffer += data


# A raw response's status line and field lines, as the tests parse them.
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*")
FIELD_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e\x80-\xff]*)")


def response_statuses(data: bytes) -> list[int]:
    """The status of each response in ``data`` (all a server sent), checking their framing.

    A final response must be framed by Content-Length, chunked, or the close of the
    connection.  A response whose Content-Length is not followed by any bytes at all
    is accepted as the answer to a HEAD request (the method is not known here), and
    must then be the last one.
    """
    statuses: list[int] = []
    rest = data
    while rest:
        end = rest.find(b"\r\n\r\n")
        assert end >= 0, f"a response head without its empty line: {rest[:300]!r}"
        status_line, *lines = rest[:end].split(b"\r\n")
        match = STATUS_LINE.fullmatch(status_line)
        assert match is not None, f"not an HTTP/1.1 status line: {status_line!r}"
        status = int(match.group(1))
        fields: dict[bytes, bytes] = {}
        for line in lines:
            field = FIELD_LINE.fullmatch(line)
            assert field is not None, f"a malformed response field line: {line!r}"
            fields[field.group(1).lower()] = field.group(2).rstrip(b" \t")
        rest = rest[end + 4 :]
        statuses.append(status)
        if status < 200 or status in (204, 304):
            continue
        if b"transfer-encoding" in fields:
            assert fields[b"transfer-encoding"] == b"chunked", fields
            while True:
                line_end = rest.find(b"\r\n")
                assert line_end >= 0, f"a cut-off chunked response: {rest[:100]!r}"
                size = int(rest[:line_end], 16)
                rest = rest[line_end + 2 :]
                if size == 0:
                    assert rest.startswith(b"\r\n"), rest[:100]
                    rest = rest[2:]
                    break
                assert rest[size : size + 2] == b"\r\n", "a chunk without its CRLF"
                rest = rest[size + 2 :]
        elif b"content-length" in fields:
            length = int(fields[b"content-length"])
            if rest:
                assert len(rest) >= length, f"a response cut short: {rest!r}"
                rest = rest[length:]
        else:
            rest = b""
    return statuses
