"""For users' test suites: a WebTest drop-in, recorded requests, the pytest plugin.

Rule: test tooling over a real server; nothing in the server imports it.
``wsgibridge.testing.StopableWSGIServer`` replaces WebTest's (and the module
``webtest.http`` whole, with ``check_server`` and ``get_free_port``); the
pytest plugin (``wsgibridge.testing.plugin``, registered as ``wsgibridge``)
records each request as a :class:`RecordedRequest`, misbehaves as its
:class:`Faults` say, and hands out :class:`RawClient` connections.
"""

from .faults import MALFORMED_STATUS, Fault, Faults
from .rawclient import RawClient, RawResponse
from .requestlog import RecordedRequest, RequestLog
from .webtest import WAITRESS_OPTIONS, StopableWSGIServer, check_server, get_free_port

__all__ = [
    "MALFORMED_STATUS",
    "WAITRESS_OPTIONS",
    "Fault",
    "Faults",
    "RawClient",
    "RawResponse",
    "RecordedRequest",
    "RequestLog",
    "StopableWSGIServer",
    "check_server",
    "get_free_port",
]
