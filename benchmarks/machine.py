"""The machine facts printed before every run: CPU, kernel, Python, wrk and every server's version.

Gathered once at the start (the load average included); nothing here changes
what is measured.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Sequence

import compiled
import steal
from servers import PROJECT_ROOT, SERVERS, ServerSpec


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wrk_version(wrk: str | None) -> str:
    if not wrk:
        return "not installed"
    try:
        proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = (proc.stdout + proc.stderr).strip().splitlines()
    words = first[0].split() if first else []
    return words[1].removeprefix("debian/") if len(words) > 1 else "unknown"


def git_commit() -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", PROJECT_ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def machine_info(specs: Sequence[ServerSpec], wrk: str | None) -> dict[str, str]:
    info = {
        "cpu": cpu_model(),
        "cpus": f"{os.cpu_count()} ({len(os.sched_getaffinity(0))} usable)",
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "wrk": wrk_version(wrk),
        "load": "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "steal": steal.text(steal.since_boot(steal.sample())),
    }
    bases = {spec.base for spec in specs}
    for base in sorted(bases):
        spec = SERVERS[base]
        if spec.distribution is not None:
            info[base] = spec.version()
    if "wsgibridge" in bases and (commit := git_commit()):
        info["wsgibridge"] += f" (checkout {commit})"
    for spec in specs:
        if spec.compiled and spec.name == compiled.NAME:
            info[spec.name] = compiled.describe(spec)
    for extra in ("flask", "webtest"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            info[extra] = importlib.metadata.version(extra)
    return info


def machine_line(info: dict[str, str]) -> str:
    tools = ", ".join(
        f"{k} {v}" for k, v in info.items() if k not in ("cpu", "cpus", "kernel", "load", "steal")
    )
    return (
        f"Machine: {info['cpu']}, {info['cpus']} CPUs, Linux {info['kernel']}, "
        f"load average at start {info['load']}, steal time since boot {info['steal']}; {tools}"
    )


def steal_line(pct: float | None) -> str:
    """The machine's steal time over the whole run, printed when it ends."""
    return (
        f"Machine, over the whole run: steal time {steal.text(pct)} of all CPU time "
        "(/proc/stat at start and end; per row: the steal column)"
    )
