"""What more than one part of the benchmark needs, and nothing else.

The address every server listens on, the error that breaks a run, the
settings of a run, the two output streams (tables on stdout, progress on
stderr), and the two small lookups shared by the tables and the checks.
A name lives here only because two or more modules use it.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

from servers import SERVERS

HOST = "127.0.0.1"
MIB = 1 << 20


class BenchError(Exception):
    """A broken run: a server that fails, answers wrong or makes wrk count errors."""


@dataclass
class Settings:
    """What every measured row runs under, from the command line."""

    wrk: str
    duration: int
    warmup: int
    connections: int
    timeout: float
    client_cpus: set[int] | None
    server_cpus: set[int] | None
    workdir: str
    smoke: bool


def say(text: str = "") -> None:
    """Progress and failures: stderr."""
    print(text, file=sys.stderr, flush=True)


def out(text: str = "") -> None:
    """The report (machine line and tables): stdout."""
    print(text, flush=True)


def base_name(server: str) -> str:
    return SERVERS[server].base if server in SERVERS else server


def module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
