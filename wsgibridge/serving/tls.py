"""TLS for wsgibridge: the server context, a handshake under a deadline, the ``SSL_*`` environ.

How the server uses this module (``serving/connection.py``, in a worker thread, never on
the reactor): it wraps each accepted socket with
``context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)``
and advances ``do_handshake()`` non-blocking on the bytes that have arrived,
parking the connection in between; :func:`handshake` (a blocking loop under
one deadline) only finishes a handshake that is waiting to *write*.  When
:func:`looks_like_plain_http` says the client spoke clear-text HTTP, the
server sends a 400 (:data:`PLAIN_HTTP_MESSAGE`) on the raw socket and closes it
lingeringly.  :func:`tls_environ` is computed once per connection.

Every function here is pure with respect to the process: no global state, no
logging; the caller decides what to log and when to close.
"""

from __future__ import annotations

import math
import os
import select
import ssl
import time
from collections.abc import Iterable
from typing import cast

__all__ = [
    "PLAIN_HTTP_MESSAGE",
    "format_dn",
    "handshake",
    "looks_like_plain_http",
    "make_ssl_context",
    "tls_environ",
]

ALPN_PROTOCOLS = ["http/1.1"]


# -- the server context -----------------------------------------------------------------


def _check_readable(path: str, what: str) -> None:
    """Raise ``OSError`` naming ``path`` (and its role) if it cannot be opened for reading."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise type(exc)(exc.errno, f"{what}: {exc.strerror}", path) from None


def _no_password(path: str) -> str:
    """A password callback for a key given without a password: refuse, never prompt."""
    # Without a callback OpenSSL would prompt on the terminal (and a server
    # started by systemd would fail obscurely or hang).
    raise ValueError(f"the private key in {path!r} is encrypted: a password is required")


def _why_not_loaded(certfile: str, key_path: str, exc: ssl.SSLError) -> str:
    """Which file ``load_cert_chain`` failed on, and why: OpenSSL says "PEM lib" for both."""
    if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        return f"the private key in {key_path!r} does not belong to the certificate ({exc})"
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # Certificates only (a private key in the same file is skipped): does
        # the chain read at all?
        probe.load_verify_locations(cafile=certfile)
    except ssl.SSLError:
        return f"{certfile!r} holds no valid PEM certificate ({exc})"
    return f"{key_path!r} holds no valid PEM private key ({exc})"


def make_ssl_context(
    certfile: str,
    keyfile: str | None = None,
    *,
    ca_certs: str | None = None,
    require_client_cert: bool = False,
    password: str | None = None,
) -> ssl.SSLContext:
    """A server-side ``SSLContext`` for wsgibridge.

    ``PROTOCOL_TLS_SERVER``, TLS 1.2 at least, ALPN ``["http/1.1"]``, no
    compression, no client-initiated renegotiation where OpenSSL offers
    ``OP_NO_RENEGOTIATION``, session tickets left at OpenSSL's default.

    ``certfile`` is a PEM file with the certificate chain (leaf first);
    ``keyfile`` the PEM private key, or ``None`` when the key is inside
    ``certfile``.  ``password`` decrypts an encrypted key; an encrypted key
    without one is a ``ValueError`` (never an interactive prompt).

    With ``ca_certs`` (a PEM file of CA certificates, or a directory in
    OpenSSL's hashed ``capath`` layout) the server requests a client
    certificate and verifies it against those CAs: optional by default
    (``CERT_OPTIONAL``: a client may send none, but one it sends must
    verify), required with ``require_client_cert`` (``CERT_REQUIRED``).
    ``require_client_cert`` without ``ca_certs`` is a ``ValueError``.

    A missing or unreadable file raises ``OSError`` (``FileNotFoundError``,
    ``PermissionError`` …) whose message and ``filename`` name the file; a
    file that is not valid PEM, a key that does not match the certificate
    or a wrong password raises ``ValueError`` naming the files and saying
    which of them is at fault.

    Every call builds a new context: to change the certificate of a running
    server, make a new one and swap it in (see ``certificates.py``), never
    ``load_cert_chain`` on the live one - OpenSSL installs a new certificate
    before it reads the key, and on a key that does not match it drops the
    old key too, leaving a context that fails every handshake.
    """
    if require_client_cert and not ca_certs:
        raise ValueError("require_client_cert needs ca_certs (the CAs to verify clients against)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    no_renegotiation = getattr(ssl, "OP_NO_RENEGOTIATION", 0)  # OpenSSL >= 1.1.0h
    if no_renegotiation:
        context.options |= no_renegotiation
    if ssl.HAS_ALPN:
        context.set_alpn_protocols(ALPN_PROTOCOLS)

    _check_readable(certfile, "certfile")
    if keyfile is not None:
        _check_readable(keyfile, "keyfile")
    key_path = certfile if keyfile is None else keyfile
    try:
        context.load_cert_chain(
            certfile,
            keyfile,
            password=password if password is not None else lambda: _no_password(key_path),
        )
    except ssl.SSLError as exc:
        files = repr(certfile) if keyfile is None else f"{certfile!r} and {keyfile!r}"
        why = _why_not_loaded(certfile, key_path, exc)
        raise ValueError(f"cannot load the certificate chain and key from {files}: {why}") from exc
    except OSError as exc:  # a race with _check_readable, or an odd platform error
        raise OSError(exc.errno, f"cannot load {certfile!r}: {exc}", certfile) from exc

    if ca_certs:
        try:
            if os.path.isdir(ca_certs):
                context.load_verify_locations(capath=ca_certs)
            else:
                _check_readable(ca_certs, "ca_certs")
                context.load_verify_locations(cafile=ca_certs)
        except ssl.SSLError as exc:
            raise ValueError(f"cannot load CA certificates from {ca_certs!r}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


# -- the handshake ----------------------------------------------------------------------


def _wait(sock: ssl.SSLSocket, for_write: bool, timeout: float) -> bool:
    """Wait until ``sock`` is readable (or writable); False if ``timeout`` passes first."""
    if hasattr(select, "poll"):
        # poll, not select: a busy server's descriptors can exceed FD_SETSIZE.
        poller = select.poll()
        poller.register(sock, select.POLLOUT if for_write else select.POLLIN)
        return bool(poller.poll(max(1, math.ceil(timeout * 1000))))
    readable, writable, _ = select.select(
        [] if for_write else [sock], [sock] if for_write else [], [], timeout
    )
    return bool(readable or writable)


def handshake(sock: ssl.SSLSocket, timeout: float) -> None:
    """Complete the server-side TLS handshake on ``sock`` within ``timeout`` seconds in all.

    ``sock`` comes from ``context.wrap_socket(raw, server_side=True,
    do_handshake_on_connect=False)``.  The deadline covers the whole
    handshake, not each read: a client trickling its ClientHello a byte at a
    time is cut off when the time is up.  The socket is driven non-blocking
    (``do_handshake`` + ``poll`` until the deadline); its own timeout is
    restored afterwards, whatever happens.

    Raises ``TimeoutError`` when the deadline passes, ``ssl.SSLError`` when
    the handshake fails (bad client certificate, no shared protocol or
    cipher, plain HTTP: see :func:`looks_like_plain_http`) and ``OSError``
    when the connection breaks.  The caller closes the socket on any error.
    """
    previous = sock.gettimeout()
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                for_write = False
            except ssl.SSLWantWriteError:
                for_write = True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not _wait(sock, for_write, remaining):
                raise TimeoutError(f"the TLS handshake did not complete within {timeout:g} s")
    finally:
        try:
            sock.settimeout(previous)
        except OSError:
            pass  # the descriptor is gone; the caller closes anyway


# -- plain HTTP on the TLS port ---------------------------------------------------------

# OpenSSL's reasons for a first record that starts "GET ", "POST ", "HEAD ",
# "PUT " (HTTP_REQUEST) or "CONNECT" (HTTPS_PROXY_REQUEST).  Other methods are
# not recognised by OpenSSL and fail as an ordinary bad record.
_PLAIN_HTTP_REASONS = frozenset({"HTTP_REQUEST", "HTTPS_PROXY_REQUEST"})

# What nginx says to clear-text HTTP on its TLS port (a 400).
PLAIN_HTTP_MESSAGE = "The plain HTTP request was sent to HTTPS port"


def looks_like_plain_http(exc: BaseException) -> bool:
    """True if ``exc`` is the ``ssl.SSLError`` OpenSSL raises for clear-text HTTP.

    That is, the client spoke HTTP, not TLS, to the TLS port (OpenSSL
    reason ``HTTP_REQUEST``, or ``HTTPS_PROXY_REQUEST`` for a ``CONNECT``).
    OpenSSL sends no alert in that case, so a clear-text answer
    (a 400 saying :data:`PLAIN_HTTP_MESSAGE`) reaches the client intact.
    """
    if not isinstance(exc, ssl.SSLError):
        return False
    reason = getattr(exc, "reason", None)  # unset on an SSLError built by hand
    if reason is not None:
        return reason in _PLAIN_HTTP_REASONS
    text = str(exc).lower()
    return "http request" in text or "https proxy request" in text


# -- the environ ------------------------------------------------------------------------

# RFC 4514 §3 short names; any other attribute keeps the name Python reports
# (OpenSSL's long name, e.g. "emailAddress", or a dotted OID).
_DN_SHORT_NAMES = {
    "commonName": "CN",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}

_DN_SPECIAL = frozenset('"+,;<>\\')


def _escape_dn_value(value: str) -> str:
    """RFC 4514 §2.4 escaping of one attribute value (controls as ``\\hh``)."""
    out = []
    last = len(value) - 1
    for i, ch in enumerate(value):
        if ch in _DN_SPECIAL or (i == 0 and ch in "# ") or (i == last and ch == " "):
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def format_dn(rdns: Iterable[Iterable[tuple[str, str]]]) -> str:
    """An RFC 4514 string for a name as ``getpeercert()`` gives it (``subject``, ``issuer``).

    ``getpeercert()`` lists the relative distinguished names in certificate
    order (``C`` … ``CN``); RFC 4514 (and mod_ssl's default, OpenSSL's
    ``RFC2253`` format) writes them in reverse, most specific first:
    ``CN=client,OU=Dev,O=Example,C=DE``.  Attributes of a multi-valued RDN
    are joined with ``+``.  The nine RFC 4514 attributes get their short
    names (CN, L, ST, O, OU, C, STREET, DC, UID); others keep Python's name
    (``emailAddress=…``, or a dotted OID).  Values are escaped per RFC 4514
    §2.4; non-ASCII characters are kept as they are (not hex-escaped).
    """
    parts = []
    for rdn in reversed(list(rdns)):
        pairs = (f"{_DN_SHORT_NAMES.get(n, n)}={_escape_dn_value(v)}" for n, v in rdn)
        parts.append("+".join(pairs))
    return ",".join(parts)


def tls_environ(sock: ssl.SSLSocket) -> dict[str, str]:
    """The environ keys a TLS connection adds to every request on it (mod_ssl's names).

    Computed once per connection after :func:`handshake`; the caller caches
    the dict and merges it into each request's environ.  Always:

    ``HTTPS``
        ``"on"``.
    ``SSL_PROTOCOL``
        the negotiated version, e.g. ``"TLSv1.3"``.
    ``SSL_CIPHER``, ``SSL_CIPHER_USEKEYSIZE``
        the cipher suite's OpenSSL name and its secret bits, e.g.
        ``"TLS_AES_256_GCM_SHA384"``, ``"256"``.
    ``SSL_CLIENT_VERIFY``
        ``"SUCCESS"`` when the client sent a certificate and it verified
        against ``ca_certs``; ``"NONE"`` when it sent none;
        ``"GENEROUS"`` (mod_ssl's word) for a certificate present but not
        verified, which only a custom context could produce.

    When the client sent a certificate:

    ``SSL_CLIENT_CERT``
        the certificate in PEM (``ssl.DER_cert_to_PEM_cert``, as Werkzeug).

    and, when it was verified (Python decodes only verified certificates):

    ``SSL_CLIENT_S_DN``, ``SSL_CLIENT_I_DN``
        subject and issuer as RFC 4514 strings, e.g.
        ``"CN=client,O=Example"`` (see :func:`format_dn`).
    ``SSL_CLIENT_M_SERIAL``, ``SSL_CLIENT_M_VERSION``
        the serial number in hex (as OpenSSL prints it) and the X.509
        version (``"3"``).
    ``SSL_CLIENT_V_START``, ``SSL_CLIENT_V_END``
        validity, in OpenSSL's format as mod_ssl has it:
        ``"Jan  1 00:00:00 2030 GMT"``.
    """
    environ = {"HTTPS": "on", "SSL_PROTOCOL": sock.version() or ""}
    cipher = sock.cipher()
    if cipher is not None:
        environ["SSL_CIPHER"] = cipher[0]
        environ["SSL_CIPHER_USEKEYSIZE"] = str(cipher[2])
    der = sock.getpeercert(binary_form=True)
    if not der:
        environ["SSL_CLIENT_VERIFY"] = "NONE"
        return environ
    environ["SSL_CLIENT_CERT"] = ssl.DER_cert_to_PEM_cert(der)
    decoded = sock.getpeercert()
    if not decoded:  # only with verify_mode CERT_NONE: sent, but nobody checked it
        environ["SSL_CLIENT_VERIFY"] = "GENEROUS"
        return environ
    environ["SSL_CLIENT_VERIFY"] = "SUCCESS"
    for key, field in (("SSL_CLIENT_S_DN", "subject"), ("SSL_CLIENT_I_DN", "issuer")):
        name = decoded.get(field)
        if isinstance(name, tuple):
            environ[key] = format_dn(cast("tuple[tuple[tuple[str, str], ...], ...]", name))
    for key, field in (
        ("SSL_CLIENT_M_SERIAL", "serialNumber"),
        ("SSL_CLIENT_M_VERSION", "version"),
        ("SSL_CLIENT_V_START", "notBefore"),
        ("SSL_CLIENT_V_END", "notAfter"),
    ):
        value = decoded.get(field)
        if value is not None:
            environ[key] = str(value)
    return environ
