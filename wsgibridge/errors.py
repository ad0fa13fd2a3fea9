"""The exceptions wsgibridge raises, each carrying the HTTP status it maps to.

::

    WSGIBridgeError
     ├── HTTPError                  the peer broke HTTP; ``status`` says how to answer
     │    ├── BadRequest            400
     │    │    └── IncompleteMessage    the connection closed mid-line
     │    ├── NotFound              404
     │    ├── MethodNotAllowed      405
     │    ├── PayloadTooLarge       413
     │    ├── RequestTimeout        408
     │    ├── URITooLong            414
     │    ├── HeaderFieldsTooLarge  431
     │    ├── ExpectationFailed     417
     │    ├── NotImplementedByServer 501
     │    └── VersionNotSupported   505
     ├── ClientDisconnected         the client went away (also a ConnectionError)
     ├── ConfigError                a setting that cannot be used (also a ValueError)
     │    └── ConfigSourceError     one from a config file, the environment or the command line
     └── AppError                   the application broke PEP 3333 (answered with 500)
          └── ResponseHeaderError   a status line or header the server refuses to send

The server turns these into responses (``serving/handler.py``, with
``http/response.py``'s one error builder); it reads ``status`` rather
than keeping a table of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus


class WSGIBridgeError(Exception):
    """Base class of every exception raised by wsgibridge."""


class HTTPError(WSGIBridgeError):
    """A request the server refuses; ``status`` is the response to send."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(
        self,
        reason: str,
        *,
        status: int | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        if status is not None:
            self.status = HTTPStatus(status)
        # Extra response fields, e.g. WWW-Authenticate on a 401 raised by a hook.
        self.headers = list(headers)
        # The raw request line and its method, when they were read before the
        # error (for the logs, and so that a refused HEAD gets no body).
        self.request_line = b""
        self.method = ""


class BadRequest(HTTPError):
    status = HTTPStatus.BAD_REQUEST


class IncompleteMessage(BadRequest):
    """The connection closed in the middle of a request line, field line or chunk line."""


class NotFound(HTTPError):
    """No static file by that name (``--static``): the name is refused or names no file."""

    status = HTTPStatus.NOT_FOUND


class MethodNotAllowed(HTTPError):
    """A method other than GET or HEAD on a static file; ``headers`` carry ``Allow``."""

    status = HTTPStatus.METHOD_NOT_ALLOWED


class PayloadTooLarge(HTTPError):
    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class RequestTimeout(HTTPError):
    """The client stopped sending in the middle of a request."""

    status = HTTPStatus.REQUEST_TIMEOUT


class URITooLong(HTTPError):
    status = HTTPStatus.REQUEST_URI_TOO_LONG


class HeaderFieldsTooLarge(HTTPError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class ExpectationFailed(HTTPError):
    status = HTTPStatus.EXPECTATION_FAILED


class NotImplementedByServer(HTTPError):
    status = HTTPStatus.NOT_IMPLEMENTED


class VersionNotSupported(HTTPError):
    status = HTTPStatus.HTTP_VERSION_NOT_SUPPORTED


class ClientDisconnected(WSGIBridgeError, ConnectionError):
    """The client closed the connection before the request body was complete."""


class ConfigError(WSGIBridgeError, ValueError):
    """A setting names something that cannot be used: a certificate, a key, a file.

    Raised when the server is made, before it listens; the command line
    reports it as one line and exits 2.
    """


class ConfigSourceError(ConfigError):
    """A setting from a config file, an environment variable or the command line is refused.

    The text is the whole line to show, starting with where the setting came
    from (``/etc/app.toml: key 'threads': must be an integer, not "8"``);
    ``source`` is that file's path or that variable's name, empty for the
    command line (whose own errors name the option instead).
    """

    def __init__(self, message: str, *, source: str = "") -> None:
        super().__init__(message)
        self.source = source


class AppError(WSGIBridgeError):
    """The WSGI application broke the PEP 3333 contract."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR


class ResponseHeaderError(AppError, ValueError):
    """The application gave a status or header that must not be sent."""
