"""Request ids: which incoming value is kept, and a new one when it is not.

Rule: a request's id is the value of the configured header (``X-Request-ID``
as a rule) when the peer is trusted (``--forwarded-allow-ips``, decided as
for the forwarding headers) and the value is well formed; otherwise a new
random one.  Well formed is 1 to :data:`MAX_LENGTH` visible ASCII characters
(VCHAR, 0x21-0x7E: RFC 5234 Appendix B.1, "visible (printing) characters"),
so a kept id has no space, no control character, no byte above 0x7E, and
cannot end a quoted log field or a header line.  A field sent twice is not
kept either: which of the two would be the proxy's?  A new id is 128 random bits
from ``os.urandom`` as 32 lowercase hex digits (as unguessable as a version 4
UUID, which has 122).

Values in, values out: the handler passes the request's fields and the
trust it decided, and puts the result in the environ and the response.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from .grammar import TCHARS

__all__ = [
    "ENVIRON_KEY",
    "MAX_LENGTH",
    "check_header_name",
    "choose_request_id",
    "echo_request_id",
    "new_request_id",
]

ENVIRON_KEY = "wsgibridge.request_id"
MAX_LENGTH = 200

_WELL_FORMED = re.compile(f"[\\x21-\\x7e]{{1,{MAX_LENGTH}}}")

# Fields that already mean something to the server or the framing: an id there
# would change the request or the response.
_RESERVED = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "date",
        "expect",
        "host",
        "keep-alive",
        "proxy-connection",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def new_request_id() -> str:
    """128 random bits as 32 lowercase hex digits."""
    # os.urandom directly: secrets.token_hex(16) is the same call behind two
    # more (0.64 us against 0.49 us here), uuid.uuid4().hex 2.2 us.
    return os.urandom(16).hex()


def choose_request_id(headers: Sequence[tuple[str, str]], key: str, trusted: bool) -> str:
    """The request's id: the one field named ``key`` (lower case) of ``headers`` when
    ``trusted`` and well formed, else a new one."""
    if trusted:
        incoming: str | None = None
        for name, value in headers:
            if len(name) == len(key) and name.lower() == key:
                if incoming is not None:
                    return new_request_id()  # sent twice
                incoming = value
        if incoming is not None and _WELL_FORMED.fullmatch(incoming) is not None:
            return incoming
    return new_request_id()


def echo_request_id(headers: list[tuple[str, str]], name: str, key: str, request_id: str) -> None:
    """Append ``(name, request_id)`` to a response's ``headers`` unless a field ``key``
    (``name`` in lower case) is there already - the app's own - or there is no id."""
    if not request_id:
        return
    for field_name, _ in headers:
        if len(field_name) == len(key) and field_name.lower() == key:
            return
    headers.append((name, request_id))


def check_header_name(name: str) -> str:
    """``name`` if it can carry request ids, else ``ValueError`` saying why."""
    if not name or not TCHARS.issuperset(name):
        raise ValueError(f"request_id_header must be a header name (a token), not {name!r}")
    if "_" in name:
        # The environ drops such fields (an underscore could pose as a dash).
        raise ValueError(f"request_id_header {name!r}: a header name with '_' never reaches an app")
    if name.lower() in _RESERVED:
        raise ValueError(f"request_id_header {name!r} is a field the server itself reads or sets")
    return name
