"""The median of ``--repeat N`` runs: each row's figures and ratios over the N tables.

Every figure of a row is the median of its runs that have numbers; a ratio
column is computed inside each run first (the row over the baseline's row
of the same run), then the median of those ratios is taken, so a run that
was slow for everyone does not move a ratio.  A run where the row failed,
was skipped or is not applicable adds nothing; the ``runs`` column says how
many runs the medians come from.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import steal
from common import out
from matrix import Cell, Ratio, outcome_text, ratio_text, ratios

FIGURES = (
    "rps",
    "mibps",
    "p50_ms",
    "p99_ms",
    "cpu_us_per_request",
    "peak_rss_mib",
    "other_cpu_pct",
)


@dataclass
class MedianRow:
    scenario: str
    server: str
    runs: int  # runs with numbers, the medians' sample
    of: int  # runs in all
    outcome: str  # ok when some run had numbers; else the runs' outcome (FAIL first)
    detail: str = ""
    rps: float = 0.0
    mibps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us_per_request: float = 0.0
    peak_rss_mib: float = 0.0
    other_cpu_pct: float = 0.0
    steal_pct: float | None = None
    vs_baseline: Ratio = None
    vs_bhrh: Ratio = None


def median_of(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def median_rows(runs: Sequence[Sequence[Cell]], baseline: str) -> list[MedianRow]:
    """One row per (scenario, server), in the order of the first run's table."""
    keys: list[tuple[str, str]] = []
    cells: dict[tuple[str, str], list[Cell]] = {}
    vs: dict[tuple[str, str], list[tuple[Ratio, Ratio]]] = {}
    for run in runs:
        run_ratios = ratios(list(run), baseline)
        for c in run:
            key = (c.scenario, c.server)
            if key not in cells:
                keys.append(key)
                cells[key], vs[key] = [], []
            cells[key].append(c)
            if c.outcome == "ok":
                vs[key].append(run_ratios[(c.server, c.scenario)])
    rows = []
    for key in keys:
        measured = [c for c in cells[key] if c.outcome == "ok"]
        row = MedianRow(key[0], key[1], len(measured), len(cells[key]), "ok")
        if not measured:
            worst = next((c for c in cells[key] if c.outcome == "FAIL"), cells[key][-1])
            row.outcome, row.detail = worst.outcome, worst.detail
        else:
            for name in FIGURES:
                setattr(row, name, statistics.median(getattr(c, name) for c in measured))
            row.steal_pct = median_of([c.steal_pct for c in measured])
            row.vs_baseline = median_of([base for base, _ in vs[key]])
            row.vs_bhrh = median_of([bhrh for _, bhrh in vs[key]])
        rows.append(row)
    return rows


def median_table(rows: Sequence[MedianRow], baseline: str, smoke: bool) -> str:
    lines = [
        f"| scenario | server | runs | req/s | MiB/s | p50 ms | p99 ms | CPU µs/req "
        f"| peak RSS MiB | other CPU | steal | vs {baseline} | vs bhrh |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        runs = f"{r.runs}/{r.of}"
        if r.outcome != "ok":
            text = outcome_text(r.outcome, r.detail)
            lines.append(f"| {r.scenario} | {r.server} | {runs} | {text} |" + " |" * 9)
            continue
        cpu = "-" if smoke else f"{r.cpu_us_per_request:.0f}"
        other = "-" if smoke else f"{r.other_cpu_pct:.0f}%"
        lines.append(
            f"| {r.scenario} | {r.server} | {runs} | {r.rps:,.0f} | {r.mibps:,.1f} "
            f"| {r.p50_ms:.2f} | {r.p99_ms:.2f} | {cpu} | {r.peak_rss_mib:.1f} | {other} "
            f"| {steal.text(r.steal_pct)} | {ratio_text(r.vs_baseline)} "
            f"| {ratio_text(r.vs_bhrh)} |"
        )
    return "\n".join(lines)


def report_median(
    runs: Sequence[Sequence[Cell]], baseline: str, smoke: bool, record: dict[str, Any]
) -> None:
    """Print the median table of ``runs`` (more than one) and keep it in the record."""
    rows = median_rows(runs, baseline)
    record["median"] = [asdict(r) for r in rows]
    out()
    out(f"### Median of {len(runs)} runs")
    out()
    out(median_table(rows, baseline, smoke))
    out()
    out(
        "Each figure is the median over the runs with numbers (runs); each ratio is taken "
        "within a run, then its median."
    )
