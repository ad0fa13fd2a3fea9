"""Starting and stopping the real proxies (nginx, HAProxy) the tests put in front of wsgibridge.

Each proxy runs as a child process in the foreground, on a port that was free a
moment ago on 127.0.0.1, with its files in a temporary directory; it is always
stopped and reaped, however the test ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT = 5.0  # a proxy must accept connections within this
STOP_TIMEOUT = 5.0  # after the graceful signal, then again after SIGTERM


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (the caller retries on a race)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes], graceful: int = signal.SIGQUIT) -> None:
    """``graceful`` (nginx: SIGQUIT, HAProxy: SIGUSR1), then SIGTERM, then SIGKILL; always
    reaped."""
    for sig in (graceful, signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            continue
    proc.wait(STOP_TIMEOUT)


def start(
    argv: list[str],
    output: Path,
    ready: Callable[[subprocess.Popen[bytes]], bool],
    graceful: int = signal.SIGQUIT,
) -> subprocess.Popen[bytes] | None:
    """Run ``argv`` with stdout and stderr into ``output``; the process once ``ready(proc)``
    holds (polled for up to START_TIMEOUT), or None after stopping one that exited or
    never got ready (see ``output`` for why)."""
    with open(output, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and proc.poll() is None:
        if ready(proc) and proc.poll() is None:
            return proc
        time.sleep(0.02)
    stop(proc, graceful)
    return None


def nginx_main(tmp: Path) -> str:
    """nginx's main context for a test: foreground, one process, every file under ``tmp``."""
    user = "user root;" if os.geteuid() == 0 else ""
    return f"""
daemon off;
master_process off;
worker_processes 1;
{user}
pid {tmp}/nginx.pid;
lock_file {tmp}/nginx.lock;
error_log {tmp}/error.log warn;
events {{
    worker_connections 256;
}}
"""


def nginx_temp_paths(tmp: Path) -> str:
    """The ``http`` context's temporary directories, under ``tmp`` (indented for it)."""
    return "\n".join(
        f"    {kind}_temp_path {tmp}/{directory};"
        for kind, directory in [
            ("client_body", "client_body"),
            ("proxy", "proxy"),
            ("fastcgi", "fastcgi"),
            ("uwsgi", "uwsgi"),
            ("scgi", "scgi"),
        ]
    )
