"""Building the PEP 3333 environ from a parsed request: pure, no I/O.

Rule: every value that is not a ``wsgi.*`` key is a native ``str``; bytes that
came off the wire are carried as latin-1 code points ("bytes as latin-1",
PEP 3333 "Unicode Issues").  The process environment is never copied in.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO
from urllib.parse import unquote

from .body import InputStream
from .filewrapper import FileWrapper

WSGI_VERSION = (1, 0)

# Header name -> environ key, filled lazily; None marks a name that is dropped.
_KEY_CACHE: dict[str, str | None] = {}
_KEY_CACHE_MAX = 512


def environ_key(name: str) -> str | None:
    """The environ key for a request header name, or None if it must be dropped.

    Names containing ``_`` are dropped: ``X_Forwarded_For`` and
    ``X-Forwarded-For`` would both become ``HTTP_X_FORWARDED_FOR``, letting a
    client pose as a trusted proxy's header (PEP 3333 leaves the mapping to CGI,
    which cannot tell them apart).
    """
    try:
        return _KEY_CACHE[name]
    except KeyError:
        pass
    if "_" in name:
        key = None
    else:
        upper = name.upper().replace("-", "_")
        key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[name] = key
    return key


def split_target(target: str) -> tuple[str, str]:
    """Split a request-target into (path, query); absolute-form loses its authority.

    RFC 9112 §3.2: origin-form ``/path?query``, absolute-form
    ``http://host/path?query``, asterisk-form ``*`` (OPTIONS only).
    """
    if not target.startswith("/") and "://" in target:
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        question = rest.find("?")
        if slash == -1 or (question != -1 and question < slash):
            target = "/" + rest[question:] if question != -1 else "/"
        else:
            target = rest[slash:]
    path, _, query = target.partition("?")
    # The parser refuses a target with a "#" (RFC 9112 §3.2: no fragment), so
    # a request it parsed never has one here; a caller that builds an environ
    # from a target of its own may, and a fragment is never path or query.
    if "#" in query:
        query = query.split("#", 1)[0]
    elif "#" in path:
        path = path.split("#", 1)[0]
    return path, query


def decode_path(path: str) -> str:
    """Percent-decode a path to latin-1 code points (``/caf%C3%A9`` -> ``/cafÃ©``)."""
    if "%" not in path:
        return path
    return unquote(path, encoding="latin-1")


def build_environ(
    *,
    method: str,
    target: str,
    version: str,
    headers: Iterable[tuple[str, str]],
    body: InputStream,
    content_length: str | None,
    server_name: str,
    server_port: str,
    remote_addr: str,
    remote_port: str,
    script_name: str = "",
    url_scheme: str = "http",
    multithread: bool = True,
    multiprocess: bool = False,
    errors: TextIO | None = None,
) -> dict[str, Any]:
    """The environ for one request.

    ``content_length`` is the validated body length to publish (None for no
    body or a chunked body); ``headers`` are (name, value) pairs in the order
    received, repeated names allowed.
    """
    path, query = split_target(target)
    if script_name:
        # The mount point is matched on the raw path, at a segment boundary, so
        # that "/app%2Fx" (one segment "app/x") and "/apple" are not under "/app".
        # Outside the mount, SCRIPT_NAME is "" and the handler answers 404.
        if path == script_name or path.startswith(script_name + "/"):
            path = path[len(script_name) :]
            script_name = decode_path(script_name)
        else:
            script_name = ""
    path_info = decode_path(path)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "REQUEST_URI": target,
        "RAW_URI": target,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": version,
        "REMOTE_ADDR": remote_addr,
        "REMOTE_PORT": remote_port,
        "wsgi.version": WSGI_VERSION,
        "wsgi.url_scheme": url_scheme,
        "wsgi.input": body,
        "wsgi.errors": errors if errors is not None else sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": multiprocess,
        "wsgi.run_once": False,
        # wsgi.input always ends at the end of this request's body, so an app may
        # read to end-of-file (the mod_wsgi/gunicorn extension).
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
    for name, value in headers:
        key = environ_key(name)
        if key is None:
            continue
        if key == "CONTENT_LENGTH":
            continue  # published from the validated framing below
        if key in environ:
            # RFC 9110 §5.3: repeated fields combine into one comma-separated
            # list, in order; RFC 6265 §5.4: cookie pairs are joined with "; ".
            environ[key] += "; " + value if key == "HTTP_COOKIE" else "," + value
        else:
            environ[key] = value
    if content_length is not None:
        environ["CONTENT_LENGTH"] = content_length
    return environ
