"""TLS, proxy headers, the PROXY protocol and the access log over real loopback sockets.

Every server here is a live wsgibridge on 127.0.0.1 or ::1 (the ``serve``
fixture); the clients are ``requests``, ``httpx``, raw TCP and raw ``ssl``
sockets, and one ``python -m wsgibridge`` subprocess.  Certificates are
throwaway ones from trustme, written to ``tmp_path``.  The unit-level rules
(``make_ssl_context``, ``handshake``, ``apply_forwarded``, the PROXY protocol
parsers, ``AccessLogFormat``) are tested in ``serving/test_tls.py``,
``http/test_forwarded.py``, ``http/test_proxy_protocol.py`` and
``test_accesslog.py``; this file checks what a user of the server relies on
when the pieces are put together.

Nothing sleeps to wait for the server: waits are on socket timeouts, events,
conditions and queues, every one bounded.  Two waits are timed because the server
has nothing to signal: ``assert_no_answer_yet`` (a 50 ms read that must time out
while the server waits for the rest of a PROXY header) and the 0.3 s timer that
releases a held worker in the middle of a stop.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import wsgiref.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
import requests
import trustme

from wsgibridge import WSGIRequestHandler, WSGIServer, make_server
from wsgibridge._types import Environ

from ..conftest import (
    RawResponse,
    ResponseReader,
    ServerFactory,
    connect,
    der_of,
    logging_to,
    needs_ipv6,
    recv_all,
)
from ..importroot import IMPORT_ROOT

StartResponse = Callable[..., Any]

TIMEOUT = 5.0  # every client-side wait
MiB = 1024 * 1024


# -- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    """Throwaway PKI: a CA, a server certificate for 127.0.0.1/::1, a client certificate."""

    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert
    ca_file: str
    cert_file: str  # the server's certificate chain
    key_file: str  # the server's private key
    client_file: str  # the client's key and chain in one PEM (requests' ``cert=``)


@pytest.fixture
def certs(
    authority: tuple[trustme.CA, trustme.LeafCert, trustme.LeafCert], tmp_path: Path
) -> Certs:
    ca, server, client = authority
    ca_file, cert_file, key_file, client_file = (
        str(tmp_path / name) for name in ("ca.pem", "cert.pem", "key.pem", "client.pem")
    )
    ca.cert_pem.write_to_path(ca_file)
    Path(cert_file).write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(key_file)
    client.private_key_and_cert_chain_pem.write_to_path(client_file)
    return Certs(ca, server, client, ca_file, cert_file, key_file, client_file)


def client_context(certs: Certs, *, client_cert: bool = False) -> ssl.SSLContext:
    """What a client that trusts our CA uses (optionally presenting the client certificate)."""
    context = ssl.create_default_context(cafile=certs.ca_file)
    if client_cert:
        context.load_cert_chain(certs.client_file)
    return context


# -- apps and probes ------------------------------------------------------------------------


class Recorder:
    """A WSGI app that keeps what each request's environ said and answers ``ok <path>``.

    It reads the whole body first, and records its length and SHA-256 next to the
    environ's ``str`` values and the URL rebuilt from them (``wsgiref.util.request_uri``,
    the PEP 3333 recipe).
    """

    def __init__(self) -> None:
        self.environs: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> list[bytes]:
        body = environ["wsgi.input"].read()
        snapshot = {key: value for key, value in environ.items() if isinstance(value, str)}
        snapshot["test.body_length"] = str(len(body))
        snapshot["test.body_sha256"] = hashlib.sha256(body).hexdigest()
        snapshot["test.url"] = wsgiref.util.request_uri(environ)
        with self._lock:
            self.environs.append(snapshot)
        payload = f"ok {environ['PATH_INFO']}".encode("latin-1")
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    @property
    def last(self) -> dict[str, str]:
        with self._lock:
            assert self.environs, "the app was never called"
            return self.environs[-1]

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.environs)


class Probe:
    """A handler class that reports each connection the server sets up.

    ``connections`` gets the client address of every connection the server makes a
    handler for (after the TLS handshake and the PROXY line), so "two requests, one
    connection" can be counted.
    """

    def __init__(self) -> None:
        self.connections: list[Any] = []
        probe = self

        class ProbingHandler(WSGIRequestHandler):
            def setup(self) -> None:
                super().setup()
                probe.connections.append(self.client_address)

        self.handler_class: type[WSGIRequestHandler] = ProbingHandler


def tls_options(certs: Certs) -> dict[str, Any]:
    return {"certfile": certs.cert_file, "keyfile": certs.key_file}


def session(certs: Certs | None = None, *, client_cert: bool = False) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # no proxy from the environment: talk to the loopback directly
    if certs is not None:
        s.verify = certs.ca_file
        if client_cert:
            s.cert = certs.client_file
    return s


def httpx_client(certs: Certs | None = None, *, client_cert: bool = False) -> httpx.Client:
    # httpx 0.28 deprecates verify=<path>; a context built from the CA file is the same thing.
    verify: ssl.SSLContext | bool = (
        client_context(certs, client_cert=client_cert) if certs is not None else True
    )
    return httpx.Client(verify=verify, trust_env=False, timeout=TIMEOUT)


def get_all(kind: str, urls: list[str], certs: Certs, *, client_cert: bool = False) -> list[int]:
    """GET each URL with one client of ``kind`` (one keep-alive pool); the statuses."""
    if kind == "requests":
        with session(certs, client_cert=client_cert) as s:
            return [s.get(url, timeout=TIMEOUT).status_code for url in urls]
    with httpx_client(certs, client_cert=client_cert) as client:
        return [client.get(url).status_code for url in urls]


@contextlib.contextmanager
def tls_connection(
    server: WSGIServer,
    context: ssl.SSLContext,
    *,
    timeout: float = TIMEOUT,
    handshake: bool = True,
) -> Iterator[ssl.SSLSocket]:
    """A raw TLS connection to ``server`` (the handshake done, unless ``handshake=False``)."""
    raw = socket.create_connection((server.host, server.port), timeout=timeout)
    try:
        sock = context.wrap_socket(
            raw, server_hostname=server.host, do_handshake_on_connect=handshake
        )
    except BaseException:
        raw.close()
        raise
    with sock:
        yield sock


def raw_request(
    server: WSGIServer, raw: bytes, *, family: int = socket.AF_INET
) -> tuple[RawResponse, int]:
    """Send one request on a new TCP connection; its response and our (the client's) port."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((server.host, server.port))
        sock.sendall(raw)
        return ResponseReader(sock).read_response(), int(sock.getsockname()[1])


# -- 1. TLS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("client_kind", ["requests", "httpx"])
@pytest.mark.parametrize("configured_by", ["certfile", "ssl_context"])
def test_https_serves_and_keeps_the_tls_connection_alive(
    serve: ServerFactory, certs: Certs, configured_by: str, client_kind: str
) -> None:
    """PEP 3333: wsgi.url_scheme "will have the value "http" or "https", as appropriate";
    RFC 9112 §9.3: "HTTP/1.1 defaults to the use of "persistent connections", allowing
    multiple requests and responses to be carried over a single connection."

    A server from ``certfile``/``keyfile`` and one from ``make_server(...,
    ssl_context=ctx)`` both answer HTTPS, both requests of a keep-alive client travel
    on one TLS connection, and the environ carries mod_ssl's ``HTTPS=on`` and
    ``SSL_PROTOCOL``.
    """
    app = Recorder()
    probe = Probe()
    if configured_by == "certfile":
        server = serve(app, handler_class=probe.handler_class, **tls_options(certs))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        certs.server.configure_cert(context)
        server = serve(app, handler_class=probe.handler_class, ssl_context=context)
    assert server.url == f"https://127.0.0.1:{server.port}/"

    statuses = get_all(client_kind, [server.url + "one", server.url + "two"], certs)

    assert statuses == [200, 200]
    assert len(probe.connections) == 1, probe.connections
    first, second = app.environs
    assert first["REMOTE_PORT"] == second["REMOTE_PORT"]
    for environ in (first, second):
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["HTTPS"] == "on"
        assert environ["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")
        assert environ["SSL_CLIENT_VERIFY"] == "NONE"
        assert "SSL_CLIENT_CERT" not in environ
    assert second["test.url"] == f"https://127.0.0.1:{server.port}/two"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_ssl_protocol_is_the_negotiated_version(
    serve: ServerFactory, certs: Certs, version: ssl.TLSVersion
) -> None:
    """tls.py (mod_ssl's names): "``SSL_PROTOCOL`` the negotiated version, e.g. "TLSv1.3"";
    the server accepts "TLS 1.2 at least"."""
    app = Recorder()
    server = serve(app, **tls_options(certs))
    context = client_context(certs)
    context.minimum_version = context.maximum_version = version
    with tls_connection(server, context) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        response = ResponseReader(sock).read_response()
        negotiated = sock.version()
    assert response.status == 200
    assert negotiated == version.name.replace("v1_", "v1.")
    assert app.last["SSL_PROTOCOL"] == negotiated
    assert app.last["SSL_CIPHER"]


@needs_ipv6
def test_https_on_ipv6_loopback_has_a_bracketed_url(serve: ServerFactory, certs: Certs) -> None:
    """RFC 3986 §3.2.2: "A host identified by an Internet Protocol literal address, version 6
    ... is distinguished by enclosing the IP literal within square brackets"; ``server.url``
    is "``http(s)://host:port/`` for the first TCP listener (IPv6 in brackets)"."""
    app = Recorder()
    server = serve(app, host="::1", **tls_options(certs))
    assert server.url == f"https://[::1]:{server.port}/"
    with session(certs) as s:
        response = s.get(server.url + "v6", timeout=TIMEOUT)
    assert response.status_code == 200
    assert app.last["REMOTE_ADDR"] == "::1"
    assert app.last["wsgi.url_scheme"] == "https"


@pytest.mark.parametrize("client_kind", ["requests", "httpx"])
def test_client_certificate_reaches_the_environ(
    serve: ServerFactory, certs: Certs, client_kind: str
) -> None:
    """Config ``ca_certs``: "ask clients for a certificate and verify it (SSL_CLIENT_CERT in
    the environ)"; tls.py: SSL_CLIENT_CERT is "the certificate in PEM", SSL_CLIENT_S_DN the
    subject "as RFC 4514 strings, e.g. "CN=client,O=Example""."""
    app = Recorder()
    server = serve(app, ca_certs=certs.ca_file, **tls_options(certs))

    statuses = get_all(client_kind, [server.url], certs, client_cert=True)

    assert statuses == [200]
    environ = app.last
    assert environ["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----\n")
    assert ssl.PEM_cert_to_DER_cert(environ["SSL_CLIENT_CERT"]) == der_of(certs.client)
    assert environ["SSL_CLIENT_S_DN"] == "CN=client,OU=Dev,O=Example"
    assert environ["SSL_CLIENT_I_DN"].endswith("O=Example CA")
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_optional_client_certificate_may_be_left_out(serve: ServerFactory, certs: Certs) -> None:
    """make_ssl_context: with ca_certs a client certificate is "optional by default
    (``CERT_OPTIONAL``: a client may send none, but one it sends must verify)"."""
    app = Recorder()
    server = serve(app, ca_certs=certs.ca_file, **tls_options(certs))
    with session(certs) as s:
        assert s.get(server.url, timeout=TIMEOUT).status_code == 200
    assert app.last["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_CERT" not in app.last
    assert "SSL_CLIENT_S_DN" not in app.last


def test_required_client_certificate_refuses_a_client_without_one(
    serve: ServerFactory, certs: Certs
) -> None:
    """Config ``require_client_cert``: "Refuse TLS clients without a certificate signed by
    --ca-certs."  The app never runs for the refused client; one with a certificate is
    served right after."""
    app = Recorder()
    server = serve(app, ca_certs=certs.ca_file, require_client_cert=True, **tls_options(certs))
    with session(certs) as s, pytest.raises(requests.exceptions.ConnectionError):
        s.get(server.url + "refused", timeout=TIMEOUT)
    assert app.calls == 0
    with session(certs, client_cert=True) as s:
        assert s.get(server.url + "accepted", timeout=TIMEOUT).status_code == 200
    assert app.last["PATH_INFO"] == "/accepted"
    assert app.last["SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_plain_http_on_the_tls_port_gets_a_clear_text_400_and_serving_goes_on(
    serve: ServerFactory, certs: Certs
) -> None:
    """tls.py: "nginx's answer ("400 The plain HTTP request was sent to HTTPS port")", sent
    "in clear text after a plain-HTTP handshake failure"; the server then serves the next
    client as before (threads=1: the refusal must not keep the only worker)."""
    app = Recorder()
    server = serve(app, threads=1, **tls_options(certs))
    with connect(server, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = recv_all(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    # RFC 9110 §6.6.1: an origin server with a clock sends Date in every 4xx.
    assert b"\r\nDate: " in head and b"\r\nConnection: close" in head
    assert body == b"400 Bad Request\nThe plain HTTP request was sent to HTTPS port\n"
    with session() as s:
        plain = s.get(f"http://127.0.0.1:{server.port}/", timeout=TIMEOUT)
    assert plain.status_code == 400
    assert plain.text == "400 Bad Request\nThe plain HTTP request was sent to HTTPS port\n"
    assert plain.headers["Connection"] == "close"
    assert app.calls == 0
    with session(certs) as s:
        assert s.get(server.url, timeout=TIMEOUT).status_code == 200
    assert app.calls == 1


def test_client_that_never_starts_the_handshake_is_cut_off_after_header_timeout(
    serve: ServerFactory, certs: Certs
) -> None:
    """The TLS handshake happens off the accept loop, under a deadline; Config
    ``header_timeout``: "Seconds a client has to send a whole request head (and a new
    connection its first one)".  With one worker, a client that connects and sends nothing
    is closed after header_timeout and another client is served: the handshake does not
    starve the only worker forever."""
    header_timeout = 0.5
    app = Recorder()
    server = serve(app, threads=1, header_timeout=header_timeout, **tls_options(certs))
    started = time.monotonic()
    with connect(server, timeout=TIMEOUT) as silent:
        with session(certs) as s:
            response = s.get(server.url + "other", timeout=TIMEOUT)
        served_after = time.monotonic() - started
        try:
            leftover = silent.recv(1)
        except ConnectionResetError:
            leftover = b""
        cut_off_after = time.monotonic() - started
    assert response.status_code == 200
    assert leftover == b""
    assert header_timeout * 0.9 <= cut_off_after < header_timeout + 2.0, cut_off_after
    assert served_after < header_timeout + 2.0, served_after


def test_client_that_never_starts_the_handshake_holds_no_worker(
    serve: ServerFactory, certs: Certs
) -> None:
    """One slow or idle client must not stall everyone else: idle connections are
    parked in a selector and hold no worker.  A client
    that has said nothing yet should cost a descriptor, not the only thread: another client
    is served well before the silent one's header_timeout (5 s) runs out."""
    app = Recorder()
    server = serve(app, threads=1, header_timeout=5.0, **tls_options(certs))
    with connect(server, timeout=TIMEOUT) as silent:
        started = time.monotonic()
        with session(certs) as s:
            response = s.get(server.url + "other", timeout=(1.5, 1.5))
        waited = time.monotonic() - started
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):
            silent.recv(1)  # still connected: neither answered nor closed
    assert response.status_code == 200
    assert waited < 1.5, waited


def test_tls_client_that_stops_mid_head_is_cut_off_and_serving_goes_on(certs: Certs) -> None:
    """Config ``header_timeout``: "a client that trickles its headers is cut off", so one
    slow client cannot stall everyone else.  Over TLS, a client
    that sends half a request head and stops is closed after header_timeout, and the next
    client is served as before.

    The server runs in a thread of our own that keeps what ``serve_forever`` raises.
    """
    app = Recorder()
    server = make_server(app, "127.0.0.1", 0, header_timeout=0.5, **tls_options(certs))
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            server.serve_forever()
        except BaseException as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run, name="test-server", daemon=True)
    thread.start()
    try:
        with tls_connection(server, client_context(certs)) as sock:
            sock.sendall(b"GET /half HTTP/1.1\r\nHost: x\r\n")  # no blank line: not done
            try:
                answer = recv_all(sock)
            except ConnectionResetError:
                answer = b""
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer
        error: BaseException | None = None
        try:
            with session(certs) as s:
                status = s.get(server.url + "next", timeout=TIMEOUT).status_code
        except requests.exceptions.RequestException as exc:
            error, status = exc, 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)
    assert not thread.is_alive()
    assert not crashed, f"serve_forever() raised {crashed[0]!r}"
    assert error is None, f"the next client was not served: {error!r}"
    assert status == 200
    assert app.calls == 1


@pytest.mark.parametrize("client_kind", ["requests", "httpx"])
def test_chunked_upload_over_tls_arrives_intact(
    serve: ServerFactory, certs: Certs, client_kind: str
) -> None:
    """RFC 9112 §7.1: "The chunked transfer coding wraps content in order to transfer it as
    a series of chunks, each with its own size indicator"; README: chunked uploads "are
    decoded as the app reads them" and wsgi.input "ends exactly at the end of the body"."""
    app = Recorder()
    server = serve(app, **tls_options(certs))
    pieces = [os.urandom(size) for size in (1, 16383, 16384, 16385, 65536, 100_000, 7)]
    expected = b"".join(pieces)

    def upload() -> Iterator[bytes]:
        yield from pieces

    if client_kind == "requests":
        with session(certs) as s:
            response = s.post(server.url + "upload", data=upload(), timeout=TIMEOUT)
            status = response.status_code
    else:
        with httpx_client(certs) as client:
            status = client.post(server.url + "upload", content=upload()).status_code
    assert status == 200
    environ = app.last
    assert environ["HTTP_TRANSFER_ENCODING"] == "chunked"
    assert "CONTENT_LENGTH" not in environ
    assert environ["test.body_length"] == str(len(expected))
    assert environ["test.body_sha256"] == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize(
    ("framing", "client_kind"),
    [("content-length", "requests"), ("chunked", "httpx"), ("file_wrapper", "requests")],
)
def test_large_download_over_tls_arrives_intact(
    serve: ServerFactory, certs: Certs, tmp_path: Path, framing: str, client_kind: str
) -> None:
    """README: "the app's ``Content-Length`` is honoured", "otherwise HTTP/1.1 gets chunked
    coding", and "``wsgi.file_wrapper`` ... is sent with ``socket.sendfile``" (over TLS,
    through the TLS layer).  5 MiB arrive byte-exact in all three."""
    data = os.urandom(5 * MiB)
    path = tmp_path / "download.bin"
    path.write_bytes(data)
    piece = 256 * 1024

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        headers = [("Content-Type", "application/octet-stream")]
        if framing == "content-length":
            start_response("200 OK", [*headers, ("Content-Length", str(len(data)))])
            return [data[i : i + piece] for i in range(0, len(data), piece)]
        start_response("200 OK", headers)
        if framing == "chunked":
            return (data[i : i + piece] for i in range(0, len(data), piece))
        wrapped: Iterable[bytes] = environ["wsgi.file_wrapper"](path.open("rb"))
        return wrapped

    server = serve(app, **tls_options(certs))
    if client_kind == "requests":
        with session(certs) as s:
            response = s.get(server.url, timeout=TIMEOUT)
            status, body = response.status_code, response.content
            headers = {name.lower(): value for name, value in response.headers.items()}
    else:
        with httpx_client(certs) as client:
            got = client.get(server.url)
            status, body = got.status_code, got.content
            headers = {name.lower(): value for name, value in got.headers.items()}
    assert status == 200
    if framing == "chunked":
        assert headers["transfer-encoding"] == "chunked"
    else:
        assert headers["content-length"] == str(len(data))
    assert len(body) == len(data)
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


@pytest.mark.parametrize("writes", ["one write", "one TLS record per request"])
def test_pipelined_requests_over_one_tls_connection_are_answered_in_order(
    serve: ServerFactory, certs: Certs, writes: str
) -> None:
    """RFC 9112 §9.3.2: a server "MUST send the corresponding responses in the same order
    that the requests were received."  Over TLS a pipelined request can sit decrypted but
    unread in the TLS layer (``SSLSocket.pending()``), where poll() cannot see it: here the
    POST body ends in the middle of a TLS record that also carries the next request, and
    the connection stays open (no EOF to wake the server)."""
    app = Recorder()
    probe = Probe()
    server = serve(app, handler_class=probe.handler_class, **tls_options(certs))
    body = os.urandom(100_000)
    pipelined = [
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + body,
        b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n",
        b"DELETE /fourth HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ]
    with tls_connection(server, client_context(certs)) as sock:
        if writes == "one write":
            sock.sendall(b"".join(pipelined))
        else:
            for request in pipelined:
                sock.sendall(request)
        reader = ResponseReader(sock)
        bodies = [reader.read_response().body for _ in pipelined]
    assert bodies == [b"ok /upload", b"ok /second", b"ok /third", b"ok /fourth"]
    assert app.environs[0]["test.body_sha256"] == hashlib.sha256(body).hexdigest()
    assert len(probe.connections) == 1
    assert len({environ["REMOTE_PORT"] for environ in app.environs}) == 1


# -- 2. proxy headers -------------------------------------------------------------------------

X_FORWARDED = {
    "Host": "internal:8000",
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "example.com",
    "X-Forwarded-Port": "8443",
}

# Every forwarding header of both families, and one that is not a forwarding header.
SPOOFED_HEAD = (
    b"GET /spoof?q=1 HTTP/1.1\r\n"
    b"Host: internal:8000\r\n"
    b"X-Forwarded-For: 203.0.113.7\r\n"
    b"X-Forwarded-Proto: https\r\n"
    b"X-Forwarded-Host: example.com\r\n"
    b"X-Forwarded-Port: 8443\r\n"
    b'Forwarded: for="[2001:db8::1]:4711";proto=https;host=example.com\r\n'
    b"X-Real-IP: 203.0.113.9\r\n"
    b"X-Custom: kept\r\n"
    b"Connection: close\r\n\r\n"
)
FORWARDING_KEYS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_FORWARDED",
    "HTTP_X_REAL_IP",
)


@pytest.mark.parametrize("allow", [None, "127.0.0.0/8", "127.0.0.1", "*"])
def test_trusted_proxy_x_forwarded_headers_set_client_scheme_host_and_port(
    serve: ServerFactory, allow: str | None
) -> None:
    """From trusted peers, ``X-Forwarded-For/-Proto/-Host/-Port`` and ``Forwarded``
    set REMOTE_ADDR, ``wsgi.url_scheme``, HTTP_HOST and SERVER_PORT;
    ``--forwarded-allow-ips`` takes "addresses and CIDRs; only loopback by default"
    (None: the default).  A URL rebuilt from the environ as PEP 3333 does is the one the
    client asked the proxy for."""
    app = Recorder()
    options = {} if allow is None else {"forwarded_allow_ips": allow}
    server = serve(app, **options)
    with session() as s:
        response = s.get(server.url + "path?q=1", headers=X_FORWARDED, timeout=TIMEOUT)
    assert response.status_code == 200
    environ = app.last
    assert environ["REMOTE_ADDR"] == "203.0.113.7"
    assert environ["REMOTE_HOST"] == "203.0.113.7"  # REMOTE_ADDR after the rewrite
    assert environ["REMOTE_PORT"] == ""  # X-Forwarded-For names no port
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["HTTP_HOST"] == "example.com:8443"
    assert environ["SERVER_NAME"] == "example.com"
    assert environ["SERVER_PORT"] == "8443"
    assert environ["test.url"] == "https://example.com:8443/path?q=1"
    assert environ["wsgibridge.proxy_peer"] == "127.0.0.1"
    assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"  # kept from a trusted peer


def test_trusted_proxy_forwarded_header_sets_client_scheme_and_host(
    serve: ServerFactory,
) -> None:
    """RFC 7239 §4: "Note that as ":" and "[]" are not valid characters in "token", IPv6
    addresses are written as "quoted-string""; RFC 9110 §4.2.2: for https "TCP port 443 is
    the default".  ``for=`` gives REMOTE_ADDR and REMOTE_PORT, ``proto=`` the scheme,
    ``host=`` HTTP_HOST, and SERVER_PORT the scheme's default port."""
    app = Recorder()
    server = serve(app)
    headers = {
        "Host": "internal:8000",
        "Forwarded": 'for="[2001:db8::1]:4711";proto=https;host=example.com',
    }
    with session() as s:
        response = s.get(server.url + "path?q=1", headers=headers, timeout=TIMEOUT)
    assert response.status_code == 200
    environ = app.last
    assert environ["REMOTE_ADDR"] == "2001:db8::1"
    assert environ["REMOTE_HOST"] == "2001:db8::1"
    assert environ["REMOTE_PORT"] == "4711"
    assert environ["wsgi.url_scheme"] == "https"
    assert environ["HTTP_HOST"] == "example.com"
    assert environ["SERVER_PORT"] == "443"
    assert environ["test.url"] == "https://example.com/path?q=1"


@pytest.mark.parametrize("allow", ["", "10.0.0.0/8", "::1"])
def test_untrusted_peer_loses_every_forwarding_header(serve: ServerFactory, allow: str) -> None:
    """Config ``forwarded_allow_ips``: "Peers ... whose X-Forwarded-* and Forwarded headers
    are believed; from anyone else they are removed."  RFC 7239 §8.1: the field "cannot be
    relied upon to be correct".  With nobody trusted (``""``) or a list that does not hold
    127.0.0.1, the environ shows the real peer and none of the headers."""
    app = Recorder()
    server = serve(app, forwarded_allow_ips=allow)
    response, client_port = raw_request(server, SPOOFED_HEAD)
    assert response.status == 200
    environ = app.last
    for key in FORWARDING_KEYS:
        assert key not in environ, key
    assert "wsgibridge.proxy_peer" not in environ
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["REMOTE_HOST"] == "127.0.0.1"  # never the X-Forwarded-For a client claims
    assert environ["REMOTE_PORT"] == str(client_port)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_HOST"] == "internal:8000"
    assert environ["SERVER_PORT"] == str(server.port)
    assert environ["HTTP_X_CUSTOM"] == "kept"


@needs_ipv6
@pytest.mark.parametrize(
    ("allow", "trusted"), [(None, True), ("::1/128", True), ("127.0.0.1", False)]
)
def test_proxy_headers_from_the_ipv6_loopback(
    serve: ServerFactory, allow: str | None, trusted: bool
) -> None:
    """Config ``forwarded_allow_ips`` defaults to "127.0.0.1,::1": a proxy on the IPv6
    loopback is trusted like one on 127.0.0.1; a list without ::1 does not trust it."""
    app = Recorder()
    options = {} if allow is None else {"forwarded_allow_ips": allow}
    server = serve(app, host="::1", **options)
    response, client_port = raw_request(server, SPOOFED_HEAD, family=socket.AF_INET6)
    assert response.status == 200
    environ = app.last
    if trusted:
        assert environ["REMOTE_ADDR"] == "203.0.113.7"
        assert environ["wsgi.url_scheme"] == "https"
        assert environ["HTTP_HOST"] == "example.com:8443"
        assert environ["SERVER_PORT"] == "8443"
        assert environ["wsgibridge.proxy_peer"] == "::1"
    else:
        assert environ["REMOTE_ADDR"] == "::1"
        assert environ["REMOTE_PORT"] == str(client_port)
        assert environ["wsgi.url_scheme"] == "http"
        assert environ["HTTP_HOST"] == "internal:8000"
        for key in FORWARDING_KEYS:
            assert key not in environ, key


# -- 3. PROXY protocol v1 and v2 ---------------------------------------------------------------

PROXY_TCP4 = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\r\n"

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(command: int, family: int, block: bytes) -> bytes:
    """A PROXY v2 header (proxy-protocol.txt §2.2): signature, version 2 and ``command``,
    ``family``, the block's 16-bit length, the block."""
    return V2_SIGNATURE + bytes([0x20 | command, family]) + len(block).to_bytes(2, "big") + block


def v2_tcp4(source: str, port: int, tlvs: bytes = b"") -> bytes:
    addresses = socket.inet_pton(socket.AF_INET, source) + socket.inet_pton(
        socket.AF_INET, "127.0.0.1"
    )
    return proxy_v2(0x1, 0x11, addresses + port.to_bytes(2, "big") + b"\x00\x50" + tlvs)


def v2_tcp6(source: str, port: int) -> bytes:
    addresses = socket.inet_pton(socket.AF_INET6, source) + socket.inet_pton(socket.AF_INET6, "::1")
    return proxy_v2(0x1, 0x21, addresses + port.to_bytes(2, "big") + b"\x01\xbb")


V2_TCP4 = v2_tcp4("203.0.113.7", 51234)
# PP2_TYPE_ALPN "h2", PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP: skipped.
V2_TLVS = b"\x01\x00\x02h2" + b"\x02\x00\x0bexample.com" + b"\x04\x00\x00"


def get(path: str, *extra: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + b"".join(extra) + b"\r\n"


def assert_no_answer_yet(sock: socket.socket) -> None:
    """The server neither answers nor closes within a short wait (it waits for more)."""
    previous = sock.gettimeout()
    sock.settimeout(0.05)
    try:
        with pytest.raises(TimeoutError):
            sock.recv(1)
    finally:
        sock.settimeout(previous)


def test_proxy_v1_line_names_the_client_for_every_request_on_the_connection(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """proxy-protocol.txt §2.1: the receiver "MUST use the information from the PROXY header
    as the connection's source"; the line is "sent immediately and at once upon the
    connection establishment and prepended before any data", so here it shares one write
    with the first request, and the connection stays open (the server must not need more
    bytes or an EOF to answer).  A second keep-alive request keeps the same client, and the
    access log shows the proxied one."""
    app = Recorder()
    probe = Probe()
    server = serve(
        app,
        proxy_protocol=True,
        handler_class=probe.handler_class,
        access_log_format="{client} {remote_port} {path} {status}",
    )
    with connect(server) as sock:
        reader = ResponseReader(sock)
        sock.sendall(PROXY_TCP4 + get("/one"))
        first = reader.read_response()
        sock.sendall(get("/two"))
        second = reader.read_response()
    assert (first.status, second.status) == (200, 200)
    assert probe.connections == [("203.0.113.7", 51234)]
    for environ in app.environs:
        assert environ["REMOTE_ADDR"] == "203.0.113.7"
        assert environ["REMOTE_PORT"] == "51234"
    assert access_lines.wait_for(2) == ["203.0.113.7 51234 /one 200", "203.0.113.7 51234 /two 200"]


@pytest.mark.parametrize(
    ("line", "client"),
    [
        (b"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 51234 443\r\n", ("2001:db8::7", "51234")),
        (b"PROXY UNKNOWN\r\n", None),
        (b"PROXY UNKNOWN ffff:f::1 ffff:f::2 65535 65535\r\n", None),
        pytest.param(v2_tcp6("2001:db8::7", 51234), ("2001:db8::7", "51234"), id="tcp6"),
        pytest.param(v2_tcp6("::ffff:198.51.100.9", 4), ("::ffff:198.51.100.9", "4"), id="mapped"),
        pytest.param(proxy_v2(0x0, 0x00, b""), None, id="local"),  # a health check
        pytest.param(proxy_v2(0x0, 0x11, V2_TCP4[16:]), None, id="local-addresses"),
        pytest.param(proxy_v2(0x1, 0x00, b""), None, id="unspec"),
        pytest.param(proxy_v2(0x1, 0x12, V2_TCP4[16:]), None, id="udp4"),
    ],
)
def test_proxy_tcp6_and_the_real_endpoints(
    serve: ServerFactory, line: bytes, client: tuple[str, str] | None
) -> None:
    """proxy-protocol.txt §2.1: TCP6 carries IPv6 addresses (REMOTE_ADDR in canonical form);
    for "UNKNOWN" the receiver "SHOULD accept the connection and use the real connection's
    parameters as if there were no PROXY protocol header".  §2.2, v2: TCP over IPv6 the
    same; LOCAL: "The receiver must accept this connection as valid and must use the real
    connection endpoints"; other families fall "back to the UNSPEC mode", the real
    endpoints too."""
    app = Recorder()
    server = serve(app, proxy_protocol=True)
    response, own_port = raw_request(server, line + get("/", b"Connection: close\r\n"))
    assert response.status == 200
    expected = client if client is not None else ("127.0.0.1", str(own_port))
    assert (app.last["REMOTE_ADDR"], app.last["REMOTE_PORT"]) == expected


def test_proxy_v1_line_split_across_several_sends(serve: ServerFactory) -> None:
    """proxy-protocol.txt §2: "The receiver may be tolerant to partial headers or may simply
    drop the connection when receiving a partial header. Recommendation is to be tolerant".
    The line comes in pieces (the last a lone LF after its CR), then the request on its own:
    no piece is refused, and the client is the one the whole line names."""
    app = Recorder()
    server = serve(app, proxy_protocol=True)
    pieces = [b"PRO", b"XY TCP4 203.0.1", b"13.7 127.0.0.1 51234 80\r", b"\n"]
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in pieces:
            sock.sendall(piece)
            assert_no_answer_yet(sock)
        sock.sendall(get("/split", b"Connection: close\r\n"))
        response = ResponseReader(sock).read_response()
    assert response.status == 200
    assert (app.last["REMOTE_ADDR"], app.last["REMOTE_PORT"]) == ("203.0.113.7", "51234")


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 203.0.113.7 127.0.0.1 051234 80\r\n",  # a leading zero
        b"PROXY TCP4 203.0.113.7 127.0.0.1 65536 80\r\n",  # port out of range
        b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 80\n",  # bare LF
        b"PROXY TCP4  203.0.113.7 127.0.0.1 51234 80\r\n",  # two spaces
        b"PROXY TCP4 2001:db8::7 127.0.0.1 51234 80\r\n",  # not the family's address
        b"PROXY UDP4 203.0.113.7 127.0.0.1 51234 80\r\n",  # not TCP4/TCP6/UNKNOWN
        b"proxy TCP4 203.0.113.7 127.0.0.1 51234 80\r\n",  # lower case
        b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n",  # longer than 107 bytes
        # v2 (§2.2): version 1 or 3, command 2, family 4, 11 address bytes, a TLV past
        # the end, 4097 bytes, a broken signature.
        pytest.param(V2_TCP4[:12] + b"\x11" + V2_TCP4[13:], id="version-1"),
        pytest.param(V2_TCP4[:12] + b"\x31" + V2_TCP4[13:], id="version-3"),
        pytest.param(V2_TCP4[:12] + b"\x22" + V2_TCP4[13:], id="command-2"),
        pytest.param(V2_TCP4[:13] + b"\x41" + V2_TCP4[14:], id="family-4"),
        pytest.param(proxy_v2(0x1, 0x11, V2_TCP4[16:27]), id="addresses-short"),
        pytest.param(proxy_v2(0x1, 0x11, V2_TCP4[16:] + b"\x04\x00\x09abc"), id="tlv-overrun"),
        pytest.param(proxy_v2(0x1, 0x11, V2_TCP4[16:] + b"\x04" * 4069), id="over-4096"),
        pytest.param(V2_TCP4[:11] + b"X" + V2_TCP4[12:], id="signature"),
    ],
)
def test_malformed_proxy_header_is_refused_and_the_next_client_served(
    serve: ServerFactory, line: bytes
) -> None:
    """proxy-protocol.txt §2.1: "Any sequence which does not exactly match the protocol must
    be discarded and cause the receiver to abort the connection", §2.2: malformed v2 headers
    "must be rejected as invalid by receivers"; README: "Every refusal is final: one
    response with ``Connection: close`` ... the app is never called".  The server still
    answers the next client."""
    app = Recorder()
    server = serve(app, proxy_protocol=True)
    with connect(server) as sock:
        sock.sendall(line + get("/after"))
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert reader.at_eof()
    assert response.status == 400
    assert response.header("Connection") == "close"
    assert app.calls == 0
    served, _ = raw_request(server, V2_TCP4 + get("/next", b"Connection: close\r\n"))
    assert served.status == 200
    assert app.last["REMOTE_ADDR"] == "203.0.113.7"


def test_missing_proxy_line_from_a_trusted_peer_is_refused(serve: ServerFactory) -> None:
    """proxy-protocol.txt §2: "The receiver MUST be configured to only receive the protocol
    described in this specification and MUST not try to guess whether the protocol header
    is present or not."  A plain request from a trusted peer is a 400, not served."""
    app = Recorder()
    server = serve(app, proxy_protocol=True)
    with connect(server) as sock:
        sock.sendall(get("/plain"))
        reader = ResponseReader(sock)
        response = reader.read_response()
        assert reader.at_eof()
    assert response.status == 400
    assert app.calls == 0


@pytest.mark.parametrize("header", [PROXY_TCP4, V2_TCP4], ids=["v1", "v2"])
@pytest.mark.parametrize("allow", ["", "192.0.2.0/24"], ids=["nobody", "elsewhere"])
def test_proxy_header_only_from_trusted_peers(
    serve: ServerFactory, header: bytes, allow: str
) -> None:
    """proxy-protocol.txt §2: "The receiver SHOULD ensure proper access filtering so that only
    trusted proxies are allowed to use this protocol"; Config ``proxy_protocol``: a PROXY
    header is expected "from a peer in --forwarded-allow-ips".  With nobody trusted, or
    only others, a PROXY header of either version is no request (400) and a plain request
    is served with the real peer."""
    app = Recorder()
    server = serve(app, proxy_protocol=True, forwarded_allow_ips=allow)
    refused, _ = raw_request(server, header + get("/spoofed"))
    assert refused.status == 400
    assert app.calls == 0
    served, client_port = raw_request(server, get("/plain", b"Connection: close\r\n"))
    assert served.status == 200
    assert (app.last["REMOTE_ADDR"], app.last["REMOTE_PORT"]) == ("127.0.0.1", str(client_port))


def test_client_named_by_the_proxy_line_cannot_forge_x_forwarded_for(
    serve: ServerFactory,
) -> None:
    """proxy.py: "from any other peer every forwarding header is removed from the environ".
    Once the PROXY line names the client, that client is the peer: its own
    X-Forwarded-For does not move REMOTE_ADDR."""
    app = Recorder()
    server = serve(app, proxy_protocol=True)
    response, _ = raw_request(
        server,
        PROXY_TCP4 + get("/", b"X-Forwarded-For: 198.51.100.1\r\n", b"Connection: close\r\n"),
    )
    assert response.status == 200
    assert app.last["REMOTE_ADDR"] == "203.0.113.7"
    assert "HTTP_X_FORWARDED_FOR" not in app.last


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"PROXY UNKNOWN\r\n", id="v1-unknown"),
        pytest.param(proxy_v2(0x1, 0x00, b""), id="v2-unspec"),
        pytest.param(proxy_v2(0x1, 0x31, b"\0" * 216), id="v2-unix"),
        pytest.param(proxy_v2(0x1, 0x12, V2_TCP4[16:]), id="v2-udp4"),
    ],
)
def test_a_client_the_proxy_calls_unknown_cannot_forge_forwarding_or_request_ids(
    serve: ServerFactory, header: bytes
) -> None:
    """The real endpoints stand (the trusted proxy's address), but the bytes after the
    header are some client's, passed through: its X-Forwarded-For and X-Request-ID are not
    believed as if the proxy had sent them."""
    app = Recorder()
    server = serve(app, proxy_protocol=True, request_id_header="X-Request-ID")
    response, own_port = raw_request(
        server,
        header
        + get(
            "/",
            b"X-Forwarded-For: 198.51.100.1\r\n",
            b"X-Request-ID: forged-by-the-client\r\n",
            b"Connection: close\r\n",
        ),
    )
    assert response.status == 200
    assert (app.last["REMOTE_ADDR"], app.last["REMOTE_PORT"]) == ("127.0.0.1", str(own_port))
    assert "HTTP_X_FORWARDED_FOR" not in app.last
    assert app.last["wsgibridge.request_id"] != "forged-by-the-client"
    assert response.header("X-Request-ID") == app.last["wsgibridge.request_id"]


def test_the_proxy_s_own_local_connection_stays_trusted(serve: ServerFactory) -> None:
    """v2 LOCAL: "the connection was established on purpose by the proxy without being
    relayed" - what it sends is the trusted proxy's own."""
    app = Recorder()
    server = serve(app, proxy_protocol=True, request_id_header="X-Request-ID")
    response, _ = raw_request(
        server,
        proxy_v2(0x0, 0x00, b"")
        + get("/", b"X-Request-ID: from-the-proxy\r\n", b"Connection: close\r\n"),
    )
    assert response.status == 200
    assert app.last["wsgibridge.request_id"] == "from-the-proxy"


def test_proxy_line_before_the_tls_handshake(serve: ServerFactory, certs: Certs) -> None:
    """proxy-protocol.txt §2.1: the header is "sent immediately and at once upon the
    connection establishment and prepended before any data flowing from the sender to the
    receiver" -- for a TLS backend, in clear text before the TLS handshake (HAProxy's
    ``server ... ssl send-proxy``)."""
    app = Recorder()
    server = serve(app, proxy_protocol=True, **tls_options(certs))
    with tls_connection(server, client_context(certs), handshake=False) as sock:
        # The line straight onto the TCP stream, under the TLS layer, then the handshake.
        socket.socket.sendall(sock, PROXY_TCP4)
        sock.do_handshake()
        sock.sendall(get("/", b"Connection: close\r\n"))
        response = ResponseReader(sock).read_response()
    assert response.status == 200
    assert (app.last["REMOTE_ADDR"], app.last["REMOTE_PORT"]) == ("203.0.113.7", "51234")
    assert app.last["HTTPS"] == "on"


def test_tls_port_refuses_a_missing_proxy_line_without_a_handshake(
    serve: ServerFactory, certs: Certs
) -> None:
    """proxy-protocol.txt §2: the receiver "MUST not try to guess whether the protocol header
    is present or not": a trusted client that starts with its ClientHello, no PROXY line, is
    not served."""
    app = Recorder()
    server = serve(app, proxy_protocol=True, **tls_options(certs))
    with session(certs) as s, pytest.raises(requests.exceptions.ConnectionError):
        s.get(server.url, timeout=TIMEOUT)
    assert app.calls == 0


def test_proxy_v2_header_names_the_client_for_every_request_on_the_connection(
    serve: ServerFactory,
) -> None:
    """proxy-protocol.txt §2.2: with the PROXY command "The receiver must then use the
    information provided in the protocol block"; the header shares one write with the first
    request, which the handler reads whole (nothing of it was taken with the header), and a
    second keep-alive request keeps the client."""
    app = Recorder()
    probe = Probe()
    server = serve(app, proxy_protocol=True, handler_class=probe.handler_class)
    with connect(server) as sock:
        reader = ResponseReader(sock)
        sock.sendall(v2_tcp4("203.0.113.7", 51234, V2_TLVS) + get("/one"))
        first = reader.read_response()
        sock.sendall(get("/two"))
        second = reader.read_response()
    assert (first.status, first.body, second.status) == (200, b"ok /one", 200)
    assert probe.connections == [("203.0.113.7", 51234)]
    for environ in app.environs:
        assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("203.0.113.7", "51234")


def test_proxy_v2_header_split_across_several_sends(serve: ServerFactory) -> None:
    """proxy-protocol.txt §2: "Recommendation is to be tolerant" of partial headers: the
    header arrives in pieces (in the signature, before the length, in the addresses, in a
    TLV), then the request; no piece is answered, and the client is the header's."""
    app = Recorder()
    server = serve(app, proxy_protocol=True)
    header = v2_tcp4("203.0.113.7", 51234, V2_TLVS)
    with connect(server) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start, end in [(0, 1), (1, 13), (13, 15), (15, 22), (22, 33), (33, len(header))]:
            sock.sendall(header[start:end])
            assert_no_answer_yet(sock)
        sock.sendall(get("/split", b"Connection: close\r\n"))
        response = ResponseReader(sock).read_response()
    assert response.status == 200
    assert (app.last["REMOTE_ADDR"], app.last["REMOTE_PORT"]) == ("203.0.113.7", "51234")


@pytest.mark.parametrize("cut", [5, 12, 15, 16, 27])
def test_proxy_v2_header_cut_short_by_the_peer_closes_cleanly(
    serve: ServerFactory, cut: int
) -> None:
    """proxy-protocol.txt §2.2: "The receiver must also reject incoming connections
    containing partial protocol headers": the peer half-closes mid-header; the app is never
    called, no request is answered, and the next client is."""
    app = Recorder()
    server = serve(app, proxy_protocol=True)
    with connect(server) as sock:
        sock.sendall(V2_TCP4[:cut])
        sock.shutdown(socket.SHUT_WR)
        answer = recv_all(sock)
    assert b"200" not in answer
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400 ")
    assert app.calls == 0
    served, _ = raw_request(server, V2_TCP4 + get("/next", b"Connection: close\r\n"))
    assert served.status == 200


def test_proxy_v2_header_before_the_tls_handshake(serve: ServerFactory, certs: Certs) -> None:
    """HAProxy's ``server ... ssl send-proxy-v2``: the v2 header in clear text on the TCP
    stream, then the TLS handshake; the client is the header's."""
    app = Recorder()
    server = serve(app, proxy_protocol=True, **tls_options(certs))
    with tls_connection(server, client_context(certs), handshake=False) as sock:
        socket.socket.sendall(sock, v2_tcp4("203.0.113.7", 51234, V2_TLVS))
        sock.do_handshake()
        sock.sendall(get("/", b"Connection: close\r\n"))
        response = ResponseReader(sock).read_response()
    assert response.status == 200
    assert (app.last["REMOTE_ADDR"], app.last["REMOTE_PORT"]) == ("203.0.113.7", "51234")


# -- 4. the access log --------------------------------------------------------------------------


class AccessLines(logging.Handler):
    """Collects the ``wsgibridge.access`` lines; can hold each emit until a gate opens."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []
        self.gate: threading.Event | None = None
        self.gate_open_at_emit: list[bool] = []
        self._changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        gate = self.gate
        if gate is not None:
            self.gate_open_at_emit.append(gate.wait(TIMEOUT))
        with self._changed:
            self.lines.append(record.getMessage())
            self._changed.notify_all()

    def wait_for(self, count: int) -> list[str]:
        """The lines, once there are ``count`` of them (bounded by TIMEOUT)."""
        with self._changed:
            reached = self._changed.wait_for(lambda: len(self.lines) >= count, TIMEOUT)
            assert reached, f"expected {count} access lines, got {self.lines}"
            return list(self.lines)


@pytest.fixture
def access_lines() -> Iterator[AccessLines]:
    """The access lines of this test, straight from the ``wsgibridge.access`` logger.

    A handler on the logger itself, not caplog on the root: the CLI tests leave that
    logger with ``propagate = False``.
    """
    with logging_to("wsgibridge.access", AccessLines()) as handler:
        yield handler


def bytes_app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    """/big: 1 MiB with a Content-Length; /chunks: three 1000-byte chunks; else 13 bytes."""
    path = environ["PATH_INFO"]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return [b"b" * MiB]
    if path == "/chunks":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"c" * 1000 for _ in range(3))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, World!"]


def test_custom_access_log_format_renders_a_real_request(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """accesslog.py: "A template is text with ``{field}`` placeholders": client, method,
    path ("before any ``?``, undecoded"), query, status, bytes, duration_us ("rounded to an
    integer"), ``i:Name`` a request header, ``o:Name`` a response header."""
    fmt = (
        "{client} {method} {path} {query} {status} {bytes} {duration_us}"
        " {i:User-Agent} {o:Content-Type}"
    )
    server = serve(bytes_app, access_log_format=fmt)
    with session() as s:
        response = s.get(
            server.url + "hello%20there?x=1&y=%22",
            headers={"User-Agent": "probe/1.0"},
            timeout=TIMEOUT,
        )
    assert response.status_code == 200
    (line,) = access_lines.wait_for(1)
    match = re.fullmatch(
        r"127\.0\.0\.1 GET /hello%20there x=1&y=%22 200 13 (\d+) probe/1\.0 text/plain", line
    )
    assert match is not None, line
    assert 0 < int(match.group(1)) < TIMEOUT * 1_000_000


def test_access_log_client_is_the_forwarded_client(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """accesslog.py: ``client`` is "The client's address: REMOTE_ADDR, after proxy
    rewriting"; from an untrusted peer the forwarded address is not believed."""
    trusted = serve(bytes_app, access_log_format="{client} {path}")
    untrusted = serve(bytes_app, access_log_format="{client} {path}", forwarded_allow_ips="")
    for server, path in ((trusted, "/trusted"), (untrusted, "/untrusted")):
        response, _ = raw_request(
            server, get(path, b"X-Forwarded-For: 203.0.113.7\r\n", b"Connection: close\r\n")
        )
        assert response.status == 200
        access_lines.wait_for(1 if path == "/trusted" else 2)
    assert access_lines.lines == ["203.0.113.7 /trusted", "127.0.0.1 /untrusted"]


def test_control_characters_in_the_request_are_escaped_in_the_log(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """README: the access line has "control characters escaped"; accesslog.py: "Control
    characters (U+0000 to U+001F and U+007F to U+009F) become ``\\xNN`` ..., a backslash
    becomes ``\\\\`` and a double quote becomes ``\\"``", so "no client can forge a log
    entry, send a terminal escape, or end a quoted field early".  One request is served
    (HTAB and a C1 control in a header value are legal obs-text), one is refused (ESC in
    the target); both lines are escaped."""
    server = serve(bytes_app, access_log_format='"{request}" {status} "{i:User-Agent}"')
    served, _ = raw_request(
        server,
        b"GET /ctl?q=1 HTTP/1.1\r\nHost: x\r\n"
        b'User-Agent: evil\t\x9b[2J"\\end\r\nConnection: close\r\n\r\n',
    )
    access_lines.wait_for(1)  # lines of different connections may come in any order
    refused, _ = raw_request(server, b"GET /\x1b[31mred HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (served.status, refused.status) == (200, 400)
    lines = access_lines.wait_for(2)
    assert lines == [
        r'"GET /ctl?q=1 HTTP/1.1" 200 "evil\x09\x9b[2J\"\\end"',
        r'"GET /\x1b[31mred HTTP/1.1" 400 "-"',
    ]
    assert all(line.isprintable() for line in lines)


def test_bytes_is_the_body_bytes_actually_sent(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """accesslog.py: ``bytes`` is "Body bytes actually sent, in digits; ``0`` when none (HEAD,
    304, a client gone before the body).  Headers not counted." (chunk framing neither)."""
    server = serve(bytes_app, access_log_format="{method} {path} {status} {bytes}")
    with session() as s:
        big = s.get(server.url + "big", timeout=TIMEOUT)
        head = s.head(server.url + "big", timeout=TIMEOUT)
        chunks = s.get(server.url + "chunks", timeout=TIMEOUT)
    assert len(big.content) == MiB
    assert head.headers["Content-Length"] == str(MiB)
    assert chunks.headers["Transfer-Encoding"] == "chunked"
    assert access_lines.wait_for(3) == [
        f"GET /big 200 {MiB}",
        "HEAD /big 200 0",
        "GET /chunks 200 3000",
    ]


def test_bytes_counts_only_what_went_out_to_a_client_that_left(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """accesslog.py: ``bytes`` is the "Body bytes actually sent": a client that resets the
    connection after the first bytes of a 64 MiB body is logged with fewer."""
    total = 64 * MiB
    piece = b"z" * (64 * 1024)

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", str(total))])
        return (piece for _ in range(total // len(piece)))

    server = serve(app, access_log_format="{path} {status} {bytes}")
    with connect(server) as sock:
        sock.sendall(get("/huge"))
        assert sock.recv(1024).startswith(b"HTTP/1.1 200 OK\r\n")
        # Close with a reset: the server's next writes fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    (line,) = access_lines.wait_for(1)
    path, status, sent = line.split()
    assert (path, status) == ("/huge", "200")
    assert 0 < int(sent) < total


def test_one_line_per_request_on_a_keep_alive_connection(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """README: ``wsgibridge.access`` writes "one INFO line per request"."""
    server = serve(bytes_app, access_log_format="{remote_port} {request} {status}")
    with session() as s:
        for path in ("k1", "k2", "k3"):
            assert s.get(server.url + path, timeout=TIMEOUT).status_code == 200
    lines = access_lines.wait_for(3)
    assert len(lines) == 3
    ports = {line.split()[0] for line in lines}
    assert len(ports) == 1  # one connection
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"GET /{path} HTTP/1.1 200" for path in ("k1", "k2", "k3")
    ]


def test_one_line_per_pipelined_request_in_order(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """README: "Pipelined requests are answered in order" and logged one line each."""
    server = serve(bytes_app, access_log_format="{remote_port} {path} {status} {bytes}")
    with connect(server) as sock:
        sock.sendall(get("/p1") + get("/chunks") + get("/p3", b"Connection: close\r\n"))
        reader = ResponseReader(sock)
        statuses = [reader.read_response().status for _ in range(3)]
        port = sock.getsockname()[1]
    assert statuses == [200, 200, 200]
    assert access_lines.wait_for(3) == [
        f"{port} /p1 200 13",
        f"{port} /chunks 200 3000",
        f"{port} /p3 200 13",
    ]


def test_access_line_is_written_after_the_response(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """README: one line per request, "written after the response".  The log handler holds
    every emit until the client has read the whole response: were the line written first,
    the response would never arrive."""
    gate = threading.Event()
    access_lines.gate = gate
    server = serve(bytes_app, access_log_format="{path} {status}")
    with connect(server, timeout=TIMEOUT / 2) as sock:
        sock.sendall(get("/big"))
        response = ResponseReader(sock).read_response()
        gate.set()
    assert len(response.body) == MiB
    assert access_lines.wait_for(1) == ["/big 200"]
    assert access_lines.gate_open_at_emit == [True]


def test_refused_request_is_logged(access_lines: AccessLines, serve: ServerFactory) -> None:
    """README: "Every refusal is final: one response with ``Connection: close``, a warning on
    the ``wsgibridge.error`` logger ..."; the access log has its line too, with the 400 and
    the bytes of the error body that went out."""
    app = Recorder()
    server = serve(app, access_log_format='{client} "{request}" {status} {bytes}')
    response, _ = raw_request(
        server,
        b"POST /dup HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    )
    assert response.status == 400
    assert app.calls == 0
    assert access_lines.wait_for(1) == [f'127.0.0.1 "POST /dup HTTP/1.1" 400 {len(response.body)}']


def test_refused_request_log_line_shows_its_response_headers(
    access_lines: AccessLines, serve: ServerFactory
) -> None:
    """accesslog.py: ``o:Name`` is "A response header, the same way" as ``i:Name``, where "an
    absent one is ``-``".  The 400 carries ``Content-Type`` and ``Connection: close``."""
    server = serve(bytes_app, access_log_format="{status} {o:Content-Type} {o:Connection}")
    response, _ = raw_request(server, b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
    assert response.status == 400
    assert access_lines.wait_for(1) == [
        f"400 {response.header('Content-Type')} {response.header('Connection')}"
    ]


# -- stopping -------------------------------------------------------------------------------------


def test_stop_just_after_a_refusal_closes_the_connection(certs: Certs) -> None:
    """A graceful stop stops accepting, closes idle connections at once, lets requests in
    flight finish, and returns as soon as the work is done (nothing polls).  A connection
    the server is closing lingeringly after a 400 when the stop comes is closed by the
    stop, which does not wait graceful_timeout for it.

    To hit the window every time, the server's TLS socket (``SSLContext.sslsocket_class``)
    holds the worker right after its half-close until the stop is under way (a timer: the
    stop has no event to wait for).
    """
    in_half_close = threading.Event()
    release = threading.Event()
    held: list[ssl.SSLSocket] = []

    class HoldingSocket(ssl.SSLSocket):
        def shutdown(self, how: int) -> None:
            super().shutdown(how)
            if how == socket.SHUT_WR:
                held.append(self)
                in_half_close.set()
                release.wait(TIMEOUT)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certs.server.configure_cert(context)
    context.sslsocket_class = HoldingSocket
    graceful = 1.5
    server = make_server(Recorder(), "127.0.0.1", 0, ssl_context=context, graceful_timeout=graceful)
    thread = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
    thread.start()
    timer = threading.Timer(0.3, release.set)
    try:
        with tls_connection(server, client_context(certs)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
            assert ResponseReader(sock).read_response().status == 400
            assert in_half_close.wait(TIMEOUT)
        server.shutdown()
        timer.start()
        started = time.monotonic()
        server.server_close()
        took = time.monotonic() - started
        left = server.open_connections
    finally:
        release.set()
        timer.cancel()
        if timer.is_alive():
            timer.join(TIMEOUT)
        server.server_close()
        thread.join(TIMEOUT)
        for leaked in held:
            leaked.close()
    assert not thread.is_alive()
    assert left == 0, f"{left} connection(s) left open after server_close()"
    assert took < graceful - 0.5, f"server_close() took {took:.2f} s"


# -- the command line -----------------------------------------------------------------------------


def _pump(stream: IO[str], lines: queue.SimpleQueue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def test_cli_access_log_file_gets_the_lines(tmp_path: Path) -> None:
    """Config ``access_log_file``: "Where the CLI writes access lines: stderr, stdout or a
    file path"; README: SIGTERM stops the server gracefully and it "exits 0".  The lines go
    to the file in the given ``--access-log-format``, not to stderr."""
    (tmp_path / "access_cli_app.py").write_text(
        textwrap.dedent(
            """
            def app(environ, start_response):
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"hi"]
            """
        )
    )
    log_file = tmp_path / "access.log"
    python_path = [IMPORT_ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path))
    command = [
        sys.executable,
        "-m",
        "wsgibridge",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--access-log-file",
        str(log_file),
        "--access-log-format",
        "{client} {method} {path} {query} {status} {bytes}",
        "access_cli_app:app",
    ]
    proc = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
    pump = threading.Thread(target=_pump, args=(proc.stderr, lines), daemon=True)
    pump.start()
    stderr: list[str] = []
    try:
        deadline = time.monotonic() + 20.0
        port = None
        while port is None:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise AssertionError(f"no 'serving on' line; stderr so far: {stderr}") from None
            if line is None:
                raise AssertionError(f"the server exited early: {stderr}")
            stderr.append(line)
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
        with session() as s:
            for query in ("a=1", "b=2"):
                response = s.get(f"http://127.0.0.1:{port}/cli?{query}", timeout=TIMEOUT)
                assert (response.status_code, response.text) == (200, "hi")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        pump.join(timeout=5)
        proc.stderr.close()
    while True:
        try:
            line = lines.get_nowait()
        except queue.Empty:
            break
        if line is not None:
            stderr.append(line)
    assert log_file.read_text().splitlines() == [
        "127.0.0.1 GET /cli a=1 200 2",
        "127.0.0.1 GET /cli b=2 200 2",
    ]
    assert not any("/cli" in line for line in stderr), stderr
    assert any("received SIGTERM" in line for line in stderr), stderr


def test_a_partial_tls_record_holds_no_worker(serve: ServerFactory, certs: Certs) -> None:
    """A TLS client that sends part of a record after the handshake: the socket is readable
    but OpenSSL cannot decrypt anything yet; the head is read non-blocking, so the
    connection is parked and the only worker serves others (not read_timeout later)."""
    app = Recorder()
    server = serve(app, threads=1, read_timeout=8.0, header_timeout=3.0, **tls_options(certs))
    with tls_connection(server, client_context(certs)) as stuck:
        # Raw bytes under the TLS layer: a record header, and no record.
        socket.socket.sendall(stuck, b"\x17\x03\x03")
        started = time.monotonic()
        with session(certs) as s:
            status = s.get(server.url + "other", timeout=TIMEOUT).status_code
        assert status == 200
        assert time.monotonic() - started < 2.0


def test_plain_http_to_the_tls_port_holds_no_worker(serve: ServerFactory, certs: Certs) -> None:
    """The clear-text 400 is sent without waiting and the close lingers in the reactor:
    clients speaking plain HTTP to the TLS port never delay a TLS client."""
    app = Recorder()
    server = serve(app, threads=1, **tls_options(certs))
    plain = []
    try:
        for _ in range(5):
            sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
            plain.append(sock)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # and keep the connection open
        started = time.monotonic()
        with session(certs) as s:
            assert s.get(server.url, timeout=TIMEOUT).status_code == 200
        assert time.monotonic() - started < 1.0
        answer = plain[0].recv(65536)
        assert answer.startswith(b"HTTP/1.1 400 ")
    finally:
        for sock in plain:
            sock.close()
