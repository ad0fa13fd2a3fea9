"""Two real WSGI middlewares, the kind a project writes and must test over a socket.

* :class:`BearerAuth` refuses requests without the right ``Authorization:
  Bearer`` token (401 with ``WWW-Authenticate``, RFC 6750 §3), before the app
  runs and without reading the body.
* :class:`Gzip` compresses responses for clients that accept it: it drops
  the app's Content-Length (the length changes), adds ``Vary:
  Accept-Encoding``, streams the compressed body chunk by chunk and calls the
  app iterable's ``close()`` - the mistakes such middlewares usually make, and
  that wsgibridge's lint mode reports.

``examples/test_middleware.py`` tests both through the pytest plugin, with
``requests`` and with WebTest.
"""

from __future__ import annotations

import hmac
import sys
import zlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment
    else:
        from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class BearerAuth:
    """Let a request through only with ``Authorization: Bearer <token>``."""

    def __init__(self, app: WSGIApplication, token: str, realm: str = "api") -> None:
        self.app = app
        self.token = token.encode()
        self.realm = realm

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        scheme, _, credentials = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credentials.strip().encode("latin-1"), self.token
        ):
            return self.app(environ, start_response)
        body = b"401 Unauthorized\n"
        start_response(
            "401 Unauthorized",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("WWW-Authenticate", f'Bearer realm="{self.realm}"'),
            ],
        )
        return [body]


class Gzip:
    """Compress bodies with gzip for clients that say ``Accept-Encoding: gzip``."""

    def __init__(self, app: WSGIApplication, level: int = 6) -> None:
        self.app = app
        self.level = level

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        accepts = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "").lower()
        compress = [False]

        def gzip_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: object = None
        ) -> object:
            names = {name.lower() for name, _ in headers}
            code = int(status[:3])
            compress[0] = (
                accepts
                and "content-encoding" not in names
                and code not in (204, 304)
                and environ.get("REQUEST_METHOD") != "HEAD"
            )
            if compress[0]:
                headers = [(n, v) for n, v in headers if n.lower() != "content-length"]
                headers += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
            return start_response(status, headers, exc_info)  # type: ignore[arg-type]

        result = self.app(environ, gzip_start_response)  # type: ignore[arg-type]
        return self._body(result, compress)

    def _body(self, result: Iterable[bytes], compress: list[bool]) -> Iterator[bytes]:
        # A generator: start_response may be called lazily, on the first chunk.
        compressor = zlib.compressobj(self.level, zlib.DEFLATED, 31)  # 31: gzip container
        try:
            for chunk in result:
                if not compress[0]:
                    yield chunk
                    continue
                # PEP 3333: "a middleware component must yield at least one value
                # each time its underlying application yields a value" - even
                # when the compressor has nothing to give yet.
                yield compressor.compress(chunk)
            if compress[0]:
                yield compressor.flush()
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()  # PEP 3333: the middleware must pass close() on
