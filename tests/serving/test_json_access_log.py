"""``--access-log-format json`` over real sockets: hostile requests, one parseable line each.

A live server on 127.0.0.1 writes its access log to a file, as the command line
does; the requests are raw bytes (clients refuse to send most of these) with
quotes, backslashes, braces, JSON fragments, control bytes, 8-bit bytes and
invalid UTF-8 in the target, the method, the headers, the User-Agent and the
request id.  Afterwards every line of the file must be one JSON object, pure
ASCII, with the values that were sent (Latin-1 text, so the bytes come back with
``.encode("latin-1")``); refused requests have their line too, and nothing a
client sent adds a line or a key.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from wsgibridge._types import Environ, StartResponse
from wsgibridge.accesslog import JSON_FIELD_NAMES
from wsgibridge.serving.accesssink import open_sink

from ..conftest import ServerFactory, connect, recv_all

EXTRA_FIELDS = ("request", "remote_port", "i:X-Hostile", "o:X-Echo")
NEW_ID = re.compile(r"[0-9a-f]{32}")


def echo_app(environ: Environ, start_response: StartResponse) -> list[bytes]:
    """200 with the X-Hostile header sent back as X-Echo (a response field the log reads)."""
    start_response("200 OK", [("X-Echo", environ.get("HTTP_X_HOSTILE", "none"))])
    return [b"ok"]


@dataclass
class Case:
    """One request as bytes, and what its access line must say."""

    request_line: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    status: int = 200

    def raw(self) -> bytes:
        fields = b"".join(name + b": " + value + b"\r\n" for name, value in self.headers)
        return self.request_line + b"\r\nHost: t\r\nConnection: close\r\n" + fields + b"\r\n"

    def header(self, name: bytes) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return b", ".join(values).decode("latin-1") if values else None


JSON_INJECTION = b'"}, "status": 999, "request_id": "forged", "x": {"'
CASES = [
    Case(b"GET / HTTP/1.1"),
    Case(b'GET /a"b\\c/{"k":1}/%22%5C%00?q="x"&y=\\"},{ HTTP/1.1'),
    Case(b"GET /" + JSON_INJECTION.replace(b" ", b"") + b" HTTP/1.1"),
    Case(b"GET /\\u0000/\\n/\\x1b HTTP/1.1"),  # escape sequences as text, not as bytes
    Case(
        b"GET /ua HTTP/1.1",
        [
            (b"User-Agent", JSON_INJECTION + b' \\ \\\\ \\" \t tab'),
            (b"Referer", b"http://x/\xc3\x28\xff\xfe\xe2\x80\xa8\x85"),  # invalid UTF-8, C1
            (b"X-Hostile", b"\\u000a\\r\\n end"),
        ],
    ),
    Case(b"GET /utf8 HTTP/1.1", [(b"User-Agent", "caf\u00e9 \u2603".encode())]),
    Case(
        b"GET /ids HTTP/1.1",
        [(b"X-Request-ID", b'kept"\\{}'), (b"User-Agent", b"a"), (b"user-agent", b"b")],
    ),
    Case(b"GET /long HTTP/1.1", [(b"X-Hostile", b'"\\' * 3000)]),
    Case(b"PURGE~!' /method HTTP/1.0"),
    # Refused: the app is not called, the line still comes (status 400).
    Case(b"GET /ctl\x01line HTTP/1.1", status=400),
    Case(b"GET /caf\xc3\x28/\xff HTTP/1.1", status=400),
    Case(b"GET /ctl-header HTTP/1.1", [(b"User-Agent", b"a\x01b")], status=400),
    Case(b"GET /nul-header HTTP/1.1", [(b"X-Hostile", b"a\x00b")], status=400),
    Case(b"GET /lf HTTP/1.1", [(b"User-Agent", b"a\nX-Injected: 1")], status=400),
    Case(b'M"X / HTTP/1.1', status=400),
]


@pytest.fixture
def access_file(tmp_path: Path, access_logger: logging.Logger) -> Path:
    path = tmp_path / "access.log"
    access_logger.handlers[:] = [open_sink(str(path))]
    return path


def test_every_line_of_a_hostile_run_is_json_with_the_values_sent(
    serve: ServerFactory, access_file: Path
) -> None:
    server = serve(
        echo_app,
        access_log_format="json",
        access_log_fields=EXTRA_FIELDS,
        request_id_header="X-Request-ID",
    )
    statuses = []
    for case in CASES:
        with connect(server) as sock:
            sock.sendall(case.raw())
            answer = recv_all(sock)
        statuses.append(int(answer.split(b" ", 2)[1]))
    assert statuses == [case.status for case in CASES]
    assert b"200 OK" in _get(server)  # and the server answers the next client
    server.server_close()  # every line written

    text = access_file.read_text(encoding="utf-8")
    assert text.isascii()
    lines = text.splitlines()
    assert len(lines) == len(CASES) + 1  # no client byte made a line of its own
    by_request: dict[str, dict[str, Any]] = {}
    for line in lines:
        assert line.isprintable(), line  # no control character at all
        obj = json.loads(line)
        assert tuple(obj) == (*JSON_FIELD_NAMES, *EXTRA_FIELDS)  # no key added
        by_request[obj["request"]] = obj
    for case in CASES:
        request_line = case.request_line.decode("latin-1")
        obj = by_request[request_line]
        assert obj["request"].encode("latin-1") == case.request_line
        assert obj["status"] == case.status
        assert obj["client"] == "127.0.0.1" and isinstance(obj["remote_port"], int)
        assert obj["pid"] == os.getpid() and obj["duration_us"] >= 0
        assert obj["time"].endswith("Z") and len(obj["time"]) == len("2026-12-04T03:00:00.123Z")
        if case.status != 200:
            # Refused before (or while) its head was read: a new id, no fields.
            assert NEW_ID.fullmatch(obj["request_id"])
            assert obj["bytes_in"] == 0
            continue
        method, target, protocol = request_line.split(" ")
        path, _, query = target.partition("?")
        assert (obj["method"], obj["path"], obj["query"], obj["protocol"]) == (
            method,
            path,
            query,
            protocol,
        )
        assert obj["bytes"] == 2 and obj["bytes_in"] == 0
        assert obj["user_agent"] == case.header(b"User-Agent")
        assert obj["referer"] == case.header(b"Referer")
        assert obj["i:X-Hostile"] == case.header(b"X-Hostile")
        assert obj["o:X-Echo"] == (case.header(b"X-Hostile") or "none")
        sent_id = case.header(b"X-Request-ID")
        if sent_id is not None:
            assert obj["request_id"] == sent_id  # from a trusted peer, well formed
        else:
            assert NEW_ID.fullmatch(obj["request_id"])
    # The wire's bytes come back exactly from the JSON strings.
    hostile = by_request["GET /ua HTTP/1.1"]
    assert hostile["referer"].encode("latin-1") == b"http://x/\xc3\x28\xff\xfe\xe2\x80\xa8\x85"
    assert by_request["GET /utf8 HTTP/1.1"]["user_agent"].encode("latin-1").decode() == (
        "caf\u00e9 \u2603"
    )


def _get(server: Any) -> bytes:
    with connect(server) as sock:
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        return recv_all(sock)


def test_the_default_keys_line_is_as_safe(serve: ServerFactory, access_file: Path) -> None:
    """Without extra fields the line is written by its own code (default_json_line): the
    same run, the same guarantees."""
    server = serve(echo_app, access_log_format="json")
    for case in CASES:
        with connect(server) as sock:
            sock.sendall(case.raw())
            recv_all(sock)
    server.server_close()
    text = access_file.read_text(encoding="utf-8")
    assert text.isascii()
    objects = [json.loads(line) for line in text.splitlines()]
    assert all(tuple(obj) == JSON_FIELD_NAMES for obj in objects)
    assert all(obj["request_id"] is None for obj in objects)  # request ids are off
    answered = {obj["path"]: obj for obj in objects if obj["status"] == 200}
    expected = {
        case.request_line.split(b" ")[1].partition(b"?")[0].decode("latin-1"): case
        for case in CASES
        if case.status == 200
    }
    assert answered.keys() == expected.keys()
    for path, case in expected.items():
        assert answered[path]["user_agent"] == case.header(b"User-Agent")
        assert answered[path]["referer"] == case.header(b"Referer")
    assert sum(obj["status"] == 400 for obj in objects) == sum(c.status == 400 for c in CASES)
