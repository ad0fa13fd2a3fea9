"""One request and its response as the handler serves it: a fresh ``Exchange`` per request.

Rule: what belongs to one request - its head, body stream, environ, the
writer that answers it, what was sent, when it began - lives here, so the
handler keeps only the connection's state and nothing of a request can leak
into the next.  The access record of the request is made from it, and
:class:`ExchangeLogging` (the handler's logging half) writes it, and counts
it in the server's metrics when it has some.

Through ``logging`` (a program's own handler on ``wsgibridge.access``), each
access ``LogRecord`` carries the request's fields in one attribute,
``access``: the dict of the JSON line's keys and values
(:meth:`~wsgibridge.accesslog.AccessLogFormat.json_object`, whatever the
format; ``--access-log-fields`` chooses the keys), so a JSON formatter of the
program's own has them without parsing the message.  One attribute with a
name no ``LogRecord`` has, so no key (``"i:Name"``, ``"time"``) can clash with
``LogRecord``'s own attributes (``msg``, ``args``, ``process`` ...).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from ..accesslog import AccessLogFormat, AccessRecord, default_line, escape_log, json_text
from ..config import Config
from ..errors import HTTPError
from ..http.body import InputStream
from ..http.parser import RequestHead
from ..http.response import ResponseWriter
from .accesssink import direct_sink
from .metrics import ServerMetrics

access_log = logging.getLogger("wsgibridge.access")
error_log = logging.getLogger("wsgibridge.error")

# The LogRecord attribute with the request's fields (the JSON line's object).
ACCESS_ATTRIBUTE = "access"


class Exchange:
    """The state of one request on a connection, from its first byte to its access line."""

    __slots__ = (
        "body",
        "body_bytes",
        "content_length",
        "environ",
        "error_headers",
        "head",
        "request_id",
        "started",
        "status_code",
        "unlogged",
        "writer",
    )

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.head: RequestHead | None = None
        self.body: InputStream | None = None
        self.content_length: str | None = None  # the validated length to publish
        self.environ: dict[str, Any] | None = None
        self.writer: ResponseWriter | None = None
        self.status_code = 0
        self.body_bytes = 0  # body bytes that went out
        self.error_headers: list[tuple[str, str]] = []  # a refusal's fields
        self.request_id = ""  # with --request-id-header: set before the response goes out
        # One token until the access line is written: taken (list.pop, atomic)
        # by whoever writes it - the worker when the request ends, or the
        # stopping thread for a request cut off in the app.
        self.unlogged = [True]

    def claim_log(self) -> bool:
        """True for the one caller that is to write this request's access line."""
        try:
            self.unlogged.pop()
        except IndexError:
            return False
        return True

    def record(
        self, client_address: Any, request_line: str, method: str, protocol: str
    ) -> AccessRecord:
        """What is known about the request (raw, unescaped), for the log and observers."""
        head = self.head
        client, remote_port = self._client(client_address)
        path, _, query = head.target.partition("?") if head is not None else ("", "", "")
        writer = self.writer
        body = self.body
        return AccessRecord(
            client=client,
            remote_port=remote_port,
            request_line=request_line,
            method=method,
            path=path,
            query=query,
            protocol=protocol if head is not None else "",
            status=self.status_code,
            bytes_sent=self.body_bytes,
            duration=time.perf_counter() - self.started,
            request_headers=head.headers if head is not None else (),
            response_headers=writer.sent_headers if writer is not None else self.error_headers,
            timestamp=time.time(),
            bytes_received=body.received if body is not None else 0,
            request_id=self.request_id,
        )

    def default_line(self, client_address: Any, request_line: str) -> str:
        """The request's line in the default access-log format, without a record."""
        return default_line(
            self._client(client_address)[0],
            time.time(),
            request_line,
            self.status_code,
            self.body_bytes,
            time.perf_counter() - self.started,
        )

    def _client(self, client_address: Any) -> tuple[str, str]:
        """(client, port): REMOTE_ADDR/REMOTE_PORT (after proxy rewriting) once there is an
        environ, else the peer's address."""
        environ = self.environ
        if environ is not None:
            return environ["REMOTE_ADDR"], environ["REMOTE_PORT"]
        if isinstance(client_address, tuple):
            return str(client_address[0]), str(client_address[1])
        return "unix", ""


class LoggingServer(Protocol):
    """What access logging needs of the server."""

    config: Config
    access_format: AccessLogFormat
    observers: list[Any]
    metrics: ServerMetrics | None


class ExchangeLogging:
    """The handler's logging half: the access line and observers after each request, and
    http.server's logging methods sent to the ``wsgibridge`` loggers, escaped (a mixin)."""

    exchange: Exchange
    server: LoggingServer  # the handler's ServerContext is one
    client_address: Any
    requestline: str
    command: str
    request_version: str

    def describe_request(self) -> str:
        """``"GET / HTTP/1.1" from 127.0.0.1:5000`` for log messages (escaped)."""
        return f'"{escape_log(self.requestline)}" from {self.address_string()}'

    def address_string(self) -> str:
        peer = self.client_address
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer) or "unix"

    def log_access(self) -> None:
        """After each response: the access log line, and the server's request observers."""
        exchange = self.exchange
        if exchange.claim_log():  # else written already (the stop cut the request off)
            self._write_access()

    def log_cut_off(self) -> bool:
        """The access line of a request the stop cut off in the app (from the stopping thread).

        Status and bytes are what actually went out (status 0: none did).
        False when there is no such request or its line was written already.
        """
        exchange = self.exchange
        if exchange.head is None or not exchange.claim_log():
            return False
        writer = exchange.writer
        sent = writer is not None and writer.headers_sent
        exchange.status_code = writer.status_code if writer is not None and sent else 0
        exchange.body_bytes = writer.body_bytes if writer is not None else 0
        error_log.warning(
            "%s: cut off by the stop after %d body bytes",
            self.describe_request(),
            exchange.body_bytes,
        )
        self._write_access()
        return True

    def _write_access(self) -> None:
        server = self.server
        metrics = server.metrics
        if metrics is not None:
            exchange = self.exchange
            body = exchange.body
            metrics.request(
                self.command,
                exchange.status_code,
                time.perf_counter() - exchange.started,
                exchange.body_bytes,
                body.received if body is not None else 0,
            )
            if body is not None and isinstance(body.failed, HTTPError):
                # Refused mid-body, while the app read it (chunked past the limit …).
                metrics.refused(str(body.failed.status.value))
        observers = server.observers
        sink = None
        logging_on = False
        if server.config.access_log:
            # Straight to the sink while it is the logger's only handler (the
            # CLI's and serve()'s set-up); else a LogRecord, as logging wants.
            sink = direct_sink(access_log)
            logging_on = sink is None and access_log.isEnabledFor(logging.INFO)
        if sink is None and not logging_on and not observers:
            return
        if (
            sink is not None
            and not observers
            and server.access_format.is_default
            and type(self).access_record is ExchangeLogging.access_record
        ):
            # The default line straight from the request's facts: no record.
            sink.write_line(self.exchange.default_line(self.client_address, self.requestline))
            return
        record = self.access_record()  # a hook: a subclass may add to the record
        access_format = server.access_format
        if sink is not None:
            sink.write_line(access_format.render(record))
        elif logging_on:
            fields = access_format.json_object(record)
            line = json_text(fields) if access_format.is_json else access_format.render(record)
            access_log.info("%s", line, extra={ACCESS_ATTRIBUTE: fields})
        for observer in observers:
            observer(record)

    def access_record(self) -> AccessRecord:
        """What is known about the request just answered (raw, unescaped)."""
        return self.exchange.record(
            self.client_address, self.requestline, self.command, self.request_version
        )

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Replaced by :meth:`log_access`, which runs after the response."""

    def log_message(self, format: str, *args: Any) -> None:
        error_log.info("%s: %s", self.address_string(), escape_log(format % args))

    def log_error(self, format: str, *args: Any) -> None:
        error_log.warning("%s: %s", self.address_string(), escape_log(format % args))
