"""The live test server's handler: serves as the stock one, or misbehaves as ``Faults`` say.

Rule: a subclass of :class:`~wsgibridge.serving.handler.WSGIRequestHandler`
through its documented hooks only (``open_input``, ``make_environ``,
``log_access``, the ``send_head``/``send_body``/``send_file`` sink,
``run_wsgi``, ``handle``), never by patching a class.  With no fault
scheduled, a request costs one attribute check more (``faults.active``);
the faults' plan is taken once, when the request head has arrived.  It also
keeps the body the app read from ``wsgi.input`` (up to a cap) for the
request log: :func:`recorded_body` hands it to the log's observer.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

from ..http.body import InputStream
from ..http.parser import RequestHead
from ..http.reader import SocketReader
from ..http.response import encode_head
from ..serving.handler import WSGIRequestHandler
from .faults import Faults, Plan

RECORD_BODY_LIMIT = 64 * 1024  # request body bytes a recorded request keeps
LAST_CHUNK = b"0\r\n\r\n"
UNFRAMED = b"bytes no framing accounts for\r\n"  # what bad_framing("long") adds
PACE_STEPS = 20  # slow_read reads in pieces of rate/PACE_STEPS bytes
PACE_MAX_PIECE = 16 * 1024

_current = threading.local()  # the body of the request being logged, for the observer


def recorded_body() -> BodyTee | None:
    """The body the app read, while the handler of this thread logs its request."""
    tee: BodyTee | None = getattr(_current, "tee", None)
    return tee


class BodyTee:
    """``wsgi.input`` as the app sees it, keeping the first ``limit`` bytes it read."""

    def __init__(self, body: InputStream, limit: int) -> None:
        self._body = body
        self._limit = limit
        self._parts: list[bytes] = []
        self._kept = 0
        self.truncated = False  # the app read more than ``limit`` bytes

    @property
    def data(self) -> bytes:
        return b"".join(self._parts)

    def _keep(self, data: bytes) -> bytes:
        room = self._limit - self._kept
        if len(data) > room:
            self.truncated = True
            if room > 0:
                self._parts.append(data[:room])
                self._kept = self._limit
        elif data:
            self._parts.append(data)
            self._kept += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._keep(self._body.read(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._keep(self._body.readline(size))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return [self._keep(line) for line in self._body.readlines(hint)]

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def close(self) -> None:
        self._body.close()


class PacedReader:
    """The connection's reader as a request body sees it under ``slow_read`` / ``stop_reading``."""

    def __init__(self, rfile: SocketReader, faults: Faults, plan: Plan) -> None:
        self._rfile = rfile
        self._faults = faults
        self._rate = plan.read_rate
        self._hold = plan.stop_reading
        self._ended = False

    def _held(self) -> bool:
        """True once ``stop_reading`` has held the body: it then ends as if the client left."""
        if self._hold is not None:
            self._faults.sleep(self._hold)
            self._hold = None
            self._ended = True
        return self._ended

    def read(self, size: int | None = -1, /) -> bytes:
        if self._held():
            return b""
        rate = self._rate
        if rate is None or size is None or size < 0:
            return self._rfile.read(size)
        piece = max(1, min(PACE_MAX_PIECE, rate // PACE_STEPS))
        parts = []
        left = size
        while left > 0:
            wanted = min(piece, left)
            data = self._rfile.read(wanted)
            parts.append(data)
            left -= len(data)
            if len(data) < wanted:
                break  # the client closed: the body stream reports it
            if not self._faults.sleep(len(data) / rate):
                self._rate = None  # cleared: the rest at once
                if left:
                    parts.append(self._rfile.read(left))
                break
        return b"".join(parts)

    def readline(self, size: int | None = -1, /) -> bytes:
        if self._held():
            return b""
        return self._rfile.readline(size)


class FaultyHandler(WSGIRequestHandler):
    """A handler that injects its class's ``faults`` and records request bodies.

    Made per server by :func:`handler_for`.
    """

    faults: ClassVar[Faults]
    record_body_limit: ClassVar[int] = RECORD_BODY_LIMIT

    def setup(self) -> None:
        super().setup()
        self._fresh = True  # not yet served: refuse_connections may reset it
        self._plan: Plan | None = None
        self._tee: BodyTee | None = None
        self._sent = 0  # response bytes out (cut_after counts them)
        self._body_started = False
        self._chunked = False  # the writer frames this response in chunks
        self._reframe = False  # bad-chunk on a Content-Length response: framed here

    # -- the connection ---------------------------------------------------------------

    def handle(self) -> None:
        if self._fresh:
            self._fresh = False
            faults = self.faults
            if faults.active and faults.refuse():
                # SO_LINGER with a zero timeout: close() sends a RST, not a FIN.
                linger = struct.pack("ii", 1, 0)
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.close_connection = True
                return
        super().handle()

    def handle_one_request(self) -> None:
        self._plan = None
        self._tee = None
        super().handle_one_request()

    # -- the request ----------------------------------------------------------------

    def open_input(self, head: RequestHead) -> InputStream:
        faults = self.faults
        if not faults.active:
            return super().open_input(head)
        plan = self._plan = faults.plan(head.target.partition("?")[0])
        if plan is None:
            return super().open_input(head)
        self._sent = 0
        self._body_started = self._chunked = self._reframe = False
        if plan.read_rate is None and plan.stop_reading is None:
            return super().open_input(head)
        # The body streams read from ``self.rfile``: they are made over the
        # paced reader; the handler's own reads (the next head) are not paced.
        rfile = self.rfile
        self.rfile = PacedReader(rfile, faults, plan)  # type: ignore[assignment]
        try:
            return super().open_input(head)
        finally:
            self.rfile = rfile

    def make_environ(self, head: RequestHead, body: InputStream) -> dict[str, Any]:
        environ = super().make_environ(head, body)
        limit = self.record_body_limit
        if limit and (head.chunked or head.content_length):
            environ["wsgi.input"] = self._tee = BodyTee(body, limit)
        return environ

    def log_access(self) -> None:
        tee = self._tee
        if tee is None:
            super().log_access()
            return
        _current.tee = tee
        try:
            super().log_access()
        finally:
            _current.tee = None

    def run_wsgi(self, head: RequestHead, body: InputStream) -> None:
        super().run_wsgi(head, body)
        plan = self._plan
        if plan is None or plan.framing is None:
            return
        writer = self.exchange.writer
        if writer is None or writer.client_gone:
            return
        try:
            if plan.framing == "long":
                self._out(UNFRAMED)  # the connection stays as it was: the next response follows
                return
            if self._reframe:
                self._out(LAST_CHUNK)
        except OSError:
            pass
        # The client is left waiting for bytes that never come: end it.
        self.close_connection = True
        self.linger_on_close = True

    # -- the response (the ResponseSink) ------------------------------------------------

    def send_head(
        self, status_code: int, reason: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        plan = self._plan
        if plan is None:
            super().send_head(status_code, reason, headers, body)
            return
        if self.request_id_header:  # as the stock send_head does
            self.echo_request_id(headers)
        if plan.delay_response:
            self.faults.sleep(plan.delay_response)
        self._chunked = any(name.lower() == "transfer-encoding" for name, _ in headers)
        framing = plan.framing
        if framing == "short":
            # One byte more announced than sent (a chunked body loses its last chunk).
            headers = [
                (name, str(int(value) + 1)) if name.lower() == "content-length" else (name, value)
                for name, value in headers
            ]
        elif framing == "bad-chunk" and not self._chunked:
            headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
            headers.append(("Transfer-Encoding", "chunked"))
            self._reframe = True
        head = encode_head(self.protocol_version, status_code, reason, headers)
        if plan.status_line is not None:
            head = plan.status_line + head[head.index(b"\r\n") :]
        self._out(head)
        if body:
            self._body_out(plan, body)

    def send_body(self, data: bytes) -> None:
        plan = self._plan
        if plan is None:
            self._send(data)
        else:
            self._body_out(plan, data)

    def send_file(self, file: Any, offset: int, count: int) -> int:
        plan = self._plan
        if plan is None:
            return super().send_file(file, offset, count)
        file.seek(offset)
        data = file.read(count)
        self._body_out(plan, data)
        return len(data)

    def _body_out(self, plan: Plan, data: bytes) -> None:
        framing = plan.framing
        if not self._body_started:
            self._body_started = True
            if plan.delay_first_byte:
                self.faults.sleep(plan.delay_first_byte)
            if framing == "bad-chunk":
                # RFC 9112 §7.1: chunk-size = 1*HEXDIG; "zz" is none.
                if self._reframe:
                    data = b"zz\r\n" + data + b"\r\n"
                else:
                    data = b"zz" + data[data.index(b"\r\n") :]
                self._out(data)
                return
        if self._reframe:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        elif framing == "short" and self._chunked and data == LAST_CHUNK:
            return
        self._out(data)

    def _out(self, data: bytes) -> None:
        """Send ``data``, or as much of it as ``cut_after`` allows, then cut."""
        plan = self._plan
        limit = plan.cut_after if plan is not None else None
        if limit is not None and self._sent + len(data) > limit:
            room = limit - self._sent
            if room > 0:
                self._send(data[:room])
            self._sent = limit
            sock = self.connection
            if plan is not None and plan.cut_reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            raise BrokenPipeError("cut_after: the fault closed the connection")
        self._sent += len(data)
        self._send(data)


def handler_for(faults: Faults, record_body_limit: int = RECORD_BODY_LIMIT) -> type[FaultyHandler]:
    """A :class:`FaultyHandler` class bound to one server's ``faults``."""
    if record_body_limit < 0:
        raise ValueError("record_body_limit is a number of bytes (0: keep no bodies)")
    return type(
        "FaultyHandler",
        (FaultyHandler,),
        {"faults": faults, "record_body_limit": record_body_limit},
    )
