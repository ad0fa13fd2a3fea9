"""The server's certificate files: read into a context at the start, re-read on a reload.

Rule: a context is made whole from the files or not at all.  At the start
a file that cannot be used is a :class:`~wsgibridge.errors.ConfigError`
(the server does not start); on a reload (SIGHUP, ``WSGIServer.reload_tls``,
the arbiter before it forks new workers) it is one logged line naming the
file and the reason, and the context in use stays in use.

A reload never changes the context that serves: :func:`reload_context`
makes a new one with :func:`~wsgibridge.serving.tls.make_ssl_context` and
the caller swaps its reference (an attribute assignment, atomic under the
GIL).  A connection is wrapped with the context its server holds when the
connection's handshake begins, so the new certificate is in every
handshake from then on and the connections already open keep theirs.
``load_cert_chain`` on the live context would not do: OpenSSL installs the
new certificate before it reads the key, and when the key does not match,
the context is left with the new certificate and no key at all - every
handshake after fails ("no shared cipher").
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable

from ..config import Config
from ..errors import ConfigError
from .tls import make_ssl_context

__all__ = ["reload_context", "tls_context"]

log = logging.getLogger("wsgibridge.server")


def tls_context(config: Config) -> ssl.SSLContext:
    """The server's ``SSLContext`` from ``config``'s files; a :class:`ConfigError` says why not."""
    assert config.certfile, "tls_context needs a certfile"
    try:
        return make_ssl_context(
            config.certfile,
            config.keyfile,
            ca_certs=config.ca_certs,
            require_client_cert=config.require_client_cert,
        )
    except OSError as exc:
        # _check_readable names the setting: "certfile: No such file or directory".
        what, _, reason = str(exc.strerror).partition(": ")
        if what in ("certfile", "keyfile", "ca_certs") and reason:
            raise ConfigError(f"cannot read the {what} {exc.filename!r}: {reason}") from exc
        raise ConfigError(f"cannot read the TLS files: {exc}") from exc
    except ValueError as exc:
        hint = ""
        if str(exc).startswith("cannot load the certificate"):
            hint = (
                " (certfile must be a PEM certificate chain, leaf first, with its private"
                " key in the same file or in keyfile)"
            )
        raise ConfigError(f"{exc}{hint}") from exc


def reload_context(config: Config, swap: Callable[[ssl.SSLContext], object]) -> bool:
    """A new context from ``config``'s files as they are now, handed to ``swap``: True.

    False (logged once, at ERROR) when a file cannot be used: nothing is
    handed over.  Never raises for such a file - a reload must not stop what
    serves.  Success is logged after ``swap`` returned, so whoever reads the
    line can count on the new certificate.
    """
    try:
        context = tls_context(config)
    except ConfigError as exc:
        log.error("TLS reload failed, the certificate in use is kept: %s", exc)
        return False
    except Exception as exc:  # anything else OpenSSL or the platform may raise
        log.error(
            "TLS reload failed, the certificate in use is kept: %s: %s", type(exc).__name__, exc
        )
        return False
    swap(context)
    log.info("TLS: new connections use the certificate re-read from %s", config.certfile)
    return True
