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


def test_compiled_says_which_build_runs() -> None:
    """``wsgibridge.compiled``: True in the mypyc-compiled build, False in the pure one
    (which modules are compiled is checked in tests/test_compiled.py)."""
    assert wsgibridge.compiled is True or wsgibridge.compiled is False


def test_handler_is_a_base_http_request_handler_without_getattr() -> None:
    from http.server import BaseHTTPRequestHandler

    assert issubclass(wsgibridge.WSGIRequestHandler, BaseHTTPRequestHandler)
    assert wsgibridge.WSGIRequestHandler.protocol_version == "HTTP/1.1"
    assert "__getattr__" not in vars(wsgibridge.WSGIRequestHandler)


def test_the_public_sub_packages_keep_their_names() -> None:
    """``wsgibridge.lint`` and ``wsgibridge.testing`` are public too: their ``__all__`` is
    what users import, and every name in it exists."""
    import wsgibridge.lint as lint
    import wsgibridge.testing as testing

    assert set(lint.__all__) == {
        "RULES",
        "LintMiddleware",
        "LintViolation",
        "Rule",
        "WSGILintWarning",
        "default_report",
        "log_report",
    }
    assert set(testing.__all__) >= {"RecordedRequest", "RequestLog", "StopableWSGIServer"}
    for module in (lint, testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
