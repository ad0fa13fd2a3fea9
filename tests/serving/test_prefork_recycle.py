"""Replacing live workers under load: recycling, SIGHUP, SIGTTIN/SIGTTOU - no request fails.

Real processes (``python -m wsgibridge`` in its own session), real signals,
client threads that count every failed request (an exception or a non-200
answer): the count must stay 0 while workers are replaced, and the pids
answering must actually change.  Every process is killed and reaped
afterwards (the launcher's cleanup).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..test_serving_processes import Launcher, children_of, needs_proc, pid_alive
from .prefork_helpers import Load, launcher_in, matching, wait_until, write_app

pytestmark = pytest.mark.integration


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    yield from launcher_in(tmp_path)


@needs_proc
def test_max_requests_recycles_workers_under_load_without_a_failed_request(
    launch: Launcher,
) -> None:
    """``--workers 2 --max-requests 20``: workers are replaced again and again while
    clients keep requesting; none of their requests fails."""
    server = launch.start(
        "--port", "0", "--workers", "2", "--max-requests", "20", "--max-requests-jitter", "5",
        "--no-access-log", app="verapp:app",
    )  # fmt: skip
    [address] = server.serving()
    wait_until(lambda: len(children_of(server.pid)) == 2, 10, "2 workers", server)
    first = children_of(server.pid)
    load = Load(address)
    try:
        wait_until(lambda: len(matching(server, "retired")) >= 6, 30, "6 recycles", server)
    finally:
        load.stop()
    recycled = len(matching(server, "retired"))
    load.report(f"--max-requests 20 under load, {recycled} workers recycled")
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100
    assert len(load.pids) >= 4  # the pids changed
    assert len(matching(server, "requests (--max-requests); asking to be replaced")) >= 6
    assert first - children_of(server.pid)
    assert len(children_of(server.pid)) >= 2
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()


@needs_proc
def test_one_worker_with_max_requests_runs_under_the_arbiter(launch: Launcher) -> None:
    """``--max-requests`` without ``--workers``: one worker under an arbiter, replaced
    before it stops accepting, so even a single process never makes a request fail."""
    server = launch.start("--port", "0", "--max-requests", "10", app="verapp:app")
    [address] = server.serving()
    assert "with 1 worker process" in server.stderr()
    load = Load(address, keepalive=1, fresh=1)
    try:
        wait_until(lambda: len(matching(server, "retired")) >= 3, 30, "3 recycles", server)
    finally:
        load.stop()
    load.report("--max-requests 10, one worker")
    assert load.failures == [], load.failures[:5]
    assert server.pid not in load.pids and len(load.pids) >= 4


@needs_proc
def test_max_worker_memory_recycles_a_growing_worker(launch: Launcher) -> None:
    """An app that keeps 20 MiB per ``/grow/20`` request: past ``--max-worker-memory 80``
    the worker asks to be replaced, and a new process answers; clients meanwhile see
    no failure."""
    # A retiring worker keeps an idle keep-alive connection to its keep-alive deadline
    # (75 s by default): 3 s bounds how long the replacement can take here.
    server = launch.start(
        "--port", "0", "--max-worker-memory", "80", "--keepalive-timeout", "3",
        "--no-access-log", app="verapp:app",
    )  # fmt: skip
    [address] = server.serving()
    grown = launch.get(address, "/grow/20")
    big = int(grown.body.split()[0])
    load = Load(address, keepalive=1, fresh=1, pause=0.01)
    try:
        for _ in range(5):
            assert launch.get(address, "/grow/20").status == 200
        server.wait_for(rf"worker {big} uses \d+ MiB of resident memory", timeout=10)
        server.wait_for(rf"worker {big} retired", timeout=15)
    finally:
        load.stop()
    load.report("--max-worker-memory 80")
    assert load.failures == [], load.failures[:5]
    assert not pid_alive(big)
    assert load.pids - {big}


@needs_proc
def test_sighup_replaces_every_worker_under_load_with_the_new_code(
    launch: Launcher, tmp_path: Path
) -> None:
    """SIGHUP to ``--workers 3``: every worker is replaced, one at a time, by one that
    imported the app anew (the edited file); no client request fails meanwhile."""
    server = launch.start("--port", "0", "--workers", "3", "--no-access-log", app="verapp:app")
    [address] = server.serving()
    wait_until(lambda: len(children_of(server.pid)) == 3, 10, "3 workers", server)
    old = children_of(server.pid)
    load = Load(address)
    try:
        wait_until(lambda: load.count() > 50, 10, "requests before the reload", server)
        write_app(tmp_path, "v2")
        started = server.send(signal.SIGHUP)
        wait_until(lambda: len(matching(server, "retired")) >= 3, 30, "3 retired", server)
        reloaded = time.monotonic() - started
        time.sleep(0.2)  # answers from the old workers read before they exited, recorded
        after = load.count()
        wait_until(lambda: load.count() > after + 50, 10, "requests after the reload", server)
    finally:
        load.stop()
    load.report(f"SIGHUP with --workers 3 under load, reload done in {reloaded:.2f} s")
    assert load.failures == [], load.failures[:5]
    new = children_of(server.pid)
    assert len(new) == 3 and not new & old
    versions = [version for _, version in load.answers]
    assert versions[0] == "v1"
    assert set(versions[after:]) == {"v2"}
    assert {pid for pid, _ in load.answers[after:]} <= new
    server.wait_for("received SIGHUP: replacing the workers one at a time")
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()


@needs_proc
def test_sighup_with_new_code_that_does_not_import_keeps_the_old_workers(
    launch: Launcher, tmp_path: Path
) -> None:
    """A broken edit, then SIGHUP: the new worker logs the import error, the reload stops,
    the old workers serve on; after a fix, the next SIGHUP goes through."""
    server = launch.start("--port", "0", "--workers", "2", app="verapp:app")
    [address] = server.serving()
    wait_until(lambda: len(children_of(server.pid)) == 2, 10, "2 workers", server)
    old = children_of(server.pid)
    (tmp_path / "verapp.py").write_text("raise RuntimeError('the new code is broken')\n")
    server.send(signal.SIGHUP)
    server.wait_for("cannot import the app: importing 'verapp' failed: RuntimeError", 10)
    server.wait_for(r"reload failed: worker \d+ could not start \(the app failed to import\)")
    assert children_of(server.pid) == old
    assert launch.get(address).body.split()[1] == b"v1"
    write_app(tmp_path, "v3")
    server.send(signal.SIGHUP)
    wait_until(lambda: len(matching(server, "retired")) >= 2, 30, "2 retired", server)
    assert launch.get(address).body.split()[1] == b"v3"
    assert not children_of(server.pid) & old


@needs_proc
def test_after_a_failed_reload_a_new_worker_still_serves(launch: Launcher, tmp_path: Path) -> None:
    """A broken edit and a SIGHUP, then a worker is needed (SIGTTIN here; a crash or a
    recycle alike): it runs the code imported at start, the server goes on serving."""
    server = launch.start("--port", "0", "--workers", "2", app="verapp:app")
    [address] = server.serving()
    wait_until(lambda: len(children_of(server.pid)) == 2, 10, "2 workers", server)
    (tmp_path / "verapp.py").write_text("import a_module_that_is_not_there\n")
    server.send(signal.SIGHUP)
    server.wait_for("reload failed", 10)
    server.send(signal.SIGTTIN)
    wait_until(lambda: len(children_of(server.pid)) == 3, 10, "3 workers", server)
    time.sleep(3.0)  # five failed starts, with their back-off, end a server in about 3 s
    assert server.proc.poll() is None, server.stderr()
    assert len(children_of(server.pid)) == 3
    assert not matching(server, "exited"), server.stderr()  # the third one started
    assert {launch.get(address).body.split()[1] for _ in range(12)} == {b"v1"}
    assert "giving up" not in server.stderr()
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()


CRASHING_APP = """\
import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/crash":
        os._exit(7)  # a C extension's segfault, the OOM killer...
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""


@needs_proc
def test_workers_that_crash_after_starting_are_replaced_every_time(
    launch: Launcher, tmp_path: Path
) -> None:
    """A worker that served and then died is replaced; only workers that die before they
    accept count towards giving up, so crashing requests never end the server."""
    (tmp_path / "crashy.py").write_text(CRASHING_APP)
    server = launch.start("--port", "0", "--workers", "2", app="crashy:app")
    [address] = server.serving()
    for _ in range(8):
        wait_until(lambda: len(children_of(server.pid)) == 2, 10, "2 workers", server)
        time.sleep(0.3)  # the replacement accepts
        try:
            launch.get(address, "/crash")
        except (OSError, EOFError, ValueError):
            pass  # the worker died under the request, as it meant to
    wait_until(lambda: len(matching(server, "exited (exit code 7)")) >= 8, 10, "8 crashes", server)
    assert server.proc.poll() is None, server.stderr()
    assert "giving up" not in server.stderr()
    assert launch.get(address).body == b"ok"
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()


@needs_proc
def test_ttin_adds_and_ttou_removes_workers_under_load(launch: Launcher) -> None:
    """SIGTTIN: one worker more; SIGTTOU: one fewer, never below one; clients see no
    failure while workers come and go."""
    server = launch.start("--port", "0", "--workers", "2", "--no-access-log", app="verapp:app")
    [address] = server.serving()
    load = Load(address)
    try:
        server.send(signal.SIGTTIN)
        server.wait_for(r"received SIGTTIN: 3 worker process\(es\)")
        wait_until(lambda: len(children_of(server.pid)) == 3, 10, "3 workers", server)
        wait_until(lambda: len(load.pids) == 3, 10, "3 workers answering", server)
        for _ in range(3):  # the third one is refused: never fewer than one
            server.send(signal.SIGTTOU)
            time.sleep(0.3)
        wait_until(lambda: len(children_of(server.pid)) == 1, 20, "1 worker left", server)
        [last] = children_of(server.pid)
        count = load.count()
        wait_until(lambda: load.count() > count + 20, 10, "requests on the last one", server)
    finally:
        load.stop()
    load.report("SIGTTIN then 3 x SIGTTOU under load")
    assert load.failures == [], load.failures[:5]
    assert load.answers[-1][0] == last
    assert len(matching(server, "retires (one worker process fewer)")) == 2
    assert os.getpgid(last) == server.pid
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()
