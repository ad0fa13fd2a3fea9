"""examples/django_site: an unchanged Django project served by ``wsgibridge``.

The site is set up as a user would (``migrate``, ``createsuperuser
--noinput``, ``collectstatic``) in a temporary directory (database,
collected static files and uploads; settings read them from the
environment), then ``python -m wsgibridge mysite.wsgi:application`` runs in
a subprocess on 127.0.0.1, port 0.  Over real sockets: the form page, a
CSRF-protected POST (and one without the token: 403, the connection still
served), a multipart upload checked byte for byte on disk, the admin's login
and add form, keep-alive.  In Debian's Chromium (Playwright): the admin login
and add, an upload through the app's form, and - served with ``--static
/static=<collected>`` - the styled admin page, its stylesheets answered 200.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from .browser import launched_browser, needs_chromium, needs_playwright
from .importroot import IMPORT_ROOT
from .test_serving_processes import ServerProcess, wsgibridge_argv

pytest.importorskip("django", reason="the test extra installs Django")

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group

SITE = Path(__file__).resolve().parent.parent / "examples" / "django_site"
TIMEOUT = 10.0
PASSWORD = "correct horse battery staple"
TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
ATTACHMENT = re.compile(r'<code id="attachment">([^<]+)</code>')


@dataclass
class Site:
    root: Path  # the temporary directory: db.sqlite3, static/, media/
    env: dict[str, str]
    url: str  # http://127.0.0.1:PORT/
    host: str
    port: int

    @property
    def static(self) -> Path:
        return self.root / "static"

    @property
    def media(self) -> Path:
        return self.root / "media"


def manage(env: dict[str, str], *args: str) -> None:
    command = [sys.executable, "manage.py", *args]
    run_env = {**os.environ, **env, "PYTHONPATH": IMPORT_ROOT}
    done = subprocess.run(
        command, cwd=SITE, env=run_env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The site's database migrated, a superuser, the static files collected."""
    root = tmp_path_factory.mktemp("django_site")
    env = {
        "DJANGO_SETTINGS_MODULE": "mysite.settings",
        "DJANGO_SITE_DB": str(root / "db.sqlite3"),
        "DJANGO_SITE_STATIC_ROOT": str(root / "static"),
        "DJANGO_SITE_MEDIA_ROOT": str(root / "media"),
        "DJANGO_SUPERUSER_PASSWORD": PASSWORD,
    }
    manage(env, "migrate", "--noinput")
    manage(env, "createsuperuser", "--noinput", "--username", "admin", "--email", "a@b.example")
    manage(env, "collectstatic", "--noinput")
    return root, env


def start_site(prepared: tuple[Path, dict[str, str]], *options: str) -> Iterator[Site]:
    root, env = prepared
    argv = wsgibridge_argv(
        "--host", "127.0.0.1", "--port", "0", *options, "mysite.wsgi:application"
    )
    server = ServerProcess(argv, cwd=SITE, env=env)
    try:
        [address] = server.serving(timeout=30)
        assert isinstance(address, tuple)
        host, port = address
        yield Site(root, env, f"http://{host}:{port}/", host, port)
    finally:
        server.close()


@pytest.fixture(scope="module")
def site(prepared: tuple[Path, dict[str, str]]) -> Iterator[Site]:
    """``wsgibridge mysite.wsgi:application``, as it is."""
    yield from start_site(prepared)


@pytest.fixture(scope="module")
def styled_site(prepared: tuple[Path, dict[str, str]]) -> Iterator[Site]:
    """The same, with the collected static files served by the server (``--static``)."""
    yield from start_site(prepared, "--static", f"/static={prepared[0] / 'static'}")


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """A requests session that ignores proxy settings from the environment."""
    with requests.Session() as http_session:
        http_session.trust_env = False
        yield http_session


def csrf_token(page: str) -> str:
    match = TOKEN.search(page)
    assert match is not None, page[:2000]
    return match.group(1)


def post_note(
    site: Site, session: requests.Session, title: str, attachment: bytes | None = None
) -> requests.Response:
    form = session.get(site.url, timeout=TIMEOUT)
    assert form.status_code == 200
    files = {"attachment": ("data.bin", attachment)} if attachment is not None else None
    return session.post(
        site.url,
        data={"csrfmiddlewaretoken": csrf_token(form.text), "title": title, "text": "hi"},
        files=files,
        timeout=TIMEOUT,
    )


# -- over sockets ------------------------------------------------------------------------


def test_the_form_page(site: Site, session: requests.Session) -> None:
    response = session.get(site.url, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'enctype="multipart/form-data"' in response.text
    assert csrf_token(response.text)
    assert "csrftoken" in session.cookies  # the token's cookie half


def test_a_post_with_the_csrf_token_is_stored(site: Site, session: requests.Session) -> None:
    response = post_note(site, session, "first <note>")
    assert response.status_code == 200
    assert response.history and response.history[0].status_code == 302
    assert re.search(r"/notes/\d+/$", response.url)
    assert '<h2 id="title">first &lt;note&gt;</h2>' in response.text
    assert "first &lt;note&gt;" in session.get(site.url, timeout=TIMEOUT).text


def test_a_post_without_the_token_is_403_and_the_connection_serves_on(site: Site) -> None:
    conn = http.client.HTTPConnection(site.host, site.port, timeout=TIMEOUT)
    try:
        body = b"title=forged"
        conn.request("POST", "/", body, {"Content-Type": "application/x-www-form-urlencoded"})
        refused = conn.getresponse()
        assert refused.status == 403
        assert b"CSRF verification failed" in refused.read()
        sock = conn.sock
        conn.request("GET", "/")
        again = conn.getresponse()
        assert again.status == 200
        again.read()
        assert conn.sock is sock  # the same connection: kept alive after the 403
    finally:
        conn.close()


def test_an_upload_is_saved_byte_for_byte(site: Site, session: requests.Session) -> None:
    data = bytes(range(256)) * 4096 + os.urandom(4099)  # 1 MiB and a ragged end
    response = post_note(site, session, "with a file", attachment=data)
    assert response.status_code == 200
    match = ATTACHMENT.search(response.text)
    assert match is not None, response.text
    name = html.unescape(match.group(1))
    assert name.startswith("uploads/data") and name.endswith(".bin")
    stored = (site.media / name).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    assert f"({len(data)} bytes)" in response.text


def test_keep_alive_carries_pages_and_posts(site: Site) -> None:
    conn = http.client.HTTPConnection(site.host, site.port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/admin/login/")
        first = conn.getresponse()
        assert first.status == 200
        first.read()
        sock = conn.sock
        assert sock is not None
        for path in ("/", "/admin/login/?next=/admin/", "/notes/999999/", "/"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == (404 if "999999" in path else 200)
            assert response.getheader("Connection") != "close"
        assert conn.sock is sock  # five requests, one connection
    finally:
        conn.close()


def test_a_foreign_host_is_refused_by_django(site: Site) -> None:
    conn = http.client.HTTPConnection(site.host, site.port, timeout=TIMEOUT)
    try:
        conn.putrequest("GET", "/", skip_host=True)
        conn.putheader("Host", "evil.example")
        conn.endheaders()
        refused = conn.getresponse()
        refused.read()
        assert refused.status == 400  # DisallowedHost, with DEBUG off
    finally:
        conn.close()
    assert requests.get(site.url, timeout=TIMEOUT).status_code == 200


def test_the_admin_login_and_add(site: Site, session: requests.Session) -> None:
    login = session.get(site.url + "admin/login/", timeout=TIMEOUT)
    done = session.post(
        site.url + "admin/login/?next=/admin/",
        data={
            "csrfmiddlewaretoken": csrf_token(login.text),
            "username": "admin",
            "password": PASSWORD,
            "next": "/admin/",
        },
        timeout=TIMEOUT,
    )
    assert done.status_code == 200 and done.url == site.url + "admin/"
    assert "Site administration" in done.text
    add = session.get(site.url + "admin/notes/note/add/", timeout=TIMEOUT)
    saved = session.post(
        site.url + "admin/notes/note/add/",
        data={"csrfmiddlewaretoken": csrf_token(add.text), "title": "from the admin", "text": ""},
        files={"attachment": ("", b"")},
        timeout=TIMEOUT,
    )
    assert saved.status_code == 200 and saved.url == site.url + "admin/notes/note/"
    assert "from the admin" in saved.text


def test_static_files_are_not_served_without_static(site: Site) -> None:
    """DEBUG off: Django serves no static files; that is what ``--static`` is for."""
    assert requests.get(site.url + "static/admin/css/base.css", timeout=TIMEOUT).status_code == 404


def test_with_static_the_collected_files_are_served(styled_site: Site) -> None:
    """Needs ``--static``."""
    for name in ("admin/css/base.css", "notes/site.css"):
        response = requests.get(styled_site.url + "static/" + name, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/css")
        assert response.content == (styled_site.static / name).read_bytes()


# -- in a browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with launched_browser() as chromium:
        yield chromium


@needs_chromium
@needs_playwright
def test_browser_admin_login_add_and_upload(browser: object, site: Site) -> None:
    from playwright.sync_api import Browser, FilePayload

    assert isinstance(browser, Browser)
    context = browser.new_context()
    try:
        context.set_default_timeout(TIMEOUT * 1000)
        page = context.new_page()
        page.goto(site.url + "admin/login/?next=/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(site.url + "admin/")
        page.goto(site.url + "admin/notes/note/add/")
        page.fill("#id_title", "added in chromium")
        page.click("input[name=_save]")
        page.wait_for_url(site.url + "admin/notes/note/")
        assert "added in chromium" in page.content()

        data = os.urandom(200_000)
        page.goto(site.url)
        page.fill("#id_title", "uploaded in chromium")
        page.set_input_files(
            "#id_attachment",
            files=FilePayload(name="photo.bin", mimeType="application/octet-stream", buffer=data),
        )
        page.click("#new-note button[type=submit]")
        page.wait_for_selector("#attachment")
        name = page.inner_text("#attachment")
        assert (site.media / name).read_bytes() == data
    finally:
        context.close()


@needs_chromium
@needs_playwright
def test_browser_the_admin_is_styled(browser: object, styled_site: Site) -> None:
    """Needs ``--static``: every stylesheet the admin and the app ask for is answered 200."""
    from playwright.sync_api import Browser, Response

    assert isinstance(browser, Browser)
    context = browser.new_context()
    try:
        context.set_default_timeout(TIMEOUT * 1000)
        page = context.new_page()
        styles: dict[str, int] = {}

        def on_response(response: Response) -> None:
            if response.request.resource_type == "stylesheet":
                styles[response.url] = response.status

        page.on("response", on_response)
        page.goto(styled_site.url + "admin/login/")
        page.wait_for_load_state("load")
        page.goto(styled_site.url)
        page.wait_for_load_state("load")
        assert styles.get(styled_site.url + "static/admin/css/base.css") == 200, styles
        assert styles.get(styled_site.url + "static/notes/site.css") == 200, styles
        assert all(status == 200 for status in styles.values()), styles
    finally:
        context.close()
