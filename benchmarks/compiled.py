"""The wsgibridge-compiled row: the interpreter of the compiled build, and the proof it is one.

The row is the ``wsgibridge`` row (its defaults, access log on) started by
another interpreter: a venv in which ``WSGIBRIDGE_COMPILE=1 pip install .``
installed the mypyc-compiled wheel (``--compiled-python``; by default
``.venv-compiled/bin/python`` in the project root, when it exists).  That
interpreter runs its own install, not this checkout (``serverproc.server_env``).
Without it the row is skipped with how to build it; with it, every row first
asks the interpreter, in the server's environment, whether
``wsgibridge.compiled`` is True, and fails if not.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
from typing import Any

from common import BenchError
from serverproc import server_env
from servers import BENCH_DIR, PROJECT_ROOT, SERVERS, ServerSpec

NAME = "wsgibridge-compiled"
DEFAULT_PYTHON = os.path.join(PROJECT_ROOT, ".venv-compiled", "bin", "python")
HOW_TO_BUILD = (
    "python3 -m venv .venv-compiled && WSGIBRIDGE_COMPILE=1 .venv-compiled/bin/pip install ."
)

# Run by the other interpreter: what it imports, and which wsgibridge.
PROBE = r"""
import importlib.util, json, platform, sys
out = {"python": platform.python_version(), "missing": []}
for name in sys.argv[1:]:
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        out["missing"].append(name)
try:
    import wsgibridge
except Exception as exc:
    out["error"] = f"import wsgibridge: {type(exc).__name__}: {exc}"
else:
    out["version"] = str(getattr(wsgibridge, "__version__", "?"))
    out["compiled"] = getattr(wsgibridge, "compiled", False) is True
    out["file"] = str(getattr(wsgibridge, "__file__", "?"))
print(json.dumps(out))
"""
PROBE_MODULES = ("wsgibridge", "flask")  # flask: whether it can serve flask-ka


def default_python() -> str | None:
    return DEFAULT_PYTHON if os.path.exists(DEFAULT_PYTHON) else None


def shown(path: str) -> str:
    """A path as the user would type it from the project root."""
    rel = os.path.relpath(path, PROJECT_ROOT)
    return path if rel.startswith("..") else rel


def configure(python: str | None) -> ServerSpec:
    """Point the row at ``python`` (or mark it skipped: no such interpreter)."""
    spec = SERVERS[NAME]
    if python and os.path.isfile(python) and os.access(python, os.X_OK):
        spec = dataclasses.replace(spec, python=os.path.abspath(python), skip="")
    else:
        where = shown(python or DEFAULT_PYTHON)
        skip = f"no compiled build at {where}; build it: {HOW_TO_BUILD} (or --compiled-python)"
        spec = dataclasses.replace(spec, python=None, skip=skip)
    SERVERS[NAME] = spec
    return spec


@functools.cache
def probe(python: str, env_key: str) -> dict[str, Any]:
    """What ``python`` reports, in the environment ``env_key`` names (cached per run)."""
    env = json.loads(env_key)
    try:
        proc = subprocess.run(
            [python, "-c", PROBE, *PROBE_MODULES],
            cwd=BENCH_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"{shown(python)} did not run: {exc}"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr).strip()[-300:]
        return {"error": f"{shown(python)} failed (status {proc.returncode}): {tail}"}
    info: dict[str, Any] = json.loads(lines[-1])
    return info


def probe_spec(spec: ServerSpec) -> dict[str, Any]:
    if spec.python is None:
        return {"error": spec.skip or "no interpreter"}
    return probe(spec.python, json.dumps(server_env(spec), sort_keys=True))


def check(spec: ServerSpec) -> None:
    """Raise BenchError unless the row's interpreter imports the compiled wsgibridge."""
    info = probe_spec(spec)
    if "error" in info:
        raise BenchError(str(info["error"]))
    if not info.get("compiled"):
        raise BenchError(
            f"not the compiled build: wsgibridge.compiled is not True in "
            f"{shown(spec.python or '?')} (wsgibridge {info.get('version')} from "
            f"{info.get('file')}); rebuild it: {HOW_TO_BUILD}"
        )


def missing(spec: ServerSpec, wanted: list[str]) -> list[str]:
    """Which of ``wanted`` (an app's needs) the row's interpreter cannot import.

    Not wsgibridge itself: a venv without it fails the row (``check``).
    """
    lacking = set(probe_spec(spec).get("missing", []))
    return [f"{m} (in {shown(spec.python or '?')})" for m in wanted if m in lacking]


def describe(spec: ServerSpec) -> str:
    """For the machine line: which build the row's interpreter runs."""
    if spec.skip:
        return "not built"
    info = probe_spec(spec)
    if "error" in info:
        return f"broken ({shown(spec.python or '?')})"
    build = "compiled" if info.get("compiled") else "NOT compiled"
    return (
        f"{info.get('version')} {build}, Python {info.get('python')} ({shown(spec.python or '?')})"
    )
