"""wsgibridge.serving.tls over real loopback sockets, with throwaway certificates from trustme."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from wsgibridge.http.response import error_message
from wsgibridge.serving.tls import (
    PLAIN_HTTP_MESSAGE,
    format_dn,
    handshake,
    looks_like_plain_http,
    make_ssl_context,
    tls_environ,
)

from ..conftest import der_of

SOCKET_TIMEOUT = 7.0  # what the server sets on the socket before the handshake
CLIENT_TIMEOUT = 5.0


# -- certificates -----------------------------------------------------------------------


@dataclass(frozen=True)
class PKI:
    ca: trustme.CA
    server: trustme.LeafCert
    client: trustme.LeafCert
    combined: str  # server key + chain in one file
    chain: str  # server chain alone
    key: str  # server key alone
    ca_file: str


@pytest.fixture
def pki(authority: tuple[trustme.CA, trustme.LeafCert, trustme.LeafCert], tmp_path: Path) -> PKI:
    ca, server, client = authority
    combined, chain, key, ca_file = (
        tmp_path / name for name in ("combined.pem", "chain.pem", "key.pem", "ca.pem")
    )
    server.private_key_and_cert_chain_pem.write_to_path(str(combined))
    chain.write_bytes(b"".join(blob.bytes() for blob in server.cert_chain_pems))
    server.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return PKI(ca, server, client, str(combined), str(chain), str(key), str(ca_file))


def client_context(pki: PKI, *, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    pki.ca.configure_trust(context)
    context.set_alpn_protocols(["http/1.1"])
    if cert is not None:
        cert.configure_cert(context)
    return context


# -- a one-connection TLS server in a thread ----------------------------------------------


@dataclass
class Outcome:
    environ: dict[str, str] | None = None
    error: BaseException | None = None
    elapsed: float = -1.0
    timeout_after: float | None = None
    alpn: str | None = None


def send_plain_answer(sock: ssl.SSLSocket) -> None:
    """What the server does: the clear-text 400 on the raw socket, then a brief linger."""
    raw = socket.socket  # the unbound methods act on the descriptor, bypassing TLS
    sock.settimeout(2.0)
    raw.sendall(sock, error_message(400, PLAIN_HTTP_MESSAGE))
    raw.shutdown(sock, socket.SHUT_WR)
    with contextlib.suppress(OSError):
        while raw.recv(sock, 65536):
            pass


@contextlib.contextmanager
def tls_server(
    context: ssl.SSLContext, *, timeout: float = 5.0, answer_plain: bool = False
) -> Iterator[tuple[tuple[str, int], Outcome]]:
    """Accept one connection: wrap, handshake(), tls_environ(), send b"x", close.

    Read the outcome after the ``with`` block: the thread is joined there.
    """
    outcome = Outcome()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(CLIENT_TIMEOUT)

    def serve() -> None:
        try:
            raw, _ = listener.accept()
        except OSError as exc:
            outcome.error = exc
            return
        raw.settimeout(SOCKET_TIMEOUT)
        with context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False) as sock:
            start = time.monotonic()
            try:
                handshake(sock, timeout)
            except OSError as exc:  # TimeoutError and SSLError are OSErrors
                outcome.elapsed = time.monotonic() - start
                outcome.error = exc
                outcome.timeout_after = sock.gettimeout()
                if answer_plain and looks_like_plain_http(exc):
                    send_plain_answer(sock)
                return
            outcome.elapsed = time.monotonic() - start
            outcome.timeout_after = sock.gettimeout()
            outcome.alpn = sock.selected_alpn_protocol()
            outcome.environ = tls_environ(sock)
            try:
                sock.sendall(b"x")
            except OSError as exc:
                outcome.error = exc

    thread = threading.Thread(target=serve, name="tls-test-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname(), outcome
    finally:
        thread.join(10)
        listener.close()
        assert not thread.is_alive()


def tls_client(address: tuple[str, int], context: ssl.SSLContext) -> bytes:
    """Connect, handshake, read the server's byte."""
    with (
        socket.create_connection(address, timeout=CLIENT_TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        return sock.recv(1)


def raw_exchange(address: tuple[str, int], data: bytes) -> bytes:
    """Send ``data`` in clear text, then read until the server closes."""
    with socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


# -- make_ssl_context ---------------------------------------------------------------------


def test_context_from_combined_file(pki: PKI) -> None:
    context = make_ssl_context(pki.combined)
    assert context.protocol == ssl.PROTOCOL_TLS_SERVER
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert context.options & ssl.OP_NO_COMPRESSION
    no_renegotiation = getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    if no_renegotiation:
        assert context.options & no_renegotiation


def test_context_from_separate_files_serves(pki: PKI) -> None:
    context = make_ssl_context(pki.chain, pki.key)
    with tls_server(context) as (address, outcome):
        assert tls_client(address, client_context(pki)) == b"x"
    assert outcome.error is None
    assert outcome.alpn == "http/1.1"


def test_client_cert_modes(pki: PKI) -> None:
    assert make_ssl_context(pki.combined, ca_certs=pki.ca_file).verify_mode == ssl.CERT_OPTIONAL
    required = make_ssl_context(pki.combined, ca_certs=pki.ca_file, require_client_cert=True)
    assert required.verify_mode == ssl.CERT_REQUIRED


def test_require_client_cert_needs_ca_certs(pki: PKI) -> None:
    with pytest.raises(ValueError, match="ca_certs"):
        make_ssl_context(pki.combined, require_client_cert=True)


@pytest.mark.parametrize("missing", ["certfile", "keyfile", "ca_certs"])
def test_missing_file_is_named(pki: PKI, tmp_path: Path, missing: str) -> None:
    absent = str(tmp_path / "absent.pem")
    certfile = absent if missing == "certfile" else pki.chain
    keyfile = absent if missing == "keyfile" else pki.key
    ca_certs = absent if missing == "ca_certs" else None
    with pytest.raises(FileNotFoundError) as info:
        make_ssl_context(certfile, keyfile, ca_certs=ca_certs)
    assert info.value.filename == absent
    assert absent in str(info.value)
    assert missing in str(info.value)


def test_invalid_pem_is_a_value_error(pki: PKI, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"garbage\.pem' holds no valid PEM certificate"):
        make_ssl_context(str(garbage))
    with pytest.raises(ValueError, match=r"garbage\.pem"):
        make_ssl_context(pki.combined, ca_certs=str(garbage))
    # OpenSSL says "PEM lib" for a bad certificate and a bad key alike: the message
    # says which of the two files it was.
    with pytest.raises(ValueError, match=r"garbage\.pem' holds no valid PEM private key"):
        make_ssl_context(pki.chain, str(garbage))
    with pytest.raises(ValueError, match=r"chain\.pem' holds no valid PEM private key"):
        make_ssl_context(pki.chain)  # no key next to the certificate
    other_key = tmp_path / "other-key.pem"
    pki.client.private_key_pem.write_to_path(str(other_key))
    with pytest.raises(ValueError, match=r"other-key\.pem' does not belong to the certificate"):
        make_ssl_context(pki.chain, str(other_key))


def test_encrypted_key(pki: PKI, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server.private_key_pem.bytes(), None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"s3cret"),
        )
    )
    context = make_ssl_context(pki.chain, str(encrypted), password="s3cret")
    assert context.verify_mode == ssl.CERT_NONE
    with pytest.raises(ValueError, match=r"encrypted-key\.pem"):
        make_ssl_context(pki.chain, str(encrypted), password="wrong")
    with pytest.raises(ValueError, match="password is required"):  # no terminal prompt
        make_ssl_context(pki.chain, str(encrypted))


def test_ca_directory(pki: PKI, tmp_path: Path) -> None:
    capath = tmp_path / "cadir"
    capath.mkdir()
    context = make_ssl_context(pki.combined, ca_certs=str(capath))
    assert context.verify_mode == ssl.CERT_OPTIONAL


# -- loopback handshakes and the environ ------------------------------------------------


def test_handshake_without_client_cert(pki: PKI) -> None:
    context = make_ssl_context(pki.combined, ca_certs=pki.ca_file)
    with tls_server(context) as (address, outcome):
        assert tls_client(address, client_context(pki)) == b"x"
    assert outcome.error is None
    assert outcome.timeout_after == SOCKET_TIMEOUT  # restored after the non-blocking dance
    environ = outcome.environ
    assert environ is not None
    assert environ["HTTPS"] == "on"
    assert environ["SSL_PROTOCOL"] in ("TLSv1.2", "TLSv1.3")
    assert environ["SSL_CIPHER"]
    assert int(environ["SSL_CIPHER_USEKEYSIZE"]) >= 128
    assert environ["SSL_CLIENT_VERIFY"] == "NONE"
    assert not any(key.startswith("SSL_CLIENT_") and key != "SSL_CLIENT_VERIFY" for key in environ)
    assert all(isinstance(value, str) for value in environ.values())


def test_handshake_with_client_cert(pki: PKI) -> None:
    context = make_ssl_context(pki.combined, ca_certs=pki.ca_file)
    with tls_server(context) as (address, outcome):
        assert tls_client(address, client_context(pki, cert=pki.client)) == b"x"
    assert outcome.error is None
    environ = outcome.environ
    assert environ is not None
    assert environ["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert ssl.PEM_cert_to_DER_cert(environ["SSL_CLIENT_CERT"]) == der_of(pki.client)
    assert environ["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----\n")

    client = x509.load_der_x509_certificate(der_of(pki.client))
    assert environ["SSL_CLIENT_S_DN"].startswith("CN=client,OU=Dev,O=Example")
    assert environ["SSL_CLIENT_S_DN"] == client.subject.rfc4514_string()
    assert environ["SSL_CLIENT_I_DN"] == client.issuer.rfc4514_string()
    assert "O=Example CA" in environ["SSL_CLIENT_I_DN"]
    assert int(environ["SSL_CLIENT_M_SERIAL"], 16) == client.serial_number
    assert environ["SSL_CLIENT_M_VERSION"] == "3"
    start = ssl.cert_time_to_seconds(environ["SSL_CLIENT_V_START"])
    end = ssl.cert_time_to_seconds(environ["SSL_CLIENT_V_END"])
    assert start < time.time() < end


def test_required_client_cert_refused_without_one(pki: PKI) -> None:
    context = make_ssl_context(pki.combined, ca_certs=pki.ca_file, require_client_cert=True)
    # TLS 1.3 finishes the client's side first: the refusal arrives as an alert
    # on the first read (or the connection just ends).
    with (
        tls_server(context) as (address, outcome),
        contextlib.suppress(ssl.SSLError, ConnectionError),
    ):
        assert tls_client(address, client_context(pki)) == b""
    assert isinstance(outcome.error, ssl.SSLError)
    assert outcome.environ is None


def test_required_client_cert_accepted(pki: PKI) -> None:
    context = make_ssl_context(pki.combined, ca_certs=pki.ca_file, require_client_cert=True)
    with tls_server(context) as (address, outcome):
        assert tls_client(address, client_context(pki, cert=pki.client)) == b"x"
    assert outcome.environ is not None
    assert outcome.environ["SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_client_cert_from_another_ca_refused(pki: PKI) -> None:
    stranger = trustme.CA().issue_cert("stranger@example.org", common_name="stranger")
    context = make_ssl_context(pki.combined, ca_certs=pki.ca_file)
    with (
        tls_server(context) as (address, outcome),
        contextlib.suppress(ssl.SSLError, ConnectionError),
    ):
        tls_client(address, client_context(pki, cert=stranger))
    assert isinstance(outcome.error, ssl.SSLError)


def test_client_cert_not_requested_without_ca_certs(pki: PKI) -> None:
    context = make_ssl_context(pki.combined)
    with tls_server(context) as (address, outcome):
        assert tls_client(address, client_context(pki, cert=pki.client)) == b"x"
    assert outcome.environ is not None
    assert outcome.environ["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_CERT" not in outcome.environ


def test_tls12_client_accepted(pki: PKI) -> None:
    client = client_context(pki)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_server(make_ssl_context(pki.combined)) as (address, outcome):
        assert tls_client(address, client) == b"x"
    assert outcome.environ is not None
    assert outcome.environ["SSL_PROTOCOL"] == "TLSv1.2"


def test_old_tls_refused(pki: PKI) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    pki.ca.configure_trust(client)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client.minimum_version = ssl.TLSVersion.TLSv1
            client.maximum_version = ssl.TLSVersion.TLSv1_1
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this OpenSSL refuses a TLS 1.1 client context: {exc}")
    context = make_ssl_context(pki.combined)
    with tls_server(context) as (address, outcome):
        try:
            tls_client(address, client)
        except ssl.SSLError as exc:
            if exc.reason == "NO_PROTOCOLS_AVAILABLE":
                pytest.skip("this OpenSSL cannot speak TLS 1.1 at all")
        else:
            pytest.fail("a TLS 1.1 client got through")
    assert isinstance(outcome.error, ssl.SSLError)
    assert outcome.environ is None


# -- the handshake deadline -------------------------------------------------------------


def test_silent_client_times_out(pki: PKI) -> None:
    context = make_ssl_context(pki.combined)
    with (
        tls_server(context, timeout=0.5) as (address, outcome),
        socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock,
    ):
        assert sock.recv(1) == b""  # the server gives up and closes
    assert isinstance(outcome.error, TimeoutError)
    assert 0.45 <= outcome.elapsed < 1.0
    assert outcome.timeout_after == SOCKET_TIMEOUT


def test_trickling_client_cut_off_at_the_deadline(pki: PKI) -> None:
    context = make_ssl_context(pki.combined)
    stop = threading.Event()
    sent = []

    def trickle(sock: socket.socket) -> None:
        # A TLS record header announcing a 512-byte ClientHello, then a byte every 0.2 s.
        with contextlib.suppress(OSError):
            sock.sendall(b"\x16\x03\x01\x02\x00")
            for _ in range(50):
                if stop.wait(0.2):
                    break
                sock.sendall(b"\x01")
                sent.append(1)

    with (
        tls_server(context, timeout=0.6) as (address, outcome),
        socket.create_connection(address, timeout=CLIENT_TIMEOUT) as sock,
    ):
        thread = threading.Thread(target=trickle, args=(sock,), daemon=True)
        thread.start()
        try:
            with contextlib.suppress(ConnectionError):
                assert sock.recv(1) == b""
        finally:
            stop.set()
            thread.join(5)
        assert not thread.is_alive()
    assert isinstance(outcome.error, TimeoutError)
    assert outcome.elapsed < 0.6 + 0.5
    assert len(sent) >= 2  # bytes kept arriving: a per-recv timeout would never fire


# -- plain HTTP on the TLS port ---------------------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET / HTTP/1.1",
        b"POST /form HTTP/1.1",
        b"HEAD / HTTP/1.0",
        b"CONNECT example.org:443 HTTP/1.1",
    ],
)
def test_plain_http_detected_and_answered(pki: PKI, request_line: bytes) -> None:
    context = make_ssl_context(pki.combined)
    with tls_server(context, answer_plain=True) as (address, outcome):
        response = raw_exchange(address, request_line + b"\r\nHost: localhost\r\n\r\n")
    assert outcome.error is not None
    assert looks_like_plain_http(outcome.error)
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"\r\nDate: " in response
    assert b"The plain HTTP request was sent to HTTPS port" in response


def test_other_handshake_failures_are_not_plain_http(pki: PKI) -> None:
    context = make_ssl_context(pki.combined)
    with tls_server(context, answer_plain=True) as (address, outcome):
        response = raw_exchange(address, b"\x16\x03\x03\x00\x05hello")  # a bogus handshake
    assert isinstance(outcome.error, ssl.SSLError)
    assert not looks_like_plain_http(outcome.error)
    assert b"HTTP/1.1" not in response
    assert not looks_like_plain_http(TimeoutError("handshake"))
    assert not looks_like_plain_http(ValueError("http request"))
    assert not looks_like_plain_http(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong"))


# -- format_dn --------------------------------------------------------------------------


def test_format_dn_order_and_short_names() -> None:
    subject = (
        (("countryName", "DE"),),
        (("stateOrProvinceName", "Berlin"),),
        (("localityName", "Berlin"),),
        (("organizationName", "Example"),),
        (("organizationalUnitName", "Dev"),),
        (("commonName", "client"),),
        (("emailAddress", "client@example.org"),),
    )
    assert format_dn(subject) == (
        "emailAddress=client@example.org,CN=client,OU=Dev,O=Example,L=Berlin,ST=Berlin,C=DE"
    )
    assert format_dn(((("domainComponent", "org"),), (("domainComponent", "example"),))) == (
        "DC=example,DC=org"
    )
    assert format_dn(()) == ""


def test_format_dn_multivalued_rdn_and_unknown_names() -> None:
    rdns = ((("organizationName", "Example"),), (("commonName", "a"), ("userId", "42")))
    assert format_dn(rdns) == "CN=a+UID=42,O=Example"
    assert format_dn(((("1.2.3.4", "x"),),)) == "1.2.3.4=x"


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("Doe, John", "Doe\\, John"),
        ('a+b;c<d>e"f\\g', 'a\\+b\\;c\\<d\\>e\\"f\\\\g'),
        ("#hash", "\\#hash"),
        (" padded ", "\\ padded\\ "),
        ("nul\x00bell\x07", "nul\\00bell\\07"),
        ("Jürgen", "Jürgen"),
        ("a#b c", "a#b c"),
    ],
)
def test_format_dn_escaping(value: str, escaped: str) -> None:
    assert format_dn(((("commonName", value),),)) == f"CN={escaped}"
