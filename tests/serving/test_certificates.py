"""``WSGIServer.reload_tls``: new connections get the re-read certificate, open ones keep
theirs, a file that cannot be used is one logged line and the old certificate serves on.

Real TLS over loopback: two certificates from two CAs (trustme), the server's files
replaced on disk between them, clients that check which certificate they were shown.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
import trustme

from wsgibridge import WSGIServer

from ..conftest import Records, ServerFactory, logging_to, simple_app
from .tls_helpers import (
    BREAKAGES,
    Rotation,
    TLSClient,
    break_files,
    make_rotation,
    repair,
    served_certificate,
    write,
)


@pytest.fixture
def rotation(tmp_path: Path) -> Rotation:
    return make_rotation(tmp_path)


def tls_server(serve: ServerFactory, rotation: Rotation, **options: object) -> WSGIServer:
    return serve(
        simple_app(), certfile=str(rotation.cert_file), keyfile=str(rotation.key_file), **options
    )


def address(server: WSGIServer) -> tuple[str, int]:
    return server.host, server.port


def test_reload_serves_the_new_certificate_and_keeps_open_connections(
    serve: ServerFactory, rotation: Rotation
) -> None:
    server = tls_server(serve, rotation)
    with TLSClient(address(server), rotation.client) as before:
        assert before.get() == 200
        assert rotation.which(before.der) == "A"

        rotation.install(rotation.new)
        assert served_certificate(rotation, address(server)) == "A"  # not re-read by itself
        with logging_to("wsgibridge.server", Records()) as log:
            assert server.reload_tls() is True

        assert served_certificate(rotation, address(server)) == "B"
        # The keep-alive connection opened before goes on, on its own certificate.
        assert before.get() == 200
        assert rotation.which(before.der) == "A"
    [line] = log.records
    assert line.levelno == logging.INFO
    assert str(rotation.cert_file) in line.getMessage()


@pytest.mark.parametrize("how", BREAKAGES)
def test_a_broken_file_is_one_line_and_the_old_certificate_serves_on(
    serve: ServerFactory, rotation: Rotation, how: str
) -> None:
    """Among them a key that does not match the new certificate: ``load_cert_chain`` on
    the live context would leave it with the new certificate and no key (every handshake
    failing); the fresh context that fails is dropped whole instead."""
    server = tls_server(serve, rotation)
    with TLSClient(address(server), rotation.client) as before:
        assert before.get() == 200
        named, reason = break_files(rotation, how)
        with logging_to("wsgibridge.server", Records()) as log:
            assert server.reload_tls() is False

        assert served_certificate(rotation, address(server)) == "A"
        assert before.get() == 200
        [line] = log.at(logging.WARNING)
        message = line.getMessage()
        assert line.levelno == logging.ERROR
        assert message.startswith("TLS reload failed, the certificate in use is kept: ")
        assert repr(str(named)) in message and reason in message, message
        assert "\n" not in message and line.exc_info is None  # one line, no traceback

        repair(rotation)
        assert server.reload_tls() is True
        assert served_certificate(rotation, address(server)) == "B"
        assert before.get() == 200


def test_reload_re_reads_the_client_ca_file(
    serve: ServerFactory, rotation: Rotation, tmp_path: Path
) -> None:
    """``ca_certs`` is read anew too: a client certificate from the CA removed from it is
    refused from then on, one from the CA put in is accepted."""
    old_ca, new_ca = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "clients.pem"
    write(ca_file, old_ca.cert_pem.bytes())
    server = tls_server(serve, rotation, ca_certs=str(ca_file), require_client_cert=True)

    def answered(ca: trustme.CA) -> bool:
        context = rotation.client_context(ca.issue_cert("client@example.org"))
        try:
            with TLSClient(address(server), context) as client:
                return client.get() == 200
        except (ssl.SSLError, ConnectionError, EOFError):
            return False  # TLS 1.3: the refusal arrives with the first read

    assert answered(old_ca) and not answered(new_ca)
    write(ca_file, new_ca.cert_pem.bytes())
    assert server.reload_tls() is True
    assert answered(new_ca) and not answered(old_ca)


def test_reload_tls_needs_a_certfile(serve: ServerFactory, rotation: Rotation) -> None:
    plain = serve(simple_app())
    with pytest.raises(RuntimeError, match="certfile"):
        plain.reload_tls()
    own = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    own.load_cert_chain(rotation.cert_file, rotation.key_file)
    custom = serve(simple_app(), ssl_context=own)
    with pytest.raises(RuntimeError, match="ssl_context"):
        custom.reload_tls()
    # Its documented way instead: assign a new context.
    rotation.install(rotation.new)
    fresh = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    fresh.load_cert_chain(rotation.cert_file, rotation.key_file)
    custom.ssl_context = fresh
    assert served_certificate(rotation, address(custom)) == "B"
