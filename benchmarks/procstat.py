"""Sampling ``/proc``: CPU time, memory and membership of a server's process group.

Read-only: nothing here starts, signals or waits for a process.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str
    pgrp: int
    ticks: int  # utime + stime + cutime + cstime
    threads: int


def proc_stat(pid: int) -> ProcStat | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2 :].split()
    # rest[0] state, [2] pgrp, [11..14] utime stime cutime cstime, [17] num_threads
    ticks = sum(int(x) for x in rest[11:15])
    return ProcStat(pid, rest[0], int(rest[2]), ticks, int(rest[17]))


def group_stats(pgid: int) -> list[ProcStat]:
    """Every live (non-zombie) process in process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and st.pgrp == pgid and st.state != "Z":
                out.append(st)
    return out


def vm_kib(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def system_busy_seconds() -> float:
    """CPU seconds spent in tasks (user + nice + system), summed over all CPUs."""
    with open("/proc/stat") as f:
        user, nice, system = (int(x) for x in f.readline().split()[1:4])
    return (user + nice + system) / CLK_TCK


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
