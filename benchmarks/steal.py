"""Steal time: CPU time the hypervisor gave to someone else while this machine wanted it.

Read from the ``cpu`` line of ``/proc/stat`` (every CPU summed, in clock
ticks): ``user nice system idle iowait irq softirq steal guest guest_nice``.
A share of steal is that many ticks out of the first eight columns (guest
time is already counted in user and nice).  On a virtual machine shared with
noisy neighbours it is the one noise the "other CPU" column cannot see:
the CPU is taken away, not used by another process here.  Linux only;
elsewhere every figure is None, shown "n/a".
"""

from __future__ import annotations

from dataclasses import dataclass

PROC_STAT = "/proc/stat"


@dataclass(frozen=True)
class CpuTicks:
    steal: int
    total: int  # user + nice + system + idle + iowait + irq + softirq + steal


def parse(text: str) -> CpuTicks | None:
    """The aggregate ``cpu`` line of a /proc/stat text (None: no such line, or no steal)."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            try:
                ticks = [int(x) for x in fields[1:9]]
            except ValueError:
                return None
            if len(ticks) < 8:  # kernels before 2.6.11 have no steal column
                return None
            return CpuTicks(steal=ticks[7], total=sum(ticks))
    return None


def sample(path: str = PROC_STAT) -> CpuTicks | None:
    try:
        with open(path) as f:
            return parse(f.read())
    except OSError:
        return None


def percent(start: CpuTicks | None, end: CpuTicks | None) -> float | None:
    """Steal between two samples as a percentage of all CPU time (None: not measurable)."""
    if start is None or end is None or end.total <= start.total:
        return None
    return 100.0 * (end.steal - start.steal) / (end.total - start.total)


def since_boot(now: CpuTicks | None) -> float | None:
    if now is None or now.total <= 0:
        return None
    return 100.0 * now.steal / now.total


def text(pct: float | None) -> str:
    return "n/a" if pct is None else f"{pct:.1f}%"
