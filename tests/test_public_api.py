"""The public API is exactly __all__ (httpx's test_exported_members idea)."""

from __future__ import annotations

from types import ModuleType

import pytest

import wsgibridge

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group


def test_all_is_sorted_and_complete() -> None:
    """Every public name of the package is in __all__ (submodules aside), and only those."""
    public = {name for name in dir(wsgibridge) if not name.startswith("_")}
    modules = {name for name in public if isinstance(getattr(wsgibridge, name), ModuleType)}
    assert set(wsgibridge.__all__) - {"__version__"} == public - modules
    assert wsgibridge.__all__ == sorted(wsgibridge.__all__)


def test_handler_is_a_base_http_request_handler_without_getattr() -> None:
    from http.server import BaseHTTPRequestHandler

    assert issubclass(wsgibridge.WSGIRequestHandler, BaseHTTPRequestHandler)
    assert wsgibridge.WSGIRequestHandler.protocol_version == "HTTP/1.1"
    assert "__getattr__" not in vars(wsgibridge.WSGIRequestHandler)
