"""``--proxy-protocol`` behind a real HAProxy and nginx: REMOTE_ADDR is the client, not the proxy.

Each test starts wsgibridge in a thread with ``proxy_protocol=True`` (the
default ``--forwarded-allow-ips`` trusts the proxies on 127.0.0.1) and one
proxy in front of it, as a layer-4 (TCP) proxy that announces each client
with a PROXY protocol header:

HAProxy (the Debian package), ``mode tcp``
    ``server ... send-proxy-v2 proxy-v2-options crc32c,unique-id``: the
    binary v2 header with TLVs; its health checks (``option httpchk``) come
    as v2 ``LOCAL`` headers, which keep the real endpoints.  Also
    ``send-proxy``: the v1 line.
nginx (the Debian package, ``libnginx-mod-stream``)
    a ``stream {}`` server with ``proxy_protocol on``: the v1 line (nginx's
    http proxy cannot send one; only the stream module does).

The client connects from 127.0.0.2 (Linux routes all of 127/8 to ``lo``), an
address neither the proxy nor wsgibridge has, and must appear as exactly
that address and its own port, on each request of its keep-alive connection.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import proxies
from tests.conftest import ServerFactory

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
# Debian builds nginx's stream module as a module of its own package.
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
OUTSIDE = "127.0.0.2"  # the client's address: not the proxy's
TIMEOUT = 10.0  # every client call and wait

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # starts real proxies


# -- the application ----------------------------------------------------------------------


class Seen:
    """A WSGI app answering with the client as it saw it; it keeps every request's too."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.changed = threading.Condition()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen = {
            "path": environ["PATH_INFO"],
            "REMOTE_ADDR": environ["REMOTE_ADDR"],
            "REMOTE_PORT": environ["REMOTE_PORT"],
        }
        with self.changed:
            self.requests.append(seen)
            self.changed.notify_all()
        body = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    def wait_for(self, path: str) -> list[dict[str, str]]:
        """The requests for ``path`` once there is one (failing after TIMEOUT)."""
        with self.changed:
            self.changed.wait_for(
                lambda: any(seen["path"] == path for seen in self.requests), TIMEOUT
            )
            found = [seen for seen in self.requests if seen["path"] == path]
        assert found, f"no request for {path} within {TIMEOUT}s: {self.requests}"
        return found


def requests_from(source: str, port: int, paths: list[str]) -> tuple[list[dict[str, str]], int]:
    """GET each of ``paths`` on one keep-alive connection from ``source`` to the proxy on
    ``port``: what the app saw each time, and the client's own port."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=TIMEOUT, source_address=(source, 0)
    )
    try:
        answers = []
        for path in paths:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body[:300])
            answers.append(json.loads(body))
        assert conn.sock is not None
        return answers, int(conn.sock.getsockname()[1])
    finally:
        conn.close()


# -- the proxies ----------------------------------------------------------------------------


def haproxy_conf(port: int, upstream: int, send: str, checks: bool) -> str:
    check = "check inter 300ms" if checks else ""
    return f"""
global
    log stdout format raw local0
    maxconn 64
defaults
    mode tcp
    log global
    retries 0
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend clients
    bind 127.0.0.1:{port}
    unique-id-format %[uuid()]
    default_backend wsgibridge
backend wsgibridge
    option httpchk
    http-check send meth GET uri /health
    server app 127.0.0.1:{upstream} {send} {check}
"""


def nginx_stream_module() -> str | None:
    """The ``load_module`` line this nginx needs for ``stream {}``, "" when it is built in,
    None when it has no stream module."""
    built = subprocess.run([NGINX, "-V"], capture_output=True, text=True, timeout=TIMEOUT)
    options = built.stdout + built.stderr
    if re.search(r"--with-stream(\s|$)", options):
        return ""
    if "--with-stream=dynamic" in options and STREAM_MODULE.exists():
        return f"load_module {STREAM_MODULE};"
    return None


def nginx_conf(tmp: Path, port: int, upstream: int, load_module: str) -> str:
    return f"""{load_module}
{proxies.nginx_main(tmp)}
stream {{
    server {{
        listen 127.0.0.1:{port};
        proxy_pass 127.0.0.1:{upstream};
        proxy_protocol on;
        proxy_connect_timeout 2s;
        proxy_timeout 5s;
    }}
}}
"""


@contextlib.contextmanager
def running_proxy(tmp: Path, configure: Callable[[int], tuple[list[str], int]]) -> Iterator[int]:
    """Start the proxy ``configure(port)`` writes the configuration and argv for (and its
    graceful signal) on a free port, retried on a lost race for it; its port; stopped after."""
    output = tmp / "output.log"
    errors = ""
    for _attempt in range(5):
        port = proxies.free_port()
        argv, graceful = configure(port)

        def ready(proc: subprocess.Popen[bytes], port: int = port) -> bool:
            return proxies.accepts(port)

        proc = proxies.start(argv, output, ready, graceful)
        if proc is not None:
            try:
                yield port
            finally:
                proxies.stop(proc, graceful)
            return
        errors = output.read_text(errors="replace")
        error_log = tmp / "error.log"
        if error_log.exists():
            errors += error_log.read_text(errors="replace")
        if "Address already in use" not in errors and "cannot bind" not in errors:
            break
    pytest.fail(f"{argv[0]} did not start:\n{errors}")


def haproxy(
    tmp: Path, upstream: int, send: str, checks: bool = True
) -> contextlib.AbstractContextManager[int]:
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip(f"haproxy not installed ({HAPROXY}): .ci/run installs it")

    def configure(port: int) -> tuple[list[str], int]:
        conf = tmp / "haproxy.cfg"
        conf.write_text(haproxy_conf(port, upstream, send, checks))
        # -db: foreground; -dR: no SO_REUSEPORT, so a taken port fails the bind.
        return [HAPROXY, "-db", "-dR", "-f", str(conf)], signal.SIGUSR1

    return running_proxy(tmp, configure)


def nginx(tmp: Path, upstream: int) -> contextlib.AbstractContextManager[int]:
    if not os.access(NGINX, os.X_OK):
        pytest.skip(f"nginx not installed ({NGINX}): .ci/run installs it")
    load_module = nginx_stream_module()
    if load_module is None:
        pytest.skip("nginx without its stream module: .ci/run installs libnginx-mod-stream")

    def configure(port: int) -> tuple[list[str], int]:
        conf = tmp / "nginx.conf"
        conf.write_text(nginx_conf(tmp, port, upstream, load_module))
        argv = [NGINX, "-p", f"{tmp}/", "-c", str(conf), "-e", str(tmp / "error.log")]
        return argv, signal.SIGQUIT

    return running_proxy(tmp, configure)


# -- the tests ------------------------------------------------------------------------------


def assert_the_client_is(answers: list[dict[str, str]], source: str, port: int) -> None:
    for answer in answers:
        assert (answer["REMOTE_ADDR"], answer["REMOTE_PORT"]) == (source, str(port)), answer


@pytest.mark.parametrize(
    "send",
    [
        pytest.param("send-proxy-v2 proxy-v2-options crc32c,unique-id", id="v2"),
        pytest.param("send-proxy", id="v1"),
    ],
)
def test_behind_haproxy_remote_addr_is_the_client(
    serve: ServerFactory, tmp_path: Path, send: str
) -> None:
    """HAProxy's ``send-proxy-v2`` (binary, with CRC32C and unique-id TLVs) and
    ``send-proxy`` (the text line): REMOTE_ADDR and REMOTE_PORT are the client's on
    127.0.0.2 for both requests of its connection; a client on 127.0.0.1 is its own port,
    not the proxy's connection.  HAProxy's health checks (v2: the ``LOCAL`` command,
    "the real connection endpoints") are answered: the backend stays up."""
    app = Seen()
    server = serve(app, proxy_protocol=True, access_log=False)
    with haproxy(tmp_path, server.port, send) as port:
        checks = app.wait_for("/health")
        assert {check["REMOTE_ADDR"] for check in checks} == {"127.0.0.1"}
        answers, client_port = requests_from(OUTSIDE, port, ["/one", "/two"])
        assert_the_client_is(answers, OUTSIDE, client_port)
        answers, client_port = requests_from("127.0.0.1", port, ["/local"])
        assert_the_client_is(answers, "127.0.0.1", client_port)


def test_behind_nginx_stream_proxy_protocol_remote_addr_is_the_client(
    serve: ServerFactory, tmp_path: Path
) -> None:
    """nginx ``stream { server { proxy_pass ...; proxy_protocol on; } }`` sends the v1 line:
    REMOTE_ADDR and REMOTE_PORT are the client's on 127.0.0.2, on each request."""
    app = Seen()
    server = serve(app, proxy_protocol=True, access_log=False)
    with nginx(tmp_path, server.port) as port:
        answers, client_port = requests_from(OUTSIDE, port, ["/one", "/two"])
        assert_the_client_is(answers, OUTSIDE, client_port)
    assert "[error]" not in (tmp_path / "error.log").read_text(errors="replace")


def test_without_proxy_protocol_the_proxys_header_is_refused(
    serve: ServerFactory, tmp_path: Path
) -> None:
    """The control: HAProxy in front of a server without ``--proxy-protocol`` (and no
    health checks, which would take the backend down) - its v2 header is no request
    (400): the receiver "MUST not try to guess"."""
    app = Seen()
    server = serve(app, access_log=False)
    with haproxy(tmp_path, server.port, "send-proxy-v2", checks=False) as port:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=TIMEOUT, source_address=(OUTSIDE, 0)
        )
        try:
            conn.request("GET", "/refused")
            response = conn.getresponse()
            assert response.status == 400
            response.read()
        finally:
            conn.close()
    assert all(seen["path"] != "/refused" for seen in app.requests)
