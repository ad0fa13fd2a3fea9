"""wsgibridge: a strict, keep-alive WSGI server on the standard library's ``http.server``.

The public API is exactly ``__all__``; everything else is internal.
"""

from ._mypyc import compiled
from ._version import __version__
from .accesslog import AccessRecord
from .config import Config
from .errors import (
    AppError,
    BadRequest,
    ClientDisconnected,
    ConfigError,
    HTTPError,
    ResponseHeaderError,
    WSGIBridgeError,
)
from .http.filewrapper import FileWrapper
from .http.response import ResponseWriter
from .serving.background import BackgroundServer, serve_in_thread
from .serving.handler import WSGIRequestHandler
from .serving.run import serve
from .serving.server import WSGIServer, make_server

__all__ = [
    "AccessRecord",
    "AppError",
    "BackgroundServer",
    "BadRequest",
    "ClientDisconnected",
    "Config",
    "ConfigError",
    "FileWrapper",
    "HTTPError",
    "ResponseHeaderError",
    "ResponseWriter",
    "WSGIBridgeError",
    "WSGIRequestHandler",
    "WSGIServer",
    "__version__",
    "compiled",
    "make_server",
    "serve",
    "serve_in_thread",
]
