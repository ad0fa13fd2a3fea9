"""The project's benchmark (``benchmarks/run.py``) still runs: smoke runs of seconds.

Nothing here asserts a speed.  Each smoke test runs the script as a
subprocess, as a user would, and checks that it finished, printed every row
it was asked for and exited 0 (any wrk error, non-2xx or wrong body makes it
exit 1).  Two of its pieces are tested directly: the steal-time reader and
the median table of ``--repeat``.
"""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # cross-cutting: run or skip as a group

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
# The benchmark's modules import each other by plain name (run.py puts its folder first).
sys.path.append(str(ROOT / "benchmarks"))

import median  # noqa: E402
import steal  # noqa: E402
from matrix import Cell  # noqa: E402

STDLIB_PEERS = ("wsgiref", "bhrh")  # always available
OPTIONAL_PEERS = ("werkzeug", "waitress", "cheroot", "gunicorn", "granian")


def installed_peers() -> list[str]:
    found = [name for name in OPTIONAL_PEERS if importlib.util.find_spec(name) is not None]
    return [*found, *STDLIB_PEERS]


def run_bench(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``run.py *args``; past ``timeout`` it gets SIGTERM, which stops its servers."""
    cmd = [sys.executable, str(RUN), *args]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()  # its servers die with it (PR_SET_PDEATHSIG)
            out, err = proc.communicate(timeout=10)
        pytest.fail(f"{' '.join(args)} did not finish in {timeout:g} s\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def table_rows(output: str) -> list[list[str]]:
    """The cells of every markdown table row (header and rule lines included)."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith("|")
    ]


def assert_ran(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.startswith("Machine: "), proc.stdout
    assert "FAIL" not in proc.stdout, proc.stdout


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_smoke_matrix_prints_every_row() -> None:
    # wsgibridge-compiled runs if .venv-compiled has the compiled build, else is skipped.
    servers = ["wsgibridge", "wsgibridge-nolog", "wsgibridge-compiled", *installed_peers()]
    scenarios = ["hello-ka", "nolen-ka"]
    proc = run_bench("--smoke", "--scenarios", ",".join(scenarios), "--servers", ",".join(servers))
    assert_ran(proc)
    rows = table_rows(proc.stdout)
    assert rows and rows[0][:3] == ["scenario", "server", "req/s"], proc.stdout
    seen = {(row[0], row[1]) for row in rows[2:]}
    missing = {(s, n) for s in scenarios for n in servers} - seen
    assert not missing, f"rows missing: {sorted(missing)}\n{proc.stdout}"


@pytest.mark.timeout(90)
def test_smoke_startstop() -> None:
    proc = run_bench("--smoke", "--startstop", "--startstop-n", "3")
    assert_ran(proc)
    helpers = {row[0] for row in table_rows(proc.stdout)}
    assert {"wsgibridge.serve_in_thread", "wsgibridge.testing.StopableWSGIServer"} <= helpers


@pytest.mark.timeout(90)
def test_smoke_idle_connections() -> None:
    proc = run_bench("--smoke", "--idle", "50", "--idle-probes", "10", "--servers", "wsgibridge")
    assert_ran(proc)
    rows = [row for row in table_rows(proc.stdout) if row[0] == "wsgibridge"]
    assert len(rows) == 1, proc.stdout
    assert rows[0][1] == "50/50", proc.stdout  # every idle connection was kept open


@pytest.mark.timeout(90)
def test_smoke_upload() -> None:
    proc = run_bench("--smoke", "--upload-gib", "0.01")
    assert_ran(proc)
    bodies = {row[1] for row in table_rows(proc.stdout) if row[0] == "wsgibridge"}
    assert bodies == {"Content-Length", "chunked (64 KiB chunks)"}, proc.stdout


@pytest.mark.timeout(120)
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_smoke_repeat_prints_the_medians_and_skips_a_missing_compiled_build() -> None:
    servers = ["wsgibridge", "wsgibridge-compiled", "bhrh"]
    proc = run_bench(
        "--smoke",
        "--repeat",
        "2",
        "--scenarios",
        "hello-ka",
        "--servers",
        ",".join(servers),
        "--compiled-python",
        str(ROOT / "no-such-venv" / "bin" / "python"),
    )
    assert_ran(proc)
    assert proc.stdout.count("### Run ") == 2, proc.stdout
    medians = proc.stdout.split("### Median of 2 runs", 1)[1]
    rows = {row[1]: row for row in table_rows(medians)[2:]}
    assert set(rows) == set(servers), medians
    assert rows["wsgibridge"][2] == "2/2" and rows["wsgibridge"][-1].endswith("x"), medians
    assert rows["wsgibridge-compiled"][3].startswith("**skipped**"), medians
    assert "wsgibridge-compiled skipped: no compiled build" in proc.stdout
    assert "WSGIBRIDGE_COMPILE=1" in proc.stdout
    assert "steal time" in proc.stdout


PROC_STAT = """cpu  {user} 10 300 5000 40 0 20 {steal} 0 0
cpu0 600 5 150 2500 20 0 10 5 0 0
intr 12345
"""


def test_steal_is_read_from_the_cpu_line_of_proc_stat() -> None:
    start = steal.parse(PROC_STAT.format(user=1000, steal=10))
    end = steal.parse(PROC_STAT.format(user=1090, steal=20))
    assert start == steal.CpuTicks(steal=10, total=1000 + 10 + 300 + 5000 + 40 + 20 + 10)
    assert end is not None and end.total - start.total == 100
    assert steal.percent(start, end) == pytest.approx(10.0)  # 10 of 100 ticks stolen
    assert steal.text(steal.percent(start, end)) == "10.0%"
    assert steal.parse("cpu  1 2 3 4 5 6 7\n") is None  # no steal column
    assert steal.parse("intr 1\n") is None
    assert steal.percent(None, end) is None and steal.text(None) == "n/a"


def cell(run: int, server: str, rps: float, outcome: str = "ok") -> Cell:
    c = Cell(run, server, "hello-ka", outcome)
    if outcome == "ok":
        c.rps, c.p99_ms, c.steal_pct = rps, rps / 100, None if run == 3 else float(run)
    return c


def test_median_takes_each_ratio_within_its_run() -> None:
    runs = [
        [cell(1, "wsgibridge", 300), cell(1, "waitress", 100), cell(1, "bhrh", 300)],
        [cell(2, "wsgibridge", 400), cell(2, "waitress", 200), cell(2, "bhrh", 100)],
        [cell(3, "wsgibridge", 50), cell(3, "waitress", 50), cell(3, "bhrh", 0, "FAIL")],
    ]
    rows = {r.server: r for r in median.median_rows(runs, "waitress")}
    mine = rows["wsgibridge"]
    assert (mine.runs, mine.of, mine.outcome) == (3, 3, "ok")
    assert mine.rps == 300 and mine.p99_ms == 3.0
    # Ratios per run: 3.0, 2.0, 1.0 (median 2.0), not the medians' 300/100 = 3.0.
    assert mine.vs_baseline == 2.0
    assert mine.vs_bhrh == 2.5  # 1.0 and 4.0: run 3 has no bhrh row
    assert mine.steal_pct == 1.5  # runs 1 and 2; run 3 has no figure
    assert rows["bhrh"].runs == 2 and rows["bhrh"].vs_bhrh is None
    table = median.median_table(list(rows.values()), "waitress", smoke=False)
    lines = table.splitlines()
    assert lines[0].startswith("| scenario | server | runs | req/s")
    assert "| hello-ka | wsgibridge | 3/3 | 300 |" in table
    assert lines[2].endswith("| 2.00x | 2.50x |")
    assert "| hello-ka | waitress | 3/3 | 100 |" in table


def test_median_of_a_row_that_never_ran_keeps_its_outcome() -> None:
    runs = [[cell(1, "bhrh", 0, "FAIL")], [cell(2, "bhrh", 0, "n/a")]]
    (row,) = median.median_rows(runs, "waitress")
    assert (row.runs, row.of, row.outcome) == (0, 2, "FAIL")
    assert "**FAIL**" in median.median_table([row], "waitress", smoke=True)
