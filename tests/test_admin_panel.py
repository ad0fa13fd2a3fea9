"""examples/admin_panel.py: a job loop with an admin panel in a background thread.

Three layers, all on 127.0.0.1 and every wait bounded:

* plain HTTP (``requests``, ``http.client`` for exact Host headers and raw
  paths) against the panel served by ``serve_in_thread`` in this process;
* a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by
  Playwright with ``executable_path``; no browser is downloaded): the page
  and its assets load under the CSP, the JS polls, the buttons work with and
  without JavaScript;
* the program as a user runs it: ``python examples/admin_panel.py --port 0``,
  the URL it prints, SIGTERM or SIGINT, exit 0, the port closed.
"""

from __future__ import annotations

import contextlib
import html.parser
import http.client
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from examples import admin_panel
from examples.admin_panel import AdminPanel, JobLoop, start_panel
from wsgibridge import BackgroundServer

from .browser import launched_browser, needs_chromium, needs_playwright, wait_for

try:
    from playwright.sync_api import Browser, ConsoleMessage, Page
    from playwright.sync_api import Request as PlaywrightRequest
    from playwright.sync_api import Response as PlaywrightResponse
except ImportError:  # the test extra installs it (tests/browser.py skips without it)
    pass

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "examples" / "admin_panel.py"
STATIC = ROOT / "examples" / "admin_static"
TIMEOUT = 5.0
TOKEN = "test-token-0123456789abcdef"
URL_LINE = re.compile(r"admin panel: (http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]+))")
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running (checked after its other fixtures)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + TIMEOUT
    extra = [t for t in threading.enumerate() if t not in before]
    while extra and time.monotonic() < deadline:
        time.sleep(0.02)
        extra = [t for t in threading.enumerate() if t not in before]
    assert not extra, f"threads left running: {extra}"


def quick_work(item: int) -> None:
    """Fast, deterministic work: about 500 items/s, every 50th one fails."""
    time.sleep(0.002)
    if item % 50 == 0:
        raise ValueError(f"item {item} is odd")


@pytest.fixture
def loop() -> Iterator[JobLoop]:
    job_loop = JobLoop(quick_work).start()
    yield job_loop
    assert job_loop.stop(timeout=TIMEOUT), "the job loop did not stop"


@dataclass
class Panel:
    app: AdminPanel
    server: BackgroundServer
    loop: JobLoop

    @property
    def base(self) -> str:
        return self.server.url  # http://127.0.0.1:PORT/

    @property
    def login_url(self) -> str:
        return self.app.login_url


@pytest.fixture
def panel(loop: JobLoop) -> Iterator[Panel]:
    app, server = start_panel(loop, TOKEN)
    yield Panel(app, server, loop)
    took = server.stop(timeout=2.0)
    assert not server.running
    assert took < 3.0


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A requests session that ignores proxy settings from the environment."""
    with requests.Session() as http_session:
        http_session.trust_env = False
        yield http_session


@pytest.fixture
def logged_in(panel: Panel, session: requests.Session) -> requests.Session:
    response = session.get(panel.login_url, timeout=TIMEOUT)
    assert response.status_code == 200 and response.url == panel.base
    return session


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes


def raw(
    panel: Panel,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Raw:
    """One request with exactly these headers and this target (nothing normalised)."""
    conn = http.client.HTTPConnection(panel.server.host, panel.server.port, timeout=TIMEOUT)
    try:
        headers = dict(headers or {})
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        headers.setdefault("Host", f"127.0.0.1:{panel.server.port}")
        if body is not None:
            headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        return Raw(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def csrf_token(page_html: str) -> str:
    match = CSRF_FIELD.search(page_html)
    assert match is not None, page_html
    return match.group(1)


def assert_security_headers(headers: Mapping[str, str], cache: str = "no-store") -> None:
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert headers["Cache-Control"] == cache


# -- plain HTTP ----------------------------------------------------------------------


def test_every_path_needs_the_token(panel: Panel, session: requests.Session) -> None:
    """401 without the token, the same answer for every path (nothing about what exists)."""
    answers = set()
    for path in ("/", "/api/stats", "/static/admin.css", "/no/such/page", "/pause"):
        response = session.get(panel.base + path.lstrip("/"), timeout=TIMEOUT)
        assert response.status_code == 401, path
        assert response.headers["WWW-Authenticate"].startswith("Bearer ")
        assert_security_headers(response.headers)
        answers.add(response.content)
    assert len(answers) == 1
    response = session.post(panel.base + "pause", data={"csrf_token": "x"}, timeout=TIMEOUT)
    assert response.status_code == 401
    assert not panel.loop.paused
    # Wrong tokens: in the login URL, in the header, in a cookie.
    assert session.get(panel.base + "?token=nope", timeout=TIMEOUT).status_code == 401
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "X"}
    assert session.get(panel.base, headers=wrong, timeout=TIMEOUT).status_code == 401
    assert (
        session.get(panel.base, headers={"Authorization": TOKEN}, timeout=TIMEOUT).status_code
        == 401
    )
    cookie = {"Cookie": f"{panel.app.cookie_name}=nope"}
    assert session.get(panel.base, headers=cookie, timeout=TIMEOUT).status_code == 401
    # A non-ASCII candidate is compared, not crashed on.
    assert raw(panel, "GET", "/", {"Cookie": f"{panel.app.cookie_name}=\xe9t\xe9"}).status == 401


def test_token_in_the_url_becomes_a_cookie(panel: Panel, session: requests.Session) -> None:
    """The login URL answers 303 to / with an HttpOnly SameSite=Strict cookie; the token
    then appears nowhere: not in the redirect, not in the page."""
    response = session.get(panel.login_url, allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    assert_security_headers(response.headers)
    set_cookie = response.headers["Set-Cookie"]
    name = f"admin_token_{panel.server.port}"
    assert set_cookie.startswith(f"{name}={TOKEN};")
    attributes = {part.strip().lower() for part in set_cookie.split(";")[1:]}
    assert attributes == {"path=/", "httponly", "samesite=strict"}

    page = session.get(panel.base, timeout=TIMEOUT)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert_security_headers(page.headers)
    assert TOKEN not in page.text
    assert csrf_token(page.text) != TOKEN
    assert 'id="processed"' in page.text and 'href="/static/admin.css"' in page.text


def test_bearer_header_for_scripts(panel: Panel, session: requests.Session) -> None:
    """Scripts send ``Authorization: Bearer``; they need no CSRF token (a browser cannot
    add that header to a cross-site request), and get JSON back when they ask."""
    response = session.get(panel.base + "api/stats", headers=BEARER, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json()["state"] == "running"
    response = session.post(
        panel.base + "pause", headers={**BEARER, "Accept": "application/json"}, timeout=TIMEOUT
    )
    assert response.status_code == 200 and response.json()["paused"] is True
    assert panel.loop.paused
    response = session.post(panel.base + "resume", headers=BEARER, allow_redirects=False)
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert not panel.loop.paused


def test_host_is_checked_before_the_token(panel: Panel) -> None:
    """DNS rebinding: only 127.0.0.1:PORT and localhost:PORT are ours; anything else is
    421 even with the right token, and X-Forwarded-Host cannot pretend otherwise."""
    port = panel.server.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
        assert raw(panel, "GET", "/api/stats", {"Host": host, **BEARER}).status == 200, host
    refused = (
        f"evil.example:{port}",
        "evil.example",
        f"127.0.0.1:{port + 1}",
        "127.0.0.1",
        "localhost",
        f"localhost.:{port}",
        f"[::1]:{port}",  # not bound there
        f"127.0.0.2:{port}",
        f"0.0.0.0:{port}",
    )
    for host in refused:
        response = raw(panel, "GET", "/api/stats", {"Host": host, **BEARER})
        assert response.status == 421, host
        assert b"processed" not in response.body
    spoofed = {
        "Host": f"evil.example:{port}",
        "X-Forwarded-Host": f"127.0.0.1:{port}",
        "Forwarded": f'host="127.0.0.1:{port}"',
        **BEARER,
    }
    assert raw(panel, "GET", "/api/stats", spoofed).status == 421
    # The login URL too: a rebound page never gets the cookie.
    evil_login = raw(panel, "GET", f"/?token={TOKEN}", {"Host": f"evil.example:{port}"})
    assert evil_login.status == 421 and "set-cookie" not in evil_login.headers
    # HTTP/1.0 without a Host at all.
    with socket.create_connection((panel.server.host, port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /api/stats HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 421 "), reply[:80]


def test_static_files(panel: Panel) -> None:
    """The CSS and JS with the right types and lengths, an ETag (304 when it matches) and
    no-cache; HEAD the same without the body."""
    for name, content_type in (
        ("admin.css", "text/css; charset=utf-8"),
        ("admin.js", "text/javascript; charset=utf-8"),
    ):
        data = (STATIC / name).read_bytes()
        response = raw(panel, "GET", f"/static/{name}", BEARER)
        assert response.status == 200
        assert response.body == data
        assert response.headers["content-type"] == content_type
        assert response.headers["content-length"] == str(len(data))
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-cache"
        etag = response.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{20}"', etag)
        for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            again = raw(panel, "GET", f"/static/{name}", {**BEARER, "If-None-Match": if_none_match})
            assert again.status == 304, if_none_match
            assert again.body == b"" and again.headers["etag"] == etag
            assert "content-length" not in again.headers
        changed = raw(panel, "GET", f"/static/{name}", {**BEARER, "If-None-Match": '"other"'})
        assert changed.status == 200 and changed.body == data
        head = raw(panel, "HEAD", f"/static/{name}", BEARER)
        assert head.status == 200 and head.body == b""
        assert head.headers["content-length"] == str(len(data))


def test_no_path_traversal(panel: Panel) -> None:
    """/static/ serves its two known files and nothing else, however the path is spelt."""
    source = SCRIPT.read_bytes()
    assert raw(panel, "GET", "/static/../admin_panel.py", BEARER).status == 404
    for path in (
        "/static/..%2fadmin_panel.py",
        "/static/%2e%2e/admin_panel.py",
        "/static/%2E%2E%2Fadmin_panel.py",
        "/static/..%5cadmin_panel.py",
        "/static/admin_static/admin.css",
        "/static/./admin.css",
        "/static//admin.css",
        "/static/admin.css/",
        "/static/ADMIN.CSS",
        "/static/admin.css%00.py",
        "/static/",
        "/static",
        "/admin_panel.py",
        "/admin_static/admin.css",
        "/examples/admin_panel.py",
        "/static/../../pyproject.toml",
    ):
        response = raw(panel, "GET", path, BEARER)
        assert response.status in (400, 404), path
        assert source[:200] not in response.body and b"[project]" not in response.body


def test_csrf_and_origin_are_required_to_pause(panel: Panel, logged_in: requests.Session) -> None:
    """With the cookie, POST needs the page's CSRF token, and a same-origin Origin if any."""
    token = csrf_token(logged_in.get(panel.base, timeout=TIMEOUT).text)
    url = panel.base + "pause"
    form = "application/x-www-form-urlencoded"
    refused = [
        ({}, {}),
        ({}, {"csrf_token": ""}),
        ({}, {"csrf_token": token[:-1]}),
        ({}, {"csrf_token": TOKEN}),  # the auth token is not the CSRF token
        ({"Origin": "http://evil.example"}, {"csrf_token": token}),
        ({"Origin": "null"}, {"csrf_token": token}),
        ({"Origin": "null", "Sec-Fetch-Site": "cross-site"}, {"csrf_token": token}),
        ({"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"}, {"csrf_token": token}),
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, {}),
        ({"Sec-Fetch-Site": "cross-site"}, {"csrf_token": token}),
        ({"Sec-Fetch-Site": "same-site"}, {"csrf_token": token}),
        ({"Sec-Fetch-Site": "none"}, {"csrf_token": token}),
    ]
    for headers, data in refused:
        response = logged_in.post(
            url, headers=headers, data=data, allow_redirects=False, timeout=TIMEOUT
        )
        assert response.status_code == 403, (headers, data)
        assert_security_headers(response.headers)
    response = logged_in.post(url, json={"csrf_token": token}, timeout=TIMEOUT)
    assert response.status_code == 415
    response = logged_in.post(
        url, data={"csrf_token": token, "pad": "x" * 5000}, allow_redirects=False
    )
    assert response.status_code == 413
    assert not panel.loop.paused

    origin = f"http://127.0.0.1:{panel.server.port}"
    response = logged_in.post(
        url,
        headers={"Origin": origin, "Sec-Fetch-Site": "same-origin", "Content-Type": form},
        data={"csrf_token": token},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert panel.loop.paused
    # What Chromium sends for the form under "Referrer-Policy: no-referrer": Origin null.
    response = logged_in.post(
        url,
        headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"},
        data={"csrf_token": token},
        allow_redirects=False,
        timeout=TIMEOUT,
    )
    assert response.status_code == 303
    page = logged_in.get(panel.base, timeout=TIMEOUT).text
    assert '<strong id="state">paused</strong>' in page
    assert '<button id="pause" type="submit" disabled>' in page
    response = logged_in.post(
        panel.base + "resume",
        headers={"Accept": "application/json"},
        data={"csrf_token": token},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200 and response.json()["paused"] is False
    assert not panel.loop.paused
    assert logged_in.get(url, timeout=TIMEOUT).status_code == 405
    assert logged_in.post(panel.base + "api/stats", timeout=TIMEOUT).status_code == 405


def test_pause_really_pauses_the_loop(panel: Panel, logged_in: requests.Session) -> None:
    """After POST /pause the item in progress finishes and then nothing more is processed."""
    token = csrf_token(logged_in.get(panel.base, timeout=TIMEOUT).text)
    wait_for(lambda: panel.loop.processed > 5, what="some items")
    logged_in.post(panel.base + "pause", data={"csrf_token": token}, timeout=TIMEOUT)
    assert panel.loop.wait_parked(TIMEOUT)
    count = panel.loop.processed
    time.sleep(0.2)
    assert panel.loop.processed == count
    stats = logged_in.get(panel.base + "api/stats", timeout=TIMEOUT).json()
    assert stats["state"] == "paused" and stats["processed"] == count
    logged_in.post(panel.base + "resume", data={"csrf_token": token}, timeout=TIMEOUT)
    wait_for(lambda: panel.loop.processed > count + 5, what="the loop to resume")


def test_stats_json(panel: Panel, logged_in: requests.Session) -> None:
    wait_for(lambda: panel.loop.processed > 60, what="60 items")  # so that one has failed
    response = logged_in.get(panel.base + "api/stats", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert_security_headers(response.headers)
    stats = response.json()
    assert set(stats) == {
        "state",
        "paused",
        "processed",
        "rate",
        "uptime",
        "last_latency_ms",
        "errors",
        "last_error",
    }
    assert stats["state"] == "running" and stats["paused"] is False
    assert isinstance(stats["processed"], int) and stats["processed"] > 60
    assert isinstance(stats["rate"], float) and 10 < stats["rate"] < 1000
    assert isinstance(stats["uptime"], float) and stats["uptime"] > 0
    assert isinstance(stats["last_latency_ms"], float) and 1.0 < stats["last_latency_ms"] < 500
    assert stats["errors"] >= 1 and re.fullmatch(
        r"ValueError: item \d+ is odd", stats["last_error"]
    )
    later = logged_in.get(panel.base + "api/stats", timeout=TIMEOUT).json()
    assert later["processed"] >= stats["processed"] and later["uptime"] > stats["uptime"]


class TagCollector(html.parser.HTMLParser):
    """Every start tag and its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_page_has_no_inline_script_or_style(panel: Panel, logged_in: requests.Session) -> None:
    """The CSP forbids inline code; the page must not need any (and works without JS)."""
    parser = TagCollector()
    parser.feed(logged_in.get(panel.base, timeout=TIMEOUT).text)
    tags = parser.tags
    assert not [tag for tag, _ in tags if tag == "style"]
    assert [attrs.get("src") for tag, attrs in tags if tag == "script"] == ["/static/admin.js"]
    for tag, attrs in tags:
        assert "style" not in attrs, tag
        assert not [name for name in attrs if name.startswith("on")], tag
    forms = [attrs for tag, attrs in tags if tag == "form"]
    assert [(f["method"], f["action"]) for f in forms] == [("post", "/pause"), ("post", "/resume")]


def test_job_loop_on_its_own() -> None:
    """Failures are counted and the loop goes on; stop() while paused ends it at once."""
    job_loop = JobLoop(quick_work).start()
    try:
        wait_for(lambda: job_loop.stats().errors >= 2, what="two failures")
        stats = job_loop.stats()
        assert stats.last_error is not None and stats.last_error.startswith("ValueError: item ")
        job_loop.pause()
        assert job_loop.wait_parked(TIMEOUT)
        assert job_loop.stats().state == "paused"
    finally:
        began = time.monotonic()
        assert job_loop.stop(timeout=TIMEOUT)
    assert time.monotonic() - began < 1.0
    assert job_loop.stats().state == "stopped" and job_loop.crashed is None


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback(loop: JobLoop) -> None:
    """Bound to ::1: [::1]:PORT and localhost:PORT are accepted, 127.0.0.1:PORT is not."""
    app, server = start_panel(loop, TOKEN, "::1")
    try:
        panel = Panel(app, server, loop)
        port = server.port
        assert app.login_url == f"http://[::1]:{port}/?token={TOKEN}"
        for host in (f"[::1]:{port}", f"localhost:{port}"):
            assert raw(panel, "GET", "/api/stats", {"Host": host, **BEARER}).status == 200
        for host in (f"127.0.0.1:{port}", f"[::2]:{port}", f"[0:0:0:0:0:0:0:1]:{port}"):
            assert raw(panel, "GET", "/api/stats", {"Host": host, **BEARER}).status == 421
    finally:
        server.stop(timeout=2.0)


def test_loopback_only() -> None:
    """Neither start_panel nor the command line listens anywhere but on loopback."""
    job_loop = JobLoop(quick_work)
    with pytest.raises(ValueError, match="loopback"):
        start_panel(job_loop, TOKEN, "0.0.0.0")
    with pytest.raises(ValueError, match="token"):
        AdminPanel(job_loop, "short")
    for host in ("0.0.0.0", "192.0.2.1", "::", "example.com"):
        with pytest.raises(SystemExit) as exit_info:
            admin_panel.parse_args(["--host", host])
        assert exit_info.value.code == 2
    assert admin_panel.parse_args(["--host", "::1"]).host == "::1"


# -- a real browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium (tests/browser.py); one per module, a fresh context per test."""
    with launched_browser() as chromium:
        yield chromium


@dataclass
class Watched:
    """A page and everything that went wrong on it."""

    page: Page
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    responses: dict[str, int] = field(default_factory=dict)

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__cspViolations || []")
        return found

    def assert_clean(self) -> None:
        assert self.console == []
        assert self.errors == []
        assert self.failed == []
        assert self.csp_violations() == []
        assert [url for url, status in self.responses.items() if status >= 400] == []


CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
    window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


@contextlib.contextmanager
def watched_page(browser: Browser, *, javascript: bool = True) -> Iterator[Watched]:
    context = browser.new_context(java_script_enabled=javascript)
    try:
        context.set_default_timeout(TIMEOUT * 1000)
        page = context.new_page()
        watched = Watched(page)

        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                watched.console.append(f"{message.type}: {message.text}")

        def on_failed(request: PlaywrightRequest) -> None:
            watched.failed.append(f"{request.url}: {request.failure}")

        def on_response(response: PlaywrightResponse) -> None:
            watched.responses[response.url] = response.status

        page.on("console", on_console)
        page.on("pageerror", lambda error: watched.errors.append(str(error)))
        page.on("requestfailed", on_failed)
        page.on("response", on_response)
        if javascript:
            page.add_init_script(CSP_WATCH)  # injected by DevTools: not subject to the CSP
        yield watched
    finally:
        context.close()


def until(page: Page, expression: str, timeout: float = TIMEOUT) -> None:
    """Wait until a JS expression is true in the page.

    (``page.wait_for_function`` evaluates its string with ``eval`` in the page,
    which the panel's CSP forbids: ``page.evaluate`` goes through DevTools.)
    """
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {expression}")
        page.wait_for_timeout(25)


def shown(page: Page, element_id: str) -> str:
    return page.locator(f"#{element_id}").inner_text()


def shown_count(page: Page) -> int:
    return int(shown(page, "processed"))


@needs_chromium
@needs_playwright
def test_browser_page_assets_live_figures_and_buttons(browser: Browser, panel: Panel) -> None:
    with watched_page(browser) as watched:
        page = watched.page
        response = page.goto(panel.login_url)
        assert response is not None and response.status == 200
        assert page.url == panel.base  # redirected: the token left the address bar
        assert watched.responses[panel.base + "static/admin.css"] == 200
        assert watched.responses[panel.base + "static/admin.js"] == 200
        cookies = page.context.cookies()
        assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [
            (f"admin_token_{panel.server.port}", True, "Strict")
        ]
        assert page.evaluate("document.cookie") == ""  # HttpOnly: no script sees it

        # The CSS is applied (values from admin.css) ...
        style = page.evaluate(
            """() => {
                const panel = getComputedStyle(document.querySelector(".panel"));
                const state = getComputedStyle(document.getElementById("state"));
                return [panel.borderTopLeftRadius, panel.maxWidth, state.backgroundColor];
            }"""
        )
        assert style == ["8px", "640px", "rgb(31, 122, 61)"]
        # ... and the JS runs: the figures move without a reload.
        until(page, "document.documentElement.dataset.js === 'ready'")
        until(page, "document.getElementById('live').textContent === 'live'")
        first = shown_count(page)
        until(page, f"Number(document.getElementById('processed').textContent) > {first}")
        assert shown(page, "state") == "running"
        assert re.fullmatch(r"\d+\.\d", shown(page, "rate"))
        assert re.fullmatch(r"\d+\.\d ms", shown(page, "latency"))
        assert re.fullmatch(r"0:00:\d\d", shown(page, "uptime"))
        assert page.locator("#pause").is_enabled() and page.locator("#resume").is_disabled()

        # Pause: the page says so, and the loop really stops.
        page.click("#pause")
        until(page, "document.getElementById('state').textContent === 'paused'")
        assert panel.loop.paused
        assert panel.loop.wait_parked(TIMEOUT)
        paused_at = panel.loop.processed
        background = "getComputedStyle(document.getElementById('state')).backgroundColor"
        assert page.evaluate(background) == "rgb(160, 90, 0)"
        assert page.locator("#pause").is_disabled() and page.locator("#resume").is_enabled()
        assert page.url == panel.base  # fetch(), no navigation
        until(page, f"Number(document.getElementById('processed').textContent) === {paused_at}")
        page.wait_for_timeout(1300)  # one more poll: still the same
        assert shown_count(page) == paused_at == panel.loop.processed

        # Resume.
        page.click("#resume")
        until(page, "document.getElementById('state').textContent === 'running'")
        assert not panel.loop.paused
        until(page, f"Number(document.getElementById('processed').textContent) > {paused_at}")
        watched.assert_clean()


@needs_chromium
@needs_playwright
def test_browser_form_works_without_javascript(browser: Browser, panel: Panel) -> None:
    """JavaScript off: the buttons are plain forms (POST, 303, the page again)."""
    with watched_page(browser, javascript=False) as watched:
        page = watched.page
        page.goto(panel.login_url)
        assert page.url == panel.base
        assert page.locator("#live").is_hidden()
        assert page.evaluate("document.documentElement.dataset.js") is None
        with page.expect_navigation():
            page.click("#pause")
        assert page.url == panel.base
        assert shown(page, "state") == "paused"
        assert panel.loop.paused
        assert page.locator("#pause").is_disabled()
        with page.expect_navigation():
            page.click("#resume")
        assert shown(page, "state") == "running"
        assert not panel.loop.paused
        assert watched.responses[panel.base + "pause"] == 303
        assert watched.console == [] and watched.errors == [] and watched.failed == []


@needs_chromium
@needs_playwright
def test_browser_enforces_the_csp(browser: Browser, panel: Panel) -> None:
    """The policy is live: inline script and inline style injected into the page are
    blocked and reported (so the clean runs above mean something)."""
    with watched_page(browser) as watched:
        page = watched.page
        page.goto(panel.login_url)
        until(page, "document.documentElement.dataset.js === 'ready'")
        ran = page.evaluate(
            """() => {
                const script = document.createElement("script");
                script.textContent = "window.__injected = true;";
                document.body.append(script);
                const div = document.createElement("div");
                div.setAttribute("style", "color: rgb(1, 2, 3)");
                document.body.append(div);
                return [window.__injected === true, getComputedStyle(div).color];
            }"""
        )
        assert ran[0] is False and ran[1] != "rgb(1, 2, 3)"
        until(page, "window.__cspViolations.length >= 2")
        directives = {v.split()[0] for v in watched.csp_violations()}
        assert {"script-src-elem", "style-src-attr"} <= directives


@needs_chromium
@needs_playwright
def test_browser_without_the_token(browser: Browser, panel: Panel) -> None:
    with watched_page(browser) as watched:
        response = watched.page.goto(panel.base)
        assert response is not None and response.status == 401
        assert "unauthorized" in watched.page.content()
        assert watched.page.context.cookies() == []
        response = watched.page.goto(panel.base + "?token=wrong")
        assert response is not None and response.status == 401


@needs_chromium
@needs_playwright
def test_browser_dns_rebinding_is_refused(browser: Browser, panel: Panel) -> None:
    """A name that resolves to 127.0.0.1 (as a rebound attacker's name would) gets 421
    and no cookie, even with the token; a same-origin fetch() that adds
    X-Forwarded-Host (which a page may set) gets 421 too.  localhost works."""
    port = panel.server.port
    with watched_page(browser) as watched:
        page = watched.page
        response = page.goto(f"http://evil.example:{port}/?token={TOKEN}")
        assert response is not None and response.status == 421
        assert page.context.cookies() == []
        status, body = page.evaluate(
            """async ([port, token]) => {
                const response = await fetch("/api/stats", {headers: {
                    "X-Forwarded-Host": `127.0.0.1:${port}`,
                    "Authorization": `Bearer ${token}`,
                }});
                return [response.status, await response.text()];
            }""",
            [port, TOKEN],
        )
        assert (status, body) == (421, "misdirected request\n")
        response = page.goto(f"http://localhost:{port}/?token={TOKEN}")
        assert response is not None and response.status == 200
        assert page.url == f"http://localhost:{port}/"
        assert shown(page, "state") == "running"


# -- the program, as a user runs it --------------------------------------------------


@dataclass
class Program:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


def read_url(proc: subprocess.Popen[bytes], timeout: float) -> re.Match[str]:
    """The URL line the program prints, read with a deadline (never a blocking readline)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            match = URL_LINE.search(buffer.decode(errors="replace"))
            if match is not None:
                return match
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no URL printed within {timeout} s: {buffer!r}")
            if selector.select(left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    raise AssertionError(f"the program exited: {buffer!r}")
                buffer += chunk


@contextlib.contextmanager
def run_program(tmp_path: Path, *args: str, token: str | None = None) -> Iterator[Program]:
    log = tmp_path / "admin_panel.log"
    env = {k: v for k, v in os.environ.items() if k != admin_panel.TOKEN_ENV}
    if token is not None:
        env[admin_panel.TOKEN_ENV] = token
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--port", "0", *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )
    try:
        match = read_url(proc, timeout=10.0)
        yield Program(proc, match.group(1), int(match.group(2)), log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def stop_program(program: Program, signum: signal.Signals) -> float:
    began = time.monotonic()
    program.proc.send_signal(signum)
    code = program.proc.wait(timeout=TIMEOUT)
    took = time.monotonic() - began
    print(f"\n{signum.name}: the program exited {code} in {took * 1e3:.0f} ms")
    assert code == 0, program.log.read_text()
    return took


def assert_port_closed(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_program_runs_and_stops_on_a_signal(
    tmp_path: Path, session: requests.Session, signum: signal.Signals
) -> None:
    """Start it, use the printed URL, pause it, then signal it with a keep-alive
    connection still open: it exits 0 promptly, every thread joined, the port closed."""
    with run_program(tmp_path) as program:
        page = session.get(program.url, timeout=TIMEOUT)
        assert page.status_code == 200 and page.url == program.base
        token = csrf_token(page.text)
        response = session.post(
            program.base + "pause",
            data={"csrf_token": token},
            headers={"Accept": "application/json"},
            timeout=TIMEOUT,
        )
        assert response.json()["state"] == "paused"
        stats = session.get(program.base + "api/stats", timeout=TIMEOUT).json()
        assert stats["paused"] is True and stats["processed"] >= 0
        took = stop_program(program, signum)  # the session's connection is still open
        assert took < 3.0
    assert_port_closed(program.port)
    log = program.log.read_text()
    assert f"stopping ({signum.name})" in log
    assert "threads left: none" in log
    assert "Traceback" not in log
    assert "?token=" not in log  # the access log leaves the query out
    assert '"GET / HTTP/1.1" 303' in log


def test_program_takes_its_token_from_the_environment(
    tmp_path: Path, session: requests.Session
) -> None:
    with run_program(tmp_path, token=TOKEN) as program:
        assert program.url.endswith(f"/?token={TOKEN}")
        response = session.get(program.base + "api/stats", headers=BEARER, timeout=TIMEOUT)
        assert response.status_code == 200 and response.json()["state"] == "running"
        stop_program(program, signal.SIGTERM)
    env = {**os.environ, admin_panel.TOKEN_ENV: "too short"}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--port", "0"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
        env=env,
    )
    assert proc.returncode == 2
    assert admin_panel.TOKEN_ENV.encode() in proc.stderr and proc.stdout == b""


def test_program_reports_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--port", str(port)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    assert proc.returncode == 1
    assert b"cannot listen on 127.0.0.1 port" in proc.stderr
    assert b"Traceback" not in proc.stderr


@needs_chromium
@needs_playwright
def test_program_in_a_browser_then_stopped(
    tmp_path: Path, browser: Browser, session: requests.Session
) -> None:
    """The printed URL in the browser, the live page polling; SIGTERM with the browser
    still connected: the program exits 0 at once and the page notices."""
    with run_program(tmp_path) as program, watched_page(browser) as watched:
        page = watched.page
        page.goto(program.url)
        assert page.url == program.base
        until(page, "document.getElementById('live').textContent === 'live'")
        first = shown_count(page)
        until(page, f"Number(document.getElementById('processed').textContent) > {first}")
        with page.expect_response(program.base + "pause") as paused:
            page.click("#pause")
        assert json.loads(paused.value.body())["paused"] is True
        until(page, "document.getElementById('state').textContent === 'paused'")
        watched.assert_clean()

        took = stop_program(program, signal.SIGTERM)
        assert took < 3.0
        assert_port_closed(program.port)
        # The next poll fails; the page says so instead of showing stale figures as live.
        until(
            page,
            "document.getElementById('live').textContent === 'disconnected'",
            timeout=TIMEOUT,
        )
    assert "threads left: none" in program.log.read_text()
