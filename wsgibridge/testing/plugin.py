"""The pytest plugin: live wsgibridge servers as fixtures (registered via ``pytest11``).

Installing wsgibridge is enough; ``-p no:wsgibridge`` turns the plugin off
(for instance beside pytest-flask, which also defines a ``live_server``).
pytest-django, when installed, claims every test using a fixture named
``live_server`` - this one too - and skips it without Django settings:
``-p no:django`` where Django is not used; in a Django project, a conftest
fixture puts pytest-django's own ``live_server`` on wsgibridge
(``wsgibridge.testing.django``).

* ``wsgi_server(app, **options)`` - a factory: each call starts a server on
  127.0.0.1, port 0, and returns it (``.url``, ``.host``, ``.port``,
  ``.requests``); all are stopped when the test ends.  ``https=True`` serves
  HTTPS with a throwaway certificate (needs ``trustme``; ``.ca_file`` is the
  CA to verify it with).  ``record_body_limit`` (64 KiB) caps the request
  bodies recorded; other options are :class:`~wsgibridge.Config` fields.
  ``server.faults`` makes it misbehave on its side of the wire
  (:class:`~wsgibridge.testing.Faults`: delays, slow or stopped reading,
  cuts, malformed status lines and framing, refused connections), cleared
  when the test ends.
* ``raw_client(server)`` - a :class:`~wsgibridge.testing.RawClient`: raw
  bytes out, responses parsed only when asked; closed when the test ends.
* ``live_server`` / ``live_server_https`` - one server for the ``wsgi_app``
  fixture you define.

Every server checks the app against PEP 3333 as it runs (``lint=False``
turns that off): a mistake the app or a middleware makes fails the test,
with the request, the rule broken and how to fix it.

Importing this module has no side effects beyond defining the fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .._types import WSGIApp
from .liveserver import LiveServer
from .liveserver import lint_report as _lint_report
from .rawclient import TIMEOUT, RawClient

Factory = Callable[..., "LiveServer"]


def _tls_files(directory: Path) -> tuple[str, str]:
    """A throwaway CA and a certificate for 127.0.0.1/localhost/::1: (ca.pem, server.pem)."""
    trustme = pytest.importorskip("trustme", reason="https=True needs trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
    ca_file = directory / "ca.pem"
    server_file = directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_and_cert_chain_pem.write_to_path(str(server_file))
    return str(ca_file), str(server_file)


_SERVERS = pytest.StashKey[list[LiveServer]]()
_REPORTED = pytest.StashKey[int]()  # violations already failed the test body


@pytest.fixture
def wsgi_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """``wsgi_server(app, *, https=False, lint=True, **options)``: a running live server."""
    servers: list[LiveServer] = []
    request.node.stash[_SERVERS] = servers

    def start(app: WSGIApp, *, https: bool = False, **options: Any) -> LiveServer:
        ca_file = None
        if https:
            ca_file, server_file = _tls_files(tmp_path)
            options.setdefault("certfile", server_file)
        options.setdefault("graceful_timeout", 2.0)
        server = LiveServer(app, **options)
        server.ca_file = ca_file
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()
        if server.lint is not None:
            server.lint.check_closed()  # iterables the server never closed
    # Mistakes found after the test body ran (a close() at the very end …).
    report = _lint_report(servers, skip=request.node.stash.get(_REPORTED, 0))
    if report:
        pytest.fail(report, pytrace=False)


RawClientFactory = Callable[..., RawClient]


@pytest.fixture
def raw_client() -> Iterator[RawClientFactory]:
    """``raw_client(server, timeout=5.0)``: a :class:`RawClient` connected to a live server
    (anything with ``.host`` and ``.port``); all are closed when the test ends."""
    clients: list[RawClient] = []

    def connect(server: Any, *, timeout: float = TIMEOUT) -> RawClient:
        client = RawClient(server.host, server.port, timeout=timeout)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def live_server(wsgi_server: Factory, request: pytest.FixtureRequest) -> LiveServer:
    """A live server for your ``wsgi_app`` fixture."""
    return wsgi_server(_wsgi_app(request))


@pytest.fixture
def live_server_https(wsgi_server: Factory, request: pytest.FixtureRequest) -> LiveServer:
    """``live_server`` over HTTPS with a throwaway certificate (verify with ``.ca_file``)."""
    return wsgi_server(_wsgi_app(request), https=True)


def _wsgi_app(request: pytest.FixtureRequest) -> WSGIApp:
    try:
        app: WSGIApp = request.getfixturevalue("wsgi_app")
    except pytest.FixtureLookupError:
        pytest.fail(
            "live_server serves your app: define a `wsgi_app` fixture that returns it",
            pytrace=False,
        )
    return app


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail the test itself when the lint found a mistake while it ran."""
    result = yield
    servers = item.stash.get(_SERVERS, [])
    report = _lint_report(servers)
    if report:
        item.stash[_REPORTED] = sum(len(server.lint_violations) for server in servers)
        pytest.fail(report, pytrace=False)
    return result
