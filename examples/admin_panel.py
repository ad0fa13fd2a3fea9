"""A long-running program with an admin panel embedded in a background thread.

Run it from the project root::

    python examples/admin_panel.py              # http://127.0.0.1:8470/?token=...
    python examples/admin_panel.py --port 0     # any free port

and open the URL it prints.  Ctrl-C or SIGTERM stops it: the panel first, then
the job loop, each with a bounded wait; it exits 0 once every thread is gone.

The program is a :class:`JobLoop` (a thread doing fake work) and the panel an
:class:`AdminPanel`, a plain WSGI app served by ``wsgibridge.serve_in_thread``
beside it.  An admin endpoint inside a production program is a target, so the
panel is careful:

* it listens on a loopback address only (``--host`` refuses anything else);
* ``Host`` must be the address it is bound to (``127.0.0.1:PORT``,
  ``localhost:PORT`` or ``[::1]:PORT``), else 421, before anything else: a
  page on ``evil.example`` whose name was re-bound to 127.0.0.1 is refused
  (DNS rebinding).  No proxy is trusted, so ``X-Forwarded-Host`` cannot
  rewrite the ``Host`` the app checks;
* every request needs the token (``secrets.token_urlsafe``, compared with
  ``hmac.compare_digest``): from the URL printed at startup, which trades it
  for an ``HttpOnly; SameSite=Strict`` cookie and redirects to ``/`` without
  it, or from ``Authorization: Bearer TOKEN`` (for scripts).  Without it:
  401, the same for every path;
* ``POST /pause`` and ``POST /resume`` need the page's CSRF token (cookie
  sessions only: a browser cannot add an ``Authorization`` header to a
  cross-site request) and a same-origin ``Origin`` when one is sent;
* a strict Content-Security-Policy (no inline script or style: the CSS and JS
  are files in ``admin_static/``, served with ETags), ``nosniff``, no
  framing, no referrer, and ``Cache-Control: no-store`` on the page and API.

The page works without JavaScript (figures as of page load, plain forms that
POST and get a 303 back to ``/``); ``admin.js`` polls ``/api/stats`` every
second and turns the buttons into ``fetch`` calls.

Scripts can use the API with the token (``ADMIN_PANEL_TOKEN`` sets it instead
of a random one)::

    curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8470/api/stats
    curl -H "Authorization: Bearer $TOKEN" -H 'Accept: application/json' \\
        -d '' http://127.0.0.1:8470/pause
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import ipaddress
import json
import logging
import os
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import parse_qs

from wsgibridge import BackgroundServer, serve_in_thread

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from wsgiref.types import StartResponse, WSGIEnvironment
    else:  # wsgiref.types is new in 3.11; typeshed has the same types for 3.10
        from _typeshed.wsgi import StartResponse, WSGIEnvironment

log = logging.getLogger("admin_panel")

STATIC_DIR = Path(__file__).resolve().parent / "admin_static"
# The only files /static/ serves: a fixed map, so no path can reach anything else.
STATIC_FILES = {
    "admin.css": "text/css; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
}
DEFAULT_PORT = 8470
TOKEN_ENV = "ADMIN_PANEL_TOKEN"
MAX_FORM_BYTES = 4096
PANEL_GRACE = 2.0  # seconds the panel's requests in flight get to finish at exit
LOOP_JOIN = 5.0  # seconds the job loop gets to finish its current item at exit

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
]
# wsgibridge's default access line has the request line, query and all: the
# login URL's token would end up in the log.  This one leaves the query out.
ACCESS_LOG_FORMAT = '{client} "{method} {path} {protocol}" {status} {bytes} {duration_ms}ms'
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,256}")


# -- the program: a job loop ------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """A consistent snapshot of the job loop, as ``/api/stats`` sends it."""

    state: str  # "running", "paused" or "stopped"
    paused: bool
    processed: int
    rate: float  # items per second over the last ``rate_window`` seconds
    uptime: float  # seconds
    last_latency_ms: float | None
    errors: int
    last_error: str | None


def fake_work(rng: random.Random) -> Callable[[int], None]:
    """A stand-in for real work: 5-20 ms per item, and now and then a failure."""

    def work(item: int) -> None:
        time.sleep(rng.uniform(0.005, 0.020))
        if rng.random() < 0.02:
            raise RuntimeError(f"item {item}: upstream answered 503")

    return work


class JobLoop:
    """A thread that processes items one after another until stopped.

    ``pause()`` lets the item in progress finish, then parks the thread until
    ``resume()``; ``stop()`` does the same and ends it.  Everything the panel
    reads comes from :meth:`stats`, taken under one lock.
    """

    def __init__(
        self,
        work: Callable[[int], None] | None = None,
        *,
        rate_window: float = 5.0,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self._work = work if work is not None else fake_work(random.Random())
        self._rate_window = rate_window
        self._on_exit = on_exit
        self._cond = threading.Condition()
        self._paused = False
        self._stopping = False
        self._parked = False
        self._started = time.monotonic()
        self._processed = 0
        self._errors = 0
        self._last_error: str | None = None
        self._last_latency: float | None = None
        self._done_at: deque[float] = deque()  # completion times in the rate window
        self.crashed: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="job-loop", daemon=True)

    def start(self) -> JobLoop:
        self._started = time.monotonic()
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def rate_window(self) -> float:
        return self._rate_window

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._paused

    @property
    def processed(self) -> int:
        with self._cond:
            return self._processed

    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._cond.notify_all()

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def wait_parked(self, timeout: float) -> bool:
        """Wait until a pause has taken effect (the item in progress is done)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._parked or not self.running, timeout)

    def stop(self, timeout: float = LOOP_JOIN) -> bool:
        """Ask the loop to end after its current item; True if its thread has ended."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.ident is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> Stats:
        now = time.monotonic()
        with self._cond:
            self._forget_before(now - self._rate_window)
            recent = len(self._done_at)
            # Over the whole window, or since the start when it is younger.
            span = min(self._rate_window, max(now - self._started, 1e-3))
            if self._stopping or (self._thread.ident is not None and not self.running):
                state = "stopped"
            else:
                state = "paused" if self._paused else "running"
            latency = self._last_latency
            return Stats(
                state=state,
                paused=self._paused,
                processed=self._processed,
                rate=round(recent / span, 2),
                uptime=round(now - self._started, 3),
                last_latency_ms=None if latency is None else round(latency * 1e3, 3),
                errors=self._errors,
                last_error=self._last_error,
            )

    def _forget_before(self, since: float) -> None:
        """Drop completion times older than the rate window (with the lock held)."""
        done_at = self._done_at
        while done_at and done_at[0] <= since:
            done_at.popleft()

    def _run(self) -> None:
        item = 0
        try:
            while True:
                with self._cond:
                    while self._paused and not self._stopping:
                        if not self._parked:
                            self._parked = True
                            self._cond.notify_all()
                        self._cond.wait()
                    self._parked = False
                    if self._stopping:
                        return
                item += 1
                began = time.perf_counter()
                error: str | None = None
                try:
                    self._work(item)
                except Exception as exc:  # one item failing is not the loop failing
                    error = f"{type(exc).__name__}: {exc}"
                latency = time.perf_counter() - began
                with self._cond:
                    self._processed += 1
                    self._last_latency = latency
                    done = time.monotonic()
                    self._done_at.append(done)
                    self._forget_before(done - self._rate_window)
                    if error is not None:
                        self._errors += 1
                        self._last_error = error
        except BaseException as exc:
            self.crashed = exc
            log.exception("the job loop crashed")
        finally:
            with self._cond:
                self._parked = False
                self._cond.notify_all()
            if self._on_exit is not None:
                self._on_exit()


# -- the admin panel: a plain WSGI app --------------------------------------------------


@dataclass
class Response:
    status: str
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] | None = None
    cache: str = "no-store"


@dataclass(frozen=True)
class StaticFile:
    data: bytes
    content_type: str
    etag: str


def load_static(directory: Path) -> dict[str, StaticFile]:
    """The known static files, read once: ``/static/<name>`` serves these and nothing else."""
    files = {}
    for name, content_type in STATIC_FILES.items():
        data = (directory / name).read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
        files[f"/static/{name}"] = StaticFile(data, content_type, etag)
    return files


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison against a list of entity tags, or ``*``."""
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


def text(status: str, message: str, headers: list[tuple[str, str]] | None = None) -> Response:
    """A short plain-text answer (errors, redirects): never cached."""
    return Response(status, (message + "\n").encode(), headers=headers)


def parse_fields(encoded: str) -> dict[str, list[str]] | None:
    """A query string or urlencoded form; None when it has more fields than a panel needs."""
    try:
        return parse_qs(encoded, max_num_fields=10)
    except ValueError:
        return None


def format_uptime(seconds: float) -> str:
    total = int(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Job loop - admin</title>
<link rel="stylesheet" href="/static/admin.css">
<script src="/static/admin.js" defer></script>
</head>
<body>
<main class="panel" data-state="{state}">
<h1>Job loop</h1>
<p class="status">State: <strong id="state">{state}</strong>
<span id="live" class="live" hidden></span></p>
<dl class="figures">
<div><dt>Items processed</dt><dd id="processed">{processed}</dd></div>
<div><dt>Items/s (last {window:g} s)</dt><dd id="rate">{rate}</dd></div>
<div><dt>Last latency</dt><dd id="latency">{latency}</dd></div>
<div><dt>Uptime</dt><dd id="uptime">{uptime}</dd></div>
<div><dt>Failed items</dt><dd id="errors">{errors}</dd></div>
<div><dt>Last failure</dt><dd id="last-error">{last_error}</dd></div>
</dl>
<div class="controls">
<form method="post" action="/pause" data-action="pause">
<input type="hidden" name="csrf_token" value="{csrf}">
<button id="pause" type="submit"{pause_disabled}>Pause</button>
</form>
<form method="post" action="/resume" data-action="resume">
<input type="hidden" name="csrf_token" value="{csrf}">
<button id="resume" type="submit"{resume_disabled}>Resume</button>
</form>
</div>
<p class="note" id="updated">Figures as of {loaded} (with JavaScript, live).</p>
</main>
</body>
</html>
"""


class AdminPanel:
    """The admin panel of a :class:`JobLoop`, as a WSGI app.

    It answers nothing (421) until :meth:`listening_on` has told it the
    address it is served on: the Host check needs the port.  Use
    :func:`start_panel` to do both.
    """

    def __init__(self, loop: JobLoop, token: str, *, static_dir: Path = STATIC_DIR) -> None:
        if not TOKEN_PATTERN.fullmatch(token):
            raise ValueError("the token must be 16-256 characters from A-Z a-z 0-9 _ -")
        self.loop = loop
        self._token = token.encode("ascii")
        self._csrf = secrets.token_urlsafe(32).encode("ascii")
        self._static = load_static(static_dir)
        self._hosts: frozenset[str] = frozenset()
        self._origins: frozenset[str] = frozenset()
        self.cookie_name = "admin_token"
        self.base_url = ""

    # -- setup ----------------------------------------------------------------------

    def listening_on(self, host: str, port: int) -> None:
        """Accept requests for ``host:port`` only (and ``localhost:port`` for 127.0.0.1/::1)."""
        address = ipaddress.ip_address(host)
        if not address.is_loopback:
            raise ValueError(f"the admin panel only listens on loopback, not {host}")
        literal = f"[{address}]" if address.version == 6 else str(address)
        names = [literal]
        if str(address) in ("127.0.0.1", "::1"):
            names.append("localhost")
        hosts = {f"{name}:{port}" for name in names}
        if port == 80:
            hosts.update(names)  # the port may be left out when it is the default
        self._hosts = frozenset(hosts)
        self._origins = frozenset(f"http://{h}" for h in hosts)
        # Cookies ignore ports: one name per port, so two panels do not clobber each other.
        self.cookie_name = f"admin_token_{port}"
        self.base_url = f"http://{literal}:{port}/"

    @property
    def login_url(self) -> str:
        """The URL to print: opening it trades the token for a cookie."""
        return f"{self.base_url}?token={self._token.decode()}"

    # -- WSGI -----------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        try:
            response = self.handle(environ)
        except Exception:
            log.exception("admin panel error on %s", environ.get("PATH_INFO"))
            response = text("500 Internal Server Error", "internal error")
        headers = [("Content-Type", response.content_type)]
        if not response.status.startswith(("204", "304")):  # RFC 9110 §8.6: none on these
            headers.append(("Content-Length", str(len(response.body))))
        headers += [
            ("Cache-Control", response.cache),
            *SECURITY_HEADERS,
            *(response.headers or []),
        ]
        start_response(response.status, headers)
        return [response.body]

    def handle(self, environ: WSGIEnvironment) -> Response:
        # 1. DNS rebinding: the Host must be ours, before the token is even looked at.
        host = str(environ.get("HTTP_HOST", "")).lower()
        if host not in self._hosts:
            return text("421 Misdirected Request", "misdirected request")
        method = str(environ["REQUEST_METHOD"])
        path = str(environ.get("PATH_INFO", ""))
        # 2. The token: the login URL trades it for a cookie.
        if method == "GET" and path == "/":
            query = parse_fields(str(environ.get("QUERY_STRING", "")))
            if query is None:
                return text("400 Bad Request", "too many query fields")
            if "token" in query:
                return self.login(query["token"][0])
        via = self.authenticate(environ)
        if via is None:
            return text(
                "401 Unauthorized",
                "unauthorized: open the URL the program printed at startup",
                headers=[("WWW-Authenticate", 'Bearer realm="admin panel"')],
            )
        # 3. Routing.
        if path in ("/pause", "/resume"):
            if method != "POST":
                return text("405 Method Not Allowed", "use POST", headers=[("Allow", "POST")])
            return self.control(environ, path, csrf_needed=via == "cookie")
        if path == "/" or path == "/api/stats" or path in self._static or path == "/favicon.ico":
            if method not in ("GET", "HEAD"):
                return text("405 Method Not Allowed", "use GET", headers=[("Allow", "GET, HEAD")])
            if path == "/":
                return self.page()
            if path == "/api/stats":
                return self.api_stats()
            if path == "/favicon.ico":
                return Response("204 No Content", cache="max-age=86400")
            return self.static(environ, self._static[path])
        return text("404 Not Found", "not found")

    # -- authentication -------------------------------------------------------------

    def _is_token(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "surrogateescape"), self._token)

    def authenticate(self, environ: WSGIEnvironment) -> str | None:
        """``"header"``, ``"cookie"``, or None when the request does not carry the token."""
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None:
            scheme, _, credentials = str(authorization).partition(" ")
            if scheme.lower() == "bearer" and self._is_token(credentials.strip()):
                return "header"
            return None  # a wrong header is not made up for by a cookie
        for pair in str(environ.get("HTTP_COOKIE", "")).split(";"):
            name, _, value = pair.strip().partition("=")
            if name == self.cookie_name and self._is_token(value):
                return "cookie"
        return None

    def login(self, candidate: str) -> Response:
        if not self._is_token(candidate):
            return text(
                "401 Unauthorized",
                "unauthorized: open the URL the program printed at startup",
                headers=[("WWW-Authenticate", 'Bearer realm="admin panel"')],
            )
        cookie = f"{self.cookie_name}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"
        # Redirected to a URL without the token, so it leaves the address bar and history.
        return text("303 See Other", "see /", headers=[("Location", "/"), ("Set-Cookie", cookie)])

    # -- pages ----------------------------------------------------------------------

    def page(self) -> Response:
        stats = self.loop.stats()

        def attr(disabled: bool) -> str:
            return " disabled" if disabled else ""

        body = PAGE.format(
            state=html.escape(stats.state),
            processed=stats.processed,
            window=self.loop.rate_window,
            rate=f"{stats.rate:.1f}",
            latency="n/a" if stats.last_latency_ms is None else f"{stats.last_latency_ms:.1f} ms",
            uptime=format_uptime(stats.uptime),
            errors=stats.errors,
            last_error=html.escape(stats.last_error or "none"),
            csrf=html.escape(self._csrf.decode()),
            pause_disabled=attr(stats.paused),
            resume_disabled=attr(not stats.paused),
            loaded=time.strftime("%H:%M:%S"),
        )
        return Response("200 OK", body.encode(), "text/html; charset=utf-8")

    def api_stats(self) -> Response:
        body = json.dumps(asdict(self.loop.stats())).encode()
        return Response("200 OK", body, "application/json")

    def static(self, environ: WSGIEnvironment, file: StaticFile) -> Response:
        headers = [("ETag", file.etag)]
        # no-cache: kept, but revalidated every time (a 304 when unchanged).
        if etag_matches(str(environ.get("HTTP_IF_NONE_MATCH", "")), file.etag):
            return Response("304 Not Modified", b"", file.content_type, headers, "no-cache")
        return Response("200 OK", file.data, file.content_type, headers, "no-cache")

    # -- actions ----------------------------------------------------------------------

    def control(self, environ: WSGIEnvironment, path: str, *, csrf_needed: bool) -> Response:
        # Defence in depth beside the CSRF token and the SameSite cookie.  The browser
        # sets both headers (no script can).  With "Referrer-Policy: no-referrer" a
        # form POST carries "Origin: null", so null is believed only together with
        # "Sec-Fetch-Site: same-origin".  Clients that send neither are scripts.
        site = environ.get("HTTP_SEC_FETCH_SITE")
        if site is not None and site != "same-origin":
            return text("403 Forbidden", "cross-site request refused")
        origin = environ.get("HTTP_ORIGIN")
        null_but_same = origin == "null" and site == "same-origin"
        if origin is not None and origin not in self._origins and not null_but_same:
            return text("403 Forbidden", "cross-origin request refused")
        if csrf_needed:
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return text("400 Bad Request", "bad Content-Length")
            if length > MAX_FORM_BYTES:
                return text("413 Content Too Large", "the form is too large")
            stream = environ["wsgi.input"]
            if length:
                raw = stream.read(length)
            elif environ.get("wsgi.input_terminated"):
                raw = stream.read(MAX_FORM_BYTES + 1)
            else:
                raw = b""
            if len(raw) > MAX_FORM_BYTES:
                return text("413 Content Too Large", "the form is too large")
            content_type = str(environ.get("CONTENT_TYPE", "")).partition(";")[0].strip()
            if raw and content_type.lower() != "application/x-www-form-urlencoded":
                return text("415 Unsupported Media Type", "send a form")
            form = parse_fields(raw.decode("latin-1"))
            if form is None:
                return text("400 Bad Request", "too many form fields")
            sent = form.get("csrf_token", [""])[0].encode("latin-1")
            if not hmac.compare_digest(sent, self._csrf):
                return text("403 Forbidden", "missing or wrong CSRF token: reload the page")
        if path == "/pause":
            self.loop.pause()
            log.info("job loop paused from the admin panel")
        else:
            self.loop.resume()
            log.info("job loop resumed from the admin panel")
        if "application/json" in str(environ.get("HTTP_ACCEPT", "")):
            return self.api_stats()  # fetch() from admin.js, or a script
        return text("303 See Other", "see /", headers=[("Location", "/")])


def start_panel(
    loop: JobLoop, token: str, host: str = "127.0.0.1", port: int = 0, **options: object
) -> tuple[AdminPanel, BackgroundServer]:
    """Serve an :class:`AdminPanel` for ``loop`` in a background thread; bound at return."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the admin panel only listens on loopback, not {host}")
    panel = AdminPanel(loop, token)
    settings: dict[str, object] = {
        "threads": 2,
        "forwarded_allow_ips": "",  # no proxy: nobody may rewrite Host or the client address
        "header_timeout": 5.0,
        "read_timeout": 5.0,
        "write_timeout": 5.0,
        "keepalive_timeout": 15.0,
        "graceful_timeout": PANEL_GRACE,
        "max_body_size": MAX_FORM_BYTES,
        "access_log_format": ACCESS_LOG_FORMAT,
    }
    settings.update(options)
    server = serve_in_thread(panel, host, port, **settings)
    try:
        panel.listening_on(host, server.port)
    except BaseException:
        server.stop(timeout=0)
        raise
    return panel, server


# -- the program's main: signals, startup, orderly exit ---------------------------------


# What signal.signal() takes and returns.
SignalHandler: TypeAlias = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class SignalWaiter:
    """Blocks the main thread until SIGINT/SIGTERM (or :meth:`wake`), without a lock.

    A Python signal handler runs in the main thread between two bytecodes, so
    one that sets a ``threading.Event`` can deadlock on the lock the main
    thread holds inside ``Event.wait``.  Here the handler does nothing: the
    interpreter's C-level handler writes the signal number to a socket
    (``signal.set_wakeup_fd``) and the main thread reads it.
    """

    WAKE = 0  # the byte wake() sends: no signal has number 0

    def __init__(self, signals: Sequence[signal.Signals]) -> None:
        self.signals = tuple(signals)
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._previous: dict[signal.Signals, SignalHandler] = {}
        self._previous_fd = -1

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handler)

    @staticmethod
    def _handler(signum: int, frame: FrameType | None) -> None:
        pass  # the wake-up byte carries the news

    def wake(self) -> None:
        """Wake :meth:`wait` from any thread."""
        try:
            self._writer.send(bytes([self.WAKE]))
        except OSError:
            pass  # full (already woken) or closed (already done)

    def wait(self) -> str:
        """The name of the signal that arrived, or ``"wake"``."""
        while True:
            data = self._reader.recv(64)
            if not data:
                return "wake"  # closed: nothing more will come
            for byte in data:
                if byte == self.WAKE:
                    return "wake"
                if byte in self.signals:
                    return signal.Signals(byte).name

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            # None: the handler was not set from Python; the default is the best guess.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()
        signal.set_wakeup_fd(self._previous_fd)
        self._reader.close()
        self._writer.close()


def loopback(value: str) -> str:
    try:
        address = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {value!r}") from None
    if not address.is_loopback:
        raise argparse.ArgumentTypeError(f"the admin panel only listens on loopback, not {value}")
    return str(address)


def port_number(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port: {value}")
    return port


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A job loop with an admin panel on 127.0.0.1.",
        epilog=f"{TOKEN_ENV} sets the token (default: a new random one each run).",
    )
    parser.add_argument(
        "--host", type=loopback, default="127.0.0.1", help="a loopback address (127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help=f"0 picks one ({DEFAULT_PORT})"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
    if not TOKEN_PATTERN.fullmatch(token):
        print(f"{TOKEN_ENV}: 16-256 characters from A-Z a-z 0-9 _ -", file=sys.stderr)
        return 2
    # The program owns its signals (wsgibridge installs none): handlers first,
    # so that a Ctrl-C during startup is not lost.
    waiter = SignalWaiter((signal.SIGINT, signal.SIGTERM))
    waiter.install()
    try:
        loop = JobLoop(on_exit=waiter.wake).start()
        try:
            panel, server = start_panel(loop, token, args.host, args.port)
        except OSError as exc:
            log.error("cannot listen on %s port %s: %s", args.host, args.port, exc)
            loop.stop()
            return 1
        print(f"admin panel: {panel.login_url}", flush=True)
        print("Ctrl-C or SIGTERM stops the program.", flush=True)

        why = waiter.wait()
        log.info("stopping (%s)", "the job loop ended" if why == "wake" else why)
        panel_took = server.stop(timeout=PANEL_GRACE)  # first: no request sees a dead loop
        began = time.perf_counter()
        loop_stopped = loop.stop(timeout=LOOP_JOIN)
        loop_took = time.perf_counter() - began
        left = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        log.info(
            "stopped: panel in %.3f s, job loop in %.3f s; threads left: %s",
            panel_took,
            loop_took,
            ", ".join(left) or "none",
        )
        if not loop_stopped or loop.crashed is not None:
            return 1
        return 0
    finally:
        waiter.restore()


if __name__ == "__main__":
    sys.exit(main())
