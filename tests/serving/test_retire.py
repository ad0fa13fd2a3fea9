"""``WSGIServer.retire()``: a worker hands its clients over without closing one under a request.

In one process: the listeners leave the poller (another process sharing them
would get the new clients), the open keep-alive connection is served on and
its next response says ``Connection: close``, and the server stops once that
connection is gone (or after the timeout).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest

from wsgibridge import serve_in_thread
from wsgibridge._types import Environ, StartResponse
from wsgibridge.serving.server import RETIRE_SETTLE

from ..conftest import ResponseReader
from ..test_serving_processes import request


def hello(environ: Environ, start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"hi"]


def test_retire_answers_the_next_request_with_close_then_stops() -> None:
    with serve_in_thread(hello) as background:
        server = background.server
        sock = socket.create_connection((server.host, server.port), timeout=5)
        with sock:
            reader = ResponseReader(sock)
            sock.sendall(request("/"))
            first = reader.read_response()
            assert first.status == 200 and first.header("Connection") is None
            retiring = threading.Thread(target=server.retire, args=(10.0,))
            started = time.monotonic()
            retiring.start()
            time.sleep(0.1)
            assert retiring.is_alive()  # the keep-alive connection is still open
            assert not server.reactor.accepting
            sock.sendall(request("/"))  # the client did not know: still served
            second = reader.read_response()
            assert second.status == 200 and second.header("Connection") == "close"
            assert sock.recv(1) == b""
            retiring.join(5)
        assert not retiring.is_alive()
        assert time.monotonic() - started < 5
        assert server.stopping


def test_retire_stops_after_its_timeout_with_an_idle_connection() -> None:
    with serve_in_thread(hello) as background:
        server = background.server
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(request("/"))
            assert ResponseReader(sock).read_response().status == 200
            started = time.monotonic()
            server.retire(0.3)
            assert 0.25 < time.monotonic() - started < 3
            assert server.stopping
            assert sock.recv(1) == b""  # the idle connection is closed by the stop


def test_a_client_left_waiting_on_the_listener_is_taken_by_the_retiring_server() -> None:
    """No other process takes it here (as when the kernel's one wake-up for it went to
    this process just before its listeners left the poller): the retiring server
    looks once, a moment after it left the poller, and serves it with
    ``Connection: close``."""
    with serve_in_thread(hello) as background:
        server = background.server
        keep = socket.create_connection((server.host, server.port), timeout=5)
        with keep:
            keep.sendall(request("/"))
            assert ResponseReader(keep).read_response().status == 200
            retiring = threading.Thread(target=server.retire, args=(10.0,))
            retiring.start()
            deadline = time.monotonic() + 2
            while server.reactor.accepting and time.monotonic() < deadline:
                time.sleep(0.001)
            assert not server.reactor.accepting
            # Within the settle time: the client waits on the listener, nobody polls it.
            with socket.create_connection((server.host, server.port), timeout=5) as late:
                late.sendall(request("/"))
                response = ResponseReader(late).read_response()
            assert response.status == 200 and response.header("Connection") == "close"
            assert retiring.is_alive()
        retiring.join(5)
        assert not retiring.is_alive()


def test_a_retiring_server_leaves_later_clients_to_the_others_sharing_its_listener() -> None:
    """Two servers on one listener, as two workers: once the retiring one has settled it
    takes no new client, even one the other leaves waiting (here: at its connection
    limit), while it still serves its own open connection."""

    def named(name: bytes) -> Callable[[Environ, StartResponse], list[bytes]]:
        def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
            start_response("200 OK", [("Content-Length", str(len(name)))])
            return [name]

        return app

    def get(sock: socket.socket) -> bytes:
        sock.sendall(request("/"))
        return ResponseReader(sock).read_response().body

    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()
    with listener, serve_in_thread(named(b"old"), sockets=[listener]) as old:
        # Opened while the old server is alone on the listener: it is the old one's.
        keep = socket.create_connection(address, timeout=5)
        other = serve_in_thread(named(b"new"), sockets=[listener], connection_limit=1)
        with keep, other:
            assert get(keep) == b"old"
            retiring = threading.Thread(target=old.server.retire, args=(10.0,))
            retiring.start()
            time.sleep(RETIRE_SETTLE * 4)
            with socket.create_connection(address, timeout=5) as first:
                assert get(first) == b"new"  # the new server is now at its limit
                with socket.create_connection(address, timeout=5) as waiting:
                    waiting.sendall(request("/"))
                    waiting.settimeout(RETIRE_SETTLE * 6)
                    with pytest.raises(TimeoutError):
                        waiting.recv(1)  # nobody took it: the retiring server did not
                    waiting.settimeout(5)
                    first.close()  # room again: the new server takes it
                    assert ResponseReader(waiting).read_response().body == b"new"
            assert retiring.is_alive()  # its keep-alive connection is still open
            assert get(keep) == b"old"  # served on, Connection: close
        retiring.join(5)
        assert not retiring.is_alive()


def test_retire_keeps_an_idle_connection_until_its_keepalive_deadline() -> None:
    """An idle keep-alive connection of a retiring server is not closed early (say at the
    graceful timeout): a client reusing it within the keep-alive timeout is answered, with
    ``Connection: close``, rather than finding it closed (a load balancer's 502)."""
    with serve_in_thread(hello, graceful_timeout=0.3, keepalive_timeout=5.0) as background:
        server = background.server
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            reader = ResponseReader(sock)
            sock.sendall(request("/"))
            assert reader.read_response().status == 200
            retiring = threading.Thread(target=server.retire)
            retiring.start()
            time.sleep(0.8)  # idle well past the graceful timeout
            sock.sendall(request("/"))
            again = reader.read_response()
            assert again.status == 200 and again.header("Connection") == "close"
            retiring.join(5)
            assert not retiring.is_alive()
