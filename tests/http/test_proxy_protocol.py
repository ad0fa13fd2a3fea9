"""The PROXY protocol v2 and telling the versions apart (``http.proxy_protocol``), pure.

v1's line grammar is tested with the other forwarding rules in
``tests/http/test_forwarded.py``; here, against HAProxy's ``proxy-protocol.txt``
§2.2, each test named after the rule it checks:

1. valid v2 headers: TCP over IPv4 and IPv6, LOCAL, the families read as
   UNKNOWN, TLVs skipped;
2. refused: cut short at every byte, wrong version, command or family, a
   length too small for the addresses or over the limit, TLVs that overrun;
3. :func:`proxy_header_end`: which version, how many bytes are the header,
   nothing after it counted;
4. hypothesis: any header built to the spec parses back, and any bytes after
   the signature either parse or raise BadRequest, never read past the header.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgibridge.errors import BadRequest, IncompleteMessage
from wsgibridge.http.proxy_protocol import (
    MAX_PROXY_LINE,
    MAX_PROXY_V2_HEADER,
    PROXY_V2_SIGNATURE,
    ProxyHeader,
    parse_proxy_header,
    parse_proxy_v2,
    proxy_header_end,
)

SIG = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # the spec's bytes, spelled out
LOCAL, PROXY = 0x0, 0x1
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
UNKNOWN = ProxyHeader("UNKNOWN", None, None, None, None, 2)
LOCAL_HEADER = ProxyHeader("LOCAL", None, None, None, None, 2)


def v2(
    command: int = PROXY,
    family: int = 0x11,
    block: bytes = b"",
    *,
    version: int = 0x2,
    length: int | None = None,
) -> bytes:
    """A v2 header: signature, version/command, family, 16-bit length, then ``block``."""
    size = len(block) if length is None else length
    return SIG + bytes([version << 4 | command, family]) + struct.pack(">H", size) + block


def tcp4(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        ipaddress.IPv4Address(source).packed
        + ipaddress.IPv4Address(destination).packed
        + struct.pack(">HH", source_port, destination_port)
    )


def tcp6(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + struct.pack(">HH", source_port, destination_port)
    )


def tlv(kind: int, value: bytes) -> bytes:
    """ "The first byte is the Type ... The second two bytes represent the length"."""
    return bytes([kind]) + struct.pack(">H", len(value)) + value


ADDRESSES4 = tcp4("203.0.113.7", "192.0.2.1", 51234, 443)
HEADER4 = v2(PROXY, 0x11, ADDRESSES4)
CLIENT4 = ProxyHeader("TCP4", "203.0.113.7", 51234, "192.0.2.1", 443, 2)
# The registered types, with values like HAProxy and the load balancers send.
TLVS = (
    tlv(0x01, b"h2")  # PP2_TYPE_ALPN
    + tlv(0x02, b"example.com")  # PP2_TYPE_AUTHORITY
    + tlv(0x03, b"\x12\x34\x56\x78")  # PP2_TYPE_CRC32C (not checked)
    + tlv(0x04, b"")  # PP2_TYPE_NOOP, empty
    + tlv(0x04, b"\x00" * 5)  # PP2_TYPE_NOOP, padding
    + tlv(0x05, b"u" * 128)  # PP2_TYPE_UNIQUE_ID, "up to 128 bytes"
    + tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))  # PP2_TYPE_SSL + sub-TLV
    + tlv(0xEA, b"\x01vpce-0123456789abcdef")  # an application-specific type (0xE0-0xEF)
)


def test_the_signature_is_the_specs() -> None:
    assert PROXY_V2_SIGNATURE == SIG and len(SIG) == 12


# -- 1. valid headers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (HEADER4, CLIENT4),
        (
            v2(PROXY, 0x11, tcp4("255.255.255.255", "0.0.0.0", 65535, 0)),
            ProxyHeader("TCP4", "255.255.255.255", 65535, "0.0.0.0", 0, 2),
        ),
        (
            v2(PROXY, 0x21, tcp6("2001:db8::7", "2001:db8::1", 51234, 443)),
            ProxyHeader("TCP6", "2001:db8::7", 51234, "2001:db8::1", 443, 2),
        ),
        (
            # An IPv4-mapped IPv6 address in the form the sockets give it.
            v2(PROXY, 0x21, tcp6("::ffff:192.0.2.9", "::1", 1, 2)),
            ProxyHeader("TCP6", "::ffff:192.0.2.9", 1, "::1", 2, 2),
        ),
        (
            v2(PROXY, 0x21, tcp6("ffff:" * 7 + "ffff", "::", 65535, 65535)),
            ProxyHeader("TCP6", "ffff:" * 7 + "ffff", 65535, "::", 65535, 2),
        ),
    ],
)
def test_proxy_command_names_the_client(header: bytes, expected: ProxyHeader) -> None:
    """§2.2: "\\x1 : PROXY : ... The receiver must then use the information provided in the
    protocol block"; "\\x11 : TCP over IPv4 ... 12 bytes", "\\x21 : TCP over IPv6 ... 36
    bytes", addresses "in network byte order"; canonical forms as v1's."""
    assert parse_proxy_v2(header) == (expected, len(header))
    assert parse_proxy_header(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        v2(LOCAL, 0x00),  # what a health check sends
        v2(LOCAL, 0x11, ADDRESSES4),  # addresses present: discarded
        v2(LOCAL, 0x21, b"\xff" * 7),  # "the family which is ignored": any block
        v2(LOCAL, 0x00, TLVS),
        v2(LOCAL, 0x32, b""),
    ],
)
def test_local_command_keeps_the_real_endpoints(header: bytes) -> None:
    """§2.2: "\\x0 : LOCAL : ... The receiver must accept this connection as valid and must use
    the real connection endpoints and discard the protocol block including the family which
    is ignored"; "Receivers MUST always consider this field to skip the appropriate number
    of bytes and must not assume zero is presented for LOCAL connections"."""
    assert parse_proxy_v2(header + REQUEST) == (LOCAL_HEADER, len(header))


@pytest.mark.parametrize(
    "header",
    [
        v2(PROXY, 0x00),  # UNSPEC
        v2(PROXY, 0x00, b"anything at all"),  # "The receiver should ignore address information"
        v2(PROXY, 0x10, b"\x01\x02"),  # AF_INET, UNSPEC protocol
        v2(PROXY, 0x01, b""),  # AF_UNSPEC, STREAM
        v2(PROXY, 0x12, tcp4("203.0.113.7", "192.0.2.1", 53, 53)),  # UDP over IPv4
        v2(PROXY, 0x22, tcp6("2001:db8::7", "2001:db8::1", 53, 53)),  # UDP over IPv6
        v2(PROXY, 0x31, b"/run/a.sock".ljust(108, b"\0") * 2),  # UNIX stream
        v2(PROXY, 0x32, b"\0" * 216 + tlv(0x04, b"")),  # UNIX datagram, a TLV
    ],
)
def test_other_families_fall_back_to_the_real_endpoints(header: bytes) -> None:
    """§2.2: "A receiver is not required to implement other ones, provided that it
    automatically falls back to the UNSPEC mode for the valid combinations above that it
    does not support"; with UNSPEC "the receiver is free to accept the connection anyway and
    use the real endpoints addresses": read as v1's UNKNOWN (only TCP reaches us)."""
    assert parse_proxy_v2(header) == (UNKNOWN, len(header))


@pytest.mark.parametrize("extra", [TLVS, tlv(0x04, b""), tlv(0x03, b"\0\0\0\0"), tlv(0xF0, b"x")])
@pytest.mark.parametrize(
    ("addresses", "family", "expected"),
    [
        (ADDRESSES4, 0x11, CLIENT4),
        (
            tcp6("2001:db8::7", "2001:db8::1", 51234, 443),
            0x21,
            ProxyHeader("TCP6", "2001:db8::7", 51234, "2001:db8::1", 443, 2),
        ),
    ],
)
def test_tlvs_are_skipped_within_the_length(
    addresses: bytes, family: int, extra: bytes, expected: ProxyHeader
) -> None:
    """§2.2: "A receiver may choose to skip over and ignore the TLVs it is not interested in
    or it does not understand": the client is the same, the size covers the TLVs, and the
    request after them is not part of the header."""
    header = v2(PROXY, family, addresses + extra)
    assert parse_proxy_v2(header + REQUEST) == (expected, len(header))
    assert proxy_header_end(header + REQUEST) == (len(header), True)


# -- 2. refused -------------------------------------------------------------------------------

TLV_HEADER = v2(PROXY, 0x11, ADDRESSES4 + TLVS)


@pytest.mark.parametrize("header", [HEADER4, TLV_HEADER, v2(LOCAL, 0x00)])
def test_a_header_cut_short_anywhere_is_incomplete(header: bytes) -> None:
    """§2.2: "The receiver must also reject incoming connections containing partial protocol
    headers": every proper prefix is IncompleteMessage, and not yet the header's end."""
    for n in range(1, len(header)):
        with pytest.raises(IncompleteMessage):
            parse_proxy_v2(header[:n])
        assert proxy_header_end(header[:n]) == (n, False), n
    assert proxy_header_end(header) == (len(header), True)


@pytest.mark.parametrize("version", [0x0, 0x1, 0x3, 0xF])
def test_a_version_other_than_2_is_refused(version: int) -> None:
    """§2.2: the version "must always be sent as \\x2 and the receiver must only accept this
    value"; refused from the 13th byte on."""
    header = v2(PROXY, 0x11, ADDRESSES4, version=version)
    with pytest.raises(BadRequest, match="version") as raised:
        parse_proxy_v2(header)
    assert not isinstance(raised.value, IncompleteMessage)
    with pytest.raises(BadRequest, match="version"):
        proxy_header_end(header[:13])


@pytest.mark.parametrize("command", [0x2, 0x3, 0x8, 0xF])
def test_an_unassigned_command_is_refused(command: int) -> None:
    """§2.2: "other values are unassigned and must not be emitted by senders. Receivers must
    drop connections presenting unexpected values here"."""
    header = v2(command, 0x11, ADDRESSES4)
    with pytest.raises(BadRequest, match="command"):
        parse_proxy_v2(header)
    with pytest.raises(BadRequest, match="command"):
        proxy_header_end(header[:13])


@pytest.mark.parametrize("command", [LOCAL, PROXY])
@pytest.mark.parametrize("family", [0x41, 0x13, 0xF1, 0x03, 0x4F, 0xFF])
def test_an_unspecified_family_or_protocol_is_refused(command: int, family: int) -> None:
    """§2.2: families other than 0x0-0x3 and protocols other than 0x0-0x2 "must not be emitted
    in version 2 of this protocol and must be rejected as invalid by receivers"."""
    header = v2(command, family, ADDRESSES4)
    with pytest.raises(BadRequest, match="family"):
        parse_proxy_v2(header)
    with pytest.raises(BadRequest, match="family"):
        proxy_header_end(header[:14])


@pytest.mark.parametrize(
    ("family", "length"),
    [(0x11, 0), (0x11, 11), (0x21, 12), (0x21, 35), (0x12, 11), (0x22, 0), (0x31, 215), (0x32, 0)],
)
def test_a_length_too_small_for_the_addresses_is_refused(family: int, length: int) -> None:
    """§2.2: "Address length is 2*4 + 2*2 = 12 bytes" (IPv4), "2*16 + 2*2 = 36" (IPv6),
    "2*108 = 216" (UNIX): a PROXY header declaring less is malformed."""
    header = v2(PROXY, family, b"\x01" * length)
    with pytest.raises(BadRequest, match="too small"):
        parse_proxy_v2(header)


def test_the_length_limit_both_sides() -> None:
    """A header of MAX_PROXY_V2_HEADER bytes (padded with one PP2_TYPE_NOOP) is read; one
    byte more is refused as soon as its length field is in."""
    padding = MAX_PROXY_V2_HEADER - 16 - len(ADDRESSES4) - 3
    largest = v2(PROXY, 0x11, ADDRESSES4 + tlv(0x04, b"\0" * padding))
    assert len(largest) == MAX_PROXY_V2_HEADER == 4096
    assert parse_proxy_v2(largest + REQUEST) == (CLIENT4, MAX_PROXY_V2_HEADER)
    assert proxy_header_end(largest + REQUEST) == (MAX_PROXY_V2_HEADER, True)
    for over in (
        v2(PROXY, 0x11, ADDRESSES4 + tlv(0x04, b"\0" * (padding + 1))),
        v2(PROXY, 0x11, ADDRESSES4, length=65535),
    ):
        with pytest.raises(BadRequest, match="over the 4096"):
            proxy_header_end(over[:16])
        with pytest.raises(BadRequest, match="over the 4096"):
            parse_proxy_v2(over)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(tlv(0x01, b"h2")[:-1], id="value-cut"),
        pytest.param(b"\x01\x00\x05abcd", id="length-past-end"),
        pytest.param(b"\x04\xff\xff", id="length-65535"),
        pytest.param(TLVS + b"\x04", id="one-byte-tail"),
        pytest.param(TLVS + b"\x04\x00", id="two-byte-tail"),
    ],
)
@pytest.mark.parametrize("family", [0x11, 0x21, 0x12, 0x31])
def test_a_tlv_running_past_the_header_is_refused(family: int, extra: bytes) -> None:
    """§2.2: each TLV is a type, a 16-bit length, then "the number of bytes specified by the
    length", all within the header's length: one that does not fit is malformed."""
    addresses = b"\x7f" * {0x11: 12, 0x21: 36, 0x12: 12, 0x31: 216}[family]
    with pytest.raises(BadRequest, match="TLV") as raised:
        parse_proxy_v2(v2(PROXY, family, addresses + extra) + REQUEST)
    assert not isinstance(raised.value, IncompleteMessage)


def test_bytes_after_a_v2_header_are_not_part_of_it() -> None:
    """parse_proxy_header takes exactly the header proxy_header_end found."""
    with pytest.raises(BadRequest, match="after"):
        parse_proxy_header(HEADER4 + b"G")


@pytest.mark.parametrize("data", [b"\r\n\r\n\x01", b"\r\nGET / HTTP/1.1\r\n", SIG[:-1] + b"\r"])
def test_a_broken_signature_is_refused(data: bytes) -> None:
    with pytest.raises(BadRequest, match="neither"):
        proxy_header_end(data)
    with pytest.raises(BadRequest, match="not a PROXY protocol v2") as raised:
        parse_proxy_v2(data + b"\0" * 20)
    assert not isinstance(raised.value, IncompleteMessage)


# -- 3. telling the versions apart --------------------------------------------------------------

LINE = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"


def test_a_v1_line_is_taken_to_its_lf_and_no_further() -> None:
    """§2.2: "if ... the 5 first characters match the US-ASCII representation of "PROXY" then
    the protocol must be parsed as version 1"; the request after the line is not taken."""
    assert proxy_header_end(LINE + REQUEST) == (len(LINE), True)
    for n in range(1, len(LINE)):
        assert proxy_header_end(LINE[:n]) == (n, False)
    assert parse_proxy_header(LINE) == ProxyHeader("TCP4", "203.0.113.7", 51234, "192.0.2.1", 443)


def test_a_v1_line_without_its_lf_in_107_bytes_is_refused() -> None:
    """§2.1: "If the CRLF sequence is not found in the first 107 characters, the receiver
    should declare the line invalid"."""
    long_line = b"PROXY UNKNOWN " + b"x" * 200
    assert proxy_header_end(long_line[: MAX_PROXY_LINE - 1]) == (MAX_PROXY_LINE - 1, False)
    with pytest.raises(BadRequest, match="longer than 107"):
        proxy_header_end(long_line[:MAX_PROXY_LINE])
    with pytest.raises(BadRequest, match="longer than 107"):
        proxy_header_end(long_line + b"\r\n")


@pytest.mark.parametrize(
    "data", [b"G", b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"PROXY\r\n", b"PROXYX", b"proxy ", b" "]
)
def test_anything_else_is_refused_from_its_first_bytes(data: bytes) -> None:
    """§2.2: "otherwise the protocol is not covered by this specification and the connection
    must be dropped" - as soon as the bytes can start neither version (§2.1 wants
    "PROXY" and exactly one space)."""
    with pytest.raises(BadRequest, match="neither"):
        proxy_header_end(data)


# -- 4. properties ------------------------------------------------------------------------------

IPV4 = st.ip_addresses(v=4)
IPV6 = st.ip_addresses(v=6)
PORTS = st.integers(0, 65535)
TLV_LISTS = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    version6=st.booleans(),
    source4=IPV4,
    destination4=IPV4,
    source6=IPV6,
    destination6=IPV6,
    ports=st.tuples(PORTS, PORTS),
    tlvs=TLV_LISTS,
    rest=st.binary(max_size=64),
)
def test_any_header_built_to_the_spec_parses_back(
    version6: bool,
    source4: ipaddress.IPv4Address,
    destination4: ipaddress.IPv4Address,
    source6: ipaddress.IPv6Address,
    destination6: ipaddress.IPv6Address,
    ports: tuple[int, int],
    tlvs: list[tuple[int, bytes]],
    rest: bytes,
) -> None:
    """A PROXY header of either IP family with any TLVs: the addresses come back (in the
    socket's form), its size is exact, and ``rest`` (the request) is never taken."""
    source: ipaddress.IPv4Address | ipaddress.IPv6Address = source6 if version6 else source4
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address = (
        destination6 if version6 else destination4
    )
    block = source.packed + destination.packed + struct.pack(">HH", *ports)
    header = v2(PROXY, 0x21 if version6 else 0x11, block + b"".join(tlv(*t) for t in tlvs))
    parsed, size = parse_proxy_v2(header + rest)
    assert size == len(header)
    assert proxy_header_end(header + rest) == (len(header), True)
    assert (parsed.family, parsed.version) == ("TCP6" if version6 else "TCP4", 2)
    assert parsed.source is not None and parsed.destination is not None
    assert ipaddress.ip_address(parsed.source) == source
    assert ipaddress.ip_address(parsed.destination) == destination
    assert (parsed.source_port, parsed.destination_port) == ports


@settings(max_examples=1000, deadline=None)
@given(after=st.binary(max_size=80))
def test_any_bytes_after_the_signature_parse_or_are_refused(after: bytes) -> None:
    """Nothing but a header or BadRequest comes out, a header never reaches past the bytes
    given or the limit, and proxy_header_end agrees on its size (or on waiting for more)."""
    data = SIG + after
    try:
        parsed, size = parse_proxy_v2(data)
    except IncompleteMessage:
        assert proxy_header_end(data) == (len(data), False)  # still waiting for more
        return
    except BadRequest:
        return
    assert 16 <= size <= min(len(data), MAX_PROXY_V2_HEADER)
    assert proxy_header_end(data) == (size, True)
    assert parsed.version == 2
