"""The request watchdog and the process options, as a user runs them: ``python -m wsgibridge``.

``--request-deadline`` (the warning with the app's stack; ``--deadline-action
recycle`` with ``--workers``), ``--pid-file``, ``--chdir``, ``--user`` and
``--group``.  The servers run in their own sessions (see
``test_serving_processes.py``, whose helpers these are), every wait is for
a stderr line or a response under a timeout, and every process is killed
and reaped whatever the outcome.  Dropping privileges needs root: those
tests are skipped otherwise (the refusal without root runs either way).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsgibridge.cli import main
from wsgibridge.serving.server import RETIRE_SETTLE

from .conftest import ResponseReader
from .test_serving_processes import (
    Launcher,
    ServerProcess,
    child_env,
    children_of,
    needs_proc,
    request,
    worker_pids,
    wsgibridge_argv,
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

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@pytest.fixture
def appdir(tmp_path: Path) -> Path:
    (tmp_path / "slowapp.py").write_text(APP_MODULE)
    return tmp_path


@pytest.fixture
def launch(appdir: Path) -> Iterator[Launcher]:
    with Launcher(appdir) as launcher:
        yield launcher


def start(launch: Launcher, *options: str) -> ServerProcess:
    return launch.start("--port", "0", *options, app="slowapp:app")


def status_ids(pid: int, field: str) -> list[int]:
    """The numbers of a ``/proc/PID/status`` line: ``Uid`` (real, effective, saved, fs) …"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, values = line.partition(":")
        if name == field:
            return [int(value) for value in values.split()]
    raise AssertionError(f"no {field} line for {pid}")


def run_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        wsgibridge_argv(*arguments),
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def nobody() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user named nobody here")


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
    """``--workers 2 --deadline-action recycle``: the worker with the stuck request asks
    for a replacement, which starts first; then it stops accepting (the others answer
    everyone), answers the stuck request when the app returns, and exits: two workers
    accepting all along."""
    server = start(
        launch,
        "--workers", "2",
        "--request-deadline", "0.5",
        "--deadline-action", "recycle",
        "--graceful-timeout", "10",
    )  # fmt: skip
    [address] = server.serving()
    worker_pids(launch, address, 2, timeout=10)
    stuck = launch.connect(address)
    stuck.sendall(request("/sleep/3"))
    stuck_pid = int(server.wait_for(r"APP-STARTED (\d+)")[1])
    server.wait_for(rf"worker {stuck_pid} ran a request past the deadline; asking to be replaced")
    server.wait_for(rf"worker \d+ accepts; worker {stuck_pid} retires")
    server.wait_for(rf"worker {stuck_pid} retiring: finishing its open connections")
    time.sleep(RETIRE_SETTLE * 4)  # past its one look for a client nobody else was woken for
    others = {int(launch.get(address).body) for _ in range(10)}
    assert stuck_pid not in others  # it no longer accepts
    response = ResponseReader(stuck).read_response()
    assert response.status == 200
    assert int(response.body) == stuck_pid
    assert response.header("Connection") == "close"
    server.wait_for(rf"worker {stuck_pid} retired \(exit code 0\)")
    after = worker_pids(launch, address, 2, timeout=10)
    assert stuck_pid not in after
    assert after == children_of(server.pid)
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()


@needs_proc
def test_recycle_runs_even_one_worker_under_the_arbiter(launch: Launcher) -> None:
    """Without ``--workers``, ``--deadline-action recycle`` still replaces the process
    that ran late: one worker under the arbiter, and serving goes on."""
    server = start(launch, "--request-deadline", "0.3", "--deadline-action", "recycle")
    [address] = server.serving()
    server.wait_for("with 1 worker process")
    assert launch.get(address, "/sleep/0.8").status == 200
    server.wait_for("still running after")
    server.wait_for(r"worker \d+ retired \(exit code 0\)")
    assert launch.get(address).status == 200  # still serving
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0


# -- the pid file ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["1", "2"])
def test_the_pid_file_names_the_server_and_is_removed_at_exit(
    launch: Launcher, appdir: Path, workers: str
) -> None:
    """Written once the server listens, with the pid of the process to signal (with
    ``--workers``, the arbiter); a stale file is replaced; removed after SIGTERM."""
    path = appdir / "run" / "app.pid"
    path.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait(10)
    path.write_text(f"{dead.pid}\n")  # left by a server that died
    server = start(launch, "--workers", workers, "--pid-file", str(path))
    [address] = server.serving()
    assert path.read_text() == f"{server.pid}\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["app.pid"]  # no temporary left
    assert launch.get(address).status == 200
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()
    assert not path.exists()


def test_a_pid_file_naming_a_running_process_refuses_the_start(appdir: Path) -> None:
    path = appdir / "app.pid"
    path.write_text(f"{os.getpid()}\n")  # this test's process: running
    proc = run_cli("--port", "0", "--pid-file", str(path), "slowapp:app", cwd=appdir)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"wsgibridge: error: the pid file {path} names process {os.getpid()}, which is"
        " running: another server? (stop it, or remove the file if that process is not one)"
    ]
    assert path.read_text() == f"{os.getpid()}\n"


# -- --chdir -----------------------------------------------------------------------------------


def test_chdir_imports_the_app_from_there_and_serves_from_there(
    launch: Launcher, appdir: Path
) -> None:
    """Started elsewhere with a relative ``--chdir``: the app module is found in that
    directory and the process works there (a relative --bind path is there too)."""
    site = appdir / "site"
    site.mkdir()
    (appdir / "slowapp.py").rename(site / "siteapp.py")
    server = launch.start("--chdir", "site", "--bind", "unix:app.sock", app="siteapp:app")
    assert server.serving() == ["app.sock"]
    response = launch.get(str(site / "app.sock"), "/cwd")
    assert response.status == 200
    assert response.body.decode() == str(site)
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0, server.stderr()


def test_a_missing_chdir_directory_exits_2_with_one_line(appdir: Path) -> None:
    proc = run_cli("--chdir", "nowhere", "slowapp:app", cwd=appdir)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "wsgibridge: error: cannot change to the directory 'nowhere': No such file or directory"
    ]


# -- --user / --group --------------------------------------------------------------------------


@needs_root
@needs_proc
@pytest.mark.parametrize("workers", ["1", "2"])
def test_user_drops_root_after_binding_in_every_process(launch: Launcher, workers: str) -> None:
    """Started as root with ``--user nobody``: the serving processes (the arbiter and each
    worker) run as nobody's uid and gid, with no root group left among their groups."""
    entry = nobody()
    server = start(launch, "--workers", workers, "--user", "nobody")
    [address] = server.serving()
    server.wait_for(rf"running as uid {entry.pw_uid}, gid {entry.pw_gid}")
    pids = {server.pid}
    if workers == "2":
        pids |= worker_pids(launch, address, 2, timeout=10)
        assert pids - {server.pid} == children_of(server.pid)
    else:
        assert int(launch.get(address).body) == server.pid
    for pid in pids:
        assert status_ids(pid, "Uid") == [entry.pw_uid] * 4, pid
        assert status_ids(pid, "Gid") == [entry.pw_gid] * 4, pid
        assert 0 not in status_ids(pid, "Groups"), pid
    server.send(signal.SIGTERM)
    assert server.wait(15) == 0, server.stderr()


@needs_root
@needs_proc
def test_user_and_group_own_the_unix_socket_file(launch: Launcher) -> None:
    """``--bind unix:PATH --user nobody --group N``: the socket file belongs to them (so
    mode 660 lets that group connect), the server runs as them and still serves."""
    entry = nobody()
    sockdir = Path(tempfile.mkdtemp(prefix="wbu-", dir="/tmp"))
    try:
        os.chmod(sockdir, 0o777)  # the server, as nobody, removes its file at the stop
        path = sockdir / "app.sock"
        server = start(launch, "--bind", f"unix:{path}", "--user", "nobody", "--group", "12345")
        assert server.serving() == [str(path)]
        info = os.lstat(path)
        assert (info.st_uid, info.st_gid) == (entry.pw_uid, 12345)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert status_ids(server.pid, "Gid") == [12345] * 4
        assert 0 not in status_ids(server.pid, "Groups")
        assert launch.get(str(path)).status == 200
        server.send(signal.SIGTERM)
        assert server.wait(10) == 0, server.stderr()
        assert not path.exists()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


@needs_root
def test_files_the_dropped_user_cannot_remove_leave_a_warning_not_a_failed_stop(
    launch: Launcher,
) -> None:
    """``--user nobody`` with the socket file and pid file in a directory only root may
    write: the stop still stops every worker and exits 0, warning about the two files
    (the next start replaces them)."""
    rundir = Path(tempfile.mkdtemp(prefix="wbr-", dir="/tmp"))
    try:
        os.chmod(rundir, 0o755)
        path, pid_file = rundir / "app.sock", rundir / "app.pid"
        server = start(
            launch, "--workers", "2", "--bind", f"unix:{path}", "--pid-file", str(pid_file),
            "--user", "nobody",
        )  # fmt: skip
        server.serving()
        assert launch.get(str(path)).status == 200
        server.send(signal.SIGTERM)
        assert server.wait(15) == 0, server.stderr()
        stderr = server.stderr()
        assert (
            f"cannot remove unix:{path}: Permission denied (the next start replaces it)" in stderr
        )
        assert f"cannot remove the pid file {pid_file}: Permission denied" in stderr
        assert "Traceback" not in stderr
        assert "the arbiter is gone" not in stderr  # the arbiter stopped its workers itself
        # The next start (as root again, here) replaces both.
        again = start(launch, "--bind", f"unix:{path}", "--pid-file", str(pid_file))
        again.serving()
        assert pid_file.read_text() == f"{again.pid}\n"
        assert launch.get(str(path)).status == 200
        again.send(signal.SIGTERM)
        assert again.wait(10) == 0, again.stderr()
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


def test_becoming_another_user_without_root_exits_2_with_one_line(
    appdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not root and asking for another user: one line, exit 2, before anything listens.

    In this process, through the real ``serve``: when the tests run as root, the
    process says it is uid 1000 (a server run as nobody could not even start
    here if the interpreter lives under a private home directory).
    """
    if os.geteuid() == 0:
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
        monkeypatch.setattr(os, "getegid", lambda: 1000)
    uid = os.geteuid()
    monkeypatch.chdir(appdir)
    monkeypatch.syspath_prepend(str(appdir))
    code = main(["--port", "0", "--user", "root", "slowapp:app"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"wsgibridge: error: cannot run as user 'root': that needs starting as root (uid is {uid})"
    ]


def test_an_unknown_user_exits_2_with_one_line(appdir: Path) -> None:
    proc = run_cli("--user", "no-such-user-x", "slowapp:app", cwd=appdir)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "wsgibridge: error: user 'no-such-user-x' does not exist (--user)"
    ]
