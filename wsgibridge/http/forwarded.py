"""Believing a reverse proxy: the X-Forwarded-* and Forwarded headers, pure.

Rule: what a request says about its own origin is believed only when the
connection comes from a trusted proxy, only as far back as a chain of trusted
proxies vouches for it, and only when it parses exactly; from any other peer
every forwarding header is removed from the environ, so that the application
can never be fooled by one.  RFC 7239 §8.1: the field "cannot be relied upon
to be correct, as it may be modified, whether mistakenly or for malicious
reasons, by every node on the way to the server, including the client making
the request."  Nothing here raises on a header value: a malformed one is
ignored, never repaired.  Nothing here touches a socket, a thread or a logger.

Who is trusted
    :class:`TrustedProxies` (``--forwarded-allow-ips``): addresses and CIDR
    networks, ``unix`` for peers on a Unix domain socket (whose REMOTE_ADDR is
    ``""`` or a path starting with ``/``), ``*`` for every peer, ``""`` for none.  An IPv4-mapped
    IPv6 peer (``::ffff:10.0.0.1``, what a dual-stack socket reports) matches
    the IPv4 entries.  ``*`` trusts every peer but no address named in a
    header, so with ``*`` alone the rightmost X-Forwarded-For element is the
    client (one proxy in front, waitress's ``trusted_proxy_count=1``); list the
    proxies' networks for longer chains.  Trust only the proxies themselves: a
    client inside a trusted network can claim any address.

Which header family
    ``X-Forwarded-For/-Proto/-Host/-Port`` or ``Forwarded`` (RFC 7239), never
    a mix: when any X-Forwarded-* header is present, Forwarded is ignored.  A
    proxy rewrites the family it is configured for and passes the other one
    through from the client untouched, and X-Forwarded-* is the family nginx,
    HAProxy, the cloud load balancers, Traefik and Caddy set (gunicorn, uvicorn
    and Werkzeug's ProxyFix read nothing else).  Letting Forwarded win would
    let any client spoof its address through an nginx that only sets
    X-Forwarded-For; believing neither would let it pose as the proxy itself
    (below).  A proxy that sends only Forwarded must therefore remove the
    clients' X-Forwarded-* headers, and every proxy must set or remove each
    header of its family that it does not want clients to choose.

The client hop
    Every proxy appends the address it received the request from, so the list
    is read from the right, where the trusted proxies wrote: elements that are
    trusted proxies' addresses are skipped, and the first one that is not is the
    *client hop*.  Its address becomes REMOTE_ADDR (canonical form; REMOTE_PORT
    is its port when the element gives one, else ``""``) and the peer is kept in
    ``environ["wsgibridge.proxy_peer"]``.  If every element is a trusted proxy,
    the leftmost is the client.  If the client hop has no usable address
    (``unknown``, an obfuscated ``_name``, a missing ``for=``, or garbage), the
    client is not known: REMOTE_ADDR becomes the nearest trusted address walked
    past, or stays the peer when the peer itself wrote it.  Elements left of
    the client hop are never read, not even parsed: they are whatever the
    client claimed, and if garbage there voided the header, a client could
    make its requests appear to come from the proxy itself (typically
    127.0.0.1), slipping past address-based access rules.  So ``Forwarded`` is
    parsed strictly but from the right, element by element, up to the client
    hop: a malformed element is where reading stops (as if it were
    ``for=unknown`` with nothing else), not a reason to drop the elements our
    proxies appended after it.

Scheme, host and port
    In ``Forwarded``, the client hop's element says what the client used:
    RFC 7239 §4, "The first element in this list holds information added by the
    first proxy that implements and uses this header field, and each subsequent
    element holds information added by each subsequent proxy"; ``proto=`` and
    ``host=`` are taken from the client hop's element or, when it lacks them,
    from the nearest element to its right that has them (waitress's "oldest
    entry that contains the information").  ``by=`` and extensions are ignored.

    ``X-Forwarded-Proto/-Host/-Port`` are lists too when proxies append to
    them.  When one has as many elements as X-Forwarded-For, each proxy appended
    to both, and the element at the client hop's position is used (in
    ``https, http`` from an edge and an internal proxy, the client's
    ``https``); otherwise the rightmost element, the one our trusted peer wrote
    or passed on, is used (never the leftmost, which a client writes when a
    proxy appends to its value).  An invalid chosen element means that header
    is ignored.

    - The scheme (``http`` or ``https``, any case) sets ``wsgi.url_scheme``;
      anything else is ignored.
    - A forwarded host (``host[:port]``, :data:`wsgibridge.http.grammar.HOST`, a
      bracketed part must be an IPv6 address, a port 1-65535) replaces
      HTTP_HOST, and sets SERVER_NAME (IPv6 keeps its brackets, as a URL needs)
      and, when it has a port, SERVER_PORT.
    - X-Forwarded-Port (1*5DIGIT, 1-65535) sets SERVER_PORT, unless the
      forwarded host had an explicit port: the Host is what the client typed in
      its URL, the port header is only where the edge listened (the waitress
      order).  HTTP_HOST then gets that port, or loses its port when it is the
      scheme's default, so that a URL rebuilt from HTTP_HOST (PEP 3333) is
      right.
    - Otherwise, when the scheme or the host was forwarded, SERVER_PORT becomes
      the explicit port of the (new) HTTP_HOST, or the scheme's default port
      (80 or 443) when it has none, since a Host without a port means the
      default one (RFC 9110 §4.2).

What stays
    From a trusted peer every forwarding key stays in the environ, the
    application may want the chain.  From any other peer every key of
    :data:`FORWARDING_KEYS` is deleted: the ones read here and the ones of the
    same family read by common middleware and applications (X-Forwarded-By,
    -Prefix, -Server, -Scheme, -Ssl, X-Real-IP), which this module never
    interprets.  X-Forwarded-Prefix in particular is not turned into
    SCRIPT_NAME: the mount point is the server's ``--url-prefix``, and a header
    that changes routing is left to a middleware the application chooses.

The PROXY protocol line, which a TCP proxy sends ahead of the client's bytes
instead of adding headers, is :mod:`.proxy_protocol`'s; its addresses take
:func:`canonical_address`'s form.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from .grammar import HOST, OWS_STR, QUOTED_PAIR_STR, QUOTED_STRING_STR, TCHARS
from .trusted import IP_CHARS as _IP_CHARS
from .trusted import IPAddress, TrustedProxies, canonical_address

__all__ = [
    "FORWARDING_KEYS",
    "PROXY_PEER_KEY",
    "apply_forwarded",
    "parse_forwarded",
]

# Where the real peer goes when REMOTE_ADDR is rewritten (set for every trusted peer).
PROXY_PEER_KEY = "wsgibridge.proxy_peer"

_XFF = "HTTP_X_FORWARDED_FOR"
_XF_PROTO = "HTTP_X_FORWARDED_PROTO"
_XF_HOST = "HTTP_X_FORWARDED_HOST"
_XF_PORT = "HTTP_X_FORWARDED_PORT"
_FORWARDED = "HTTP_FORWARDED"
_X_FORWARDED_KEYS = (_XFF, _XF_PROTO, _XF_HOST, _XF_PORT)

# The keys read here, then the same family's keys only guarded (deleted from
# untrusted peers, never interpreted).
FORWARDING_KEYS: frozenset[str] = frozenset(
    {
        *_X_FORWARDED_KEYS,
        _FORWARDED,
        "HTTP_X_FORWARDED_BY",
        "HTTP_X_FORWARDED_PREFIX",
        "HTTP_X_FORWARDED_SERVER",
        "HTTP_X_FORWARDED_SCHEME",
        "HTTP_X_FORWARDED_SSL",
        "HTTP_X_REAL_IP",
    }
)

DEFAULT_PORTS = {"http": "80", "https": "443"}

# Address shapes, each spelled once; the ipaddress module then decides.  An
# IPv4 dotted quad (RFC 3986 §3.2.2 IPv4address; ipaddress refuses leading
# zeros), the characters of an IPv4 or IPv6 literal, a port (RFC 7239 §6:
# port = 1*5DIGIT), and RFC 7239 §6.3's obfuscated identifier (obfnode =
# "_" 1*( ALPHA / DIGIT / "." / "_" / "-" ), obfport the same).
_IPV4 = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
_PORT = r"[0-9]{1,5}"
_OBFUSCATED = r"_[A-Za-z0-9._-]+"

# --------------------------------------------------------------------------
# Addresses in forwarding headers
# --------------------------------------------------------------------------


class _Node(NamedTuple):
    """An address named in a forwarding header: canonical text, port ("" if unknown), parsed."""

    address: str
    port: str
    ip: IPAddress


def _client_port(digits: str | None) -> str | None:
    """A client port as REMOTE_PORT: "" when not given, None when out of range."""
    if digits is None:
        return ""
    value = int(digits)  # at most 5 digits, by the callers' regexes
    return str(value) if value <= 65535 else None


def _server_port(text: str) -> str | None:
    """RFC 3986 §3.2.3 port as a server port: 1*5DIGIT, 1-65535; None if not."""
    if not (0 < len(text) <= 5) or not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return str(value) if 0 < value <= 65535 else None


def _node_from(v4: str | None, v6: str | None, port: str | None) -> _Node | None:
    """The node for an IPv4 or IPv6 literal and optional port digits, None if invalid."""
    try:
        ip: IPAddress = (
            ipaddress.IPv4Address(v4) if v4 is not None else ipaddress.IPv6Address(v6 or "")
        )
    except ValueError:
        return None
    remote_port = _client_port(port)
    if remote_port is None:
        return None
    return _Node(canonical_address(ip), remote_port, ip)


# X-Forwarded-For has no specification; what proxies write is an IPv4 or IPv6
# address, sometimes with a port ("192.0.2.1:4711", "[2001:db8::1]:4711",
# Azure and IIS ARR).  Anything else, "unknown" included, is not an address.
_XFF_HOP = re.compile(
    rf"(?P<v4>{_IPV4})(?::(?P<v4port>{_PORT}))?"
    rf"|\[(?P<v6b>{_IP_CHARS})\](?::(?P<v6port>{_PORT}))?"
    r"|(?P<v6>[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)"
)


def _xff_node(element: str) -> _Node | None:
    """One X-Forwarded-For element as a node, None if it is not an address."""
    match = _XFF_HOP.fullmatch(element)
    if match is None:
        return None
    if match["v4"] is not None:
        return _node_from(match["v4"], None, match["v4port"])
    if match["v6b"] is not None:
        return _node_from(None, match["v6b"], match["v6port"])
    return _node_from(None, match["v6"], None)


# RFC 7239 §6:
#   node     = nodename [ ":" node-port ]
#   nodename = IPv4address / "[" IPv6address "]" / "unknown" / obfnode
#   obfnode  = "_" 1*( ALPHA / DIGIT / "." / "_" / "-")
#   node-port = port / obfport;  port = 1*5DIGIT;  obfport = "_" 1*(ALPHA / DIGIT / "." / "_" / "-")
# "It is important to note that an IPv6 address and any nodename with
# node-port specified MUST be quoted, since ":" is not an allowed character in
# "token"."  (Quoting is checked by the field parser; this sees the unquoted value.)
_FORWARDED_NODE = re.compile(
    rf"(?:(?P<v4>{_IPV4})|\[(?P<v6>{_IP_CHARS})\]"
    rf"|[Uu][Nn][Kk][Nn][Oo][Ww][Nn]|{_OBFUSCATED})"
    rf"(?::(?:(?P<port>{_PORT})|{_OBFUSCATED}))?"
)


def _forwarded_node(value: str | None) -> _Node | None:
    """A ``for=`` value as a node; None for "unknown", an obfuscated name, or anything invalid.

    RFC 7239 §6.2: "The "unknown" identifier is used when the identity of the
    preceding entity is not known"; an obfuscated port leaves REMOTE_PORT "".
    """
    if value is None:
        return None
    match = _FORWARDED_NODE.fullmatch(value)
    if match is None or (match["v4"] is None and match["v6"] is None):
        return None
    return _node_from(match["v4"], match["v6"], match["port"])


_Hop = TypeVar("_Hop")


def _walk(
    hops: Iterable[_Hop], node_of: Callable[[_Hop], _Node | None], trusted: TrustedProxies
) -> tuple[list[_Hop], _Node | None]:
    """(the hops read, the client hop last; the node REMOTE_ADDR becomes or None).

    ``hops`` come from the right; none left of the client hop is read.
    """
    walked: list[_Hop] = []
    nearest: _Node | None = None
    for hop in hops:
        walked.append(hop)
        node = node_of(hop)
        if node is None:
            # Not an address: the client is unknown; the nearest trusted hop
            # (or, for the rightmost, the peer) is as far as we can see.
            return walked, nearest
        if not trusted.trusts_hop(node.address, node.ip):
            return walked, node
        nearest = node
    # Every hop is a trusted proxy: the leftmost is where the request began.
    return walked, nearest


def _parse_host(text: str) -> tuple[str, str | None] | None:
    """(name, port or None) of a ``host[:port]`` (RFC 9110 §7.2), None if invalid.

    ``name`` keeps an IPv6 literal's brackets; an empty port (``host:``) is no port.
    """
    if not text or HOST.fullmatch(text) is None:
        return None
    if text[0] == "[":
        close = text.index("]")
        name, rest = text[: close + 1], text[close + 1 :]
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None  # IPvFuture and zone identifiers are not hosts we serve
        if "%" in name:
            return None
    else:
        name, colon, port_text = text.partition(":")
        rest = colon + port_text
        if not name:
            return None
    if rest in ("", ":"):
        return name, None
    port = _server_port(rest[1:])
    if port is None:
        return None
    return name, port


# --------------------------------------------------------------------------
# The Forwarded field (RFC 7239 §4)
# --------------------------------------------------------------------------

# RFC 7239 §4: value = token / quoted-string (grammar.TCHARS, QUOTED_STRING_STR).
# Where an element ends (the list's comma and OWS), and what may stand before
# a pair that does not start the value (a ";" between pairs, or the comma and
# OWS before an element).
_ELEMENT_END = frozenset("," + OWS_STR)
_BEFORE_PAIR = frozenset(";," + OWS_STR)


def _token_before(value: str, end: int) -> int:
    """Where the run of tchars ending at ``end`` starts (``end`` if there is none)."""
    start = end
    while start > 0 and value[start - 1] in TCHARS:
        start -= 1
    return start


def _ows_before(value: str, end: int) -> int:
    while end > 0 and value[end - 1] in OWS_STR:
        end -= 1
    return end


def _pair_before(value: str, end: int) -> tuple[str, str, int] | None:
    """(lower-case name, unquoted value, start) of the pair ending at ``end``; None if malformed."""
    if value[end - 1] == '"':
        # The opening quote is the nearest '"' to the left not escaped by an
        # odd run of backslashes (inside a valid quoted-string every '"' is);
        # the regex then checks the whole quoted-string.
        quote = end - 1
        while True:
            quote = value.rfind('"', 0, quote)
            if quote < 0:
                return None
            before = quote
            while before > 0 and value[before - 1] == "\\":
                before -= 1
            if (quote - before) % 2 == 0:
                break
        if QUOTED_STRING_STR.fullmatch(value, quote, end) is None:
            return None
        text = QUOTED_PAIR_STR.sub(r"\1", value[quote + 1 : end - 1])
        start = quote
    else:
        start = _token_before(value, end)
        if start == end:
            return None
        text = value[start:end]
    if start == 0 or value[start - 1] != "=":
        return None
    name_start = _token_before(value, start - 1)
    if name_start == start - 1:
        return None
    return value[name_start : start - 1].lower(), text, name_start


def _forwarded_from_right(value: str) -> Iterator[dict[str, str] | None]:
    """The elements of a Forwarded field value from the last one back; None where one is malformed.

    Nothing is read left of a malformed element, and nothing left of where the
    caller stops: a proxy appends its element to whatever the client sent, so
    the elements on the right parse however broken the client's part is.
    """
    end = len(value)
    while True:
        end = _ows_before(value, end)
        if end == 0:
            return
        if value[end - 1] == ",":
            end -= 1  # an empty list element (RFC 9110 §5.6.1)
            continue
        element: dict[str, str] = {}
        while end > 0:
            char = value[end - 1]
            if char == ";":
                end -= 1  # an empty pair, or the one before this one
                continue
            if char in _ELEMENT_END:
                break
            pair = _pair_before(value, end)
            if pair is None:
                yield None
                return
            name, text, end = pair
            if name in element or (end > 0 and value[end - 1] not in _BEFORE_PAIR):
                # RFC 7239 §4: "Each parameter MUST NOT occur more than once
                # per field-value. The parameter names are case-insensitive."
                # And two pairs need a ";" between them.
                yield None
                return
            element[name] = text
        # An element begins the value or follows OWS "," OWS; anything else
        # (whitespace around ";" included) is malformed.
        end = _ows_before(value, end)
        if end > 0 and value[end - 1] != ",":
            yield None
            return
        if element:
            yield element


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """The elements of a Forwarded field value, each {lower-case name: unquoted value}.

    None if the value is not exactly (RFC 7239 §4)::

        Forwarded   = 1#forwarded-element
        forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
        forwarded-pair = token "=" value
        value          = token / quoted-string

    with no whitespace around ``;`` or ``=``, OWS only around the commas of the
    list, whose empty elements are skipped (RFC 9110 §5.6.1), and no parameter
    twice in one element.  RFC 7239 §4: "Note that as ":" and "[]" are not valid
    characters in "token", IPv6 addresses are written as "quoted-string"."
    """
    elements: list[dict[str, str]] = []
    for element in _forwarded_from_right(value):
        if element is None:
            return None
        elements.append(element)
    elements.reverse()
    return elements


# --------------------------------------------------------------------------
# Applying what was believed
# --------------------------------------------------------------------------


@dataclass
class _Claims:
    """What the believed headers say; None where they say nothing usable."""

    client: _Node | None = None
    scheme: str | None = None
    host: str | None = None
    port: str | None = None


def _field(environ: Mapping[str, Any], key: str) -> str | None:
    """The value of a forwarding key, None if absent, empty or not a str."""
    value = environ.get(key)
    if not isinstance(value, str):
        return None
    value = value.strip(OWS_STR)
    return value or None


def _list(value: str) -> list[str]:
    """The non-empty elements of a comma-separated list (RFC 9110 §5.6.1)."""
    return [item for item in (raw.strip(OWS_STR) for raw in value.split(",")) if item]


def _scheme(text: str) -> str | None:
    lower = text.lower()
    return lower if lower in DEFAULT_PORTS else None


def _from_forwarded(value: str, trusted: TrustedProxies) -> _Claims:
    walked, client = _walk(
        _forwarded_from_right(value),
        lambda element: None if element is None else _forwarded_node(element.get("for")),
        trusted,
    )
    claims = _Claims(client=client)
    # From the client hop's element rightwards, the first that has the
    # parameter: all of these were written by trusted proxies.
    believed = [element for element in reversed(walked) if element is not None]
    proto = next((e["proto"] for e in believed if "proto" in e), None)
    if proto is not None:
        # RFC 7239 §5.4: "The syntax of a "proto" value, after potential
        # quoted-string unescaping, MUST conform to the URI scheme name".
        claims.scheme = _scheme(proto)
    host = next((e["host"] for e in believed if "host" in e), None)
    # RFC 7239 §5.3: "The syntax for a "host" value, after potential
    # quoted-string unescaping, MUST conform to the Host ABNF".
    if host is not None and _parse_host(host) is not None:
        claims.host = host
    return claims


def _from_x_forwarded(environ: Mapping[str, Any], trusted: TrustedProxies) -> _Claims:
    claims = _Claims()
    hops: list[str] = []
    index = -1
    xff = _field(environ, _XFF)
    if xff is not None:
        hops = _list(xff)
        if hops:
            walked, claims.client = _walk(reversed(hops), _xff_node, trusted)
            index = len(hops) - len(walked)

    def pick(key: str) -> str | None:
        value = _field(environ, key)
        if value is None:
            return None
        items = _list(value)
        if not items:
            return None
        # Appended alongside X-Forwarded-For: the client hop's element; else
        # the rightmost, which our trusted peer wrote or passed on.
        return items[index] if index >= 0 and len(items) == len(hops) else items[-1]

    proto = pick(_XF_PROTO)
    if proto is not None:
        claims.scheme = _scheme(proto)
    host = pick(_XF_HOST)
    if host is not None and _parse_host(host) is not None:
        claims.host = host
    port = pick(_XF_PORT)
    if port is not None:
        claims.port = _server_port(port)
    return claims


def _apply(environ: dict[str, Any], claims: _Claims) -> None:
    if claims.client is not None:
        environ["REMOTE_ADDR"] = claims.client.address
        environ["REMOTE_PORT"] = claims.client.port
    if claims.scheme is not None:
        environ["wsgi.url_scheme"] = claims.scheme
    scheme = environ.get("wsgi.url_scheme")
    default_port = DEFAULT_PORTS.get(scheme) if isinstance(scheme, str) else None
    host_port: str | None = None
    parsed = _parse_host(claims.host) if claims.host is not None else None
    if parsed is not None:  # a claimed host was validated: parsed is None only without one
        environ["HTTP_HOST"] = claims.host
        environ["SERVER_NAME"], host_port = parsed
    if host_port is not None:
        environ["SERVER_PORT"] = host_port
        return
    if claims.port is not None:
        environ["SERVER_PORT"] = claims.port
        current = environ.get("HTTP_HOST")
        parsed = _parse_host(current) if isinstance(current, str) else None
        if parsed is not None:
            name = parsed[0]
            environ["HTTP_HOST"] = name if claims.port == default_port else f"{name}:{claims.port}"
        return
    if claims.scheme is not None or claims.host is not None:
        # RFC 9110 §4.2.1: "If the port subcomponent is empty or not given, TCP
        # port 80 (the reserved port for WWW services) is the default"; §4.2.2:
        # "... TCP port 443 is the default" for https.
        current = environ.get("HTTP_HOST")
        parsed = _parse_host(current) if isinstance(current, str) else None
        if parsed is not None and parsed[1] is not None:
            environ["SERVER_PORT"] = parsed[1]
        elif default_port is not None:
            environ["SERVER_PORT"] = default_port


def apply_forwarded(environ: dict[str, Any], trusted: TrustedProxies) -> None:
    """Rewrite the environ from forwarding headers when REMOTE_ADDR is trusted; otherwise
    delete every FORWARDING_KEYS entry from the environ so the app can never be fooled."""
    peer = environ.get("REMOTE_ADDR", "")
    present = not FORWARDING_KEYS.isdisjoint(environ)  # the common case: none at all
    if not isinstance(peer, str) or peer not in trusted:
        if present:
            for key in FORWARDING_KEYS:
                environ.pop(key, None)
        return
    environ[PROXY_PEER_KEY] = peer
    if not present:
        return
    if any(_field(environ, key) is not None for key in _X_FORWARDED_KEYS):
        # X-Forwarded-* is what every common proxy sets: a Forwarded field
        # beside it was passed through from the client.
        _apply(environ, _from_x_forwarded(environ, trusted))
        return
    forwarded = _field(environ, _FORWARDED)
    if forwarded is not None:
        _apply(environ, _from_forwarded(forwarded, trusted))
