"""SIGHUP re-reads the TLS certificate: ``python -m wsgibridge --certfile …`` in a subprocess,
one process and ``--workers 2``.

The certificate files are replaced on disk (certificate A, then B, from two CAs), the
server gets a real SIGHUP, and new TLS clients check which certificate they were shown;
a keep-alive connection opened before the signal is still answered.  A broken file is
one log line, once (in the arbiter with workers), and the last good certificate serves
on - in the workers a reload forks too.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..test_serving_processes import Launcher, ServerProcess, children_of, needs_proc
from .prefork_helpers import launcher_in, matching, tcp, wait_until
from .tls_helpers import Rotation, TLSClient, break_files, make_rotation, served_certificate

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # real processes and signals

REREAD = "TLS: new connections use the certificate re-read from"
FAILED = "TLS reload failed, the certificate in use is kept: "


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    yield from launcher_in(tmp_path)


@pytest.fixture
def rotation(tmp_path: Path) -> Rotation:
    return make_rotation(tmp_path)


def start(launch: Launcher, rotation: Rotation, *options: str) -> ServerProcess:
    return launch.start(
        "--port",
        "0",
        "--certfile",
        str(rotation.cert_file),
        "--keyfile",
        str(rotation.key_file),
        "--no-access-log",
        *options,
        app="verapp:app",
    )


def test_sighup_to_one_process_re_reads_the_certificate(
    launch: Launcher, rotation: Rotation
) -> None:
    server = start(launch, rotation)
    address = tcp(server.serving()[0])
    with TLSClient(address, rotation.client) as before:
        assert before.get() == 200
        assert rotation.which(before.der) == "A"

        rotation.install(rotation.new)
        server.send(signal.SIGHUP)
        server.wait_for(REREAD)
        assert served_certificate(rotation, address) == "B"
        assert before.get() == 200  # opened before the reload, on certificate A

        named, reason = break_files(rotation, "key of another certificate")
        server.send(signal.SIGHUP)
        line = server.wait_for(FAILED).string
        assert repr(str(named)) in line and reason in line
        assert served_certificate(rotation, address) == "B"
        assert before.get() == 200
    assert len(matching(server, FAILED)) == 1
    assert "Traceback" not in server.stderr()
    assert not matching(server, "no workers to replace")  # that is for a server without TLS
    server.send(signal.SIGTERM)
    assert server.wait(5) == 0, server.stderr()


@needs_proc
def test_sighup_to_workers_forks_them_with_the_re_read_certificate(
    launch: Launcher, rotation: Rotation
) -> None:
    server = start(launch, rotation, "--workers", "2")
    address = tcp(server.serving()[0])
    wait_until(lambda: len(children_of(server.pid)) == 2, 10, "2 workers", server)
    with TLSClient(address, rotation.client) as before:
        assert before.get() == 200
        assert rotation.which(before.der) == "A"

        rotation.install(rotation.new)
        server.send(signal.SIGHUP)
        wait_until(lambda: len(matching(server, "retires (reload)")) == 2, 20, "reload", server)
        # Its worker retires: still answered (with Connection: close), then closed.
        assert before.get() == 200
        assert rotation.which(before.der) == "A"
    wait_until(lambda: len(matching(server, "retired")) == 2, 10, "2 retired", server)
    assert len(matching(server, REREAD)) == 1  # in the arbiter, before the forks
    assert {served_certificate(rotation, address) for _ in range(6)} == {"B"}

    # A broken certificate: logged once; the reload of the workers goes on, and the
    # new ones serve the certificate loaded before.
    named, reason = break_files(rotation, "garbage certificate")
    server.send(signal.SIGHUP)
    wait_until(lambda: len(matching(server, "retired")) == 4, 20, "second reload", server)
    [line] = matching(server, FAILED)
    assert repr(str(named)) in line and reason in line
    assert {served_certificate(rotation, address) for _ in range(6)} == {"B"}
    assert "Traceback" not in server.stderr()
    assert len(children_of(server.pid)) == 2
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()
