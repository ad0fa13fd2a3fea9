"""The socket options every connection is served with, whether set per connection or
inherited from the listener, and the local address (SERVER_NAME/SERVER_PORT) it came in on.

Over real sockets on 127.0.0.1, ::1 and a Unix socket: the options are read
back from the accepted socket itself, inside the handler.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from wsgibridge import Config, WSGIRequestHandler
from wsgibridge._types import Environ, StartResponse
from wsgibridge.serving.stream import prepare_listener

from ..conftest import ResponseReader, ServerFactory, needs_ipv6, needs_unix

LINUX = sys.platform.startswith("linux")


def timeval(sock: socket.socket, option: int) -> float:
    seconds, micros = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, option, 16))
    return float(seconds + micros / 1_000_000)


class Probe(WSGIRequestHandler):
    """Records the accepted socket's options once the handler has set it up."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def setup(self) -> None:
        super().setup()
        sock = self.connection
        facts: dict[str, Any] = {"timeout": sock.gettimeout()}
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            facts["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        if LINUX:
            facts["rcvtimeo"] = timeval(sock, socket.SO_RCVTIMEO)
            facts["sndtimeo"] = timeval(sock, socket.SO_SNDTIMEO)
        type(self).seen.append(facts)


@pytest.fixture
def probe() -> Iterator[type[Probe]]:
    Probe.seen = []
    yield Probe


def where(environ: Environ, start_response: StartResponse) -> list[bytes]:
    body = f"{environ['SERVER_NAME']} {environ['SERVER_PORT']}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def ask(family: int, address: Any) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return ResponseReader(sock).read_response().body


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
def test_tcp_connections_get_nodelay_and_the_kernel_timeouts(
    serve: ServerFactory, probe: type[Probe], host: str
) -> None:
    """Each response chunk leaves at once (TCP_NODELAY), and a silent client is timed out
    by the kernel after read_timeout / write_timeout - set once on the listener on Linux,
    where accepted sockets inherit them."""
    server = serve(where, host=host, handler_class=probe, read_timeout=7.0, write_timeout=9.5)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ask(family, (host, server.port))
    (facts,) = probe.seen
    assert facts["nodelay"] == 1
    assert server.socket_options_inherited is LINUX
    if LINUX:
        assert facts["timeout"] is None  # blocking: the kernel times the reads out
        assert (facts["rcvtimeo"], facts["sndtimeo"]) == (7.0, 9.5)


@needs_unix
def test_unix_connections_get_the_kernel_timeouts_per_connection(
    serve: ServerFactory, probe: type[Probe], tmp_path: Path
) -> None:
    """A Unix socket's connections do not inherit options: the handler sets them."""
    path = tmp_path / "s.sock"
    server = serve(where, bind=[f"unix:{path}"], handler_class=probe, read_timeout=3.0)
    assert server.socket_options_inherited is False
    assert ask(socket.AF_UNIX, str(path)) == b"localhost 80"
    (facts,) = probe.seen
    if LINUX:
        assert facts["rcvtimeo"] == 3.0


def test_a_default_socket_timeout_does_not_leak_into_connections(
    serve: ServerFactory, probe: type[Probe]
) -> None:
    """socket.setdefaulttimeout() in the host program gives every accepted socket a Python
    timeout; the kernel-timed path needs them blocking."""
    server = serve(where, handler_class=probe)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(1.5)
    try:
        ask(socket.AF_INET, ("127.0.0.1", server.port))
    finally:
        socket.setdefaulttimeout(previous)
    (facts,) = probe.seen
    if LINUX:
        assert facts["timeout"] is None


def test_prepare_listener_refuses_what_connections_would_not_inherit(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        assert prepare_listener(tcp, Config()) is LINUX
        if LINUX:
            assert tcp.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    if hasattr(socket, "AF_UNIX"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
            unix.bind(str(tmp_path / "u.sock"))
            assert prepare_listener(unix, Config()) is False


@pytest.mark.parametrize(
    ("bind", "family", "connect_to", "expected"),
    [
        ("127.0.0.1", socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        ("0.0.0.0", socket.AF_INET, "127.0.0.1", "127.0.0.1"),  # any interface: asked
        pytest.param("[::1]", socket.AF_INET6, "::1", "::1", marks=needs_ipv6),
    ],
)
def test_server_name_is_the_address_the_connection_came_in_on(
    serve: ServerFactory, bind: str, family: int, connect_to: str, expected: str
) -> None:
    server = serve(where, bind=[f"{bind}:0"])
    assert ask(family, (connect_to, server.port)) == f"{expected} {server.port}".encode()
