"""The PROXY protocol v1: the line a TCP proxy sends before the client's bytes, pure.

Rule: the line is read exactly as the spec (HAProxy ``proxy-protocol.txt``
§2.1) writes it, or refused.  "Any sequence which does not exactly match the
protocol must be discarded and cause the receiver to abort the connection",
so anything else raises :class:`~wsgibridge.errors.BadRequest` (or
:class:`~wsgibridge.errors.IncompleteMessage` when the connection closed
before the line's end); nothing is guessed or repaired.  Addresses come back
canonical, as :mod:`.forwarded` and the sockets write them (lower-case,
compressed IPv6, ``::ffff:a.b.c.d`` for a mapped address), so the source can
become REMOTE_ADDR and be matched against
:class:`~wsgibridge.http.trusted.TrustedProxies`.

The caller reads the line on every connection of a listener configured for
it and only there (the receiver "MUST not try to guess whether the protocol
header is present or not"), and only from trusted peers ("The receiver
SHOULD ensure proper access filtering so that only trusted proxies are
allowed to use this protocol"); reading it from the socket is the server's
business, parsing it is this module's.  Nothing here touches a socket, a
thread or a logger.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import BadRequest, IncompleteMessage
from .trusted import IPAddress, canonical_address

__all__ = ["MAX_PROXY_LINE", "ProxyHeader", "parse_proxy_v1"]

# "The maximum line lengths the receiver must support including the CRLF are
# ... worst case (optional fields set to 0xff) : "PROXY UNKNOWN
# ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n" => ... = 107 chars"
MAX_PROXY_LINE = 107


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY protocol v1 line."""

    family: str  # "TCP4", "TCP6" or "UNKNOWN"
    source: str | None  # client address, None for UNKNOWN
    source_port: int | None
    destination: str | None
    destination_port: int | None


# "a string identifying the protocol : "PROXY" ... exactly one space ... only
# "TCP4" ... and "TCP6" ... are allowed ... the layer 3 source address ... the
# layer 3 destination address ... the TCP source port represented as a
# decimal integer in the range [0..65535] inclusive. Heading zeroes are not
# permitted in front of numbers in order to avoid any possible confusion with
# octal numbers. ... the TCP destination port ..."  Each field is separated by
# "exactly one space : " " ( \x20 )".  Addresses are checked by ipaddress below
# (39 characters: the longest IPv6 address written out in full).
_ADDRESS = rb"([0-9A-Fa-f:.]{1,39})"
_PORT = rb"(0|[1-9][0-9]{0,4})"
_PROXY_TCP = re.compile(
    rb"PROXY (TCP4|TCP6) " + _ADDRESS + b" " + _ADDRESS + b" " + _PORT + b" " + _PORT
)
# "For "UNKNOWN", the rest of the line before the CRLF may be omitted by the
# sender, and the receiver must ignore anything presented before the CRLF is
# found."
_PROXY_UNKNOWN = re.compile(rb"PROXY UNKNOWN(?: [^\r\n]*)?")


def _proxy_address(family: str, raw: bytes) -> str:
    text = raw.decode("ascii")
    try:
        if family == "TCP4":
            # "IPv4 addresses must be indicated as a series of exactly 4 integers
            # in the range [0..255] inclusive written in decimal representation
            # separated by exactly one dot ... Heading zeroes are not permitted"
            # (ipaddress refuses leading zeros).
            ip: IPAddress = ipaddress.IPv4Address(text)
        else:
            # "IPv6 addresses must be indicated as series of sets of 4 hexadecimal
            # digits (upper or lower case) delimited by colons ... with the
            # acceptance of one double colon sequence"; an IPv4-mapped address in
            # its inet_ntop form (::ffff:192.0.2.1), which senders write, is accepted.
            ip = ipaddress.IPv6Address(text)
    except ValueError:
        raise BadRequest(f"the PROXY line's address is not an {family} address") from None
    # "The advertised protocol family dictates what format to use."
    return canonical_address(ip)


def _proxy_port(raw: bytes) -> int:
    value = int(raw)
    if value > 65535:
        raise BadRequest("a PROXY line port is larger than 65535")
    return value


def parse_proxy_v1(line: bytes) -> ProxyHeader:
    """One PROXY v1 line, CRLF included (as read with readline(MAX_PROXY_LINE + 1)).
    Raises wsgibridge.errors.BadRequest for anything that is not exactly the spec's grammar:
    "PROXY TCP4 1.2.3.4 5.6.7.8 1234 80\\r\\n", "PROXY TCP6 ...", "PROXY UNKNOWN ...\\r\\n";
    addresses must parse (ipaddress module) as the right family, ports 0-65535 without
    leading zeros / signs, single spaces, CRLF ending, at most 107 bytes."""
    if len(line) > MAX_PROXY_LINE:
        # "If the CRLF sequence is not found in the first 107 characters, the
        # receiver should declare the line invalid."
        raise BadRequest(f"the PROXY line is longer than {MAX_PROXY_LINE} bytes")
    if not line.endswith(b"\r\n"):
        if line.endswith(b"\n"):
            # "The receiver must not tolerate a single CR or LF character to end
            # the line when a complete CRLF sequence is expected."
            raise BadRequest("the PROXY line ends in a bare LF, not CRLF")
        raise IncompleteMessage("the connection closed in the middle of the PROXY line")
    content = line[:-2]
    if b"\r" in content or b"\n" in content:
        raise BadRequest("a bare CR or LF in the PROXY line")
    if _PROXY_UNKNOWN.fullmatch(content) is not None:
        # "the receiver ... SHOULD accept the connection and use the real
        # connection's parameters as if there were no PROXY protocol header".
        return ProxyHeader("UNKNOWN", None, None, None, None)
    match = _PROXY_TCP.fullmatch(content)
    if match is None:
        raise BadRequest("not a PROXY protocol v1 line")
    family = match.group(1).decode("ascii")
    return ProxyHeader(
        family,
        _proxy_address(family, match.group(2)),
        _proxy_port(match.group(4)),
        _proxy_address(family, match.group(3)),
        _proxy_port(match.group(5)),
    )
