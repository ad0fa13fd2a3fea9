"""``--bind`` specs as values: ``parse_bind`` turns one into a :class:`Bind`, pure.

Rule: a spec is parsed and validated here, without opening anything or
asking a resolver (names are resolved when the sockets are opened, in
:mod:`~wsgibridge.serving.listen`), so a mistake in the configuration is
reported before anything listens.

Bind specs (``parse_bind``), one listener each:

=========================  ==================================================
``127.0.0.1:8000``         IPv4 address and port (port 0 picks a free port)
``[::1]:8000``             IPv6 address in brackets, IPV6_V6ONLY=1
``localhost:8000``         a host name: every address it resolves to at
                           bind time (``open_bind``)
``[::]:8000``              every IPv6 *and* IPv4 interface (dual stack,
                           IPV6_V6ONLY=0) where the OS allows it
``:8000``                  every IPv4 interface (``0.0.0.0``), as gunicorn
                           and Python's own ``""`` host mean it
``8000``                   port only: ``127.0.0.1`` (loopback, the safe
                           default, the same as ``Config.host``)
``unix:/run/app.sock``     Unix domain socket; ``unix:app.sock`` is relative
                           to the working directory at ``open_listener`` time
``fd://3``                 an already listening socket inherited as fd 3
=========================  ==================================================

Decisions:

* Addresses are stored in canonical form (``[0:0::1]`` becomes ``::1``) and
  names in lower case, so equal binds compare equal, and
  ``parse_bind(str(bind)) == bind``.  A host that is neither an address nor
  an RFC 1123 host name (a dotted-decimal look-alike such as ``256.0.0.1``
  or ``0x7f000001`` included) is refused.
* ``unix://…`` is refused rather than guessed at (is ``unix://run/x`` relative
  or ``/run/x``?); write ``unix:/abs/path`` or ``unix:rel/path``.  There is no
  abstract-namespace syntax: ``unix:@x`` is a file named ``@x``.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Literal

__all__ = ["Bind", "BindKind", "parse_bind"]

BindKind = Literal["tcp", "unix", "fd"]

# RFC 1123 §2.1 host names: labels of letters, digits and hyphens, dot-separated.
_HOST_NAME = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


@dataclass(frozen=True)
class Bind:
    """One address to listen on; validated (and the host made canonical) on creation.

    ``tcp`` uses ``host`` (an IPv4 or IPv6 address without brackets, or a host
    name) and ``port``; ``unix`` uses ``path``; ``fd`` uses ``fd``.  Fields of the other
    kinds must keep their defaults.
    """

    kind: BindKind
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __post_init__(self) -> None:
        if self.kind == "tcp":
            object.__setattr__(self, "host", _canonical_host(self.host))
            port = self.port
            if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
                raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
            unused = self.path != "" or self.fd != -1
        elif self.kind == "unix":
            if not self.path:
                raise ValueError("empty unix socket path")
            if "\0" in self.path:
                raise ValueError("unix socket path contains a NUL character")
            unused = self.host != "" or self.port != 0 or self.fd != -1
        elif self.kind == "fd":
            fd = self.fd
            if isinstance(fd, bool) or not isinstance(fd, int) or fd < 0:
                raise ValueError(f"fd must be a non-negative integer, not {fd!r}")
            unused = self.host != "" or self.port != 0 or self.path != ""
        else:
            raise ValueError(f"bind kind must be 'tcp', 'unix' or 'fd', not {self.kind!r}")
        if unused:
            raise ValueError(f"a {self.kind} bind takes only its own fields: {self!r}")

    @property
    def is_name(self) -> bool:
        """True for a TCP bind on a host name (resolved when opened)."""
        if self.kind != "tcp" or ":" in self.host:
            return False
        try:
            ipaddress.IPv4Address(self.host)
        except ValueError:
            return True
        return False

    def __str__(self) -> str:
        """The spec text: ``127.0.0.1:8000``, ``[::1]:8000``, ``unix:PATH``, ``fd://N``."""
        if self.kind == "tcp":
            return _format_tcp(self.host, self.port)
        if self.kind == "unix":
            return f"unix:{self.path}"
        return f"fd://{self.fd}"


def _canonical_host(host: str) -> str:
    if not host:
        raise ValueError("empty host; use 127.0.0.1, [::1], 0.0.0.0, [::] or a host name")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower().removesuffix(".")
    # RFC 1123 §2.1: a host name never has the dotted-decimal form, so a last
    # label of digits only is a mistyped address, not a name to look up.
    if (
        not name.isascii()
        or _HOST_NAME.fullmatch(name) is None
        or name.rpartition(".")[2].isdigit()
        or _is_inet_aton(name)
    ):
        raise ValueError(f"{host!r} is neither an IP address nor a host name")
    return name


def _is_inet_aton(text: str) -> bool:
    """True for the old numeric forms (``0x7f000001``, ``127.1``) a resolver would accept."""
    try:
        socket.inet_aton(text)
    except OSError:
        return False
    return True


def _format_tcp(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# -- parsing ---------------------------------------------------------------------------


def parse_bind(spec: str) -> Bind:
    """The :class:`Bind` for a ``--bind`` spec (forms in the module docstring).

    Raises ``ValueError`` naming the spec and what is wrong: a missing port, a
    port out of range, an IPv6 address with a port but no brackets, a host that
    is neither an address nor a name, an empty Unix path, an unknown scheme.
    Names are not resolved here (:func:`open_bind` does).
    """
    try:
        return _parse(spec)
    except ValueError as exc:
        raise ValueError(f"invalid bind address {spec!r}: {exc}") from None


def _parse(spec: str) -> Bind:
    if not spec:
        raise ValueError("empty")
    if spec.startswith("unix:"):
        path = spec[len("unix:") :]
        if path.startswith("//"):
            raise ValueError("write unix:/absolute/path or unix:relative/path, not unix://")
        return Bind("unix", path=path)
    if spec.startswith("fd://"):
        return Bind("fd", fd=_number(spec[len("fd://") :], "file descriptor"))
    if "://" in spec:
        raise ValueError("unknown scheme; use HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N")
    if spec.startswith("["):
        end = spec.find("]")
        if end < 0:
            raise ValueError("missing ']' after the IPv6 address")
        host, rest = spec[1:end], spec[end + 1 :]
        if ":" not in host:
            raise ValueError("brackets are only for IPv6 addresses")
        if not rest:
            raise ValueError("missing port (write [ADDRESS]:PORT)")
        if not rest.startswith(":"):
            raise ValueError("expected ':PORT' after ']'")
        return Bind("tcp", host, _port(rest[1:]))
    if ":" not in spec:
        if spec.isascii() and spec.isdigit():
            return Bind("tcp", "127.0.0.1", _port(spec))
        raise ValueError("missing port (write HOST:PORT)")
    host, _, port_text = spec.rpartition(":")
    if ":" in host:
        raise ValueError("an IPv6 address with a port must be in brackets, e.g. [::1]:8000")
    return Bind("tcp", host or "0.0.0.0", _port(port_text))


def _number(text: str, what: str) -> int:
    if not text:
        raise ValueError(f"missing {what}")
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{what} {text!r} is not a decimal number")
    if len(text) > 10:
        raise ValueError(f"{what} {text} is out of range")
    return int(text)


def _port(text: str) -> int:
    port = _number(text, "port")
    if port > 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return port
