"""The server's figures as plain numbers, and the Prometheus text format they are read in.

Rule: numbers in, text out - no socket, thread or clock here.  A
:class:`Recorder` holds what one thread has counted (only that thread
writes it, so an increment is never lost and never needs a lock); a
*snapshot* is a JSON-able dict of counters and gauges that
:func:`merge` sums (the threads of a process, the processes under an
arbiter); :func:`render` writes a snapshot in the text exposition format
0.0.4: ``# HELP`` and ``# TYPE`` per family, label values escaped,
histograms as cumulative ``_bucket{le="..."}`` series ending with
``le="+Inf"``, then ``_sum`` and ``_count``.

Labels stay few, whatever the clients send: a method outside
:data:`METHODS` is counted as ``other``, a status by its class (``2xx``;
``none`` for a request cut off before any status went out), a refusal by
its status code (or ``connection_limit``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "CONNECTION_STATES",
    "CONTENT_TYPE",
    "DURATION_BUCKETS",
    "METHODS",
    "SIZE_BUCKETS",
    "Recorder",
    "Snapshot",
    "Totals",
    "counters_only",
    "empty_snapshot",
    "escape_label",
    "merge",
    "render",
]

# The media type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Upper bounds of the histogram buckets (each also has +Inf): seconds, from
# a hello-world answer to a slow report; response body bytes, by powers of ten.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8)

# RFC 9110 §9's methods (and PATCH, RFC 5789); any other is labelled "other".
METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)
OTHER = "other"
# Status classes by status // 100; 0 (no status sent) and anything odd are "none".
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
CONNECTION_STATES = ("active", "parked", "lingering")

# A snapshot: {"counters": {...}, "gauges": {...}} of numbers, lists of numbers
# (histogram buckets) and dicts of those (by label value).
Snapshot = dict[str, Any]


class Recorder:
    """What one thread has counted; written by that thread only, read by anyone.

    An increment is a read-modify-write of a plain attribute: safe without a
    lock because no other thread ever writes this object.  A reader may see
    a request half-counted (its count but not yet its duration), never a
    count lost.
    """

    __slots__ = (
        "duration_buckets",
        "duration_sum",
        "received_bytes",
        "requests",
        "sent_bytes",
        "size_buckets",
        "size_sum",
    )

    def __init__(self) -> None:
        # (method, status // 100) -> requests; mapped to labels at snapshot time.
        self.requests: dict[tuple[str, int], int] = {}
        # Per bucket (not cumulative): the first bound >= the value, the last +Inf.
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.size_buckets = [0] * (len(SIZE_BUCKETS) + 1)
        self.size_sum = 0
        self.sent_bytes = 0
        self.received_bytes = 0

    def request(self, method: str, status: int, duration: float, sent: int, received: int) -> None:
        """One request answered: ``sent`` and ``received`` are body bytes."""
        key = (method if method in METHODS else OTHER, status // 100)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        self.duration_buckets[bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum += duration
        self.size_buckets[bisect_left(SIZE_BUCKETS, sent)] += 1
        self.size_sum += sent
        self.sent_bytes += sent
        self.received_bytes += received

    def snapshot(self) -> Snapshot:
        """This recorder's counters (copies: the thread goes on counting)."""
        requests: dict[str, dict[str, int]] = {}
        for (method, status_class), count in list(self.requests.items()):
            label = STATUS_CLASSES[status_class] if 0 < status_class < 6 else "none"
            by_class = requests.setdefault(method, {})
            by_class[label] = by_class.get(label, 0) + count
        return {
            "counters": {
                "requests": requests,
                "duration_buckets": list(self.duration_buckets),
                "duration_sum": self.duration_sum,
                "size_buckets": list(self.size_buckets),
                "size_sum": self.size_sum,
                "sent_bytes": self.sent_bytes,
                "received_bytes": self.received_bytes,
            },
            "gauges": {},
        }


def empty_snapshot() -> Snapshot:
    """Every figure at zero (what a server that has served nothing reports)."""
    snapshot = Recorder().snapshot()
    snapshot["counters"]["refused"] = {}
    snapshot["gauges"] = {
        "in_flight": 0,
        "connections": dict.fromkeys(CONNECTION_STATES, 0),
        "threads_busy": 0,
        "threads": 0,
        "processes": 0,
    }
    return snapshot


def merge(snapshots: Iterable[Mapping[str, Any]]) -> Snapshot:
    """The sum of ``snapshots``: numbers added, lists added item by item, dicts key by key.

    A value that does not fit (a worker of another version sending another
    shape) raises ``ValueError``; the caller leaves that snapshot out.
    """
    total: Snapshot = empty_snapshot()
    for snapshot in snapshots:
        total = _add(total, snapshot)
    return total


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, Mapping):
        out = dict(a)
        for key, value in b.items():
            out[key] = _add(out[key], value) if key in out else _add(_zero(value), value)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_add(x, y) for x, y in zip(a, b, strict=True)]
    if _is_number(a) and _is_number(b):
        return a + b
    raise ValueError(f"snapshots do not match: {a!r} and {b!r}")


def _zero(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {}
    if isinstance(value, list):
        return [0] * len(value)
    return 0


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def counters_only(snapshot: Mapping[str, Any]) -> Snapshot:
    """``snapshot`` without its gauges (what stays of a process that is gone)."""
    return {"counters": dict(snapshot.get("counters", {})), "gauges": {}}


class Totals:
    """The sum over sources (worker processes) of the last snapshot each sent.

    A source that ends leaves its counters in the sum (not its gauges), so
    the counters never go down while sources come and go.
    """

    def __init__(self) -> None:
        self._latest: dict[int, Snapshot] = {}
        self._ended: Snapshot = empty_snapshot()

    def update(self, source: int, snapshot: Any) -> None:
        """``source``'s figures now; ``ValueError`` (and the last ones kept) if they do not sum."""
        if not isinstance(snapshot, dict):
            raise ValueError(f"a snapshot is a dict, not {snapshot!r}")
        merge([snapshot])
        self._latest[source] = snapshot

    def end(self, source: int) -> None:
        """``source`` is gone: its last counters join the sum for good."""
        snapshot = self._latest.pop(source, None)
        if snapshot is not None:
            self._ended = merge([self._ended, counters_only(snapshot)])

    def total(self) -> Snapshot:
        return merge([self._ended, *self._latest.values()])


# -- the text format -------------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value as the text format writes it: backslash, double quote, newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    """A sample value: integers as such, floats as Python writes them, +Inf/-Inf/NaN."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{escape_label(value)}"' for name, value in pairs)
    return f"{{{inner}}}" if inner else ""


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_number(value)}")

    def histogram(
        self, name: str, help: str, bounds: tuple[float, ...], buckets: list[int], total: float
    ) -> None:
        self.family(name, "histogram", help)
        cumulative = 0
        for bound, count in zip((*bounds, math.inf), buckets, strict=True):
            cumulative += count
            le = "+Inf" if bound == math.inf else repr(float(bound))
            self.sample(f"{name}_bucket", cumulative, [("le", le)])
        self.sample(f"{name}_sum", total)
        self.sample(f"{name}_count", cumulative)


def render(snapshot: Mapping[str, Any], *, version: str, build: str, start_time: float) -> str:
    """``snapshot`` in the Prometheus text format 0.0.4, with the build and the start time.

    ``start_time`` is the Unix time the figures began at (the server's, or
    the arbiter's under ``--workers``: counters restart only with it).
    """
    counters = snapshot["counters"]
    gauges = snapshot["gauges"]
    text = _Text()
    text.family(
        "wsgibridge_requests_total",
        "counter",
        "Requests answered (or cut off by the stop), by method and status class.",
    )
    for method, by_class in sorted(counters["requests"].items()):
        for status_class, count in sorted(by_class.items()):
            text.sample(
                "wsgibridge_requests_total",
                count,
                [("method", method), ("status_class", status_class)],
            )
    text.histogram(
        "wsgibridge_request_duration_seconds",
        "Seconds from a request's first byte read to its response sent.",
        DURATION_BUCKETS,
        counters["duration_buckets"],
        counters["duration_sum"],
    )
    text.histogram(
        "wsgibridge_response_size_bytes",
        "Response body bytes sent per request.",
        SIZE_BUCKETS,
        counters["size_buckets"],
        counters["size_sum"],
    )
    text.family(
        "wsgibridge_received_bytes_total", "counter", "Request body bytes read from clients."
    )
    text.sample("wsgibridge_received_bytes_total", counters["received_bytes"])
    text.family("wsgibridge_sent_bytes_total", "counter", "Response body bytes sent to clients.")
    text.sample("wsgibridge_sent_bytes_total", counters["sent_bytes"])
    text.family(
        "wsgibridge_refused_total",
        "counter",
        "Requests the server refused itself, by status code; connection_limit counts the"
        " times accepting paused at --connection-limit (new clients wait in the backlog).",
    )
    for reason, count in sorted(counters.get("refused", {}).items()):
        text.sample("wsgibridge_refused_total", count, [("reason", reason)])
    text.family(
        "wsgibridge_requests_in_flight",
        "gauge",
        "Requests whose head has been read and whose response is not finished.",
    )
    text.sample("wsgibridge_requests_in_flight", gauges.get("in_flight", 0))
    text.family(
        "wsgibridge_connections",
        "gauge",
        "Open connections: active (a thread serves it), parked (idle, holding no thread),"
        " lingering (closing, the client's last bytes read and dropped).",
    )
    states = gauges.get("connections", {})
    for state in CONNECTION_STATES:
        text.sample("wsgibridge_connections", states.get(state, 0), [("state", state)])
    text.family("wsgibridge_worker_threads_busy", "gauge", "Worker threads serving a connection.")
    text.sample("wsgibridge_worker_threads_busy", gauges.get("threads_busy", 0))
    text.family("wsgibridge_worker_threads", "gauge", "Worker threads, busy or idle.")
    text.sample("wsgibridge_worker_threads", gauges.get("threads", 0))
    text.family("wsgibridge_worker_processes", "gauge", "Processes whose figures are summed here.")
    text.sample("wsgibridge_worker_processes", gauges.get("processes", 0))
    text.family(
        "wsgibridge_start_time_seconds",
        "gauge",
        "Unix time the server (the arbiter, with --workers) started: counters begin there.",
    )
    text.sample("wsgibridge_start_time_seconds", start_time)
    text.family(
        "wsgibridge_build_info", "gauge", "The running version and build (pure or compiled)."
    )
    text.sample("wsgibridge_build_info", 1, [("version", version), ("build", build)])
    return "\n".join(text.lines) + "\n"
