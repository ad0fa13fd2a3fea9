"""One request and its response as the handler serves it: a fresh ``Exchange`` per request.

Rule: what belongs to one request - its head, body stream, environ, the
writer that answers it, what was sent, when it began - lives here, so the
handler keeps only the connection's state and nothing of a request can leak
into the next.  The access record of the request is made from it.
"""

from __future__ import annotations

import time
from typing import Any

from ..accesslog import AccessRecord
from ..http.body import InputStream
from ..http.parser import RequestHead
from ..http.response import ResponseWriter


class Exchange:
    """The state of one request on a connection, from its first byte to its access line."""

    __slots__ = (
        "body",
        "body_bytes",
        "content_length",
        "environ",
        "error_headers",
        "head",
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
        environ = self.environ
        head = self.head
        if environ is not None:
            client, remote_port = environ["REMOTE_ADDR"], environ["REMOTE_PORT"]
        elif isinstance(client_address, tuple):
            client, remote_port = str(client_address[0]), str(client_address[1])
        else:
            client, remote_port = "unix", ""
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
        )
