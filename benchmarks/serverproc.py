"""One server under test as a subprocess: started pinned in its own group, always stopped.

Every child this script starts (servers and wrk) is pinned through
``child_setup`` and dies with the script (``PR_SET_PDEATHSIG``); every server
is registered while it runs so that ``stop_all`` can stop what is left
(SIGTERM, then SIGKILL to the whole group) whatever ended the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from client import HTTPConnection
from common import HOST, BenchError
from procstat import CLK_TCK, group_stats, vm_kib
from servers import BENCH_DIR, PROJECT_ROOT, ServerSpec

READY_TIMEOUT = 30.0  # seconds a server may take to answer its first request
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL

log = logging.getLogger("bench")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _load_prctl() -> Callable[[int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[[int, int], int] = libc.prctl
        return prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # loaded before any fork: the child only calls it
PR_SET_PDEATHSIG = 1


def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """preexec_fn: pin to ``cpus`` and die with this script (PR_SET_PDEATHSIG)."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)

    return setup


def server_env(spec: ServerSpec) -> dict[str, str]:
    """The environment a server runs in: the apps importable, and which wsgibridge.

    With run.py's interpreter, this checkout's wsgibridge comes first on
    ``PYTHONPATH``; another interpreter (``spec.python``) runs its own install.
    """
    env = dict(os.environ)
    paths = [BENCH_DIR] if spec.python else [BENCH_DIR, PROJECT_ROOT]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class ServerProcess:
    """One server under test, in its own session and process group."""

    def __init__(self, spec: ServerSpec, app: str, cpus: set[int] | None, workdir: str) -> None:
        self.spec = spec
        self.app = app
        self.port = free_port()
        self.access_log = spec.access_log_path(workdir, app, self.port)
        python = spec.python or sys.executable
        self.argv = spec.command(python, HOST, self.port, app, self.access_log)
        self.logpath = os.path.join(workdir, f"{spec.name}-{app}-{self.port}.log")
        with open(self.logpath, "wb") as logfile:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=BENCH_DIR,
                env=server_env(spec),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=child_setup(cpus),
            )
        self.pgid = self.proc.pid  # a new session: its leader's pid is the group id
        _RUNNING.append(self)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, size: int = 1500) -> str:
        try:
            with open(self.logpath, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - size))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.spec.name} exited with status {self.proc.returncode}:\n"
                    + self.log_tail()
                )
            try:
                with HTTPConnection(self.port, timeout=1.0) as conn:
                    conn.request("GET", close=True)
                return
            except (OSError, BenchError):
                time.sleep(0.05)
        raise BenchError(f"{self.spec.name} not answering after {timeout:g} s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        return sum(st.ticks for st in group_stats(self.pgid)) / CLK_TCK

    def peak_rss_kib(self) -> int:
        """VmHWM summed over the process group (every worker's own peak)."""
        return sum(vm_kib(st.pid, "VmHWM") for st in group_stats(self.pgid))

    def rss_kib(self) -> int:
        return sum(vm_kib(st.pid, "VmRSS") for st in group_stats(self.pgid))

    def threads(self) -> int:
        return sum(st.threads for st in group_stats(self.pgid))

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL to the whole group; True if it stopped on SIGTERM."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        clean = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                clean = False
        deadline = time.monotonic() + 5.0
        while True:
            left = [st.pid for st in group_stats(self.pgid)]
            if self.proc.poll() is None:
                left.append(self.proc.pid)
            if not left:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.spec.name}: processes {left} survive SIGKILL")
            clean = False
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.2)
        return clean


_RUNNING: list[ServerProcess] = []


def stop_all() -> None:
    for server in list(_RUNNING):
        try:
            server.stop()
        except BenchError as exc:
            log.error("%s", exc)
