"""Request smuggling tried through real proxies: nginx and HAProxy in front of wsgibridge.

Each proxy (the Debian packages, skipped when not installed) runs as a child
process on a free port on 127.0.0.1, with its files in a temporary directory,
once per module, in front of one live wsgibridge server, keeping its upstream
connections alive: nginx with ``proxy_http_version 1.1``, ``Connection ""`` and
an ``upstream { keepalive 2; }`` block, HAProxy in ``mode http`` with
``option http-keep-alive`` and ``http-reuse always``.  Neither retries a request
(``proxy_next_upstream off``, ``retries 0``), so a connection wsgibridge drops
without saying so shows up as an error instead of being papered over.

Every shape - each case of ``tests/malformed.py`` (``CASES``, and
``BAD_CHUNKED_BODIES`` after ``CHUNKED_HEAD``) and the request-smuggling shapes
below (CL.TE, TE.CL, TE.TE with an obfuscated Transfer-Encoding, bare LFs in
chunk lines, trailers carrying framing fields, requests hidden in bodies) - is
sent on a raw socket, and followed by ordinary requests from another client
connection: one while the attacker's connection is still open, one after it is
closed.  Those go through the same proxy and so, as a rule, over the upstream
connection the shape used, where a desynchronised parser would show.

The proxy gives every request it forwards an id (``X-Proxy-Request-Id``) and
logs ``<id> <status> <method> <target>`` for it; the app records every request
it sees and answers with a fresh token and what it saw.  For each shape:

1. every request the app saw carries an id the proxy logged, for the same
   method and target, and no id twice: the app never sees a request the proxy
   did not forward as such (a ``/smuggled`` request hidden in a body, say);
2. each ordinary client gets its own response (its own target, marker and a
   token the app issued for exactly that request), and the attacker never gets
   one issued for an ordinary request;
3. no 500/502/503/504, no wsgibridge error log, and the proxy and the server
   keep working (the ordinary requests, and a final check per proxy).

What each shape met (refused by the proxy, refused by wsgibridge, or passed to
the app) is printed per proxy by the final test (``pytest -rP`` shows it).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests import proxies
from tests.conftest import ResponseReader, running_server
from tests.malformed import BAD_CHUNKED_BODIES, CASES, CHUNKED_HEAD, H
from wsgibridge import WSGIServer

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
TIMEOUT = 5.0  # one read of an answer that must come
ATTACK_DEADLINE = 4.0  # the whole answer to a shape: past the proxies' 1-2 s client timeouts
QUIET = 0.1  # once complete answers are in, how long to wait for one more
LOG_WAIT = 2.0  # for the proxy to log a request the app has seen
ID_HEADER = "X-Proxy-Request-Id"  # set by the proxy on every request it forwards
UPSTREAM_HEADER = "x-upstream-status"  # set by the proxy on responses from wsgibridge
ORDINARY = "ordinary"  # the marker prefix of the ordinary clients' requests
SERVER_ERRORS = {500, 502, 503, 504}

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # starts real proxies


# -- the shapes ---------------------------------------------------------------------------


class Shape(NamedTuple):
    id: str
    raw: bytes


def _hidden(path: bytes) -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\n" + H + b"\r\n"


HIDDEN = _hidden(b"/smuggled")  # a request that may only ever travel as data
# A head left open: whoever parses it as a request takes the next request's
# request line for the value of X-Swallow.
HIDDEN_PREFIX = b"GET /smuggled-prefix HTTP/1.1\r\n" + H + b"X-Swallow: "
LAST = b"0\r\n\r\n"  # the last chunk, no trailers


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def request(method: bytes, path: bytes, fields: bytes, body: bytes = b"") -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\n" + H + fields + b"\r\n" + body


def te_te(te_fields: bytes, body: bytes = LAST + HIDDEN) -> bytes:
    """Content-Length framing the whole body beside a Transfer-Encoding one parser may
    ignore: read as chunked, HIDDEN is the next request; by Content-Length, it is data."""
    return request(b"POST", b"/attack", b"Content-Length: %d\r\n" % len(body) + te_fields, body)


CHUNKED = b"Transfer-Encoding: chunked\r\n"

SMUGGLING: list[Shape] = [
    # CL.TE and TE.CL: RFC 9112 §6.3, Transfer-Encoding overrides Content-Length and an
    # intermediary MUST remove Content-Length before forwarding; §6.1, a server MAY
    # reject the pair.
    Shape("cl-te", te_te(CHUNKED)),
    Shape("cl-te-prefix", te_te(CHUNKED, LAST + HIDDEN_PREFIX)),
    Shape(
        "te-cl",
        request(b"POST", b"/attack", CHUNKED + b"Content-Length: 4\r\n", chunk(HIDDEN) + LAST),
    ),
    Shape(
        "te-cl-prefix",
        request(
            b"POST", b"/attack", CHUNKED + b"Content-Length: 4\r\n", chunk(HIDDEN_PREFIX) + LAST
        ),
    ),
    # TE.TE: a Transfer-Encoding one parser sees and another does not.
    Shape("te-te-second-bogus", te_te(CHUNKED + b"Transfer-Encoding: x\r\n")),
    Shape("te-te-first-bogus", te_te(b"Transfer-Encoding: x\r\n" + CHUNKED)),
    Shape("te-te-space-before-colon", te_te(b"Transfer-Encoding : chunked\r\n")),
    Shape("te-te-tab-value", te_te(b"Transfer-Encoding:\tchunked\r\n")),
    Shape("te-te-uppercase", te_te(b"Transfer-Encoding: CHUNKED\r\n")),
    Shape("te-te-trailing-comma", te_te(b"Transfer-Encoding: chunked,\r\n")),
    Shape("te-te-identity-first", te_te(b"Transfer-Encoding: identity, chunked\r\n")),
    Shape("te-te-xchunked", te_te(b"Transfer-Encoding: xchunked\r\n")),
    Shape("te-te-vt", te_te(b"Transfer-Encoding:\x0bchunked\r\n")),
    Shape("te-te-nul", te_te(b"Transfer-Encoding: chunked\x00\r\n")),
    Shape("te-te-obs-fold", te_te(b"X-A: 1\r\n Transfer-Encoding: chunked\r\n")),
    Shape("te-te-fold-value", te_te(b"Transfer-Encoding:\r\n chunked\r\n")),
    Shape("te-te-bare-lf-before", te_te(b"X-A: 1\nTransfer-Encoding: chunked\r\n")),
    Shape("te-te-bare-cr-before", te_te(b"X-A: 1\rTransfer-Encoding: chunked\r\n")),
    Shape("te-te-underscore", te_te(b"Transfer_Encoding: chunked\r\n")),
    # Chunk lines ended by a bare LF (RFC 9112 §7.1 needs CRLF): one parser's chunk
    # data is another's chunk-size line.
    Shape(
        "chunk-size-bare-lf",
        request(b"POST", b"/attack", CHUNKED, b"%x\n" % len(HIDDEN) + HIDDEN + b"\r\n" + LAST),
    ),
    Shape(
        # Ending the size line at the bare LF: size 2, data "xx", then one chunk holding
        # LAST + HIDDEN.  Ending it only at CRLF (the LF inside an extension): size 2,
        # data the next size line's digits, then LAST ends the body and HIDDEN follows.
        "chunk-ext-bare-lf",
        request(b"POST", b"/attack", CHUNKED, b"2;\nxx\r\n" + chunk(LAST + HIDDEN) + LAST),
    ),
    Shape(
        "last-chunk-bare-lf",
        request(b"POST", b"/attack", CHUNKED, chunk(b"hello") + b"0\n\r\n" + HIDDEN),
    ),
    Shape(
        "chunk-data-bare-lf-then-size",
        request(b"POST", b"/attack", CHUNKED, b"5\r\nhello\n" + chunk(HIDDEN) + LAST),
    ),
    # Trailers carrying framing or routing fields (RFC 9110 §6.5.1: a sender MUST NOT
    # generate them; a recipient MUST NOT merge them into the header section).
    Shape(
        "trailer-content-length",
        request(
            b"POST",
            b"/attack",
            CHUNKED,
            chunk(b"hello") + b"0\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN,
        ),
    ),
    Shape(
        "trailer-transfer-encoding",
        request(
            b"POST",
            b"/attack",
            CHUNKED,
            chunk(b"hello") + b"0\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(HIDDEN) + LAST,
        ),
    ),
    Shape(
        "trailer-declared-content-length",
        request(
            b"POST",
            b"/attack",
            CHUNKED + b"Trailer: Content-Length\r\n",
            chunk(b"hello") + b"0\r\nContent-Length: 0\r\n\r\n",
        ),
    ),
    Shape(
        "trailer-host",
        request(b"POST", b"/attack", CHUNKED, chunk(b"hello") + b"0\r\nHost: evil.example\r\n\r\n"),
    ),
    # A request with a body that holds another request, read by the app or left for the
    # server to drain: it must stay data.
    Shape(
        "body-hides-request",
        request(b"POST", b"/attack", b"Content-Length: %d\r\n" % len(HIDDEN), HIDDEN),
    ),
    Shape(
        "body-hides-request-unread",
        request(b"POST", b"/attack/ignore-body", b"Content-Length: %d\r\n" % len(HIDDEN), HIDDEN),
    ),
    Shape(
        "body-hides-prefix-unread",
        request(
            b"POST",
            b"/attack/ignore-body",
            b"Content-Length: %d\r\n" % len(HIDDEN_PREFIX),
            HIDDEN_PREFIX,
        ),
    ),
    Shape(
        "chunked-body-hides-request", request(b"POST", b"/attack", CHUNKED, chunk(HIDDEN) + LAST)
    ),
    Shape(
        "chunked-body-hides-request-unread",
        request(b"POST", b"/attack/ignore-body", CHUNKED, chunk(HIDDEN) + LAST),
    ),
    Shape(
        "get-body-hides-request",
        request(b"GET", b"/attack", b"Content-Length: %d\r\n" % len(HIDDEN), HIDDEN),
    ),
    Shape(
        # wsgibridge never sends 100 Continue to an app that does not read: the body a
        # proxy sent anyway must not be parsed as the next request.
        "expect-continue-body-hides-request-unread",
        request(
            b"POST",
            b"/attack/ignore-body",
            b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(HIDDEN),
            HIDDEN,
        ),
    ),
    Shape(
        # Not smuggling: a request pipelined after a body, which the proxy forwards as such.
        "body-then-pipelined-request",
        request(b"POST", b"/attack", b"Content-Length: 5\r\n", b"hello" + _hidden(b"/pipelined")),
    ),
]

SHAPES: list[Shape] = [
    *(Shape(case.id, case.raw) for case in CASES),
    *(Shape(f"body-{case.id}", CHUNKED_HEAD + case.raw) for case in BAD_CHUNKED_BODIES),
    *(Shape(f"smuggle-{shape.id}", shape.raw) for shape in SMUGGLING),
]
assert len({shape.id for shape in SHAPES}) == len(SHAPES)


# -- the application --------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the app saw it."""

    token: str  # issued for this request, echoed to whoever got the response
    phase: str  # the shape being sent when it arrived
    method: str
    target: str  # RAW_URI
    marker: str | None  # X-Marker
    proxy_id: str | None  # X-Proxy-Request-Id
    peer: str  # the upstream connection it came on
    body: bytes | None = None  # None: not read (or the read failed)
    error: str | None = None


class Recorder:
    """The app: records every request and answers with a token and what it saw."""

    def __init__(self) -> None:
        self.phase = "start"
        self.seen: list[Seen] = []
        self.checked = 0  # seen[:checked] were checked by an earlier shape

    def unchecked(self) -> list[Seen]:
        new = self.seen[self.checked :]
        self.checked += len(new)
        return new

    def by_token(self, token: str) -> Seen | None:
        return next((seen for seen in self.seen if seen.token == token), None)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen = Seen(
            token=f"tok-{uuid.uuid4().hex}",
            phase=self.phase,
            method=environ["REQUEST_METHOD"],
            target=environ["RAW_URI"],
            marker=environ.get("HTTP_X_MARKER"),
            proxy_id=environ.get("HTTP_" + ID_HEADER.upper().replace("-", "_")),
            peer=f"{environ['REMOTE_ADDR']}:{environ['REMOTE_PORT']}",
        )
        self.seen.append(seen)  # list.append is atomic; the shapes are sent one at a time
        if "ignore-body" not in seen.target:
            try:
                seen.body = environ["wsgi.input"].read()
            except Exception as exc:  # a malformed chunked body: BadRequest, answered 400
                seen.error = repr(exc)
                raise
        answer = {
            "token": seen.token,
            "method": seen.method,
            "target": seen.target,
            "marker": seen.marker,
            "body": None if seen.body is None else seen.body.decode("latin-1"),
        }
        data = json.dumps(answer).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]


class ErrorLog(logging.Handler):
    """ERROR records of the wsgibridge loggers (an unexpected exception, an app crash)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.checked = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def unchecked(self) -> list[str]:
        new = self.records[self.checked :]
        self.checked += len(new)
        return [self.format(record) for record in new]


# -- the proxies --------------------------------------------------------------------------


def nginx_conf(tmp: Path, port: int, upstream: int) -> str:
    return f"""{proxies.nginx_main(tmp)}http {{
    log_format forwarded '$request_id $status - $request_method $request_uri';
    access_log {tmp}/forwarded.log forwarded;
{proxies.nginx_temp_paths(tmp)}
    client_header_timeout 1s;
    client_body_timeout 1s;
    keepalive_timeout 2s;
    send_timeout 2s;
    proxy_connect_timeout 2s;
    proxy_send_timeout 2s;
    proxy_read_timeout 3s;
    proxy_next_upstream off;

    upstream wsgibridge {{
        server 127.0.0.1:{upstream};
        keepalive 2;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://wsgibridge;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header {ID_HEADER} $request_id;
            add_header X-Proxy nginx always;
            add_header {UPSTREAM_HEADER} $upstream_status always;
        }}
    }}
}}
"""


def haproxy_conf(port: int, upstream: int) -> str:
    return f"""
global
    log stdout format raw local0
    maxconn 256
defaults
    mode http
    log global
    option http-keep-alive
    http-reuse always
    retries 0
    timeout connect 2s
    timeout client 2s
    timeout server 3s
    timeout http-request 1s
    timeout http-keep-alive 1s
    timeout queue 2s
frontend smuggling
    bind 127.0.0.1:{port}
    unique-id-format %[uuid()]
    http-request set-header {ID_HEADER} %[unique-id]
    log-format "%ID %ST %tsc %HM %HU"
    http-after-response set-header X-Proxy haproxy
    default_backend wsgibridge
backend wsgibridge
    http-response set-header {UPSTREAM_HEADER} %[status]
    server app 127.0.0.1:{upstream}
"""


class Forwarded(NamedTuple):
    method: str
    target: str


@dataclass
class Proxy:
    """One running proxy; ``log`` has a line ``<id> <status> <state> <method> <target>``
    for each request it handled (``state``: HAProxy's termination state, nginx: -)."""

    name: str
    proc: subprocess.Popen[bytes]
    graceful: int  # the signal that stops it gracefully
    port: int
    log: Path
    error_log: Path | None  # nginx's
    outcomes: dict[str, str] = field(default_factory=dict)  # per shape sent
    attack_peers: set[str] = field(default_factory=set)  # upstream connections shapes used
    reused: int = 0  # ordinary requests on one of those
    seen_lines: dict[Path, int] = field(default_factory=dict)  # per log: lines checked

    def _lines(self, path: Path) -> list[str]:
        """The complete lines of a log (not one still being written)."""
        return path.read_bytes().decode("latin-1").split("\n")[:-1] if path.exists() else []

    def forwarded(self) -> dict[str, Forwarded]:
        """The requests the proxy forwarded (or refused), by id."""
        requests: dict[str, Forwarded] = {}
        for line in self._lines(self.log):
            parts = line.split(" ", 4)
            if len(parts) == 5 and re.fullmatch(r"[0-9a-f-]{32,36}", parts[0]):
                requests[parts[0]] = Forwarded(parts[3], _unescape(parts[4]))
        return requests

    def upstream_trouble(self) -> list[str]:
        """New log lines about wsgibridge misbehaving: HAProxy's termination states for a
        server-side abort or timeout (s, S), nginx's warnings and errors about its upstream
        ("upstream prematurely closed connection", "sent more data than specified" ...)."""
        path = self.error_log or self.log
        lines = self._lines(path)
        new, self.seen_lines[path] = lines[self.seen_lines.get(path, 0) :], len(lines)
        if self.error_log is None:  # HAProxy's: the termination state is the third field
            return [line for line in new if re.match(r"\S+ \S+ [sS]", line)]
        return [
            line
            for line in new
            if re.search(r"\[(warn|error|crit|alert|emerg)\]", line) and "upstream" in line
        ]


def _unescape(logged: str) -> str:
    """Undo nginx's ``\\xHH`` and HAProxy's ``#HH`` escapes in a logged target."""
    logged = re.sub(r"\\x([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), logged)
    return re.sub(r"#([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), logged)


def launch(name: str, tmp: Path, upstream: int) -> Proxy:
    """Start nginx or HAProxy on a free port in front of 127.0.0.1:``upstream``."""
    binary = NGINX if name == "nginx" else HAPROXY
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{name} not installed ({binary}): .ci/run installs it")
    tmp.mkdir(parents=True, exist_ok=True)
    output = tmp / "output.log"
    for _attempt in range(5):
        port = proxies.free_port()
        if name == "nginx":
            conf = tmp / "nginx.conf"
            conf.write_text(nginx_conf(tmp, port, upstream))
            argv = [binary, "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log")]
            log, graceful, error_log = tmp / "forwarded.log", signal.SIGQUIT, tmp / "error.log"
        else:
            conf = tmp / "haproxy.cfg"
            conf.write_text(haproxy_conf(port, upstream))
            # -db: foreground; -dR: no SO_REUSEPORT, so a taken port fails the bind.
            argv = [binary, "-db", "-dR", "-f", str(conf)]
            log, graceful, error_log = output, signal.SIGUSR1, None

        def ready(proc: subprocess.Popen[bytes], port: int = port) -> bool:
            pid = (tmp / "nginx.pid").read_text().strip() if (tmp / "nginx.pid").exists() else ""
            return (name != "nginx" or pid == str(proc.pid)) and proxies.accepts(port)

        proc = proxies.start(argv, output, ready, graceful)
        if proc is not None:
            return Proxy(name, proc, graceful, port, log, error_log)
        errors = output.read_text(errors="replace")
        if name == "nginx":
            errors += (tmp / "error.log").read_text(errors="replace")
        if "Address already in use" not in errors and "cannot bind" not in errors:
            break
    pytest.fail(f"{name} did not start:\n{errors}")


# -- talking to the proxy -----------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    @property
    def source(self) -> str:
        """Who made it: the app (a token), wsgibridge itself, or the proxy."""
        if UPSTREAM_HEADER not in self.headers:
            return "proxy"
        return "app" if b"tok-" in self.body else "wsgibridge"


def parse_replies(data: bytes, to_head: bool = False) -> tuple[list[Reply], bytes]:
    """The complete responses (to HEAD requests if ``to_head``) at the start of ``data``,
    and what follows them."""
    replies: list[Reply] = []
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        status = re.fullmatch(rb"HTTP/1\.[01] (\d{3})(?: [^\r\n]*)?", head.split(b"\r\n")[0])
        if not sep or status is None:
            return replies, data
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        code = int(status[1])
        if code < 200 or code in (204, 304) or to_head:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", ""):
            parsed = _dechunk(rest)
            if parsed is None:
                return replies, data
            body, rest = parsed
        elif headers.get("content-length", "").isdigit():
            length = int(headers["content-length"])
            if len(rest) < length:
                return replies, data
            body, rest = rest[:length], rest[length:]
        else:  # delimited by the close
            body, rest = rest, b""
        replies.append(Reply(code, headers, body))
        data = rest


def _dechunk(data: bytes) -> tuple[bytes, bytes] | None:
    body = b""
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return None
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            return None
        if size == 0:
            end = data.find(b"\r\n\r\n") if not data.startswith(b"\r\n") else -2
            return (body, data[end + 4 :]) if end != -1 else None
        if len(data) < size + 2:
            return None
        body, data = body + data[:size], data[size + 2 :]


def answer_to(sock: socket.socket, raw: bytes) -> tuple[bytes, bool]:
    """Send a shape and read what comes back: until the proxy closes, or the answers are
    complete and QUIET passes without more, or ATTACK_DEADLINE; (bytes, closed)."""
    sock.sendall(raw)
    data = b""
    deadline = time.monotonic() + ATTACK_DEADLINE
    while (left := deadline - time.monotonic()) > 0:
        replies, rest = parse_replies(data, raw.startswith(b"HEAD "))
        sock.settimeout(min(left, QUIET) if replies and not rest else left)
        try:
            received = sock.recv(65536)
        except TimeoutError:
            if replies and not rest:
                return data, False
            continue
        except ConnectionResetError:
            return data, True
        if not received:
            return data, True
        data += received
    return data, False


def late(sock: socket.socket) -> bytes:
    """Whatever came in on ``sock`` after ``answer_to`` stopped reading (without waiting)."""
    sock.setblocking(False)
    data = b""
    try:
        while received := sock.recv(65536):
            data += received
    except (BlockingIOError, ConnectionResetError):
        pass
    return data


def ordinary(sock: socket.socket, reader: ResponseReader, n: int) -> tuple[str, str, Any]:
    """One ordinary request on ``sock``: (target, marker, the reply: a dict or a problem)."""
    target = f"/{ORDINARY}/{n}?nonce={uuid.uuid4().hex}"
    marker = f"{ORDINARY}-{uuid.uuid4().hex}"
    sock.sendall(
        f"GET {target} HTTP/1.1\r\nHost: example.com\r\nX-Marker: {marker}\r\n\r\n".encode()
    )
    try:
        response = reader.read_response()
    except (OSError, EOFError, AssertionError, ValueError) as exc:
        return target, marker, f"no response: {exc!r}"
    if response.status != 200:
        return target, marker, f"{response.status} {response.body[:300]!r}"
    try:
        answer: dict[str, Any] = json.loads(response.body)
    except ValueError:
        return target, marker, f"not the app's answer: {response.body[:300]!r}"
    return target, marker, answer


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="module")
def error_log() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    logger = logging.getLogger("wsgibridge")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def upstream(recorder: Recorder, error_log: ErrorLog) -> Iterator[WSGIServer]:
    # No proxy is trusted, so REMOTE_ADDR:REMOTE_PORT is the upstream connection.
    with running_server(recorder, forwarded_allow_ips="", access_log=False) as server:
        yield server


@pytest.fixture(scope="module", params=["nginx", "haproxy"])
def proxy(
    request: pytest.FixtureRequest, upstream: WSGIServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    name: str = request.param
    instance = launch(name, tmp_path_factory.mktemp(name), upstream.port)
    try:
        with socket.create_connection(("127.0.0.1", instance.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /probe HTTP/1.1\r\nHost: example.com\r\n\r\n")
            response = ResponseReader(sock).read_response()
        assert (response.status, response.header("X-Proxy")) == (200, name), response
        yield instance
    finally:
        proxies.stop(instance.proc, instance.graceful)


# -- the checks ---------------------------------------------------------------------------


def check_seen(
    proxy: Proxy, recorder: Recorder, error_log: ErrorLog
) -> tuple[list[Seen], list[str]]:
    """Assertion 1 for the requests the app saw since the last check: (them, problems)."""
    new = recorder.unchecked()
    problems = [f"wsgibridge logged an error: {line}" for line in error_log.unchecked()]
    problems += [
        f"{proxy.name} logged (since the last check): {line}" for line in proxy.upstream_trouble()
    ]
    deadline = time.monotonic() + LOG_WAIT
    forwarded = proxy.forwarded()
    while time.monotonic() < deadline and any(
        seen.proxy_id is not None and seen.proxy_id not in forwarded for seen in new
    ):
        time.sleep(0.02)
        forwarded = proxy.forwarded()
    ids = Counter(seen.proxy_id for seen in recorder.seen)
    for seen in new:
        what = f"the app saw {seen.method} {seen.target} (marker {seen.marker})"
        if seen.proxy_id is None:
            problems.append(f"{what}, which {proxy.name} never forwarded as a request")
        elif seen.proxy_id not in forwarded:
            problems.append(f"{what} with id {seen.proxy_id}, which {proxy.name} never logged")
        elif forwarded[seen.proxy_id] != (seen.method, seen.target):
            problems.append(f"{what}, but {proxy.name} forwarded {forwarded[seen.proxy_id]}")
        elif ids[seen.proxy_id] > 1:
            problems.append(f"{what}, one of {ids[seen.proxy_id]} requests with its id")
    return new, problems


def check_ordinary(recorder: Recorder, target: str, marker: str, answer: Any) -> list[str]:
    """Assertion 2 for one ordinary request: it got the answer to itself."""
    if isinstance(answer, str):
        return [f"ordinary request {target}: {answer}"]
    seen = recorder.by_token(answer["token"])
    if (answer["target"], answer["marker"]) != (target, marker) or seen is None:
        return [f"ordinary request {target} got the response to another request: {answer}"]
    if (seen.target, seen.marker) != (target, marker):
        return [f"ordinary request {target} got the response issued for {seen}"]
    return []


def outcome(replies: list[Reply], rest: bytes, closed: bool, attack: list[Seen]) -> str:
    """What a shape met, as '<category>: <details>'."""
    answers = ", ".join(f"{reply.source} {reply.status}" for reply in replies)
    if rest:
        answers += (
            f"{', ' if answers else ''}{len(rest)} more bytes{' (HTTP/0.9)' if not replies else ''}"
        )
    answers = answers or ("closed" if closed else "nothing")
    if attack:
        requests = ", ".join(
            f"{seen.method} {seen.target}{' (read failed)' if seen.error else ''}"
            for seen in attack
        )
        return f"passed to the app: {requests} -> {answers}"
    if any(reply.source == "wsgibridge" for reply in replies):
        return f"refused by wsgibridge: {answers}"
    if replies or closed:
        return f"refused by the proxy: {answers}"
    return f"no answer in {ATTACK_DEADLINE:.0f} s"


def reproducer(proxy: Proxy, shape: Shape, data: bytes, seen: list[Seen]) -> str:
    raw = repr(shape.raw)
    return "\n".join(
        [
            f"through {proxy.name}, shape {shape.id}:",
            f"  sent: {raw[:1500]}{' ...' if len(raw) > 1500 else ''}",
            f"  answer: {data[:1500]!r}",
            *(f"  app saw: {item}" for item in seen),
        ]
    )


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=[shape.id for shape in SHAPES])
def test_a_shape_through_the_proxy(
    proxy: Proxy, recorder: Recorder, error_log: ErrorLog, shape: Shape
) -> None:
    problems = check_seen(proxy, recorder, error_log)[1]  # anything left from before
    recorder.phase = shape.id
    results = []
    address = ("127.0.0.1", proxy.port)
    with socket.create_connection(address, timeout=TIMEOUT) as attacker:
        data, closed = answer_to(attacker, shape.raw)
        with socket.create_connection(address, timeout=TIMEOUT) as client:
            reader = ResponseReader(client)
            results.append(ordinary(client, reader, 1))  # the attacker's connection still open
            data += late(attacker)
            attacker.close()
            results.append(ordinary(client, reader, 2))
    recorder.phase = f"after {shape.id}"

    replies, rest = parse_replies(data, shape.raw.startswith(b"HEAD "))
    seen, found = check_seen(proxy, recorder, error_log)
    problems += found
    for target, marker, answer in results:
        problems += check_ordinary(recorder, target, marker, answer)
    for token in re.findall(rb"tok-[0-9a-f]{32}", data):
        issued = recorder.by_token(token.decode())
        if issued is None or (issued.marker or "").startswith(ORDINARY):
            problems.append(f"the attacker got the response issued for {issued}")
    problems += [
        f"{reply.status} from {reply.source}: {reply.body[:300]!r}"
        for reply in replies
        if reply.status in SERVER_ERRORS
    ]
    attack = [item for item in seen if not (item.marker or "").startswith(ORDINARY)]
    proxy.outcomes[shape.id] = outcome(replies, rest, closed, attack)
    if proxy.outcomes[shape.id].startswith("no answer"):
        problems.append(f"a hang: {proxy.outcomes[shape.id]}")
    proxy.attack_peers.update(item.peer for item in attack)
    proxy.reused += sum(item.peer in proxy.attack_peers for item in seen if item not in attack)
    assert not problems, "\n".join([*problems, reproducer(proxy, shape, data, seen)])


def test_the_proxy_and_the_server_keep_working(
    proxy: Proxy, recorder: Recorder, error_log: ErrorLog
) -> None:
    """Ordinary requests after all the shapes, each from a new client connection: all
    answered, over reused upstream connections (the proxy's keep-alive is real)."""
    problems = check_seen(proxy, recorder, error_log)[1]
    recorder.phase = "final"
    peers = []
    for n in range(10):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT) as client:
            target, marker, answer = ordinary(client, ResponseReader(client), n)
        problems += check_ordinary(recorder, target, marker, answer)
        if isinstance(answer, dict) and (seen := recorder.by_token(answer["token"])):
            peers.append(seen.peer)
    problems += check_seen(proxy, recorder, error_log)[1]
    assert not problems, "\n".join(problems)
    # HAProxy now and then opens a second one when a request comes in while the last
    # client's connection is being released; nginx uses one.
    assert len(set(peers)) <= len(peers) // 2, f"upstream connections not reused: {peers}"

    categories = Counter(text.split(":", 1)[0] for text in proxy.outcomes.values())
    print(f"{proxy.name}: {len(proxy.outcomes)} shapes sent, {dict(categories)}")
    print(f"  ordinary requests over an upstream connection a shape used: {proxy.reused}")
    for shape_id, text in proxy.outcomes.items():
        print(f"  {shape_id}: {text}")
