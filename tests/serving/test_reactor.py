"""New connections: who accepts them, and how accepting pauses and resumes.

On Linux the listeners sit in the workers' epoll and the waiting worker
accepts and serves the first request itself; without epoll the reactor
accepts and parks.  Either way a server out of descriptors pauses accepting
for a moment instead of spinning, and then serves the client that waited.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from typing import Any

import pytest

from wsgibridge import make_server
from wsgibridge.serving.readiness import HAS_EPOLL

from ..conftest import Records, ResponseReader, connect, logging_to, serving, simple_app

CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.fixture(params=["epoll", "poll"])
def use_epoll(request: pytest.FixtureRequest) -> bool:
    if request.param == "epoll" and not HAS_EPOLL:
        pytest.skip("no epoll on this system")
    return bool(request.param == "epoll")


class Calls:
    """Wraps ``obj.name`` (an instance attribute from now on) and counts its calls."""

    def __init__(self, obj: Any, name: str) -> None:
        self.count = 0
        self.results: list[Any] = []
        original = getattr(obj, name)

        def counted(*args: Any) -> Any:
            self.count += 1
            result = original(*args)
            self.results.append(result)
            return result

        setattr(obj, name, counted)


@pytest.mark.skipif(not HAS_EPOLL, reason="the workers accept only where they wait on epoll")
def test_the_waiting_worker_accepts_and_serves_the_first_request_itself() -> None:
    """A request already sent when the connection is accepted is served by the accepting
    worker at once: the reactor never accepts, and nothing is parked or timed."""
    server = make_server(simple_app(), "127.0.0.1", 0, read_timeout=5.0, write_timeout=5.0)
    reactor_accepts = Calls(server.reactor, "_accept")
    worker_accepts = Calls(server.reactor, "accept")
    timers = Calls(server.reactor, "add_timer")
    # Connected and sent before the server runs: the kernel holds both until the accept.
    with connect(server) as sock:
        sock.sendall(CLOSE_REQUEST)
        with serving(server):
            response = ResponseReader(sock).read_response()
            assert response.status == 200
            assert sock.recv(1) == b""  # Connection: close
    assert reactor_accepts.count == 0
    assert [conn is not None for conn in worker_accepts.results].count(True) == 1
    assert timers.count == 0  # never parked: no header deadline was needed


def test_a_client_that_connects_then_waits_is_served_when_it_sends(use_epoll: bool) -> None:
    """A connection accepted before its request arrived is parked, holding no thread: the
    only worker serves another client meanwhile, then this one when its bytes come."""
    server = make_server(simple_app(), "127.0.0.1", 0, threads=1, use_epoll=use_epoll)
    with serving(server), connect(server) as quiet:
        with connect(server) as other:
            other.sendall(CLOSE_REQUEST)
            assert ResponseReader(other).read_response().status == 200
        quiet.sendall(CLOSE_REQUEST)
        assert ResponseReader(quiet).read_response().status == 200


class OutOfDescriptors:
    """A listener whose first ``accept`` fails as a process out of descriptors would."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.failures = 0

    def accept(self) -> tuple[socket.socket, Any]:
        if not self.failures:
            self.failures += 1
            raise OSError(errno.EMFILE, "Too many open files")
        return self.listener.accept()

    def fileno(self) -> int:
        return self.listener.fileno()

    def close(self) -> None:
        self.listener.close()


def test_out_of_descriptors_pauses_accepting_then_serves_the_client(
    use_epoll: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """EMFILE on accept: one warning, accepting pauses (the listener stays readable, so
    going on would spin), resumes after the pause, and the waiting client is served."""
    server = make_server(simple_app(), "127.0.0.1", 0, use_epoll=use_epoll)
    fds = server.reactor._listener_fds
    (fd,) = fds
    failing = OutOfDescriptors(fds[fd])
    fds[fd] = failing  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, "wsgibridge.server"), serving(server):
        with connect(server) as sock:
            sock.sendall(CLOSE_REQUEST)
            assert ResponseReader(sock).read_response().status == 200
        with connect(server) as sock:
            sock.sendall(CLOSE_REQUEST)
            assert ResponseReader(sock).read_response().status == 200
    assert failing.failures == 1
    pauses = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(pauses) == 1 and "pausing" in pauses[0].getMessage()


def test_call_soon_runs_in_the_loop_thread_and_survives_a_failing_call(
    use_epoll: bool,
) -> None:
    """What a signal handler hands over (``call_soon``) runs in the reactor's thread; a
    call that raises is logged and the next one still runs, and the server serves on."""
    server = make_server(
        simple_app(), "127.0.0.1", 0, read_timeout=5.0, write_timeout=5.0, use_epoll=use_epoll
    )
    ran: list[int] = []
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    def record() -> None:
        ran.append(threading.get_ident())
        done.set()

    with serving(server), logging_to("wsgibridge.server", Records(logging.ERROR)) as errors:
        assert server.serving.wait(5)
        server.reactor.call_soon(fail)
        server.reactor.call_soon(record)
        assert done.wait(5)
        assert ran == [server.reactor.loop_thread]
        with connect(server) as sock:
            sock.sendall(CLOSE_REQUEST)
            assert ResponseReader(sock).read_response().status == 200
    assert [r.getMessage() for r in errors.records] == [
        "unexpected error in a call the reactor was handed"
    ]
