"""The figures and their text format, in memory, read back by prometheus_client's own parser."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wsgibridge.metrics import (
    CONNECTION_STATES,
    DURATION_BUCKETS,
    SIZE_BUCKETS,
    Recorder,
    Totals,
    counters_only,
    empty_snapshot,
    escape_label,
    merge,
    render,
)


def parse(text: str) -> dict[str, Any]:
    """{family name: family} as prometheus_client reads ``text`` (it raises on bad text)."""
    return {family.name: family for family in text_string_to_metric_families(text)}


def rendered(snapshot: dict[str, Any], **extra: Any) -> dict[str, Any]:
    options = {"version": "1.2.3", "build": "pure", "start_time": 1700000000.5, **extra}
    return parse(render(snapshot, **options))


def samples(families: dict[str, Any], family: str, name: str | None = None) -> list[Sample]:
    return [s for s in families[family].samples if name is None or s.name == name]


def value(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    found = [s.value for s in samples(families, family, name) if s.labels == labels]
    assert len(found) == 1, (name, labels, samples(families, family, name))
    return float(found[0])


def test_requests_are_counted_by_method_and_status_class() -> None:
    recorder = Recorder()
    for method, status in [("GET", 200), ("GET", 204), ("POST", 404), ("GET", 500), ("HEAD", 301)]:
        recorder.request(method, status, 0.002, 10, 5)
    families = rendered(merge([recorder.snapshot()]))
    assert families["wsgibridge_requests"].type == "counter"
    total = "wsgibridge_requests_total"
    assert value(families, "wsgibridge_requests", total, method="GET", status_class="2xx") == 2
    assert value(families, "wsgibridge_requests", total, method="GET", status_class="5xx") == 1
    assert value(families, "wsgibridge_requests", total, method="POST", status_class="4xx") == 1
    assert value(families, "wsgibridge_requests", total, method="HEAD", status_class="3xx") == 1
    assert sum(s.value for s in samples(families, "wsgibridge_requests")) == 5
    assert value(families, "wsgibridge_sent_bytes", "wsgibridge_sent_bytes_total") == 50
    assert value(families, "wsgibridge_received_bytes", "wsgibridge_received_bytes_total") == 25


def test_labels_stay_few_whatever_the_client_sends() -> None:
    """An unknown method is "other"; a status with none sent (0) or out of range is "none"."""
    recorder = Recorder()
    recorder.request("BREW", 200, 0.0, 0, 0)
    recorder.request("", 400, 0.0, 0, 0)
    recorder.request("GET", 0, 0.0, 0, 0)
    recorder.request("GET", 999, 0.0, 0, 0)
    families = rendered(merge([recorder.snapshot()]))
    labels = sorted(
        (s.labels["method"], s.labels["status_class"])
        for s in samples(families, "wsgibridge_requests")
    )
    assert labels == [("GET", "none"), ("other", "2xx"), ("other", "4xx")]
    assert value(
        families, "wsgibridge_requests", "wsgibridge_requests_total", method="GET",
        status_class="none",
    ) == 2  # fmt: skip


def test_histograms_are_cumulative_end_with_inf_and_count_every_request() -> None:
    recorder = Recorder()
    durations = [0.0005, 0.001, 0.003, 0.2, 7.0, 60.0]  # 0.001 is in le="0.001" (<=)
    for duration in durations:
        recorder.request("GET", 200, duration, 150, 0)
    families = rendered(merge([recorder.snapshot()]))
    name = "wsgibridge_request_duration_seconds"
    assert families[name].type == "histogram"
    buckets = samples(families, name, f"{name}_bucket")
    bounds = [float(s.labels["le"]) for s in buckets]
    assert bounds == [*DURATION_BUCKETS, math.inf]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts)  # cumulative
    for bound, count in zip(bounds, counts, strict=True):
        assert count == sum(1 for d in durations if d <= bound), bound
    assert value(families, name, f"{name}_count") == len(durations)
    assert value(families, name, f"{name}_sum") == pytest.approx(sum(durations))
    size = "wsgibridge_response_size_bytes"
    size_buckets = samples(families, size, f"{size}_bucket")
    assert [float(s.labels["le"]) for s in size_buckets] == [*SIZE_BUCKETS, math.inf]
    assert size_buckets[0].value == 0 and size_buckets[1].value == len(durations)  # 150 <= 1000
    assert value(families, size, f"{size}_count") == len(durations)
    assert value(families, size, f"{size}_sum") == 150 * len(durations)


def test_merge_sums_counters_and_gauges_of_every_snapshot() -> None:
    a, b = Recorder(), Recorder()
    a.request("GET", 200, 0.01, 1, 2)
    b.request("GET", 200, 0.01, 1, 2)
    b.request("POST", 201, 3.0, 1, 2)
    first = a.snapshot()
    first["counters"]["refused"] = {"400": 2}
    first["gauges"] = {"in_flight": 1, "connections": {"parked": 3}, "threads": 8}
    second = b.snapshot()
    second["counters"]["refused"] = {"400": 1, "connection_limit": 4}
    second["gauges"] = {"in_flight": 2, "connections": {"parked": 1, "active": 1}, "threads": 8}
    total = merge([first, second])
    assert total["counters"]["requests"] == {"GET": {"2xx": 2}, "POST": {"2xx": 1}}
    assert total["counters"]["refused"] == {"400": 3, "connection_limit": 4}
    assert total["gauges"]["in_flight"] == 3
    assert total["gauges"]["threads"] == 16
    assert total["gauges"]["connections"] == {"active": 1, "parked": 4, "lingering": 0}
    assert sum(total["counters"]["duration_buckets"]) == 3
    families = rendered(total)
    assert value(families, "wsgibridge_refused", "wsgibridge_refused_total", reason="400") == 3
    gauge = "wsgibridge_connections"
    assert families[gauge].type == "gauge"
    assert {s.labels["state"]: s.value for s in samples(families, gauge)} == {
        "active": 1,
        "parked": 4,
        "lingering": 0,
    }


def test_a_snapshot_survives_json_and_a_foreign_one_is_refused() -> None:
    """Workers send snapshots to the arbiter as JSON: the round trip changes nothing; one
    of another shape raises ValueError (the arbiter leaves it out)."""
    import json

    recorder = Recorder()
    recorder.request("GET", 200, 0.01, 5, 0)
    snapshot = merge([recorder.snapshot()])
    assert merge([json.loads(json.dumps(snapshot))]) == snapshot
    bad = json.loads(json.dumps(snapshot))
    bad["counters"]["duration_buckets"] = [1, 2]
    with pytest.raises(ValueError):
        merge([snapshot, bad])
    with pytest.raises(ValueError):
        merge([{"counters": {"sent_bytes": "many"}}])


def test_counters_only_drops_the_gauges_of_a_process_that_is_gone() -> None:
    snapshot = empty_snapshot()
    snapshot["gauges"]["in_flight"] = 5
    snapshot["counters"]["sent_bytes"] = 7
    kept = counters_only(snapshot)
    assert kept["gauges"] == {}
    assert merge([kept])["counters"]["sent_bytes"] == 7
    assert merge([kept])["gauges"]["in_flight"] == 0


def test_an_empty_server_renders_every_family_at_zero() -> None:
    families = rendered(empty_snapshot())
    assert set(families) == {
        "wsgibridge_requests",
        "wsgibridge_request_duration_seconds",
        "wsgibridge_response_size_bytes",
        "wsgibridge_received_bytes",
        "wsgibridge_sent_bytes",
        "wsgibridge_refused",
        "wsgibridge_requests_in_flight",
        "wsgibridge_connections",
        "wsgibridge_worker_threads_busy",
        "wsgibridge_worker_threads",
        "wsgibridge_worker_processes",
        "wsgibridge_start_time_seconds",
        "wsgibridge_build_info",
    }
    for family in families.values():
        assert family.documentation, family.name  # every family has its HELP
    assert {s.labels["state"] for s in samples(families, "wsgibridge_connections")} == set(
        CONNECTION_STATES
    )


def test_build_info_and_start_time() -> None:
    families = rendered(empty_snapshot(), build="compiled", start_time=1700000000.25)
    info = samples(families, "wsgibridge_build_info")
    assert [(s.labels, s.value) for s in info] == [({"version": "1.2.3", "build": "compiled"}, 1)]
    start = "wsgibridge_start_time_seconds"
    assert value(families, start, start) == 1700000000.25


@pytest.mark.parametrize(
    "label",
    ['a"b', "back\\slash", "new\nline", 'all\\"\n', "ünïcode"],
)
def test_label_values_are_escaped_as_the_format_says(label: str) -> None:
    """The text format: in a label value, backslash, double quote and line feed are
    escaped as \\\\, \\" and \\n; the parser reads back the value as it was."""
    families = rendered(empty_snapshot(), version=label)
    (info,) = samples(families, "wsgibridge_build_info")
    assert info.labels["version"] == label
    assert escape_label('x"\\\n') == 'x\\"\\\\\\n'


def test_the_text_ends_with_a_line_feed_and_has_one_help_and_type_per_family() -> None:
    text = render(empty_snapshot(), version="1", build="pure", start_time=0.0)
    assert text.endswith("\n") and not text.endswith("\n\n")
    lines = text.splitlines()
    helps = [line.split()[2] for line in lines if line.startswith("# HELP")]
    types = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert helps == types and len(set(helps)) == len(helps)
    assert all(name.startswith("wsgibridge_") for name in helps)


def test_totals_sum_the_last_snapshot_of_each_source_and_keep_the_counters_of_those_gone() -> None:
    """The arbiter's sum: a source's newer snapshot replaces its older one; one that ends
    leaves its counters (not its gauges), so the sum never goes down."""
    totals = Totals()
    recorder = Recorder()
    recorder.request("GET", 200, 0.01, 1, 0)
    first = merge([recorder.snapshot()])
    first["gauges"]["in_flight"] = 2
    totals.update(101, first)
    totals.update(102, first)
    assert totals.total()["counters"]["requests"] == {"GET": {"2xx": 2}}
    recorder.request("GET", 200, 0.01, 1, 0)
    totals.update(101, merge([recorder.snapshot()]))  # replaces 101's first snapshot
    assert totals.total()["counters"]["requests"] == {"GET": {"2xx": 3}}
    totals.end(102)
    assert totals.total()["counters"]["requests"] == {"GET": {"2xx": 3}}
    assert totals.total()["gauges"]["in_flight"] == 0  # 101's newer one has none
    totals.end(102)  # twice, or a source never heard from: nothing changes
    totals.end(999)
    assert totals.total()["counters"]["requests"] == {"GET": {"2xx": 3}}
    with pytest.raises(ValueError):
        totals.update(101, {"counters": {"sent_bytes": [1]}})
    with pytest.raises(ValueError):
        totals.update(101, ["not", "a", "snapshot"])
    assert totals.total()["counters"]["requests"] == {"GET": {"2xx": 3}}  # the last good one
