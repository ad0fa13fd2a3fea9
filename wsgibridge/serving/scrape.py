"""The metrics listener: ``GET /metrics`` on sockets of its own, never the app's.

Rule: :class:`MetricsEndpoint` owns the ``metrics_bind`` listening sockets
and the scrapes in progress, and never blocks on a client: whoever runs it
polls :meth:`~MetricsEndpoint.fds` and calls :meth:`~MetricsEndpoint.ready`
with the readable ones and :meth:`~MetricsEndpoint.expire` when
:meth:`~MetricsEndpoint.timeout` says.  An embedded server runs it in a
thread of its own (:class:`MetricsThread`); the ``--workers`` arbiter, which
must start no thread (it forks), polls it in its own loop.

Each connection carries one request, parsed by the server's own parser
within small bounds (a 1 KiB request line, 8 KiB of fields, ``SCRAPE_TIMEOUT``
seconds for the whole request), and gets one answer with ``Connection:
close``: the figures for ``GET``/``HEAD /metrics`` (a query is ignored), 404
for any other path, 405 with ``Allow`` for any other method, the parser's
4xx for a malformed head.  RFC 9110 §15.5.6: "The origin server MUST
generate an Allow header field in a 405 response containing a list of the
target resource's currently supported methods."  The request body, if any,
is never read.  At most ``MAX_SCRAPES`` connections are open at once; more
are closed at once.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus

from ..config import Config
from ..errors import HTTPError
from ..http.parser import Limits, find_head_end, parse_head
from ..http.response import encode_head, error_response, http_date
from ..metrics import CONTENT_TYPE
from .binds import parse_bind
from .listen import close_listener, listener_address, open_bind
from .readiness import Waker

__all__ = ["MetricsEndpoint", "MetricsThread", "open_metrics_listeners"]

log = logging.getLogger("wsgibridge.server")

METRICS_PATH = "/metrics"
# How long a scraper has to send its whole request, and to take the answer.
SCRAPE_TIMEOUT = 5.0
SEND_TIMEOUT = 2.0
# Scrapes served at once; a request head's bounds.
MAX_SCRAPES = 16
LIMITS = Limits(max_request_line=1024, max_header_count=64, max_header_bytes=8 * 1024)
READ_SIZE = 16 * 1024


def open_metrics_listeners(config: Config) -> list[socket.socket]:
    """The listening sockets for ``config.metrics_bind`` (the same syntax as ``bind``)."""
    listeners: list[socket.socket] = []
    try:
        for spec in config.metrics_bind:
            opened = open_bind(parse_bind(spec), backlog=64, unix_mode=config.unix_socket_mode)
            listeners.extend(opened)
    except BaseException:
        for listener in listeners:
            close_listener(listener)
        raise
    return listeners


class _Scrape:
    __slots__ = ("buffer", "deadline", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.deadline = time.monotonic() + SCRAPE_TIMEOUT


class MetricsEndpoint:
    """The metrics listeners and the scrapes in progress; ``render`` makes the body."""

    def __init__(self, listeners: Iterable[socket.socket], render: Callable[[], str]) -> None:
        self.listeners = {listener.fileno(): listener for listener in listeners}
        for listener in self.listeners.values():
            listener.setblocking(False)
        # Remembered now: true after the listeners close.
        self.addresses = [listener_address(listener) for listener in self.listeners.values()]
        self.render = render
        self._scrapes: dict[int, _Scrape] = {}
        self._body: bytes | None = None  # the figures rendered in this round of ready()

    def fds(self) -> list[int]:
        """The descriptors to wait on for reading."""
        return [*self.listeners, *self._scrapes]

    def timeout(self) -> float | None:
        """Seconds until the next scrape's deadline (None: none in progress)."""
        if not self._scrapes:
            return None
        soonest = min(scrape.deadline for scrape in self._scrapes.values())
        return max(soonest - time.monotonic(), 0.0)

    def ready(self, readable: Iterable[int]) -> None:
        """These of :meth:`fds` are readable: read (perhaps answer) the scrapes, then accept.

        In that order, so that a scraper who left makes room for a new one.
        """
        fds = list(readable)
        # One rendering for all the scrapes answered in this round: under the
        # arbiter a rendering can wait up to a second for a late worker, and
        # scrapes that came meanwhile must not wait a second each.
        self._body = None
        try:
            for fd in fds:
                scrape = self._scrapes.get(fd)
                if scrape is not None:
                    self._read(scrape)
            for fd in fds:
                listener = self.listeners.get(fd)
                if listener is not None:
                    self._accept(listener)
        finally:
            self._body = None

    def expire(self) -> None:
        """Close the scrapes whose client did not send a whole request in time."""
        now = time.monotonic()
        for scrape in list(self._scrapes.values()):
            if scrape.deadline <= now:
                self._finish(scrape, self._error(408, "the request was not complete in time"))

    def close(self) -> None:
        """Close the listeners (a Unix socket file we created is removed) and every scrape."""
        for scrape in list(self._scrapes.values()):
            self._drop(scrape)
        listeners, self.listeners = self.listeners, {}
        for listener in listeners.values():
            try:
                close_listener(listener)
            except OSError:
                pass

    # -- one scrape ------------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except OSError:
            return  # nobody there after all (or out of descriptors: the next try)
        if len(self._scrapes) >= MAX_SCRAPES:
            sock.close()
            return
        sock.setblocking(False)
        scrape = _Scrape(sock)
        self._scrapes[sock.fileno()] = scrape
        self._read(scrape)

    def _read(self, scrape: _Scrape) -> None:
        try:
            data = scrape.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(scrape)
            return
        if not data:
            self._drop(scrape)  # gone before its request was whole
            return
        scrape.buffer += data
        try:
            end = find_head_end(scrape.buffer, LIMITS)
            if end < 0:
                return
            head = parse_head(scrape.buffer[:end], LIMITS)
        except HTTPError as exc:
            self._finish(scrape, self._error(exc.status.value, str(exc)))
            return
        self._finish(scrape, self._answer(head.method, head.target))

    def _answer(self, method: str, target: str) -> bytes:
        # RFC 9110 §9.3.2: "The server SHOULD send the same header fields in
        # response to a HEAD request as it would have sent if the request method
        # had been GET" - and no content.
        bare = method == "HEAD"
        if method not in ("GET", "HEAD"):
            allow = [("Allow", "GET, HEAD")]
            return self._error(405, "the metrics are read with GET", allow)
        if target.partition("?")[0] != METRICS_PATH:
            return self._error(404, f"the metrics are at {METRICS_PATH}", head_only=bare)
        body = self._body
        if body is None:
            try:
                body = self._body = self.render().encode("utf-8")
            except Exception:
                log.exception("cannot render the metrics")
                return self._error(500, head_only=bare)
        headers = [
            ("Content-Type", CONTENT_TYPE),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Connection", "close"),
            ("Date", http_date()),
        ]
        head = encode_head("HTTP/1.1", 200, "OK", headers)
        return head if bare else head + body

    @staticmethod
    def _error(
        code: int,
        message: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        *,
        head_only: bool = False,
    ) -> bytes:
        headers, body = error_response(code, message, extra)
        head = encode_head("HTTP/1.1", code, HTTPStatus(code).phrase, headers)
        return head if head_only else head + body

    def _finish(self, scrape: _Scrape, response: bytes) -> None:
        """Send the whole answer (bounded: ``SEND_TIMEOUT``) and close."""
        sock = scrape.sock
        try:
            sock.settimeout(SEND_TIMEOUT)
            sock.sendall(response)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._drop(scrape)

    def _drop(self, scrape: _Scrape) -> None:
        self._scrapes.pop(scrape.sock.fileno(), None)
        try:
            scrape.sock.close()
        except OSError:
            pass


def wait_readable(fds: list[int], timeout: float | None) -> list[int]:
    """Those of ``fds`` that are readable (or closed by the peer) within ``timeout`` seconds.

    ``poll``, not ``select``: in a server with thousands of connections a
    scraper's socket may well be past ``select``'s FD_SETSIZE (1024).
    """
    if not hasattr(select, "poll"):
        return select.select(fds, [], [], timeout)[0]
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    millis = None if timeout is None else max(math.ceil(timeout * 1000), 0)
    return [fd for fd, _ in poller.poll(millis)]


class MetricsThread:
    """Serves a :class:`MetricsEndpoint` in a thread of its own until :meth:`stop`."""

    def __init__(self, endpoint: MetricsEndpoint) -> None:
        self.endpoint = endpoint
        self._waker = Waker()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="wsgibridge-metrics", daemon=True)

    @property
    def started(self) -> bool:
        return self._thread.ident is not None

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        endpoint = self.endpoint
        wake_fd = self._waker.fileno()
        while not self._stopped:
            try:
                readable = wait_readable([wake_fd, *endpoint.fds()], endpoint.timeout())
            except (OSError, ValueError):
                break  # closed under us: stopping
            if wake_fd in readable:
                self._waker.drain()
            if not self._stopped:
                try:
                    endpoint.ready(readable)
                except Exception:
                    log.exception("unexpected error serving the metrics")
            endpoint.expire()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread, wait for it, then close the endpoint and the waker."""
        self._stopped = True
        self._waker.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.endpoint.close()
        self._waker.close()
