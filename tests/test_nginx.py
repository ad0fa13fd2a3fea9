"""wsgibridge behind a real nginx (the Debian package): what the application sees.

Each test starts wsgibridge in a thread (the ``serve`` fixture, with a handler
that records which upstream connection carried each request) and an nginx in
front of it (the ``nginx`` fixture: a configuration written into tmp_path,
``nginx -p <tmp> -c <conf>`` as a subprocess, stopped with SIGQUIT at
teardown), then talks to nginx with ``requests``.  The app answers with a JSON
object of what it saw (:func:`echo_app`).

nginx's configuration (:func:`nginx_conf`) has two servers, both on loopback:

server A, plain HTTP on ``port``
    ``/``             the forwarding headers most guides give: X-Forwarded-For
                      ``$proxy_add_x_forwarded_for`` (appended to the client's),
                      Host ``$host``, X-Forwarded-Proto ``$scheme``,
                      X-Forwarded-Host ``$host:$server_port``;
    ``/edge/``        what ``examples/nginx.conf`` recommends for an nginx that
                      faces the clients: X-Forwarded-For ``$remote_addr``
                      (replacing the client's), X-Forwarded-Host ``$host``,
                      X-Forwarded-Port ``$server_port``, Forwarded cleared;
    ``/unbuffered/``  as ``/``, with proxy_request_buffering and proxy_buffering
                      off: bodies are streamed (chunked when the client's is);
    ``/http10/``      nginx's default upstream protocol (HTTP/1.0, Connection:
                      close), to show why ``proxy_http_version 1.1`` matters;
    ``/app/``         a plain ``proxy_pass`` under a prefix (``--url-prefix``);
server B on ``tls_port``, as if TLS were terminated there
    ``/``             X-Forwarded-Proto https, X-Forwarded-Host ``$host:$server_port``;
    ``/as-443/``      X-Forwarded-Proto https, X-Forwarded-Host ``$host``,
                      X-Forwarded-Port 443 (the README's headers on a real
                      ``listen 443 ssl``);
    ``/as-443-host-port/``  X-Forwarded-Host ``$host:443`` (``$host:$server_port``
                      on a real ``listen 443 ssl``).

The client is 127.0.0.1, which the default ``--forwarded-allow-ips`` trusts
as a proxy; to play an outside client, requests are also sent from 127.0.0.2
(:func:`client_from`).  nginx's error log must stay free of errors and no
request may have been retried on a second upstream connection, unless a test
says otherwise (checked at teardown).

Also checked: ``examples/nginx.conf`` passes ``nginx -t``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import ServerFactory
from tests.proxies import START_TIMEOUT, accepts, free_port, nginx_main, nginx_temp_paths, stop
from wsgibridge import WSGIRequestHandler, WSGIServer
from wsgibridge.http.body import InputStream
from wsgibridge.http.parser import RequestHead

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONF = ROOT / "examples" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
TIMEOUT = 10.0  # every client call
MIB = 1024 * 1024
# Deterministic bytes for bodies and the streamed response.
DATA = random.Random(20240601).randbytes(8 * MIB)
OUTSIDE = "127.0.0.2"  # a client address no default trusts (Linux routes 127/8 to lo)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not os.access(NGINX, os.X_OK), reason="nginx not installed: .ci/run installs it"
    ),
]

# The keys the app reports (None when absent from the environ).
REPORTED = (
    "REQUEST_METHOD",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "wsgi.url_scheme",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_LENGTH",
    "HTTP_TRANSFER_ENCODING",
    "HTTP_CONNECTION",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_FORWARDED",
    "wsgibridge.proxy_peer",
)
PEER_KEY = "test.peer"  # the socket's peer, as accept() gave it
CONNECTION_KEY = "test.connection"  # a number per upstream connection
SERVED_KEY = "test.served"  # requests on this connection so far, this one included


# -- the application and the handler ----------------------------------------------------


_connection_ids = itertools.count(1)


class RecordingHandler(WSGIRequestHandler):
    """Puts the real socket peer and a per-connection number into every environ."""

    def setup(self) -> None:
        super().setup()
        self.connection_id = next(_connection_ids)

    def make_environ(self, head: RequestHead, body: InputStream) -> dict[str, Any]:
        environ = super().make_environ(head, body)
        peer = self.client_address
        environ[PEER_KEY] = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else repr(peer)
        environ[CONNECTION_KEY] = self.connection_id
        environ[SERVED_KEY] = self.requests_served
        return environ


def _stream(size: int, chunk: int, fail: bool) -> Iterator[bytes]:
    for start in range(0, size, chunk):
        if fail and start >= size // 2:
            raise RuntimeError("the stream broke half way")
        yield DATA[start : min(start + chunk, size)]


def echo_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """Routes on the last path segment; anything else echoes what it saw as JSON."""
    name = environ["PATH_INFO"].rsplit("/", 1)[-1]
    if name == "error":
        raise RuntimeError("the application failed")
    if name == "missing":
        body = b'{"error": "no such thing"}'
        start_response(
            "404 Not Found",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]
    if name == "fixed":
        body = b"a fixed body\n"
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    if name in ("stream", "stream-fail"):
        query = dict(item.split("=", 1) for item in environ["QUERY_STRING"].split("&") if item)
        size = int(query.get("size", str(len(DATA))))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _stream(size, int(query.get("chunk", "65536")), name == "stream-fail")
    if name == "ignore-body":
        body = b"not read\n"
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
        )
        return [body]
    data = environ["wsgi.input"].read()
    seen: dict[str, Any] = {key: environ.get(key) for key in REPORTED}
    seen["peer"] = environ[PEER_KEY]
    seen["connection"] = environ[CONNECTION_KEY]
    seen["served"] = environ[SERVED_KEY]
    seen["forwarding_keys"] = sorted(
        key for key in environ if key.startswith(("HTTP_X_FORWARDED", "HTTP_FORWARDED"))
    )
    seen["body_length"] = len(data)
    seen["body_sha256"] = hashlib.sha256(data).hexdigest()
    body = json.dumps(seen).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def start_app(serve: ServerFactory, **options: Any) -> WSGIServer:
    options.setdefault("access_log", False)
    return serve(echo_app, handler_class=RecordingHandler, **options)


def upstream_of(server: WSGIServer) -> str:
    """nginx's ``server`` address for a wsgibridge server: ``host:port`` or ``unix:path``."""
    if server.port:
        return f"{server.host}:{server.port}"
    return server.addresses[0]


# -- nginx --------------------------------------------------------------------------------


def _proxy(
    *,
    proto: str = "$scheme",
    xff: str = "$proxy_add_x_forwarded_for",
    xhost: str = "$host:$server_port",
    xport: str | None = None,
    http11: bool = True,
    clear_forwarded: bool = False,
) -> str:
    """The proxy_* directives of one location (proxy_set_header is not merged across levels)."""
    lines = ["proxy_pass http://wsgibridge;"]
    if http11:
        lines += ["proxy_http_version 1.1;", 'proxy_set_header Connection "";']
    lines += [
        "proxy_set_header Host $host;",
        f"proxy_set_header X-Forwarded-For {xff};",
        f"proxy_set_header X-Forwarded-Proto {proto};",
        f"proxy_set_header X-Forwarded-Host {xhost};",
    ]
    if xport is not None:
        lines.append(f"proxy_set_header X-Forwarded-Port {xport};")
    if clear_forwarded:
        lines.append('proxy_set_header Forwarded "";')
    return "\n            ".join(lines)


def nginx_conf(tmp: Path, upstream: str, port: int, tls_port: int) -> str:
    edge = _proxy(xff="$remote_addr", xhost="$host", xport="$server_port", clear_forwarded=True)
    return f"""{nginx_main(tmp)}
http {{
    log_format upstreams '$request_method $request_uri $status $upstream_status';
    access_log {tmp}/access.log upstreams;
{nginx_temp_paths(tmp)}
    client_max_body_size 64m;
    proxy_connect_timeout 5s;
    proxy_send_timeout 10s;
    proxy_read_timeout 10s;

    upstream wsgibridge {{
        server {upstream};
        keepalive 8;
    }}

    server {{
        listen 127.0.0.1:{port};
        # How wsgibridge framed the response, and whether it said it would close.
        add_header X-Upstream-Transfer-Encoding $upstream_http_transfer_encoding always;
        add_header X-Upstream-Connection $upstream_http_connection always;

        location / {{
            {_proxy()}
        }}
        location /edge/ {{
            {edge}
        }}
        location /unbuffered/ {{
            {_proxy()}
            proxy_request_buffering off;
            proxy_buffering off;
        }}
        location /http10/ {{
            {_proxy(http11=False)}
        }}
        location /app/ {{
            {_proxy()}
        }}
    }}

    server {{
        listen 127.0.0.1:{tls_port};
        # As if TLS were terminated here: "listen 443 ssl" and certificates.
        location / {{
            {_proxy(proto="https")}
        }}
        location /as-443/ {{
            {_proxy(proto="https", xff="$remote_addr", xhost="$host", xport="443")}
        }}
        location /as-443-host-port/ {{
            {_proxy(proto="https", xhost="$host:443")}
        }}
    }}
}}
"""


@dataclass
class Nginx:
    """One running nginx."""

    tmp: Path
    proc: subprocess.Popen[bytes]
    port: int
    tls_port: int
    log_start: int = 0  # where the test's part of error.log begins
    # Set by a test that provokes errors in nginx's log, or retries on purpose.
    expected_errors: list[str] = field(default_factory=list)
    allow_retries: bool = False

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def tls_url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.tls_port}{path}"

    def log(self, name: str = "error.log") -> str:
        return _read(self.tmp / name)

    def problems(self) -> list[str]:
        """Error-log lines at [error] or worse, and requests nginx retried upstream."""
        bad = [
            line
            for line in self.log()[self.log_start :].splitlines()
            if re.search(r"\[(error|crit|alert|emerg)\]", line)
            and not any(expected in line for expected in self.expected_errors)
        ]
        # $upstream_status lists one status per upstream connection tried.
        bad += [
            f"retried upstream: {line}"
            for line in self.log("access.log").splitlines()
            if "," in line.split(" ", 3)[-1] and not self.allow_retries
        ]
        return bad


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _ready(proc: subprocess.Popen[bytes], tmp: Path, ports: tuple[int, int]) -> bool:
    """nginx writes its pid file only once every listener is bound (a port taken by
    someone else would accept connections too), then the ports must accept."""
    pid = _read(tmp / "nginx.pid").strip()
    return pid == str(proc.pid) and all(accepts(port) for port in ports)


def launch_nginx(tmp: Path, upstream: str) -> Nginx:
    """Start nginx in front of ``upstream``; wait until both servers accept connections."""
    tmp.mkdir(parents=True, exist_ok=True)
    error_log = tmp / "error.log"
    last_error = ""
    for _attempt in range(5):
        port, tls_port = free_port(), free_port()
        if tls_port == port:
            continue
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_conf(tmp, upstream, port, tls_port))
        with open(tmp / "stderr.log", "wb") as stderr:
            proc = subprocess.Popen(
                [NGINX, "-p", f"{tmp}/", "-c", str(conf), "-e", str(error_log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _ready(proc, tmp, (port, tls_port)):
                # What nginx logged while starting (a bind() it retried) is not the test's.
                return Nginx(tmp, proc, port, tls_port, log_start=len(_read(error_log)))
            time.sleep(0.02)
        stop(proc)
        last_error = _read(tmp / "stderr.log") + _read(error_log)
        if "Address already in use" not in last_error:
            break  # not a port race: retrying will not help
        error_log.unlink(missing_ok=True)
    pytest.fail(f"nginx did not start:\n{last_error}")


NginxFactory = Callable[[WSGIServer], Nginx]


@pytest.fixture
def nginx(serve: ServerFactory, tmp_path: Path) -> Iterator[NginxFactory]:
    """``nginx(server)`` starts an nginx in front of a wsgibridge server.

    Depends on ``serve``, so every nginx is stopped before the servers are.
    """
    started: list[Nginx] = []

    def start(server: WSGIServer) -> Nginx:
        instance = launch_nginx(tmp_path / f"nginx{len(started)}", upstream_of(server))
        started.append(instance)
        return instance

    try:
        yield start
    finally:
        for instance in started:
            stop(instance.proc)
    problems = [line for instance in started for line in instance.problems()]
    assert not problems, "nginx logged problems:\n" + "\n".join(problems)


# -- clients ------------------------------------------------------------------------------


class _SourceAddressAdapter(HTTPAdapter):
    def __init__(self, source: str) -> None:
        self._source = (source, 0)
        super().__init__()

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs["source_address"] = self._source
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)


@contextlib.contextmanager
def client_from(source: str) -> Iterator[requests.Session]:
    """A session whose connections come from ``source`` (a loopback address)."""
    with requests.Session() as session:
        session.mount("http://", _SourceAddressAdapter(source))
        yield session


def seen(response: requests.Response) -> dict[str, Any]:
    """What the app saw, after checking it answered."""
    assert response.status_code == 200, (response.status_code, response.text[:500])
    result: dict[str, Any] = response.json()
    return result


def get(url: str, **kwargs: Any) -> dict[str, Any]:
    return seen(requests.get(url, timeout=TIMEOUT, **kwargs))


# -- 1. REMOTE_ADDR -------------------------------------------------------------------------


def test_remote_addr_is_the_client_nginx_saw(serve: ServerFactory, nginx: NginxFactory) -> None:
    server = start_app(serve)
    proxy = nginx(server)

    local = get(proxy.url("/"))
    assert local["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert local["REMOTE_ADDR"] == "127.0.0.1"
    assert local["REMOTE_PORT"] == ""  # X-Forwarded-For carries no port
    assert local["wsgibridge.proxy_peer"] == "127.0.0.1"  # nginx itself
    assert local["peer"].startswith("127.0.0.1:")

    with client_from(OUTSIDE) as client:
        outside = seen(client.get(proxy.url("/"), timeout=TIMEOUT))
    assert outside["HTTP_X_FORWARDED_FOR"] == OUTSIDE
    assert outside["REMOTE_ADDR"] == OUTSIDE
    assert outside["wsgibridge.proxy_peer"] == "127.0.0.1"


@pytest.mark.parametrize(
    "claimed",
    ["6.6.6.6", "127.0.0.1", "6.6.6.6, 127.0.0.1", "::1", "unknown", "garbage, 6.6.6.6"],
)
def test_a_spoofed_x_forwarded_for_is_not_believed(
    serve: ServerFactory, nginx: NginxFactory, claimed: str
) -> None:
    """nginx appends the real client; wsgibridge takes the rightmost untrusted element."""
    server = start_app(serve)
    proxy = nginx(server)
    with client_from(OUTSIDE) as client:
        appended = seen(
            client.get(proxy.url("/"), headers={"X-Forwarded-For": claimed}, timeout=TIMEOUT)
        )
        replaced = seen(
            client.get(proxy.url("/edge/"), headers={"X-Forwarded-For": claimed}, timeout=TIMEOUT)
        )
    assert appended["HTTP_X_FORWARDED_FOR"] == f"{claimed}, {OUTSIDE}"
    assert appended["REMOTE_ADDR"] == OUTSIDE
    assert replaced["HTTP_X_FORWARDED_FOR"] == OUTSIDE
    assert replaced["REMOTE_ADDR"] == OUTSIDE


def test_a_client_on_a_trusted_address_can_claim_any_address(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    """The documented limit of the default trust ("a client inside a trusted network
    can claim any address"): a client on 127.0.0.1 is, to wsgibridge, one more
    trusted proxy, so with ``$proxy_add_x_forwarded_for`` the address it claims is
    believed.  ``X-Forwarded-For $remote_addr`` (an nginx facing the clients) closes it.
    """
    server = start_app(serve)
    proxy = nginx(server)
    spoof = {"X-Forwarded-For": "6.6.6.6"}
    appended = get(proxy.url("/"), headers=spoof)
    assert appended["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert appended["REMOTE_ADDR"] == "6.6.6.6"
    replaced = get(proxy.url("/edge/"), headers=spoof)
    assert replaced["HTTP_X_FORWARDED_FOR"] == "127.0.0.1"
    assert replaced["REMOTE_ADDR"] == "127.0.0.1"


# -- 2. scheme, host, port ------------------------------------------------------------------


def test_scheme_and_host_are_what_the_client_used(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    port = str(proxy.port)
    for path in ("/", "/edge/"):
        default = get(proxy.url(path))
        assert default["wsgi.url_scheme"] == "http"
        assert default["HTTP_HOST"] == f"127.0.0.1:{port}"  # what requests sent
        assert default["SERVER_NAME"] == "127.0.0.1"
        assert default["SERVER_PORT"] == port
        assert default["SERVER_PROTOCOL"] == "HTTP/1.1"

        named = get(proxy.url(path), headers={"Host": f"www.example.com:{port}"})
        assert named["HTTP_HOST"] == f"www.example.com:{port}"
        assert named["SERVER_NAME"] == "www.example.com"
        assert named["SERVER_PORT"] == port

    # A Host without a port: nginx's $server_port is still the port it listens on.
    assert get(proxy.url("/"), headers={"Host": "www.example.com"})["HTTP_HOST"] == (
        f"www.example.com:{port}"
    )
    assert get(proxy.url("/edge/"), headers={"Host": "www.example.com"})["HTTP_HOST"] == (
        f"www.example.com:{port}"
    )


def test_a_client_cannot_choose_scheme_host_or_port(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    """nginx overwrites the headers it sets; Forwarded is ignored beside X-Forwarded-*."""
    server = start_app(serve)
    proxy = nginx(server)
    claims = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Port": "8443",
        "Forwarded": 'for=6.6.6.6;proto=https;host="evil.example:8443"',
    }
    with client_from(OUTSIDE) as client:
        for path in ("/", "/edge/"):
            view = seen(client.get(proxy.url(path), headers=claims, timeout=TIMEOUT))
            assert view["REMOTE_ADDR"] == OUTSIDE
            assert view["wsgi.url_scheme"] == "http"
            assert view["HTTP_HOST"] == f"127.0.0.1:{proxy.port}"
            assert view["SERVER_PORT"] == str(proxy.port)
    # "/" sets no X-Forwarded-Port: the client's passes through, harmless here
    # only because X-Forwarded-Host has an explicit port (which wins).
    view = seen(requests.get(proxy.url("/"), headers=claims, timeout=TIMEOUT))
    assert view["HTTP_X_FORWARDED_PORT"] == "8443"
    assert view["HTTP_FORWARDED"] == claims["Forwarded"]
    view = get(proxy.url("/edge/"), headers=claims)
    assert view["HTTP_X_FORWARDED_PORT"] == str(proxy.port)
    assert view["HTTP_FORWARDED"] is None


def test_behind_tls_termination_the_app_sees_https(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    tls_port = str(proxy.tls_port)

    view = get(proxy.tls_url("/"))
    assert view["HTTP_X_FORWARDED_PROTO"] == "https"
    assert view["wsgi.url_scheme"] == "https"
    assert view["HTTP_HOST"] == f"127.0.0.1:{tls_port}"
    assert view["SERVER_NAME"] == "127.0.0.1"
    assert view["SERVER_PORT"] == tls_port

    view = get(proxy.tls_url("/as-443/"), headers={"Host": "www.example.com"})
    assert view["wsgi.url_scheme"] == "https"
    assert view["HTTP_HOST"] == "www.example.com"  # the default port is dropped
    assert view["SERVER_NAME"] == "www.example.com"
    assert view["SERVER_PORT"] == "443"
    assert view["REMOTE_ADDR"] == "127.0.0.1"

    # $host:$server_port on port 443: the explicit default port stays in HTTP_HOST.
    view = get(proxy.tls_url("/as-443-host-port/"), headers={"Host": "www.example.com"})
    assert view["wsgi.url_scheme"] == "https"
    assert view["HTTP_HOST"] == "www.example.com:443"
    assert view["SERVER_PORT"] == "443"

    # An https claim from the client does not survive the plain server.
    view = get(proxy.url("/"), headers={"X-Forwarded-Proto": "https"})
    assert view["wsgi.url_scheme"] == "http"


# -- 3. an untrusted nginx -------------------------------------------------------------------


def test_without_trusted_proxies_the_headers_are_removed(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    server = start_app(serve, forwarded_allow_ips="")
    proxy = nginx(server)
    with client_from(OUTSIDE) as client:
        view = seen(
            client.get(proxy.url("/"), headers={"Forwarded": "for=6.6.6.6"}, timeout=TIMEOUT)
        )
    assert view["forwarding_keys"] == []
    assert view["wsgibridge.proxy_peer"] is None
    assert view["REMOTE_ADDR"] == "127.0.0.1"  # nginx, not the client (127.0.0.2)
    assert view["peer"] == f"127.0.0.1:{view['REMOTE_PORT']}"
    assert view["wsgi.url_scheme"] == "http"
    assert view["HTTP_HOST"] == "127.0.0.1"  # Host $host: no port
    assert view["SERVER_PORT"] == str(server.port)  # wsgibridge's own


# -- 4. upstream keep-alive -----------------------------------------------------------------


def test_nginx_reuses_its_upstream_connections(serve: ServerFactory, nginx: NginxFactory) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    views = [get(proxy.url(f"/?n={n}")) for n in range(20)]  # a new client connection each
    with requests.Session() as session:
        views += [seen(session.get(proxy.url(f"/edge/?n={n}"), timeout=TIMEOUT)) for n in range(20)]
        views += [
            seen(session.post(proxy.url("/unbuffered/"), data=DATA[:65536], timeout=TIMEOUT))
            for _ in range(5)
        ]
    assert all(view["HTTP_CONNECTION"] is None for view in views)  # Connection "" cleared it
    connections = {view["connection"] for view in views}
    assert len(connections) == 1, connections
    assert max(view["served"] for view in views) == len(views)

    def fetch(n: int) -> dict[str, Any]:
        return get(proxy.url(f"/?concurrent={n}"))

    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(fetch, range(40)))
    connections |= {view["connection"] for view in concurrent}
    assert len(connections) <= 8, connections  # "keepalive 8"; 4 at once at most
    assert max(view["served"] for view in concurrent) > 10


def _tolerate_stale_cached_connections(proxy: Nginx) -> None:
    """What the HTTP/1.0 bug below costs under load: nginx sends a request on a cached
    connection wsgibridge has closed, logs a reset and retries a GET elsewhere."""
    proxy.allow_retries = True
    proxy.expected_errors += [
        "while reading response header from upstream",
        "while sending request to upstream",
    ]


def test_without_proxy_http_version_1_1_every_request_is_a_new_connection(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    _tolerate_stale_cached_connections(proxy)
    views = [get(proxy.url("/http10/")) for _ in range(5)]
    assert {view["SERVER_PROTOCOL"] for view in views} == {"HTTP/1.0"}
    assert {view["HTTP_CONNECTION"] for view in views} == {"close"}
    assert len({view["connection"] for view in views}) == 5


def test_an_http_1_0_request_gets_connection_close(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    """RFC 9112 §9.6: a server closing after a response SHOULD say "close" - also to an
    HTTP/1.0 request, or nginx (proxy_http_version 1.0 with an upstream keepalive) caches
    the connection and later loses a request on it."""
    server = start_app(serve)
    proxy = nginx(server)
    _tolerate_stale_cached_connections(proxy)
    # With HTTP/1.1 and Connection "" to the upstream, wsgibridge keeps it open.
    response = requests.get(proxy.url("/"), timeout=TIMEOUT)
    assert "X-Upstream-Connection" not in response.headers  # nginx adds no empty header
    response = requests.get(proxy.url("/http10/"), timeout=TIMEOUT)
    assert seen(response)["HTTP_CONNECTION"] == "close"
    assert response.headers.get("X-Upstream-Connection") == "close"


def test_a_small_body_the_app_does_not_read_is_drained(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    """Under --max-drain-bytes, an unread body is discarded and the connection kept."""
    server = start_app(serve)
    proxy = nginx(server)
    first = get(proxy.url("/"))["connection"]
    for path in ("/", "/unbuffered/"):
        response = requests.post(
            proxy.url(f"{path}ignore-body"), data=DATA[: 256 * 1024], timeout=TIMEOUT
        )
        assert (response.status_code, response.text) == (200, "not read\n")
    assert get(proxy.url("/"))["connection"] == first


@pytest.mark.parametrize(
    ("options", "path", "status"),
    [({}, "ignore-body", 200), ({"max_body_size": MIB}, "", 413)],
    ids=["app-answers-without-reading", "max-body-size-413"],
)
def test_an_early_answer_to_a_large_upload_reaches_the_client(
    serve: ServerFactory, nginx: NginxFactory, options: dict[str, Any], path: str, status: int
) -> None:
    """An app that answers 401/413/200 without reading a 3 MiB upload (past
    --max-drain-bytes), or wsgibridge's own --max-body-size 413: the connection is
    closed, lingeringly, and nginx must get the answer, not a reset.
    """
    server = start_app(serve, **options)
    proxy = nginx(server)
    proxy.expected_errors.append("while sending request to upstream")
    statuses = [
        requests.post(
            proxy.url(f"{prefix}{path}"), data=DATA[: 3 * MIB], timeout=TIMEOUT
        ).status_code
        for prefix in ("/", "/unbuffered/")
        for _ in range(20)
    ]
    assert Counter(statuses) == {status: len(statuses)}


# -- 5. bodies ------------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_5_mib_post_arrives_intact(serve: ServerFactory, nginx: NginxFactory) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    body = DATA[: 5 * MIB]
    for path in ("/", "/unbuffered/"):
        view = seen(requests.post(proxy.url(path), data=body, timeout=TIMEOUT))
        assert view["CONTENT_LENGTH"] == str(len(body))
        assert view["HTTP_TRANSFER_ENCODING"] is None
        assert (view["body_length"], view["body_sha256"]) == (len(body), _digest(body))


def test_a_chunked_upload_arrives_intact(serve: ServerFactory, nginx: NginxFactory) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    body = DATA[: 5 * MIB + 12345]
    sizes = [1, 7, 65536, 100_000, 3 * MIB]

    def pieces() -> Iterator[bytes]:
        offset = 0
        for size in itertools.cycle(sizes):
            if offset >= len(body):
                return
            yield body[offset : offset + size]
            offset += size

    # Buffered (nginx's default): nginx reads the whole body, sends a Content-Length.
    view = seen(requests.post(proxy.url("/"), data=pieces(), timeout=TIMEOUT))
    assert view["CONTENT_LENGTH"] == str(len(body))
    assert view["HTTP_TRANSFER_ENCODING"] is None
    assert (view["body_length"], view["body_sha256"]) == (len(body), _digest(body))

    # proxy_request_buffering off: nginx streams it on, chunked, to wsgibridge.
    view = seen(requests.post(proxy.url("/unbuffered/"), data=pieces(), timeout=TIMEOUT))
    assert view["CONTENT_LENGTH"] is None
    assert view["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert (view["body_length"], view["body_sha256"]) == (len(body), _digest(body))


def test_a_large_streamed_response_arrives_intact(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    size = len(DATA) - 777
    for path in ("/", "/unbuffered/"):
        for chunk in (65536, 1000):
            with requests.get(
                proxy.url(f"{path}stream?size={size}&chunk={chunk}"), stream=True, timeout=TIMEOUT
            ) as response:
                assert response.status_code == 200
                assert response.headers["X-Upstream-Transfer-Encoding"] == "chunked"
                assert "Content-Length" not in response.headers
                received = b"".join(response.iter_content(256 * 1024))
            assert len(received) == size
            assert received == DATA[:size]


def test_a_response_broken_half_way_is_not_passed_off_as_complete(
    serve: ServerFactory, nginx: NginxFactory
) -> None:
    server = start_app(serve)
    proxy = nginx(server)
    proxy.expected_errors.append("upstream prematurely closed connection")
    for path in ("/", "/unbuffered/"):
        with (
            pytest.raises(requests.exceptions.ChunkedEncodingError),
            requests.get(
                proxy.url(f"{path}stream-fail?size={2 * MIB}"), stream=True, timeout=TIMEOUT
            ) as response,
        ):
            assert response.status_code == 200
            b"".join(response.iter_content(65536))
    assert get(proxy.url("/"))["REMOTE_ADDR"] == "127.0.0.1"  # and nginx carries on
    assert "upstream prematurely closed connection" in proxy.log()


# -- 6. a URL prefix ------------------------------------------------------------------------


def test_url_prefix_sets_script_name(serve: ServerFactory, nginx: NginxFactory) -> None:
    server = start_app(serve, url_prefix="/app")
    proxy = nginx(server)

    view = get(proxy.url("/app/hello/world?x=1&y=%20"))
    assert (view["SCRIPT_NAME"], view["PATH_INFO"], view["QUERY_STRING"]) == (
        "/app",
        "/hello/world",
        "x=1&y=%20",
    )
    view = get(proxy.url("/app/"))
    assert (view["SCRIPT_NAME"], view["PATH_INFO"]) == ("/app", "/")
    view = get(proxy.url("/app/a%20b"))
    assert (view["SCRIPT_NAME"], view["PATH_INFO"]) == ("/app", "/a b")

    # "location /app/" with proxy_pass: nginx itself redirects /app to /app/.
    response = requests.get(proxy.url("/app"), allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 301
    assert response.headers["Location"] == proxy.url("/app/")

    # Outside the prefix (nginx's "location /"), wsgibridge answers 404.
    for path in ("/", "/other", "/apple"):
        response = requests.get(proxy.url(path), timeout=TIMEOUT)
        assert (response.status_code, response.text) == (404, "404 Not Found\n")


# -- 7. errors, 404, HEAD -------------------------------------------------------------------


def test_errors_and_head_pass_through(serve: ServerFactory, nginx: NginxFactory) -> None:
    server = start_app(serve)
    proxy = nginx(server)

    response = requests.get(proxy.url("/error"), timeout=TIMEOUT)
    assert response.status_code == 500
    assert response.text == "500 Internal Server Error\n"
    assert response.headers["Server"].startswith("nginx")

    response = requests.get(proxy.url("/missing"), timeout=TIMEOUT)
    assert response.status_code == 404
    assert response.json() == {"error": "no such thing"}

    response = requests.post(proxy.url("/error"), data=b"x" * 1000, timeout=TIMEOUT)
    assert response.status_code == 500

    get_response = requests.get(proxy.url("/fixed"), timeout=TIMEOUT)
    head = requests.head(proxy.url("/fixed"), timeout=TIMEOUT)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["Content-Length"] == get_response.headers["Content-Length"] == "13"

    head = requests.head(proxy.url("/stream"), timeout=TIMEOUT)
    assert (head.status_code, head.content) == (200, b"")

    with requests.Session() as session:
        head = session.head(proxy.url("/"), timeout=TIMEOUT)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["Content-Length"]) > 0
        view = seen(session.get(proxy.url("/"), timeout=TIMEOUT))  # the connection still works
    assert view["REQUEST_METHOD"] == "GET"


# -- a Unix socket upstream -----------------------------------------------------------------


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for a Unix socket (sun_path holds 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="wbnginx-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_unix_socket_upstream_needs_forwarded_allow_ips_unix(
    serve: ServerFactory, nginx: NginxFactory, socket_dir: Path
) -> None:
    path = socket_dir / "default.sock"
    server = start_app(serve, bind=(f"unix:{path}",))
    proxy = nginx(server)
    view = get(proxy.url("/"))
    assert view["forwarding_keys"] == []  # the Unix peer is not trusted by default
    assert view["REMOTE_ADDR"] == ""
    assert view["wsgi.url_scheme"] == "http"

    path = socket_dir / "unix.sock"
    server = start_app(serve, bind=(f"unix:{path}",), forwarded_allow_ips="unix")
    proxy = nginx(server)
    with client_from(OUTSIDE) as client:
        views = [seen(client.get(proxy.url("/"), timeout=TIMEOUT)) for _ in range(10)]
    view = views[0]
    assert view["REMOTE_ADDR"] == OUTSIDE
    assert view["HTTP_HOST"] == f"127.0.0.1:{proxy.port}"
    assert view["SERVER_PORT"] == str(proxy.port)
    assert len({view["connection"] for view in views}) == 1
    view = get(proxy.tls_url("/"))
    assert view["wsgi.url_scheme"] == "https"
    # Only Unix peers are trusted: a loopback client's own claim is not believed.
    view = get(proxy.url("/"), headers={"X-Forwarded-For": "6.6.6.6"})
    assert view["HTTP_X_FORWARDED_FOR"] == "6.6.6.6, 127.0.0.1"
    assert view["REMOTE_ADDR"] == "127.0.0.1"


# -- examples/nginx.conf --------------------------------------------------------------------


def test_the_example_configuration_passes_nginx_t(tmp_path: Path) -> None:
    """``examples/nginx.conf`` goes into the http block (Debian: /etc/nginx/conf.d/)."""
    assert EXAMPLE_CONF.exists()
    text = EXAMPLE_CONF.read_text()
    for directive in (
        "keepalive",
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";',
        "proxy_set_header X-Forwarded-For",
        "proxy_set_header X-Forwarded-Proto",
    ):
        assert directive in text, directive
    wrapper = tmp_path / "wrapper.conf"
    wrapper.write_text(
        f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{ }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/client_body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {EXAMPLE_CONF};
}}
"""
    )
    proc = subprocess.run(
        [NGINX, "-t", "-p", f"{tmp_path}/", "-c", str(wrapper), "-e", f"{tmp_path}/error.log"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "syntax is ok" in output
    assert "[warn]" not in output and "[emerg]" not in output, output
