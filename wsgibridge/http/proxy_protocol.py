"""The PROXY protocol, v1 and v2: the header a TCP proxy sends before the client's bytes, pure.

Rule: the header is read exactly as the spec (HAProxy ``proxy-protocol.txt``,
§2.1 for v1's text line, §2.2 for v2's binary block) writes it, or refused.
"Any sequence which does not exactly match the protocol must be discarded and
cause the receiver to abort the connection", so anything else raises
:class:`~wsgibridge.errors.BadRequest` (or
:class:`~wsgibridge.errors.IncompleteMessage` when the connection closed
before the header's end); nothing is guessed or repaired.  Addresses come
back canonical, as :mod:`.forwarded` and the sockets write them (lower-case,
compressed IPv6, ``::ffff:a.b.c.d`` for a mapped address), so the source can
become REMOTE_ADDR and be matched against
:class:`~wsgibridge.http.trusted.TrustedProxies`.

The first bytes say which version it is (:func:`proxy_header_end`): v2's
12-byte signature, or v1's ``PROXY ``; anything else is refused as soon as it
can be neither.  :func:`proxy_header_end` tells the caller how many of the
bytes at hand are the header, so it reads no byte of what follows (the
request); :func:`parse_proxy_header` then reads the complete header.

The caller reads the header on every connection of a listener configured for
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

__all__ = [
    "MAX_PROXY_HEADER",
    "MAX_PROXY_LINE",
    "MAX_PROXY_V2_HEADER",
    "PROXY_V2_SIGNATURE",
    "ProxyHeader",
    "parse_proxy_header",
    "parse_proxy_v1",
    "parse_proxy_v2",
    "proxy_header_end",
]

# "The maximum line lengths the receiver must support including the CRLF are
# ... worst case (optional fields set to 0xff) : "PROXY UNKNOWN
# ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n" => ... = 107 chars"
MAX_PROXY_LINE = 107

# "The binary header format starts with a constant 12 bytes block containing
# the protocol signature : \x0D \x0A \x0D \x0A \x00 \x0D \x0A \x51 \x55 \x49
# \x54 \x0A"; then the version and command, the family and protocol, and "the
# address length in bytes in network endian order ... the length of the
# protocol header in bytes is always exactly 16 + this value."
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = 16
# The spec lets the length reach 65535, but "The sender must ensure that all
# the protocol header is sent at once. This block is always smaller than an
# MSS": what real senders put after the addresses (ALPN, authority, a unique
# id "of up to 128 bytes", TLS details) takes a few hundred bytes.  A longer
# header is refused; nginx's receiver stops at the same size.
MAX_PROXY_V2_HEADER = 4096
# The most a header may take, either version: what a reader may peek at.
MAX_PROXY_HEADER = max(MAX_PROXY_LINE, MAX_PROXY_V2_HEADER)


@dataclass(frozen=True)
class ProxyHeader:
    """A parsed PROXY protocol header (a v1 line or a v2 block).

    ``source`` is None when the connection's real endpoints stand: v1's
    UNKNOWN, v2's LOCAL and the v2 families read as UNKNOWN.
    """

    family: str  # "TCP4", "TCP6", "UNKNOWN", or (v2) "LOCAL"
    source: str | None  # the client's address
    source_port: int | None
    destination: str | None
    destination_port: int | None
    version: int = 1


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


# -- version 2 ---------------------------------------------------------------------------

# "The highest four bits contains the version. As of this specification, it
# must always be sent as \x2 and the receiver must only accept this value."
_V2_VERSION = 0x2
# "\x0 : LOCAL : ... The receiver must accept this connection as valid and
# must use the real connection endpoints and discard the protocol block
# including the family which is ignored."  "\x1 : PROXY : ... The receiver
# must then use the information provided in the protocol block to get
# original the address."  "other values are unassigned ... Receivers must
# drop connections presenting unexpected values here."
_LOCAL, _PROXY = 0x0, 0x1
# "\x11 : TCP over IPv4 ... Address length is 2*4 + 2*2 = 12 bytes."
# "\x21 : TCP over IPv6 ... Address length is 2*16 + 2*2 = 36 bytes."
_TCP4, _TCP6 = 0x11, 0x21
# The other combinations the spec lists, with their address lengths: UDP over
# IPv4 and IPv6, UNIX stream and datagram ("2*108 = 216 bytes").  "A receiver
# is not required to implement other ones, provided that it automatically
# falls back to the UNSPEC mode for the valid combinations above that it does
# not support", and for UNSPEC with PROXY "the receiver is free to accept the
# connection anyway and use the real endpoints addresses": these are read as
# v1's UNKNOWN (an HTTP server is reached over TCP), their length checked.
_ADDRESS_LENGTHS = {_TCP4: 12, 0x12: 12, _TCP6: 36, 0x22: 36, 0x31: 216, 0x32: 216}
# Families: "0x0 : AF_UNSPEC ... 0x1 : AF_INET ... 0x2 : AF_INET6 ... 0x3 :
# AF_UNIX ... other values are unspecified and must not be emitted in version
# 2 of this protocol and must be rejected as invalid by receivers"; protocols:
# "0x0 : UNSPEC ... 0x1 : STREAM ... 0x2 : DGRAM ... other values ... must be
# rejected as invalid by receivers".  A byte with an UNSPEC half (0x00 above
# all, "The sender should use this family when sending LOCAL commands") has
# no address layout: with PROXY it is UNKNOWN too, its block skipped whole.
_MAX_FAMILY, _MAX_PROTOCOL = 0x3, 0x2


def _check_v2_start(data: bytes) -> None:
    """Refuse a bad version/command byte (the 13th) and family byte (the 14th) if present."""
    if len(data) > 12:
        version, command = data[12] >> 4, data[12] & 0x0F
        if version != _V2_VERSION:
            raise BadRequest(f"PROXY protocol v2 header with version {version}, not 2")
        if command not in (_LOCAL, _PROXY):
            raise BadRequest(f"PROXY protocol v2 header with unknown command {command:#x}")
    if len(data) > 13 and (data[13] >> 4 > _MAX_FAMILY or data[13] & 0x0F > _MAX_PROTOCOL):
        raise BadRequest(f"PROXY protocol v2 header with invalid family {data[13]:#04x}")


def _v2_size(data: bytes) -> int:
    """The whole header's size from its first 16 bytes, refused beyond the limit."""
    size = _V2_FIXED + int.from_bytes(data[14:16], "big")
    if size > MAX_PROXY_V2_HEADER:
        raise BadRequest(
            f"PROXY protocol v2 header of {size} bytes, over the {MAX_PROXY_V2_HEADER} accepted"
        )
    return size


def proxy_header_end(data: bytes) -> tuple[int, bool]:
    """How much of ``data``, the first bytes of a connection, is its PROXY header.

    Returns ``(taken, complete)``: the first ``taken`` bytes belong to the
    header (all of ``data`` while its end is not in sight), and ``complete``
    says the header ends there; nothing after it is counted, so the request
    that follows stays for the HTTP parser.  Raises BadRequest as soon as
    ``data`` cannot start either version's header, or is over its limit:
    "otherwise the protocol is not covered by this specification and the
    connection must be dropped."
    """
    n = len(data)
    if data[:12] == PROXY_V2_SIGNATURE[:n]:
        # "if the incoming byte count is 16 or above and the 13 first bytes
        # match the protocol signature block followed by the protocol version 2"
        _check_v2_start(data)
        if n < _V2_FIXED:
            return n, False
        size = _v2_size(data)
        return min(n, size), n >= size
    if data[:6] != b"PROXY "[:n]:
        # "otherwise, if the incoming byte count is 8 or above, and the 5 first
        # characters match the US-ASCII representation of "PROXY" then the
        # protocol must be parsed as version 1" (with its space, §2.1).
        raise BadRequest("neither a PROXY protocol v1 line nor a v2 header")
    end = data.find(b"\n", 0, MAX_PROXY_LINE)
    if end >= 0:
        return end + 1, True
    if n >= MAX_PROXY_LINE:
        # "If the CRLF sequence is not found in the first 107 characters, the
        # receiver should declare the line invalid."
        raise BadRequest(f"the PROXY line is longer than {MAX_PROXY_LINE} bytes")
    return n, False


def _skip_tlvs(data: bytes, start: int, end: int) -> None:
    """Walk the TLVs in ``data[start:end]``, refusing one that does not fit.

    "the number of bytes specified by the length" follows each type and
    16-bit length; "A receiver may choose to skip over and ignore the TLVs it
    is not interested in or it does not understand" - all of them here,
    PP2_TYPE_CRC32C included (its check binds "the receiver ... if the
    checksum functionality is supported by the receiver", and it is not).
    """
    position = start
    while position < end:
        if end - position < 3:
            raise BadRequest("a PROXY protocol v2 TLV cut short in its type or length")
        length = int.from_bytes(data[position + 1 : position + 3], "big")
        position += 3 + length
        if position > end:
            raise BadRequest("a PROXY protocol v2 TLV runs past the header's end")


def parse_proxy_v2(data: bytes) -> tuple[ProxyHeader, int]:
    """The PROXY v2 header at the start of ``data``, and its size (what follows is not read).

    Raises IncompleteMessage when ``data`` ends inside the header ("The
    receiver must also reject incoming connections containing partial
    protocol headers"), BadRequest for anything else the spec does not allow.
    """
    if not data.startswith(PROXY_V2_SIGNATURE):
        if PROXY_V2_SIGNATURE.startswith(data):
            raise IncompleteMessage("the connection closed in the PROXY v2 signature")
        raise BadRequest("not a PROXY protocol v2 header")
    _check_v2_start(data)
    if len(data) < _V2_FIXED:
        raise IncompleteMessage("the connection closed in the PROXY v2 header")
    size = _v2_size(data)
    if len(data) < size:
        # "The receiver must not start to parse an address before the whole
        # address block is received."
        raise IncompleteMessage("the connection closed in the PROXY v2 header")
    unknown = ProxyHeader("UNKNOWN", None, None, None, None, 2)
    if data[12] & 0x0F == _LOCAL:
        # "Receivers MUST always consider this field to skip the appropriate
        # number of bytes and must not assume zero is presented for LOCAL
        # connections."
        return ProxyHeader("LOCAL", None, None, None, None, 2), size
    family = data[13]
    address_length = _ADDRESS_LENGTHS.get(family)
    if address_length is None:
        return unknown, size  # an UNSPEC half: the block is ignored, whatever it holds
    if size - _V2_FIXED < address_length:
        raise BadRequest(
            f"PROXY protocol v2 length {size - _V2_FIXED} is too small for"
            f" family {family:#04x}'s {address_length} address bytes"
        )
    _skip_tlvs(data, _V2_FIXED + address_length, size)
    if family not in (_TCP4, _TCP6):
        return unknown, size
    # "Starting from the 17th byte, addresses are presented in network byte
    # order ... source layer 3 address ... destination layer 3 address ...
    # source layer 4 address if any ... destination layer 4 address".
    width = 4 if family == _TCP4 else 16
    source_at, destination_at, ports_at = _V2_FIXED, _V2_FIXED + width, _V2_FIXED + 2 * width
    source: IPAddress
    destination: IPAddress
    if family == _TCP4:
        source = ipaddress.IPv4Address(data[source_at:destination_at])
        destination = ipaddress.IPv4Address(data[destination_at:ports_at])
    else:
        source = ipaddress.IPv6Address(data[source_at:destination_at])
        destination = ipaddress.IPv6Address(data[destination_at:ports_at])
    header = ProxyHeader(
        "TCP4" if family == _TCP4 else "TCP6",
        canonical_address(source),
        int.from_bytes(data[ports_at : ports_at + 2], "big"),
        canonical_address(destination),
        int.from_bytes(data[ports_at + 2 : ports_at + 4], "big"),
        2,
    )
    return header, size


def parse_proxy_header(header: bytes) -> ProxyHeader:
    """A complete PROXY header of either version, exactly as long as
    :func:`proxy_header_end` found it; the version is its first bytes'."""
    if header.startswith(PROXY_V2_SIGNATURE[:1]):
        parsed, size = parse_proxy_v2(header)
        if size != len(header):
            raise BadRequest("bytes after the PROXY protocol v2 header")
        return parsed
    return parse_proxy_v1(header)
