"""Which peers are trusted proxies: ``--forwarded-allow-ips`` as a value, pure.

Rule: :class:`TrustedProxies` answers one question - may this peer's
forwarding claims be believed? - for an address as the server reports it
(IPv4, IPv6, an IPv4-mapped IPv6 address, a Unix-socket peer).  Entries are
addresses and CIDR networks, ``unix`` for peers on a Unix domain socket,
``*`` for every peer, ``""`` for none; an IPv4-mapped IPv6 peer matches the
IPv4 entries.  What a trusted peer's headers then mean is
:mod:`~wsgibridge.http.forwarded`'s business; a PROXY protocol line's address
takes the same canonical form (:func:`canonical_address`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

__all__ = ["IP_CHARS", "IPAddress", "TrustedProxies", "canonical_address"]

IPAddress: TypeAlias = "ipaddress.IPv4Address | ipaddress.IPv6Address"

# The characters of an IPv4 or IPv6 literal; the ipaddress module then decides.
IP_CHARS = r"[0-9A-Fa-f:.]+"

# An address or CIDR as written in the spec; the ipaddress module then decides.
# No "%zone" (a zone names one of our interfaces, not a proxy) and no brackets.
_SPEC_ITEM = re.compile(IP_CHARS + r"(?:/[0-9]{1,3})?")
# IPv4-mapped IPv6 addresses, RFC 4291 §2.5.5.2.
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_CACHE_MAX = 1024


def canonical_address(ip: IPAddress) -> str:
    """``str(ip)``, but a mapped address as ``::ffff:a.b.c.d`` on every Python (as sockets say).

    The form REMOTE_ADDR takes whenever it is rewritten, here or from a PROXY
    protocol line (:mod:`.proxy_protocol`).
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def _is_unix_name(address: str) -> bool:
    """True for what the server puts in REMOTE_ADDR for a Unix-socket peer."""
    return address == "" or address.startswith(("/", "\0"))


class TrustedProxies:
    """Addresses and networks whose forwarding headers are believed."""

    __slots__ = ("_all", "_cache", "_exact", "_trust_unix", "_v4", "_v6", "spec")

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._all = False
        self._trust_unix = False
        exact: set[str] = set()
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        if spec.strip():
            for raw in spec.split(","):
                item = raw.strip()
                if not item:
                    raise ValueError(f"an empty item in the trusted proxies {spec!r}")
                if item == "*":
                    self._all = True
                    continue
                if item.lower() == "unix":
                    self._trust_unix = True
                    continue
                if _SPEC_ITEM.fullmatch(item) is None:
                    raise ValueError(
                        f"bad trusted proxy {item!r}: not an IP address, a CIDR network,"
                        " 'unix' or '*'"
                    )
                try:
                    # strict: "10.0.0.1/8" is refused rather than read as 10.0.0.0/8,
                    # since it is as likely a typo for "10.0.0.1/32".
                    network = ipaddress.ip_network(item, strict=True)
                except ValueError as exc:
                    raise ValueError(f"bad trusted proxy {item!r}: {exc}") from None
                if isinstance(network, ipaddress.IPv4Network):
                    v4.append(network)
                    if network.num_addresses == 1:
                        exact.add(str(network.network_address))
                        exact.add(f"::ffff:{network.network_address}")
                else:
                    v6.append(network)
                    if network.prefixlen >= 96 and network.network_address in _MAPPED:
                        # "::ffff:10.0.0.0/104" is 10.0.0.0/8 seen through IPv6.
                        mapped = ipaddress.IPv4Network(
                            (int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96)
                        )
                        v4.append(mapped)
                        if mapped.num_addresses == 1:
                            exact.add(str(mapped.network_address))
                    if network.num_addresses == 1:
                        exact.add(canonical_address(network.network_address))
        self._exact = frozenset(exact)
        self._v4 = tuple(v4)
        self._v6 = tuple(v6)
        self._cache: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"TrustedProxies({self.spec!r})"

    def __bool__(self) -> bool:
        return self._all or self._trust_unix or bool(self._v4) or bool(self._v6)

    def __contains__(self, address: str) -> bool:
        """Whether a peer address (as in REMOTE_ADDR, no brackets or port) is trusted."""
        if self._all or address in self._exact:
            return True
        try:
            return self._cache[address]
        except KeyError:
            pass
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            result = self._trust_unix and _is_unix_name(address)
        else:
            result = self._in_networks(ip)
        if len(self._cache) < _CACHE_MAX:
            self._cache[address] = result
        return result

    def trusts_hop(self, address: str, ip: IPAddress) -> bool:
        """Whether an address named in a forwarding header (canonical text, parsed) is a
        trusted proxy's.

        ``*`` trusts every peer, not every address a peer names: otherwise the
        leftmost, client-written X-Forwarded-For element would always win.
        """
        return address in self._exact or self._in_networks(ip)

    def _in_networks(self, ip: IPAddress) -> bool:
        if isinstance(ip, ipaddress.IPv6Address):
            mapped = ip.ipv4_mapped
            if mapped is not None and any(mapped in net for net in self._v4):
                return True
            return any(ip in net for net in self._v6)
        return any(ip in net for net in self._v4)
