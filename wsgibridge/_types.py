"""The WSGI vocabulary (PEP 3333) as type aliases, shared by the package and its tests.

Nothing here but names for the shapes PEP 3333 defines: the environ, the
``start_response`` callable, ``exc_info`` and the application itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

# PEP 3333: "The environ parameter is a dictionary object, containing CGI-style
# environment variables" (plus the wsgi.* keys and server extensions).
Environ = dict[str, Any]
# The exc_info argument of start_response, as sys.exc_info() returns it.
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
OptExcInfo = ExcInfo | tuple[None, None, None]
# start_response(status, response_headers, exc_info=None) -> write(bytes)
StartResponse = Callable[..., Callable[[bytes], object]]
# application(environ, start_response) -> an iterable of bytestrings
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

__all__ = ["Environ", "ExcInfo", "OptExcInfo", "StartResponse", "WSGIApp"]
