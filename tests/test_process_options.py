"""The request watchdog, as a user runs it: ``python -m wsgibridge``.

``--request-deadline`` (the warning with the app's stack; ``--deadline-action
recycle`` with ``--workers``).  The servers run in their own sessions (see
``test_serving_processes.py``, whose helpers these are), every wait is for
a stderr line or a response under a timeout, and every process is killed
and reaped whatever the outcome.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ResponseReader
from .test_serving_processes import (
    Launcher,
    ServerProcess,
    children_of,
    needs_proc,
    request,
    worker_pids,
)

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group

# GET /sleep/N announces itself, then waits N seconds in a function of its own
# (the watchdog's stack must name it); GET /cwd answers the working directory,
# every other path the pid of the process that serves it.
APP_MODULE = """\
import os
import sys
import time


def wait_for_the_database(seconds):
    time.sleep(seconds)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/sleep/"):
        sys.stderr.write(f"APP-STARTED {os.getpid()} {path}\\n")
        sys.stderr.flush()
        wait_for_the_database(float(path.rsplit("/", 1)[1]))
    body = (os.getcwd() if path == "/cwd" else str(os.getpid())).encode()
    start_response(
        "200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    )
    return [body]
"""


@pytest.fixture
def appdir(tmp_path: Path) -> Path:
    (tmp_path / "slowapp.py").write_text(APP_MODULE)
    return tmp_path


@pytest.fixture
def launch(appdir: Path) -> Iterator[Launcher]:
    launcher = Launcher(appdir)
    try:
        yield launcher
    finally:
        launcher.close()


def start(launch: Launcher, *options: str) -> ServerProcess:
    return launch.start("--port", "0", *options, app="slowapp:app")


# -- the request watchdog ----------------------------------------------------------------------


def test_a_stuck_request_is_logged_once_with_the_apps_stack(launch: Launcher) -> None:
    """``--request-deadline 0.5``: a request still in the app after 0.5 s is one warning
    naming the request, the client, the time and the app's function; it is answered when
    the app returns, and nothing else happens to it."""
    server = start(launch, "--request-deadline", "0.5")
    [address] = server.serving()
    sock = launch.connect(address)
    sock.sendall(request("/sleep/1.5?report=monthly"))
    server.wait_for("APP-STARTED")
    match = server.wait_for(r"WARNING wsgibridge\.error: .*still running after")
    port = sock.getsockname()[1]
    assert f'"GET /sleep/1.5?report=monthly HTTP/1.1" from 127.0.0.1:{port}: ' in match.string
    elapsed = re.search(r"still running after ([\d.]+) s \(request deadline 0\.5 s\)", match.string)
    assert elapsed is not None
    assert float(elapsed[1]) >= 0.5
    response = ResponseReader(sock).read_response()
    assert response.status == 200
    assert response.header("Connection") != "close"  # only logged: the connection lives on
    stderr = server.stderr()
    print("the watchdog's warning:\n" + stderr[stderr.index(match.string) :])
    assert stderr.count("still running after") == 1
    assert "in wait_for_the_database\n    time.sleep(seconds)" in stderr
    assert 'slowapp.py", line' in stderr
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0, server.stderr()


def test_without_a_deadline_a_slow_request_is_not_logged(launch: Launcher) -> None:
    server = start(launch)
    [address] = server.serving()
    assert launch.get(address, "/sleep/0.7").status == 200
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0
    assert "still running" not in server.stderr()


@needs_proc
def test_deadline_action_recycle_replaces_the_worker_once_its_requests_finish(
    launch: Launcher,
) -> None:
    """``--workers 2 --deadline-action recycle``: the worker with the stuck request says so,
    stops accepting (the other worker answers everyone), answers the stuck request when the
    app returns, exits, and the arbiter starts another: two workers again."""
    server = start(
        launch,
        "--workers", "2",
        "--request-deadline", "0.5",
        "--deadline-action", "recycle",
        "--graceful-timeout", "10",
    )  # fmt: skip
    [address] = server.serving()
    workers = worker_pids(launch, address, 2, timeout=10)
    stuck = launch.connect(address)
    stuck.sendall(request("/sleep/3"))
    stuck_pid = int(server.wait_for(r"APP-STARTED (\d+)")[1])
    server.wait_for(rf"worker {stuck_pid}: a request passed the request deadline; recycling")
    others = {int(launch.get(address).body) for _ in range(10)}
    assert others == workers - {stuck_pid}  # it no longer accepts
    response = ResponseReader(stuck).read_response()
    assert response.status == 200
    assert int(response.body) == stuck_pid
    assert response.header("Connection") == "close"
    server.wait_for(rf"worker {stuck_pid} exited \(exit code 0\); starting another")
    after = worker_pids(launch, address, 2, timeout=10)
    assert stuck_pid not in after
    assert after == children_of(server.pid)
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()


def test_recycle_without_workers_only_logs(launch: Launcher) -> None:
    server = start(launch, "--request-deadline", "0.3", "--deadline-action", "recycle")
    [address] = server.serving()
    server.wait_for("deadline_action recycle needs workers > 1; a late request is only logged")
    assert launch.get(address, "/sleep/0.8").status == 200
    server.wait_for("still running after")
    assert launch.get(address).status == 200  # still serving
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0
