"""What the certificate reload tests share: two certificates for one pair of files, and
TLS clients that say which certificate the server showed them."""

from __future__ import annotations

import os
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from ..conftest import ResponseReader, der_of

TIMEOUT = 5.0
REQUEST = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


@dataclass
class Rotation:
    """Certificate A (``old``) and B (``new``), from two CAs, for 127.0.0.1; the files
    the server reads (``cert_file``, ``key_file``); a client context trusting both CAs."""

    cas: tuple[trustme.CA, trustme.CA]
    old: trustme.LeafCert
    new: trustme.LeafCert
    cert_file: Path
    key_file: Path
    client: ssl.SSLContext = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.client_context()

    def client_context(self, cert: trustme.LeafCert | None = None) -> ssl.SSLContext:
        """A new client context trusting both CAs, presenting ``cert`` if given."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        for ca in self.cas:
            ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        return context

    def install(self, leaf: trustme.LeafCert) -> None:
        """Replace both files with ``leaf``'s chain and key (each by a rename, as certbot)."""
        write(self.cert_file, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        write(self.key_file, leaf.private_key_pem.bytes())

    def which(self, der: bytes) -> str:
        """``"A"``, ``"B"`` or ``"?"`` for a certificate a server showed."""
        return {der_of(self.old): "A", der_of(self.new): "B"}.get(der, "?")


def write(path: Path, data: bytes) -> None:
    """``data`` into ``path`` by a rename: a reader sees the old file or the new one."""
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    os.replace(part, path)


def make_rotation(directory: Path) -> Rotation:
    ca_a = trustme.CA(organization_name="Old CA")
    ca_b = trustme.CA(organization_name="New CA")
    rotation = Rotation(
        (ca_a, ca_b),
        ca_a.issue_cert("127.0.0.1"),
        ca_b.issue_cert("127.0.0.1"),
        directory / "cert.pem",
        directory / "key.pem",
    )
    rotation.install(rotation.old)
    return rotation


class TLSClient:
    """One TLS connection to ``address``: which certificate it got, requests on it."""

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        raw = socket.create_connection(address, timeout=TIMEOUT)
        try:
            self.sock = context.wrap_socket(raw, server_hostname=address[0])
        except BaseException:
            raw.close()
            raise
        self.reader = ResponseReader(self.sock)

    @property
    def der(self) -> bytes:
        der = self.sock.getpeercert(binary_form=True)
        assert der is not None
        return der

    def get(self) -> int:
        """A keep-alive GET /; its status."""
        self.sock.sendall(REQUEST)
        return self.reader.read_response().status

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TLSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def served_certificate(rotation: Rotation, address: tuple[str, int]) -> str:
    """A new connection's certificate (``"A"``/``"B"``), once it has answered a GET with 200."""
    with TLSClient(address, rotation.client) as client:
        assert client.get() == 200
        return rotation.which(client.der)


def break_files(rotation: Rotation, how: str) -> tuple[Path, str]:
    """Spoil the files one way; the file the error must name and the reason it must give."""
    cert, key = rotation.cert_file, rotation.key_file
    if how == "garbage certificate":
        write(cert, b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        return cert, "holds no valid PEM certificate"
    if how == "empty certificate":
        write(cert, b"")
        return cert, "holds no valid PEM certificate"
    if how == "key of another certificate":
        installed = key.read_bytes() == rotation.old.private_key_pem.bytes()
        other = rotation.new if installed else rotation.old
        write(cert, b"".join(blob.bytes() for blob in other.cert_chain_pems))
        return key, "does not belong to the certificate"
    if how == "garbage key":
        write(key, b"-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----\n")
        return key, "holds no valid PEM private key"
    if how == "missing certificate":
        cert.unlink()
        return cert, "No such file or directory"
    if how == "unreadable key":
        key.unlink()
        key.mkdir()  # open() fails whoever we are (root reads a mode-000 file)
        return key, "Is a directory"
    raise AssertionError(how)


def repair(rotation: Rotation) -> None:
    """Undo :func:`break_files`: certificate B in both files."""
    if rotation.key_file.is_dir():
        rotation.key_file.rmdir()
    rotation.install(rotation.new)


BREAKAGES = [
    "garbage certificate",
    "empty certificate",
    "key of another certificate",
    "garbage key",
    "missing certificate",
    "unreadable key",
]
