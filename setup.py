"""The optional compiled build: ``WSGIBRIDGE_COMPILE=1 pip install .`` compiles MODULES with mypyc.

Everything else about the project is in pyproject.toml. Without the variable
(or with any other value) this is a plain setuptools build and the wheel is
pure Python; with it, the same sources are compiled to C extension modules
(the ``.py`` files still ship beside them) and ``wsgibridge.compiled`` is
True. mypy (which contains mypyc) is then a build requirement, added by the
in-tree backend (build_backend/wsgibridge_build.py); a C compiler is the only
other need. The compiled wheel has no runtime dependency either.
"""

from __future__ import annotations

import os

from setuptools import setup

# What is compiled: the HTTP layer, and the serving modules on a connection's
# way between the reactor and its handler. Every module not listed stays
# interpreted (the CLI, config, errors, lint/, testing/, and the serving
# modules that run once per process or per connection: binds, listen, tls,
# reactor, server, run, prefork, workerprocess, reloader, background,
# accesssink, and process and watchdog, which no request calls), importing these.
MODULES = [
    "wsgibridge/_mypyc.py",
    "wsgibridge/http/__init__.py",
    "wsgibridge/http/body.py",
    "wsgibridge/http/environ.py",
    "wsgibridge/http/filewrapper.py",
    "wsgibridge/http/forwarded.py",
    "wsgibridge/http/grammar.py",
    "wsgibridge/http/parser.py",
    "wsgibridge/http/proxy_protocol.py",
    "wsgibridge/http/reader.py",
    "wsgibridge/http/requestid.py",
    "wsgibridge/http/response.py",
    "wsgibridge/http/static.py",
    "wsgibridge/http/trusted.py",
    "wsgibridge/serving/connection.py",
    "wsgibridge/serving/pool.py",
    "wsgibridge/serving/readiness.py",
]

# Modules on every request's path left interpreted on purpose, each with its reason.
EXCLUDED = {
    "wsgibridge/accesslog.py": "a native AccessRecord is slower to build from the "
    "interpreted handler, and a slots=True dataclass subclass of it hides its fields",
    "wsgibridge/serving/exchange.py": "ExchangeLogging, the handler's mixin, would make "
    "command, requestline... typed slots (http.server sets None there); non-native is refused",
    "wsgibridge/serving/handler.py": "subclasses BaseHTTPRequestHandler, so it could only be "
    "non-native, and mypyc crashes on the closure in its run_wsgi",
    "wsgibridge/serving/stream.py": "ConnectionStream, the handler's mixin, would turn the "
    "handler's attributes (rfile, connection...) into typed slots, for no measured gain",
    "wsgibridge/serving/staticfiles.py": "on a request's path only with --static (off by "
    "default), and its time goes to realpath, open and sendfile, not to Python",
    "wsgibridge/metrics.py": "counts a request only with --metrics-bind (off by default); "
    "about 1 us per request interpreted, not yet measured compiled",
    "wsgibridge/serving/metrics.py": "on a request's path only with --metrics-bind (off by "
    "default): a threading.local lookup before the pure Recorder",
}


def compiling() -> bool:
    """WSGIBRIDGE_COMPILE=1 asks for the compiled build (the backend reads the same variable)."""
    return os.environ.get("WSGIBRIDGE_COMPILE") == "1"


if compiling():
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # only without build isolation: the backend asks for mypy
        raise SystemExit(
            "WSGIBRIDGE_COMPILE=1 needs mypy (it contains mypyc) in the build environment"
        ) from exc
    setup(ext_modules=mypycify(MODULES, opt_level="3", group_name="wsgibridge"))
else:
    setup()
