"""Django's live-server tests: the same run on Django's own thread and on wsgibridge's.

The run is the example site's ``notes`` tests (three
``StaticLiveServerTestCase`` tests, about twenty requests each over one
keep-alive session: pages, static files, CSRF-protected POSTs, uploads),
``python -m django test notes`` in a fresh subprocess per run, the test
database in memory.  ``NOTES_LIVE_SERVER=django`` makes the tests use
``django.test.testcases.LiveServerThread``; otherwise they use
``wsgibridge.testing.django.LiveServerThread``.  Wall time of the whole
command (interpreter, Django set-up, the server's start and stop) and the
time Django's runner reports for the tests alone, median of ``--repeat``.

    python benchmarks/django_live.py --repeat 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "examples" / "django_site"
RAN = re.compile(r"Ran (\d+) tests? in ([0-9.]+)s")
SERVERS = ("django", "wsgibridge")


def one_run(server: str) -> tuple[float, float]:
    """(wall seconds of the command, seconds Django's runner reports for the tests)."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **os.environ,
            "NOTES_LIVE_SERVER": server,
            "PYTHONPATH": os.pathsep.join([str(SITE), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "mysite.settings",
            "DJANGO_SITE_DB": str(Path(scratch) / "db.sqlite3"),
            "DJANGO_SITE_MEDIA_ROOT": str(Path(scratch) / "media"),
        }
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "django", "test", "notes"],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        wall = time.perf_counter() - began
    match = RAN.search(done.stderr)
    if done.returncode != 0 or match is None or "\nOK" not in done.stderr:
        raise SystemExit(f"the {server} run failed:\n{done.stderr}")
    return wall, float(match.group(2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per server (median)")
    args = parser.parse_args(argv)
    print(f"{'live server':<12} {'wall s':>8} {'tests s':>8}   (median of {args.repeat})")
    for server in SERVERS:
        runs = [one_run(server) for _ in range(args.repeat)]
        wall = statistics.median(run[0] for run in runs)
        tests = statistics.median(run[1] for run in runs)
        print(f"{server:<12} {wall:>8.3f} {tests:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
