"""The smallest useful WSGI application: ``Hello, World!`` in plain text.

Run it from the project root with either of::

    wsgibridge examples.hello:app
    python -m wsgibridge examples.hello:app

then open http://127.0.0.1:8000/ (``--port`` and ``--host`` change where it listens).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from wsgiref.types import StartResponse, WSGIEnvironment
    else:  # wsgiref.types is new in 3.11; typeshed has the same types for 3.10
        from _typeshed.wsgi import StartResponse, WSGIEnvironment

BODY = b"Hello, World!\n"


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Answer every request with the same short plain-text greeting."""
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(BODY))),
        ],
    )
    return [BODY]
