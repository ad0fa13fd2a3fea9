"""``--static``: files answered by the server over real sockets, and nothing outside them."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import ssl
import stat
import subprocess
from email.utils import formatdate
from pathlib import Path

import pytest
import requests
import trustme

from wsgibridge import Config
from wsgibridge.accesslog import AccessRecord
from wsgibridge.errors import ConfigError
from wsgibridge.serving.server import WSGIServer

from ..conftest import Recorder, ResponseReader, ServerFactory, connect, exchange, expect_eof
from .test_accesssink import wait_for

CSS = b"body { color: teal }\n"
BIG = os.urandom(1024 * 1024)  # 1 MiB


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A static directory with files, a subdirectory, and links in and out; a secret beside it."""
    root = tmp_path / "staticfiles"
    (root / "css").mkdir(parents=True)
    (root / "css" / "site.css").write_bytes(CSS)
    (root / "big.bin").write_bytes(BIG)
    (root / "empty.txt").write_bytes(b"")
    (root / "café.txt").write_bytes(b"accent\n")
    (root / ".env").write_bytes(b"SECRET=1\n")
    (root / "inside.css").symlink_to(root / "css" / "site.css")
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "null").symlink_to("/dev/null")
    (root / "up").symlink_to(tmp_path)
    os.mkfifo(root / "fifo")
    (tmp_path / "secret").write_bytes(b"the secret\n")
    return root


@pytest.fixture
def app() -> Recorder:
    return Recorder()


def start(serve: ServerFactory, app: Recorder, site: Path, **options: object) -> WSGIServer:
    return serve(app, static={"/static": str(site)}, **options)


def url(server: WSGIServer, path: str) -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def raw_get(server: WSGIServer, target: bytes, method: bytes = b"GET") -> tuple[int, bytes]:
    """One request on its own connection, sent as these bytes: (status, body)."""
    with connect(server) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        response = ResponseReader(sock).read_response(method.decode())
    return response.status, response.body


# -- serving ----------------------------------------------------------------------------


def test_a_file_with_its_type_length_and_validators(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    response = requests.get(url(server, "/static/css/site.css?v=3"), timeout=5)
    assert response.status_code == 200
    assert response.content == CSS
    assert response.headers["Content-Type"] == "text/css; charset=utf-8"
    assert response.headers["Content-Length"] == str(len(CSS))
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Cache-Control"] == "public, max-age=3600"
    mtime = (site / "css" / "site.css").stat().st_mtime_ns
    assert response.headers["ETag"] == f'"{len(CSS):x}-{mtime:x}"'
    assert response.headers["Last-Modified"] == formatdate(mtime // 10**9, usegmt=True)
    assert "Date" in response.headers and "Server" in response.headers
    assert app.calls == []  # the app never saw it
    accented = requests.get(url(server, "/static/caf%C3%A9.txt"), timeout=5)
    assert accented.content == b"accent\n"


def test_a_static_answer_carries_a_request_id_too(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    """With ``--request-id-header``, a file (and a 404 under the prefix) gets an id like
    an app's response: the trusted one it came with, else a new one."""
    server = start(serve, app, site, request_id_header="X-Request-ID")
    kept = requests.get(
        url(server, "/static/css/site.css"), headers={"X-Request-ID": "abc-1"}, timeout=5
    )
    assert kept.status_code == 200 and kept.headers["X-Request-ID"] == "abc-1"
    missing = requests.get(url(server, "/static/nothing.css"), timeout=5)
    assert missing.status_code == 404
    assert len(missing.headers["X-Request-ID"]) == 32
    assert app.calls == []


def test_head_has_the_fields_and_no_body_and_keeps_the_connection(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        connection.request("HEAD", "/static/big.bin")
        head = connection.getresponse()
        assert head.status == 200
        assert head.getheader("Content-Length") == str(len(BIG))
        assert head.getheader("Content-Type") == "application/octet-stream"
        assert head.read() == b""
        connection.request("GET", "/static/css/site.css")  # the same connection
        again = connection.getresponse()
        assert (again.status, again.read()) == (200, CSS)
        assert connection.sock is not None and not again.will_close
    finally:
        connection.close()


def test_304_for_if_none_match_and_if_modified_since(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site, static_cache_control="public, max-age=31536000, immutable")
    first = requests.get(url(server, "/static/css/site.css"), timeout=5)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for fields in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        again = requests.get(url(server, "/static/css/site.css"), headers=fields, timeout=5)
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["ETag"] == etag
        assert again.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    changed = requests.get(
        url(server, "/static/css/site.css"), headers={"If-None-Match": '"old"'}, timeout=5
    )
    assert (changed.status_code, changed.content) == (200, CSS)


@pytest.mark.parametrize(
    ("value", "first", "last"),
    [("bytes=10-19", 10, 19), ("bytes=1048570-", 1048570, 1048575), ("bytes=-7", 1048569, 1048575)],
)
def test_206_for_each_form_of_a_range(
    serve: ServerFactory, app: Recorder, site: Path, value: str, first: int, last: int
) -> None:
    server = start(serve, app, site)
    response = requests.get(url(server, "/static/big.bin"), headers={"Range": value}, timeout=5)
    assert response.status_code == 206
    assert response.content == BIG[first : last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(BIG)}"


def test_416_and_several_ranges_and_the_connection_stays(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    with requests.Session() as session:
        refused = session.get(
            url(server, "/static/big.bin"), headers={"Range": "bytes=2000000-"}, timeout=5
        )
        assert refused.status_code == 416
        assert refused.headers["Content-Range"] == f"bytes */{len(BIG)}"
        several = session.get(
            url(server, "/static/big.bin"), headers={"Range": "bytes=0-1,5-6"}, timeout=5
        )
        assert several.status_code == 200 and several.content == BIG


def test_other_methods_get_405_with_allow(serve: ServerFactory, app: Recorder, site: Path) -> None:
    server = start(serve, app, site)
    with connect(server) as sock:
        reader = ResponseReader(sock)
        sock.sendall(b"DELETE /static/css/site.css HTTP/1.1\r\nHost: t\r\n\r\n")
        refused = reader.read_response()
        assert refused.status == 405
        assert refused.header("Allow") == "GET, HEAD"
        assert refused.header("Connection") is None  # no body sent: the connection stays
        sock.sendall(b"GET /static/css/site.css HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read_response().body == CSS
    # A body is never read: the answer closes the connection.
    posted = exchange(
        server,
        b"POST /static/css/site.css HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /static/css/site.css HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    assert posted.startswith(b"HTTP/1.1 405 ")
    assert posted.count(b"HTTP/1.1 ") == 1 and b"Connection: close\r\n" in posted
    assert app.calls == []


def test_keep_alive_and_pipelining_across_static_and_app(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    with connect(server) as sock:
        reader = ResponseReader(sock)
        sock.sendall(
            b"GET /static/css/site.css HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /static/nope.css HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /page HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /static/big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        assert reader.read_response().body == CSS
        assert reader.read_response().status == 404
        assert reader.read_response().body == b"ok:/page"
        last = reader.read_response()
        assert last.body == BIG and last.header("Connection") == "close"
        expect_eof(reader)


def test_http_1_0_closes_unless_it_asks_to_keep_alive(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    closed = exchange(server, b"GET /static/css/site.css HTTP/1.0\r\n\r\n")
    assert closed.startswith(b"HTTP/1.1 200 ") and closed.endswith(CSS)
    with connect(server) as sock:
        sock.sendall(b"GET /static/css/site.css HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        kept = ResponseReader(sock).read_response()
        assert kept.header("Connection") == "keep-alive" and kept.body == CSS


def test_the_app_still_gets_every_path_outside_the_prefix(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    for path in ("/", "/staticfiles/x", "/static-other", "/stat", "/other/static/x"):
        response = requests.get(url(server, path), timeout=5)
        assert response.text == f"ok:{path}"
    assert app.calls == ["/", "/staticfiles/x", "/static-other", "/stat", "/other/static/x"]


def test_several_mounts_longest_prefix_first(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = serve(app, static=[("/s", str(site)), ("/s/css", str(site / "css"))])
    assert requests.get(url(server, "/s/css/site.css"), timeout=5).content == CSS
    assert requests.get(url(server, "/s/big.bin"), timeout=5).content == BIG


# -- nothing outside the directory ------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"/static/../secret",
        b"/static/css/../../secret",
        b"/static/%2e%2e/secret",
        b"/static/%2E%2E/%2E%2E/secret",
        b"/static/..%2fsecret",
        b"/static/%2e%2e%2fsecret",
        b"/static/%2e%2e%5csecret",
        b"/static/a\\..\\b",
        b"/static/css/site.css%00.png",
        b"/static/%00",
        b"/static/./css/site.css",
        b"/static/css//site.css",
        b"/static/.env",
        b"/static/passwd",  # a symbolic link to /etc/passwd
        b"/static/null",  # to /dev/null, a device
        b"/static/up/secret",  # a link to the parent directory
        b"/static/fifo",  # would block an open without O_NONBLOCK
        b"/static/css",  # a directory: never a listing
        b"/static/css/",
        b"/static/",
        b"/static",
        b"/static?x=1",
        b"/static/missing.css",
        b"/static/css/site.css/",
        b"/static/css/site.css/x",
    ],
)
def test_nothing_outside_the_files_is_reachable(
    serve: ServerFactory, app: Recorder, site: Path, target: bytes
) -> None:
    server = start(serve, app, site)
    status, body = raw_get(server, target)
    assert status == 404, (status, body)  # one answer, whichever rule refused the name
    assert b"secret" not in body and b"root:" not in body
    assert app.calls == []  # under the prefix, never the app's
    # The server answers the next client.
    assert requests.get(url(server, "/static/css/site.css"), timeout=5).content == CSS


@pytest.mark.parametrize("target", [b"/static/a\x00b", b"/static/a\x7fb", b"/static/a b"])
def test_a_raw_control_byte_is_the_parser_s_400(
    serve: ServerFactory, app: Recorder, site: Path, target: bytes
) -> None:
    server = start(serve, app, site)
    answer = exchange(server, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert requests.get(url(server, "/static/css/site.css"), timeout=5).content == CSS


def test_a_link_that_stays_inside_is_followed(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    assert requests.get(url(server, "/static/inside.css"), timeout=5).content == CSS


def test_an_absolute_form_target_is_checked_the_same(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    assert raw_get(server, b"http://t/static/css/site.css") == (200, CSS)
    assert raw_get(server, b"http://t/static/%2e%2e/secret")[0] == 404


# -- the wire ---------------------------------------------------------------------------


def open_under(directory: Path) -> list[str]:
    """The files under ``directory`` this process (server and clients) has open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listdir's own descriptor)
        if target.startswith(str(directory)):
            found.append(target)
    return found


def test_a_mebibyte_byte_exact_and_no_descriptor_left_open(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    with requests.Session() as session:
        for _ in range(5):
            response = session.get(url(server, "/static/big.bin"), timeout=5)
            assert response.content == BIG
            assert session.get(url(server, "/static/fifo"), timeout=5).status_code == 404
            assert session.get(url(server, "/static/css"), timeout=5).status_code == 404
            assert session.head(url(server, "/static/big.bin"), timeout=5).status_code == 200
            ranged = session.get(
                url(server, "/static/big.bin"), headers={"Range": "bytes=-1"}, timeout=5
            )
            assert ranged.content == BIG[-1:]
            assert session.post(url(server, "/static/big.bin"), timeout=5).status_code == 405
            # Each answer is sent (and its file closed) before the next request is read.
            assert open_under(site) == []
        mtime = (site / "big.bin").stat().st_mtime_ns
        etag = f'"{len(BIG):x}-{mtime:x}"'
        fresh = session.get(
            url(server, "/static/big.bin"), headers={"If-None-Match": etag}, timeout=5
        )
        assert fresh.status_code == 304
        assert session.get(url(server, "/static/nope"), timeout=5).status_code == 404
        assert open_under(site) == []


def test_a_mebibyte_over_tls(
    serve: ServerFactory,
    app: Recorder,
    site: Path,
    tmp_path: Path,
    authority: tuple[trustme.CA, trustme.LeafCert, trustme.LeafCert],
) -> None:
    ca, leaf, _ = authority
    combined = tmp_path / "server.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(combined))
    server = start(serve, app, site, certfile=str(combined))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=5, context=context)
    try:
        connection.request("GET", "/static/big.bin", headers={"Range": "bytes=1-"})
        partial = connection.getresponse()
        assert (partial.status, partial.read()) == (206, BIG[1:])
        connection.request("GET", "/static/big.bin")
        whole = connection.getresponse()
        assert (whole.status, whole.read()) == (200, BIG)
    finally:
        connection.close()


def test_the_access_log_sees_status_and_bytes(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    server = start(serve, app, site)
    records: list[AccessRecord] = []
    server.observers.append(records.append)
    with requests.Session() as session:
        session.get(url(server, "/static/big.bin"), headers={"Range": "bytes=0-99"}, timeout=5)
        session.get(url(server, "/static/nope"), timeout=5)
        session.head(url(server, "/static/big.bin"), timeout=5)
    # A request's record is made just after its response is sent.
    assert wait_for(lambda: len(records) == 3)
    got = [(r.method, r.path, r.status, r.bytes_sent) for r in records]
    assert got == [
        ("GET", "/static/big.bin", 206, 100),
        ("GET", "/static/nope", 404, len(b"404 Not Found\n")),
        ("HEAD", "/static/big.bin", 200, 0),
    ]
    assert dict(records[0].response_headers)["Content-Range"] == f"bytes 0-99/{len(BIG)}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_downloads_resumes_and_revalidates(
    serve: ServerFactory, app: Recorder, site: Path, tmp_path: Path
) -> None:
    server = start(serve, app, site)
    out = tmp_path / "big.bin"
    out.write_bytes(BIG[:1000])
    # -C -: resume from where the file ends (a Range request); -z: If-Modified-Since.
    base = ["curl", "-sS", "--max-time", "10"]
    status_only = [*base, "-o", os.devnull, "-w", "%{http_code}"]
    subprocess.run([*base, "-C", "-", "-o", str(out), url(server, "/static/big.bin")], check=True)
    assert out.read_bytes() == BIG
    status = subprocess.run(
        [*status_only, "-z", str(site / "big.bin"), url(server, "/static/big.bin")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert status == "304"
    traversal = subprocess.run(
        [*status_only, "--path-as-is", url(server, "/static/../secret")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert traversal == "404"


# -- starting -----------------------------------------------------------------------------


def test_a_missing_directory_is_a_config_error_before_listening(tmp_path: Path) -> None:
    config = Config(port=0, static=(("/static", str(tmp_path / "missing")),))
    with pytest.raises(ConfigError, match=r"static: the directory '.*missing' of /static"):
        WSGIServer(Recorder(), config)
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="is not a directory"):
        WSGIServer(Recorder(), Config(port=0, static=(("/static", str(tmp_path / "file")),)))


def test_a_relative_directory_is_relative_to_the_working_directory(
    serve: ServerFactory, app: Recorder, site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(site.parent)
    server = serve(app, static={"/static": "staticfiles"})
    monkeypatch.chdir("/")  # resolved when the server was made
    assert requests.get(url(server, "/static/css/site.css"), timeout=5).content == CSS


def test_without_static_the_handler_has_no_mounts(serve: ServerFactory, app: Recorder) -> None:
    server = serve(app)
    assert server.static is None
    assert requests.get(url(server, "/static/x"), timeout=5).text == "ok:/static/x"


def test_a_socket_file_is_not_served(serve: ServerFactory, app: Recorder, site: Path) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(site / "sock"))
        server = start(serve, app, site)
        assert raw_get(server, b"/static/sock")[0] == 404
    finally:
        listener.close()


def test_a_device_inside_the_directory_is_not_served(
    serve: ServerFactory, app: Recorder, site: Path
) -> None:
    """The fstat check, not the realpath one: /dev/null's own device node, made inside."""
    try:
        os.mknod(site / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("making a device node needs root")
    server = start(serve, app, site)
    status, body = raw_get(server, b"/static/zero")
    assert (status, body) == (404, b"404 Not Found\n")
    assert requests.get(url(server, "/static/css/site.css"), timeout=5).content == CSS
