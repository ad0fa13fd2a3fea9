"""Forwarding headers and the PROXY protocol v1 (``http.forwarded``, ``http.proxy_protocol``), pure.

Groups, each test named after the rule it checks:

1. :class:`TrustedProxies`: addresses, CIDRs, IPv4-mapped peers, ``unix``,
   ``*``, ``""``, and the specs refused with ``ValueError``;
2. untrusted peers: every forwarding key is removed, nothing else changes;
3. X-Forwarded-For: the client hop found from the right past trusted proxies,
   spoofing attempts, garbage;
4. X-Forwarded-Proto/-Host/-Port: which element, validation, the port rules;
5. ``Forwarded`` (RFC 7239): the grammar, quoted IPv6 with ports, ``unknown``
   and obfuscated nodes, chains, garbage left of our proxies' elements;
6. both families at once;
7. hypothesis: nothing raises, an untrusted peer changes nothing, a valid
   Forwarded value parses back, garbage on the left never hides the client;
8. PROXY protocol v1: valid lines and malformed ones.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsgibridge._types import Environ
from wsgibridge.errors import BadRequest, IncompleteMessage
from wsgibridge.http.forwarded import (
    FORWARDING_KEYS,
    PROXY_PEER_KEY,
    apply_forwarded,
    parse_forwarded,
)
from wsgibridge.http.grammar import HOST
from wsgibridge.http.proxy_protocol import MAX_PROXY_LINE, ProxyHeader, parse_proxy_v1
from wsgibridge.http.trusted import TrustedProxies

# The server's default plus an internal network of proxies.
SPEC = "127.0.0.1,::1,10.0.0.0/8"
PEER = "127.0.0.1"

XFF = "HTTP_X_FORWARDED_FOR"
PROTO = "HTTP_X_FORWARDED_PROTO"
XHOST = "HTTP_X_FORWARDED_HOST"
XPORT = "HTTP_X_FORWARDED_PORT"
FWD = "HTTP_FORWARDED"

# What the server fills in before forwarding headers are applied.
BASE: Environ = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/",
    "REMOTE_ADDR": PEER,
    "REMOTE_PORT": "5555",
    "SERVER_NAME": "0.0.0.0",
    "SERVER_PORT": "8000",
    "HTTP_HOST": "app.internal:8000",
    "HTTP_USER_AGENT": "test",
    "wsgi.url_scheme": "http",
}
VIEW = ("REMOTE_ADDR", "REMOTE_PORT", "wsgi.url_scheme", "HTTP_HOST", "SERVER_NAME", "SERVER_PORT")


def make_environ(peer: str = PEER, **fields: str) -> Environ:
    environ = dict(BASE)
    environ["REMOTE_ADDR"] = peer
    environ.update(fields)
    return environ


def forwarded(headers: dict[str, str], peer: str = PEER, spec: str = SPEC) -> Environ:
    """The environ after ``apply_forwarded`` for a request with these fields."""
    environ = make_environ(peer, **headers)
    apply_forwarded(environ, TrustedProxies(spec))
    return environ


def view(environ: Environ) -> dict[str, Any]:
    return {key: environ.get(key) for key in VIEW}


UNCHANGED = view(BASE)


# --------------------------------------------------------------------------
# 1. TrustedProxies
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "address", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("127.0.0.1", "::ffff:127.0.0.1", True),
        ("127.0.0.1", "127.000.0.1", False),
        ("10.0.0.0/8", "10.0.0.0", True),
        ("10.0.0.0/8", "10.255.255.255", True),
        ("10.0.0.0/8", "11.0.0.0", False),
        ("10.0.0.0/8", "9.255.255.255", False),
        ("10.0.0.0/8", "::ffff:10.1.2.3", True),
        ("10.0.0.0/8", "::ffff:11.1.2.3", False),
        ("::1", "::1", True),
        ("::1", "0:0:0:0:0:0:0:1", True),
        ("::1", "127.0.0.1", False),
        ("2001:db8::/32", "2001:db8:ffff::1", True),
        ("2001:db8::/32", "2001:db9::1", False),
        ("2001:DB8::/32", "2001:db8::1", True),
        ("::ffff:10.0.0.1", "10.0.0.1", True),
        ("::ffff:10.0.0.0/104", "10.9.9.9", True),
        ("::ffff:10.0.0.0/104", "11.9.9.9", False),
        ("fe80::/10", "fe80::1%eth0", True),
        (" 127.0.0.1 , ::1 ", "::1", True),
        ("127.0.0.1,\t10.0.0.0/8", "10.1.1.1", True),
        ("*", "203.0.113.9", True),
        ("*", "2001:db8::1", True),
        ("*", "", True),
        ("", "127.0.0.1", False),
        ("", "", False),
        ("unix", "", True),
        ("unix", "/run/wsgibridge.sock", True),
        ("UNIX", "", True),
        ("unix", "127.0.0.1", False),
        ("unix", "garbage", False),
        ("127.0.0.1", "", False),
        ("127.0.0.1", "/run/wsgibridge.sock", False),
        ("127.0.0.1", "garbage", False),
        ("127.0.0.1,unix", "", True),
        ("127.0.0.1,unix", "127.0.0.1", True),
    ],
)
def test_trusted_proxies_match_addresses_networks_mapped_unix_and_star(
    spec: str, address: str, expected: bool
) -> None:
    """Addresses, CIDRs (IPv4-mapped peers match IPv4 entries), ``unix``, ``*``, ``""``."""
    trusted = TrustedProxies(spec)
    assert (address in trusted) is expected
    assert (address in trusted) is expected  # the second answer comes from the cache


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("", False), ("  ", False), ("*", True), ("unix", True), ("::1", True), ("10.0.0.0/8", True)],
)
def test_trusted_proxies_are_false_when_nothing_is_trusted(spec: str, expected: bool) -> None:
    """``bool()`` says whether anything at all is trusted."""
    assert bool(TrustedProxies(spec)) is expected


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("127.0.0.256", "'127.0.0.256'"),
        ("10.0.0.1/8", "'10.0.0.1/8'"),
        ("10.0.0.0/33", "'10.0.0.0/33'"),
        ("::/129", "'::/129'"),
        ("localhost", "'localhost'"),
        ("[::1]", "'[::1]'"),
        ("fe80::1%eth0", "'fe80::1%eth0'"),
        ("127.0.0.1;::1", "'127.0.0.1;::1'"),
        ("127.0.0.1 10.0.0.1", "'127.0.0.1 10.0.0.1'"),
        ("10.0.0.0/8/8", "'10.0.0.0/8/8'"),
        ("1.2.3.4/255.0.0.0", "'1.2.3.4/255.0.0.0'"),
        ("0x7f.0.0.1", "'0x7f.0.0.1'"),
        ("01.2.3.4", "'01.2.3.4'"),
        ("127.0.0.1,bogus", "'bogus'"),
        ("-", "'-'"),
        ("**", "'**'"),
        ("127.0.0.1,,::1", "empty"),
        ("127.0.0.1,", "empty"),
    ],
)
def test_bad_trusted_proxy_specs_raise_value_error_naming_the_item(spec: str, named: str) -> None:
    """An item that is not an address, a CIDR (host bits clear), ``unix`` or ``*`` is refused."""
    with pytest.raises(ValueError, match=re.escape(named)):
        TrustedProxies(spec)


def test_trusted_proxies_cache_stays_bounded() -> None:
    """Membership answers are cached, but never for more than a bounded number of addresses."""
    trusted = TrustedProxies("10.0.0.0/8")
    for n in range(3000):
        assert (f"11.0.{n // 256}.{n % 256}" in trusted) is False
    assert len(trusted._cache) <= 1024


# --------------------------------------------------------------------------
# 2. Untrusted peers
# --------------------------------------------------------------------------

SPOOFED: dict[str, str] = {
    XFF: "127.0.0.1",
    PROTO: "https",
    XHOST: "admin.example",
    XPORT: "443",
    FWD: 'for=127.0.0.1;proto=https;host="admin.example"',
    "HTTP_X_FORWARDED_BY": "127.0.0.1",
    "HTTP_X_FORWARDED_PREFIX": "/admin",
    "HTTP_X_FORWARDED_SERVER": "admin.example",
    "HTTP_X_FORWARDED_SCHEME": "https",
    "HTTP_X_FORWARDED_SSL": "on",
    "HTTP_X_REAL_IP": "127.0.0.1",
}


def test_spoofed_table_covers_every_forwarding_key() -> None:
    """The spoofing table below sends every key of FORWARDING_KEYS."""
    assert set(SPOOFED) == FORWARDING_KEYS


@pytest.mark.parametrize(
    ("spec", "peer"),
    [
        ("", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.2"),
        ("127.0.0.1", "::1"),
        ("127.0.0.1", "::ffff:127.0.0.2"),
        ("10.0.0.0/8", "11.0.0.1"),
        ("10.0.0.0/8", "::ffff:11.0.0.1"),
        ("::1", "::2"),
        ("unix", "127.0.0.1"),
        ("127.0.0.1", ""),
        (SPEC, "203.0.113.7"),
    ],
)
def test_untrusted_peer_loses_every_forwarding_key_and_nothing_else(spec: str, peer: str) -> None:
    """From an untrusted peer every forwarding key is deleted; the environ is otherwise intact."""
    environ = make_environ(peer, **SPOOFED)
    apply_forwarded(environ, TrustedProxies(spec))
    assert not FORWARDING_KEYS & environ.keys()
    assert PROXY_PEER_KEY not in environ
    assert environ == make_environ(peer)


def test_untrusted_peer_without_forwarding_keys_is_left_alone() -> None:
    """Nothing to delete is not an error."""
    environ = make_environ("203.0.113.7")
    apply_forwarded(environ, TrustedProxies(SPEC))
    assert environ == make_environ("203.0.113.7")


def test_trusted_peer_keeps_every_forwarding_key() -> None:
    """From a trusted peer the forwarding keys stay, unchanged, for the application."""
    headers = {XFF: "192.0.2.1", PROTO: "https", "HTTP_X_REAL_IP": "192.0.2.1"}
    environ = forwarded(headers)
    for key, value in headers.items():
        assert environ[key] == value
    assert environ[PROXY_PEER_KEY] == PEER


def test_trusted_peer_without_forwarding_headers_changes_only_proxy_peer() -> None:
    """A trusted peer that forwards nothing: REMOTE_ADDR and the rest stay; the peer is recorded."""
    environ = forwarded({})
    assert view(environ) == UNCHANGED
    assert environ[PROXY_PEER_KEY] == PEER


# --------------------------------------------------------------------------
# 3. X-Forwarded-For
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "peer", "xff", "remote_addr", "remote_port"),
    [
        (SPEC, PEER, "192.0.2.1", "192.0.2.1", ""),
        (SPEC, PEER, "192.0.2.1, 10.0.0.2", "192.0.2.1", ""),
        (SPEC, PEER, "198.51.100.9, 192.0.2.1, 10.0.0.2, 10.0.0.3", "192.0.2.1", ""),
        (SPEC, PEER, "10.0.0.5, 10.0.0.2", "10.0.0.5", ""),  # all trusted: the leftmost
        (SPEC, PEER, "127.0.0.1", "127.0.0.1", ""),
        (SPEC, PEER, "192.0.2.1:4711", "192.0.2.1", "4711"),
        (SPEC, PEER, "[2001:db8::1]:4711", "2001:db8::1", "4711"),
        (SPEC, PEER, "[2001:db8::1]", "2001:db8::1", ""),
        (SPEC, PEER, "2001:DB8:0:0::1", "2001:db8::1", ""),
        (SPEC, PEER, "::ffff:192.0.2.1", "::ffff:192.0.2.1", ""),
        (SPEC, PEER, "192.0.2.1, ::ffff:10.0.0.9", "192.0.2.1", ""),  # a mapped hop is trusted
        (SPEC, PEER, "192.0.2.1,,10.0.0.2,", "192.0.2.1", ""),  # empty list elements
        (SPEC, PEER, " 192.0.2.1 ,\t10.0.0.2 ", "192.0.2.1", ""),
        (SPEC, "::1", "2001:db8::7", "2001:db8::7", ""),
        (SPEC, "::ffff:127.0.0.1", "192.0.2.1", "192.0.2.1", ""),  # a mapped peer is trusted
        (SPEC, "10.20.30.40", "192.0.2.1", "192.0.2.1", ""),
        ("*", "203.0.113.7", "198.51.100.9, 192.0.2.1", "192.0.2.1", ""),  # "*": one proxy
        ("*,10.0.0.0/8", "203.0.113.7", "192.0.2.1, 10.0.0.2", "192.0.2.1", ""),
        ("unix", "", "192.0.2.1", "192.0.2.1", ""),
        ("unix", "/run/wsgibridge.sock", "192.0.2.1", "192.0.2.1", ""),
        ("2001:db8::/32", "2001:db8::5", "192.0.2.1, 2001:db8::6", "192.0.2.1", ""),
    ],
)
def test_x_forwarded_for_client_is_the_first_untrusted_hop_from_the_right(
    spec: str, peer: str, xff: str, remote_addr: str, remote_port: str
) -> None:
    """Walk X-Forwarded-For from the right past trusted proxies; the next hop is the client."""
    environ = forwarded({XFF: xff}, peer=peer, spec=spec)
    assert environ["REMOTE_ADDR"] == remote_addr
    assert environ["REMOTE_PORT"] == remote_port
    assert environ[PROXY_PEER_KEY] == peer


@pytest.mark.parametrize(
    ("xff", "remote_addr", "remote_port"),
    [
        # The rightmost element (our peer wrote it) is not an address: nothing is believed.
        ("garbage", PEER, "5555"),
        ("unknown", PEER, "5555"),
        ("192.0.2.1, garbage", PEER, "5555"),
        ("01.2.3.4", PEER, "5555"),
        ("256.1.1.1", PEER, "5555"),
        ("1.2.3", PEER, "5555"),
        ("192.0.2.1:65536", PEER, "5555"),
        ("192.0.2.1:", PEER, "5555"),
        ("192.0.2.1:-1", PEER, "5555"),
        ("fe80::1%eth0", PEER, "5555"),
        ("[fe80::1%eth0]", PEER, "5555"),
        ("2001:db8::1:4711", "2001:db8::1:4711", ""),  # a valid IPv6 address, no port
        ("[2001:db8::1", PEER, "5555"),
        ("192.0.2.1 198.51.100.1", PEER, "5555"),
        ('"192.0.2.1"', PEER, "5555"),
        ("192.0.2.1;by=x", PEER, "5555"),
        ("٣.٣.٣.٣", PEER, "5555"),
        ("_hidden", PEER, "5555"),
        (",,,", PEER, "5555"),
        # Not an address past trusted hops: the nearest trusted hop is the client.
        ("garbage, 10.0.0.2", "10.0.0.2", ""),
        ("unknown, 10.0.0.3:81, 10.0.0.2", "10.0.0.3", "81"),
        # Garbage left of the client hop is never read.
        ("garbage, 192.0.2.1", "192.0.2.1", ""),
        ('", <script>, 192.0.2.1', "192.0.2.1", ""),
    ],
)
def test_x_forwarded_for_garbage_is_ignored_where_it_is_read(
    xff: str, remote_addr: str, remote_port: str
) -> None:
    """An element that is not an address ends the walk; what is left of the client is not read."""
    environ = forwarded({XFF: xff})
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == (remote_addr, remote_port)


@pytest.mark.parametrize(
    ("headers", "remote_addr", "scheme", "host"),
    [
        # The client prepends an address; the proxy appends the real one.
        ({XFF: "127.0.0.1, 192.0.2.1"}, "192.0.2.1", "http", "app.internal:8000"),
        ({XFF: "10.0.0.1, 192.0.2.1"}, "192.0.2.1", "http", "app.internal:8000"),
        ({XFF: "::1, 192.0.2.1"}, "192.0.2.1", "http", "app.internal:8000"),
        # Garbage that would void the header if read: the client would pose as the proxy.
        ({XFF: "not-an-ip, 192.0.2.1"}, "192.0.2.1", "http", "app.internal:8000"),
        ({XFF: "1.1.1.1:99999, 192.0.2.1"}, "192.0.2.1", "http", "app.internal:8000"),
        # A client-supplied Forwarded beside the proxy's X-Forwarded-For is not believed.
        (
            {XFF: "192.0.2.1", FWD: "for=127.0.0.1;proto=https;host=admin.example"},
            "192.0.2.1",
            "http",
            "app.internal:8000",
        ),
        # A client-prepended proto beside a one-element X-Forwarded-For: the rightmost.
        ({XFF: "192.0.2.1", PROTO: "https, http"}, "192.0.2.1", "http", "app.internal:8000"),
        # A client that forged both lists to the same length still loses its forged elements.
        (
            {XFF: "127.0.0.1, 192.0.2.1", XHOST: "admin.example, shop.example"},
            "192.0.2.1",
            "http",
            "shop.example",
        ),
    ],
)
def test_spoofing_through_a_trusted_proxy_gets_the_client_nothing(
    headers: dict[str, str], remote_addr: str, scheme: str, host: str
) -> None:
    """What a client adds to the headers a trusted proxy appends to is never what we believe."""
    environ = forwarded(headers)
    assert environ["REMOTE_ADDR"] == remote_addr
    assert environ["wsgi.url_scheme"] == scheme
    assert environ["HTTP_HOST"] == host


# --------------------------------------------------------------------------
# 4. X-Forwarded-Proto / -Host / -Port
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "scheme", "http_host", "server_name", "server_port"),
    [
        # The scheme; SERVER_PORT is the Host's explicit port, else the scheme's default.
        ({PROTO: "https"}, "https", "app.internal:8000", "0.0.0.0", "8000"),
        ({PROTO: "https", "HTTP_HOST": "example.com"}, "https", "example.com", "0.0.0.0", "443"),
        ({PROTO: "HTTPS", "HTTP_HOST": "example.com"}, "https", "example.com", "0.0.0.0", "443"),
        ({PROTO: "http", "HTTP_HOST": "example.com"}, "http", "example.com", "0.0.0.0", "80"),
        ({PROTO: "https,", "HTTP_HOST": "example.com"}, "https", "example.com", "0.0.0.0", "443"),
        ({PROTO: "https", "HTTP_HOST": "example.com:"}, "https", "example.com:", "0.0.0.0", "443"),
        # Several elements without a matching X-Forwarded-For: the rightmost.
        ({PROTO: "https, http", "HTTP_HOST": "h.example"}, "http", "h.example", "0.0.0.0", "80"),
        # Appended alongside X-Forwarded-For: the client hop's element.
        (
            {XFF: "192.0.2.1, 10.0.0.2", PROTO: "https, http", "HTTP_HOST": "h.example"},
            "https",
            "h.example",
            "0.0.0.0",
            "443",
        ),
        (
            {XFF: "192.0.2.1, 198.51.100.1", PROTO: "http, https", "HTTP_HOST": "h.example"},
            "https",
            "h.example",
            "0.0.0.0",
            "443",
        ),
        # Not http or https: ignored.
        ({PROTO: "ftp"}, "http", "app.internal:8000", "0.0.0.0", "8000"),
        ({PROTO: "wss"}, "http", "app.internal:8000", "0.0.0.0", "8000"),
        ({PROTO: '"https"'}, "http", "app.internal:8000", "0.0.0.0", "8000"),
        ({PROTO: "https;q=1"}, "http", "app.internal:8000", "0.0.0.0", "8000"),
        ({PROTO: "ht tps"}, "http", "app.internal:8000", "0.0.0.0", "8000"),
        ({PROTO: ""}, "http", "app.internal:8000", "0.0.0.0", "8000"),
        # The host: HTTP_HOST, SERVER_NAME, and SERVER_PORT from its port or the scheme.
        ({XHOST: "example.com"}, "http", "example.com", "example.com", "80"),
        ({XHOST: "example.com:8443"}, "http", "example.com:8443", "example.com", "8443"),
        ({XHOST: "Example.COM"}, "http", "Example.COM", "Example.COM", "80"),
        ({XHOST: "192.0.2.5:81"}, "http", "192.0.2.5:81", "192.0.2.5", "81"),
        (
            {XHOST: "[2001:db8::1]:8443"},
            "http",
            "[2001:db8::1]:8443",
            "[2001:db8::1]",
            "8443",
        ),
        ({XHOST: "[2001:db8::1]"}, "http", "[2001:db8::1]", "[2001:db8::1]", "80"),
        ({XHOST: "example.com", PROTO: "https"}, "https", "example.com", "example.com", "443"),
        ({XHOST: "a.example, b.example"}, "http", "b.example", "b.example", "80"),
        # The host's explicit port wins over X-Forwarded-Port.
        (
            {XHOST: "example.com:8443", XPORT: "443", PROTO: "https"},
            "https",
            "example.com:8443",
            "example.com",
            "8443",
        ),
        # X-Forwarded-Port: SERVER_PORT, and HTTP_HOST gets it unless it is the default.
        (
            {XHOST: "example.com", XPORT: "8443", PROTO: "https"},
            "https",
            "example.com:8443",
            "example.com",
            "8443",
        ),
        (
            {XHOST: "example.com", XPORT: "443", PROTO: "https"},
            "https",
            "example.com",
            "example.com",
            "443",
        ),
        ({XPORT: "443", PROTO: "https"}, "https", "app.internal", "0.0.0.0", "443"),
        ({XPORT: "8443"}, "http", "app.internal:8443", "0.0.0.0", "8443"),
        ({XPORT: "80"}, "http", "app.internal", "0.0.0.0", "80"),
        ({XPORT: "0080"}, "http", "app.internal", "0.0.0.0", "80"),
        ({XPORT: "8443", "HTTP_HOST": "[::1]:8000"}, "http", "[::1]:8443", "0.0.0.0", "8443"),
    ],
)
def test_x_forwarded_proto_host_and_port_set_scheme_host_and_server_port(
    headers: dict[str, str], scheme: str, http_host: str, server_name: str, server_port: str
) -> None:
    """Scheme, host and port from a trusted peer, with the documented precedence."""
    environ = forwarded(headers)
    assert environ["wsgi.url_scheme"] == scheme
    assert environ["HTTP_HOST"] == http_host
    assert environ["SERVER_NAME"] == server_name
    assert environ["SERVER_PORT"] == server_port


@pytest.mark.parametrize(
    "host",
    [
        "",
        "evil.example/path",
        "evil.example?x",
        "user@evil.example",
        "a b",
        "evil.example:99999",
        "evil.example:0",
        "evil.example:80:80",
        "evil.example:8o",
        ":8080",
        "[::1",
        "::1",
        "[fe80::1%25eth0]",
        "[v1.fe]",
        "[evil]",
        "évil.example",
        "evil\texample",
    ],
)
def test_invalid_x_forwarded_host_is_ignored(host: str) -> None:
    """A forwarded host that is not ``host[:port]`` changes nothing."""
    assert view(forwarded({XHOST: host})) == UNCHANGED


@pytest.mark.parametrize(
    "port", ["0", "65536", "123456", "-1", "+80", "80.0", "0x50", "٨٠", "8 0", "http"]
)
def test_invalid_x_forwarded_port_is_ignored(port: str) -> None:
    """X-Forwarded-Port is 1*5DIGIT in 1-65535, or nothing changes."""
    assert view(forwarded({XPORT: port})) == UNCHANGED


def test_x_forwarded_host_without_a_host_header_creates_one() -> None:
    """An HTTP/1.0 request without Host still gets the forwarded one."""
    environ = make_environ(**{XHOST: "example.com"})
    del environ["HTTP_HOST"]
    apply_forwarded(environ, TrustedProxies(SPEC))
    assert (environ["HTTP_HOST"], environ["SERVER_NAME"]) == ("example.com", "example.com")


def test_x_forwarded_port_without_a_host_header_sets_only_server_port() -> None:
    """No HTTP_HOST to carry the port: only SERVER_PORT changes."""
    environ = make_environ(**{XPORT: "8443"})
    del environ["HTTP_HOST"]
    apply_forwarded(environ, TrustedProxies(SPEC))
    assert environ["SERVER_PORT"] == "8443"
    assert "HTTP_HOST" not in environ


# --------------------------------------------------------------------------
# 5. Forwarded (RFC 7239)
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("for=192.0.2.60", [{"for": "192.0.2.60"}]),
        (
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}],
        ),
        ('For="[2001:db8:cafe::17]:4711"', [{"for": "[2001:db8:cafe::17]:4711"}]),
        ('for="_gazonk"', [{"for": "_gazonk"}]),
        ("for=192.0.2.43, for=198.51.100.17", [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}]),
        (
            'for=192.0.2.43,for="[2001:db8:cafe::17]",for=unknown',
            [{"for": "192.0.2.43"}, {"for": "[2001:db8:cafe::17]"}, {"for": "unknown"}],
        ),
        ("for=a;;by=b", [{"for": "a", "by": "b"}]),
        (";for=a;", [{"for": "a"}]),
        ("for=a, ;by=b", [{"for": "a"}, {"by": "b"}]),
        ("for=a; ,by=b", [{"for": "a"}, {"by": "b"}]),
        ("for=a,,\t, by=b", [{"for": "a"}, {"by": "b"}]),
        ('host="a,b;c=d"', [{"host": "a,b;c=d"}]),
        ('x="a\\"b\\\\"', [{"x": 'a"b\\'}]),
        ('x=""', [{"x": ""}]),
        ("FOR=x;Proto=https", [{"for": "x", "proto": "https"}]),
        ("secret=abc;for=x", [{"secret": "abc", "for": "x"}]),
        ("", []),
        (", ,", []),
    ],
)
def test_forwarded_grammar_parses_elements_and_pairs(
    value: str, expected: list[dict[str, str]]
) -> None:
    """RFC 7239 §4: 1#forwarded-element of ``;``-separated pairs, token or quoted-string values."""
    assert parse_forwarded(value) == expected


MALFORMED_FORWARDED = [
    "for",
    "for=",
    "=x",
    "for==x",
    "for = 192.0.2.1",
    "for= 192.0.2.1",
    "for =192.0.2.1",
    "for=192.0.2.1 ;proto=https",
    "for=192.0.2.1; proto=https",
    "for=192.0.2.1;for=192.0.2.2",
    "for=192.0.2.1;FOR=192.0.2.2",
    "for=[2001:db8::1]",
    "for=192.0.2.1:4711",
    'for="192.0.2.1',
    'for=192.0.2.1"',
    'for="a"b',
    'for="a"b=c',
    'for="a"proto=http',
    'for="a\\"',
    "for=a b",
    "for=a\x00",
    'for="a\x01"',
    "for=a\u0100",
    "for=a,garbage",
    "garbage",
    '"quoted"',
    "for=a, b",
]


@pytest.mark.parametrize("value", MALFORMED_FORWARDED)
def test_malformed_forwarded_values_do_not_parse(value: str) -> None:
    """Anything that is not exactly the RFC 7239 §4 grammar is malformed."""
    assert parse_forwarded(value) is None


@pytest.mark.parametrize("value", MALFORMED_FORWARDED)
def test_malformed_forwarded_from_a_trusted_peer_changes_nothing(value: str) -> None:
    """A malformed rightmost element (our peer's) is ignored, not an exception."""
    environ = forwarded({FWD: value})
    assert view(environ) == UNCHANGED
    assert environ[FWD] == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "for=192.0.2.60;proto=http;by=203.0.113.43",
            {"REMOTE_ADDR": "192.0.2.60", "REMOTE_PORT": "", "SERVER_PORT": "8000"},
        ),
        (
            'for="[2001:db8:cafe::17]:4711"',
            {"REMOTE_ADDR": "2001:db8:cafe::17", "REMOTE_PORT": "4711"},
        ),
        ('For="[2001:DB8:CAFE::17]"', {"REMOTE_ADDR": "2001:db8:cafe::17", "REMOTE_PORT": ""}),
        ('for="192.0.2.43:47011"', {"REMOTE_ADDR": "192.0.2.43", "REMOTE_PORT": "47011"}),
        ('for="[2001:db8::1]:_port"', {"REMOTE_ADDR": "2001:db8::1", "REMOTE_PORT": ""}),
        ('for="[::ffff:192.0.2.1]"', {"REMOTE_ADDR": "::ffff:192.0.2.1"}),
        ("for=192.0.2.43, for=198.51.100.17", {"REMOTE_ADDR": "198.51.100.17"}),
        ("for=192.0.2.43, for=10.0.0.2", {"REMOTE_ADDR": "192.0.2.43"}),
        ('for=192.0.2.43, for="[::1]"', {"REMOTE_ADDR": "192.0.2.43"}),
        ("for=10.0.0.9, for=10.0.0.2", {"REMOTE_ADDR": "10.0.0.9"}),
        ("for=192.0.2.43,,, for=198.51.100.17", {"REMOTE_ADDR": "198.51.100.17"}),
        # The client hop's proto and host: what the client used.
        (
            "for=192.0.2.43;proto=https;host=example.com, for=10.0.0.2;proto=http;host=internal",
            {
                "REMOTE_ADDR": "192.0.2.43",
                "wsgi.url_scheme": "https",
                "HTTP_HOST": "example.com",
                "SERVER_NAME": "example.com",
                "SERVER_PORT": "443",
            },
        ),
        # Missing from the client hop: the nearest element to its right that has it.
        (
            "for=192.0.2.43, for=10.0.0.2;proto=https",
            {"REMOTE_ADDR": "192.0.2.43", "wsgi.url_scheme": "https"},
        ),
        # Left of the client hop: not believed.
        (
            "for=10.0.0.7;proto=https;host=admin.example, for=192.0.2.43",
            {"REMOTE_ADDR": "192.0.2.43", "wsgi.url_scheme": "http"},
        ),
        (
            'for=192.0.2.43;host="example.com:8443";proto=https',
            {"HTTP_HOST": "example.com:8443", "SERVER_NAME": "example.com", "SERVER_PORT": "8443"},
        ),
        ('for=192.0.2.43;proto="HTTPS"', {"wsgi.url_scheme": "https"}),
        ("for=192.0.2.43;proto=ftp", {"REMOTE_ADDR": "192.0.2.43", "wsgi.url_scheme": "http"}),
        ('for=192.0.2.43;host="evil.example/x"', {"HTTP_HOST": "app.internal:8000"}),
        ('for=192.0.2.43;host="[::1]:8080"', {"HTTP_HOST": "[::1]:8080", "SERVER_PORT": "8080"}),
        ("for=192.0.2.43;secret=abc;by=_proxy", {"REMOTE_ADDR": "192.0.2.43"}),
        # No usable client address.
        ("for=unknown", {"REMOTE_ADDR": PEER, "REMOTE_PORT": "5555"}),
        ("for=UNKNOWN", {"REMOTE_ADDR": PEER, "REMOTE_PORT": "5555"}),
        ('for="unknown:4711"', {"REMOTE_ADDR": PEER, "REMOTE_PORT": "5555"}),
        ('for="_gazonk"', {"REMOTE_ADDR": PEER, "REMOTE_PORT": "5555"}),
        ('for="2001:db8::1"', {"REMOTE_ADDR": PEER, "REMOTE_PORT": "5555"}),
        ("for=192.0.2.256", {"REMOTE_ADDR": PEER}),
        ("for=01.2.3.4", {"REMOTE_ADDR": PEER}),
        ('for="192.0.2.1:65536"', {"REMOTE_ADDR": PEER}),
        ('for="[fe80::1%eth0]"', {"REMOTE_ADDR": PEER}),
        ("by=203.0.113.43", {"REMOTE_ADDR": PEER}),
        (
            "for=unknown;proto=https;host=example.com",
            {
                "REMOTE_ADDR": PEER,
                "wsgi.url_scheme": "https",
                "HTTP_HOST": "example.com",
                "SERVER_PORT": "443",
            },
        ),
        ("proto=https", {"REMOTE_ADDR": PEER, "wsgi.url_scheme": "https"}),
        # Unknown past trusted hops: the nearest trusted hop.
        ("for=_hidden, for=10.0.0.2", {"REMOTE_ADDR": "10.0.0.2", "REMOTE_PORT": ""}),
        ('for=unknown, for="10.0.0.2:99"', {"REMOTE_ADDR": "10.0.0.2", "REMOTE_PORT": "99"}),
        # Malformed left of our proxies' elements: never read.
        ("garbage, for=192.0.2.43", {"REMOTE_ADDR": "192.0.2.43"}),
        ('", for=192.0.2.43', {"REMOTE_ADDR": "192.0.2.43"}),
        ('for="x, for=192.0.2.43', {"REMOTE_ADDR": "192.0.2.43"}),
        ("for=a;for=b, for=192.0.2.43;proto=https", {"wsgi.url_scheme": "https"}),
        # Malformed past trusted hops: the nearest trusted hop.
        (
            "garbage, for=10.0.0.2;proto=https",
            {"REMOTE_ADDR": "10.0.0.2", "wsgi.url_scheme": "https"},
        ),
    ],
)
def test_forwarded_sets_client_scheme_and_host_from_the_client_hop(
    value: str, expected: dict[str, str]
) -> None:
    """RFC 7239: ``for=`` walked from the right, ``proto=``/``host=`` from the client hop."""
    environ = forwarded({FWD: value})
    assert {key: environ[key] for key in expected} == expected


# --------------------------------------------------------------------------
# 6. Both families
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "remote_addr", "scheme"),
    [
        ({XFF: "192.0.2.1", FWD: "for=198.51.100.1;proto=https"}, "192.0.2.1", "http"),
        ({PROTO: "https", FWD: "for=198.51.100.1"}, PEER, "https"),
        ({XHOST: "example.com", FWD: "for=198.51.100.1;proto=https"}, PEER, "http"),
        ({XPORT: "443", FWD: "for=198.51.100.1"}, PEER, "http"),
        # An empty X-Forwarded-* field is no field: Forwarded is believed.
        ({XFF: "", FWD: "for=198.51.100.1;proto=https"}, "198.51.100.1", "https"),
        ({XFF: " \t", FWD: "for=198.51.100.1"}, "198.51.100.1", "http"),
        # Only guarded keys beside Forwarded: Forwarded is believed.
        ({"HTTP_X_REAL_IP": "192.0.2.9", FWD: "for=198.51.100.1"}, "198.51.100.1", "http"),
        # A malformed X-Forwarded-For still hides Forwarded.
        ({XFF: "garbage", FWD: "for=198.51.100.1"}, PEER, "http"),
    ],
)
def test_x_forwarded_headers_win_and_forwarded_beside_them_is_ignored(
    headers: dict[str, str], remote_addr: str, scheme: str
) -> None:
    """Never a mix: with any X-Forwarded-* field present, Forwarded is not believed at all."""
    environ = forwarded(headers)
    assert environ["REMOTE_ADDR"] == remote_addr
    assert environ["wsgi.url_scheme"] == scheme
    assert environ[FWD] == headers[FWD]


@pytest.mark.parametrize(
    "value",
    [
        '"' * 60000,
        '\\"' * 30000,
        "a=" * 30000,
        ";" * 60000,
        "," * 60000,
        "for=10.0.0.1, " * 5000,
        'x="' + "\\\\" * 30000 + '"',
        '"' + 'a"' * 30000,
        '=\\"' * 20000 + '"',
    ],
)
def test_pathological_forwarded_values_parse_in_linear_time(value: str) -> None:
    """Header-sized adversarial values finish at once (no backtracking blow-up)."""
    environ = forwarded({FWD: value}, spec="0.0.0.0/0,::/0")
    assert environ["REMOTE_ADDR"] in (PEER, "10.0.0.1")
    parse_forwarded(value)


@pytest.mark.parametrize(
    "value",
    ["10.0.0.1, " * 8000, "x," * 30000, "[" * 60000, ":" * 60000, "1." * 30000],
)
def test_pathological_x_forwarded_for_values_finish(value: str) -> None:
    """Header-sized adversarial X-Forwarded-For values finish at once."""
    environ = forwarded({XFF: value}, spec="0.0.0.0/0,::/0")
    assert environ["REMOTE_ADDR"] in (PEER, "10.0.0.1")


GARBAGE = [
    "",
    " ",
    ",",
    "\x00",
    "\r\n",
    "\udcff",
    "🙂",
    "[",
    "]",
    '"',
    "\\",
    ";",
    "=",
    ":",
    "%",
    "[::1]:",
    "[]:80",
    "unknown",
    "_",
    "for=",
    "a" * 10000,
    "1" * 10000,
    "::" * 5000,
]


@pytest.mark.parametrize("key", sorted(FORWARDING_KEYS))
@pytest.mark.parametrize("value", GARBAGE)
def test_garbage_in_any_forwarding_key_never_raises(key: str, value: str) -> None:
    """From a trusted peer any garbage is ignored; from an untrusted one it is removed."""
    environ = forwarded({key: value})
    if environ["REMOTE_ADDR"] != PEER:
        ipaddress.ip_address(environ["REMOTE_ADDR"])
    assert environ["wsgi.url_scheme"] in ("http", "https")
    environ = forwarded({key: value}, peer="203.0.113.7")
    assert key not in environ


def test_non_string_values_are_ignored_not_raised_on() -> None:
    """A value that is not a str (a broken middleware's) is treated as absent."""
    environ = make_environ()
    environ[XFF] = b"192.0.2.1"
    environ[FWD] = None
    apply_forwarded(environ, TrustedProxies(SPEC))
    assert view(environ) == UNCHANGED
    environ = make_environ()
    environ["REMOTE_ADDR"] = None
    environ[XFF] = "192.0.2.1"
    apply_forwarded(environ, TrustedProxies("*"))
    assert XFF not in environ


# --------------------------------------------------------------------------
# 7. Properties
# --------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        "for=",
        "proto=",
        "host=",
        "by=",
        ";",
        ",",
        ", ",
        " ",
        "\t",
        '"',
        "\\",
        "[",
        "]",
        ":",
        "=",
        "_hidden",
        "unknown",
        "192.0.2.1",
        "10.0.0.2",
        "127.0.0.1",
        "::1",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "4711",
        "65536",
        "https",
        "http",
        "HTTPS",
        "example.com",
        "example.com:8443",
        "%",
        "\x00",
        "é",
    ]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=60),
    st.lists(FRAGMENTS | st.text(max_size=3), max_size=25).map("".join),
)
HEADER_SETS = st.dictionaries(st.sampled_from(sorted(FORWARDING_KEYS)), HEADER_VALUES, max_size=6)
UNTRUSTED_PEERS = st.sampled_from(["203.0.113.7", "::2", "::ffff:203.0.113.7", "11.0.0.1", ""])


@settings(max_examples=500, deadline=None)
@given(headers=HEADER_SETS, peer=UNTRUSTED_PEERS)
def test_untrusted_peer_property_no_forwarding_key_and_nothing_changed(
    headers: dict[str, str], peer: str
) -> None:
    """For any values from an untrusted peer: no forwarding key is left, nothing else changes."""
    environ = make_environ(peer, **headers)
    apply_forwarded(environ, TrustedProxies(SPEC))
    assert not FORWARDING_KEYS & environ.keys()
    assert environ == make_environ(peer)


def _valid_server_port(port: str) -> bool:
    return port.isdigit() and port.isascii() and 0 < int(port) <= 65535


@settings(max_examples=1000, deadline=None)
@given(headers=HEADER_SETS, peer=st.sampled_from([PEER, "::1", "10.1.2.3", "::ffff:10.9.9.9"]))
def test_trusted_peer_property_never_raises_and_only_believes_valid_values(
    headers: dict[str, str], peer: str
) -> None:
    """For any values from a trusted peer: no exception, and every rewritten value is valid."""
    environ = make_environ(peer, **headers)
    apply_forwarded(environ, TrustedProxies(SPEC))
    assert environ[PROXY_PEER_KEY] == peer
    for key, value in headers.items():
        assert environ[key] == value
    if environ["REMOTE_ADDR"] != peer:
        ipaddress.ip_address(environ["REMOTE_ADDR"])
        port = environ["REMOTE_PORT"]
        assert port == "" or (port.isdigit() and int(port) <= 65535)
    assert environ["wsgi.url_scheme"] in ("http", "https")
    assert HOST.fullmatch(environ["HTTP_HOST"])
    assert _valid_server_port(environ["SERVER_PORT"])


TOKENS = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCXYZ", min_size=1)
# qdtext and quoted-pair: HTAB, SP, VCHAR, obs-text (no DEL, no other controls).
QUOTABLE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)
    | st.characters(min_codepoint=0x80, max_codepoint=0xFF)
    | st.just("\t")
)
NAMES = st.sampled_from(["for", "by", "proto", "host", "secret", "x-ext"])
ELEMENTS = st.dictionaries(NAMES, TOKENS | QUOTABLE, min_size=1, max_size=4)


def _serialize_value(value: str) -> str:
    if value and all(c in "!#$%&'*+-.^_`|~" or (c.isascii() and c.isalnum()) for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@settings(max_examples=500, deadline=None)
@given(
    elements=st.lists(ELEMENTS, min_size=1, max_size=5),
    separators=st.lists(st.sampled_from([",", ", ", " ,\t", ",,", ", ,"]), min_size=5, max_size=5),
    semicolons=st.sampled_from([";", ";;"]),
)
def test_forwarded_round_trip_property(
    elements: list[dict[str, str]], separators: list[str], semicolons: str
) -> None:
    """Any value serialised from the RFC 7239 grammar parses back to the same elements."""
    text = ""
    for index, element in enumerate(elements):
        if index:
            text += separators[index]
        text += semicolons.join(f"{k}={_serialize_value(v)}" for k, v in element.items())
    assert parse_forwarded(text) == elements


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _public(ip: IPAddress) -> bool:
    """Not one of SPEC's proxies, and written the same way on every Python version."""
    if isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip.scope_id):
        return False
    return str(ip) not in TrustedProxies(SPEC)


PUBLIC_IPS: st.SearchStrategy[IPAddress] = (st.ip_addresses(v=4) | st.ip_addresses(v=6)).filter(
    _public
)


@settings(max_examples=500, deadline=None)
@given(prefix=HEADER_VALUES, client=PUBLIC_IPS, port=st.integers(0, 65535))
def test_garbage_left_of_the_proxys_element_never_hides_the_client_property(
    prefix: str, client: IPAddress, port: int
) -> None:
    """Whatever a client sends, the element our trusted proxy appended names the client."""
    node = f"{client}:{port}" if client.version == 4 else f"[{client}]:{port}"
    environ = forwarded({FWD: f'{prefix}, for="{node}"'})
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == (str(client), str(port))
    environ = forwarded({XFF: f"{prefix}, {node}"})
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == (str(client), str(port))


# --------------------------------------------------------------------------
# 8. PROXY protocol v1
# --------------------------------------------------------------------------

MAX_V6 = b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"


def _mapped(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
            ProxyHeader("TCP4", "192.168.0.1", 56324, "192.168.0.11", 443),
        ),
        (
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
            ProxyHeader("TCP4", "255.255.255.255", 65535, "255.255.255.255", 65535),
        ),
        (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", ProxyHeader("TCP4", "0.0.0.0", 0, "0.0.0.0", 0)),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1234 80\r\n",
            ProxyHeader("TCP6", "2001:db8::1", 1234, "2001:db8::2", 80),
        ),
        (
            b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::1 1234 80\r\n",
            ProxyHeader("TCP6", "2001:db8::1", 1234, "::1", 80),
        ),
        (
            b"PROXY TCP6 " + MAX_V6 + b" " + MAX_V6 + b" 65535 65535\r\n",
            ProxyHeader("TCP6", MAX_V6.decode(), 65535, MAX_V6.decode(), 65535),
        ),
        (
            b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n",
            ProxyHeader("TCP6", "::ffff:192.0.2.1", 1, "::1", 2),
        ),
        (b"PROXY UNKNOWN\r\n", ProxyHeader("UNKNOWN", None, None, None, None)),
        (
            b"PROXY UNKNOWN " + MAX_V6 + b" " + MAX_V6 + b" 65535 65535\r\n",
            ProxyHeader("UNKNOWN", None, None, None, None),
        ),
        (b"PROXY UNKNOWN anything \x00 at all\r\n", ProxyHeader("UNKNOWN", None, None, None, None)),
    ],
)
def test_proxy_v1_valid_lines_parse(line: bytes, expected: ProxyHeader) -> None:
    """The spec's TCP4, TCP6 and UNKNOWN forms, up to its longest lines."""
    assert len(line) <= MAX_PROXY_LINE
    assert parse_proxy_v1(line) == expected


def test_proxy_v1_worst_case_line_is_exactly_the_limit() -> None:
    """The spec's worst case (UNKNOWN, longest addresses) is 107 bytes; one more is refused."""
    line = b"PROXY UNKNOWN " + MAX_V6 + b" " + MAX_V6 + b" 65535 65535\r\n"
    assert len(line) == MAX_PROXY_LINE == 107
    assert parse_proxy_v1(line).family == "UNKNOWN"
    with pytest.raises(BadRequest, match="longer than 107"):
        parse_proxy_v1(line[:-2] + b"0\r\n")


LINE = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(LINE.replace(b"\r\n", b"\n"), id="bare-LF"),
        pytest.param(LINE.replace(b"\r\n", b"\r\r\n"), id="CR-before-CRLF"),
        pytest.param(LINE.replace(b" 198", b"\r198"), id="bare-CR-inside"),
        pytest.param(LINE.replace(b"TCP4 ", b"TCP4  "), id="double-space"),
        pytest.param(LINE.replace(b"\r\n", b" \r\n"), id="trailing-space"),
        pytest.param(b" " + LINE, id="leading-space"),
        pytest.param(LINE.replace(b" 192", b"\t192"), id="tab"),
        pytest.param(LINE.replace(b"PROXY", b"proxy"), id="lower-case-PROXY"),
        pytest.param(LINE.replace(b"TCP4", b"tcp4"), id="lower-case-family"),
        pytest.param(LINE.replace(b"TCP4", b"TCP5"), id="unknown-family"),
        pytest.param(LINE.replace(b"TCP4", b"UDP4"), id="udp"),
        pytest.param(LINE.replace(b"56324", b"05632"), id="leading-zero-port"),
        pytest.param(LINE.replace(b"56324", b"00"), id="zero-zero-port"),
        pytest.param(LINE.replace(b"56324", b"65536"), id="port-too-large"),
        pytest.param(LINE.replace(b"56324", b"123456"), id="port-six-digits"),
        pytest.param(LINE.replace(b"56324", b"+5632"), id="plus-sign-port"),
        pytest.param(LINE.replace(b"56324", b"-1"), id="negative-port"),
        pytest.param(LINE.replace(b"56324", b"0x50"), id="hex-port"),
        pytest.param(LINE.replace(b"192.0.2.1", b"192.0.2.01"), id="leading-zero-octet"),
        pytest.param(LINE.replace(b"192.0.2.1", b"192.0.2.256"), id="octet-too-large"),
        pytest.param(LINE.replace(b"192.0.2.1", b"192.0.2"), id="three-octets"),
        pytest.param(LINE.replace(b"192.0.2.1", b"::1"), id="ipv6-in-TCP4"),
        pytest.param(b"PROXY TCP6 192.0.2.1 ::1 1234 80\r\n", id="ipv4-in-TCP6"),
        pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1234 80\r\n", id="ipv6-zone"),
        pytest.param(b"PROXY TCP6 [::1] ::1 1234 80\r\n", id="ipv6-brackets"),
        pytest.param(b"PROXY TCP6 1::2::3 ::1 1234 80\r\n", id="two-double-colons"),
        pytest.param(b"PROXY TCP6 12345::1 ::1 1234 80\r\n", id="five-hex-digits"),
        pytest.param(b"PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n", id="missing-port"),
        pytest.param(b"PROXY TCP4 192.0.2.1 56324 443\r\n", id="missing-address"),
        pytest.param(LINE.replace(b"\r\n", b" 7\r\n"), id="extra-field"),
        pytest.param(b"PROXY TCP4\r\n", id="family-only"),
        pytest.param(b"PROXY UNKNOWNX\r\n", id="UNKNOWN-glued"),
        pytest.param(b"PROXY unknown\r\n", id="lower-case-unknown"),
        pytest.param(b"PROXY\r\n", id="PROXY-only"),
        pytest.param(b"PROXY \r\n", id="PROXY-space"),
        pytest.param(b"\r\n", id="empty-line"),
        pytest.param(b"\r\n\r\n\x00\r\nQUIT\n", id="v2-signature"),
        pytest.param(b"GET / HTTP/1.1\r\n", id="http-request"),
        pytest.param(LINE.replace(b"192", b"\xef\xbc\x91\xef\xbc\x99\xef\xbc\x92"), id="non-ascii"),
        pytest.param(LINE.replace(b"443", b"4\x003"), id="NUL"),
        pytest.param(b"PROXY UNKNOWN " + b"a" * 92 + b"\r\n", id="108-bytes"),
        pytest.param(b"PROXY TCP4 " + b"1" * 200 + b"\r\n", id="very-long"),
    ],
)
def test_proxy_v1_malformed_lines_are_bad_requests(line: bytes) -> None:
    """Anything that does not exactly match the spec's grammar is refused with 400."""
    with pytest.raises(BadRequest) as info:
        parse_proxy_v1(line)
    assert info.value.status == 400


@pytest.mark.parametrize("line", [b"", b"PROXY TCP4 192.0.2.1", LINE[:-1], LINE[:-2]])
def test_proxy_v1_line_cut_short_is_an_incomplete_message(line: bytes) -> None:
    """A line without its CRLF, shorter than the limit, is a connection closed mid-line."""
    with pytest.raises(IncompleteMessage):
        parse_proxy_v1(line)


@settings(max_examples=300, deadline=None)
@given(
    source=st.ip_addresses(v=4) | st.ip_addresses(v=6),
    destination=st.ip_addresses(v=4) | st.ip_addresses(v=6),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
)
def test_proxy_v1_round_trip_property(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ports: tuple[int, int],
) -> None:
    """A line written as a sender would parses back; mixed families are refused."""
    line = f"PROXY TCP{source.version} {source} {destination} {ports[0]} {ports[1]}\r\n".encode()
    if source.version != destination.version:
        with pytest.raises(BadRequest):
            parse_proxy_v1(line)
        return
    if _mapped(source) or _mapped(destination):
        return  # str() of a mapped address differs between Python versions; tested above
    header = parse_proxy_v1(line)
    assert header == ProxyHeader(
        f"TCP{source.version}", str(source), ports[0], str(destination), ports[1]
    )


@settings(max_examples=1000, deadline=None)
@given(line=st.binary(max_size=120) | st.binary(max_size=110).map(lambda tail: b"PROXY " + tail))
def test_proxy_v1_arbitrary_bytes_only_raise_bad_request(line: bytes) -> None:
    """No byte string makes the parser raise anything but BadRequest."""
    try:
        header = parse_proxy_v1(line)
    except BadRequest:
        return
    assert header.family in ("TCP4", "TCP6", "UNKNOWN")


@pytest.mark.parametrize(
    ("line", "source"),
    [
        (b"PROXY TCP6 ::FFFF:10.1.2.3 ::1 1 2\r\n", "::ffff:10.1.2.3"),
        (b"PROXY TCP6 0:0:0:0:0:ffff:a01:203 ::1 1 2\r\n", "::ffff:10.1.2.3"),
        (b"PROXY TCP4 10.1.2.3 10.0.0.1 1 2\r\n", "10.1.2.3"),
    ],
)
def test_proxy_v1_source_has_the_form_trusted_proxies_match(line: bytes, source: str) -> None:
    """The PROXY parser and TrustedProxies share one canonical form (``canonical_address``)."""
    header = parse_proxy_v1(line)
    assert header.source == source
    assert header.source in TrustedProxies("10.0.0.0/8")
    assert header.source not in TrustedProxies("192.0.2.0/24")
