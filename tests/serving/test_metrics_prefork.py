"""``--workers N --metrics-bind``: the arbiter answers with the sum over every worker.

Real processes (``python -m wsgibridge`` in its own session), real sockets.
Each request goes on a connection of its own with ``Connection: close`` and
is read until the server closes it: a worker counts a request before it
closes its connection, so by then the count is in that worker.  Which
worker a connection goes to is the kernel's choice: the tests send until
both have answered, and count what they sent.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import ResponseReader, needs_unix
from ..test_serving_processes import (
    Address,
    Launcher,
    ServerProcess,
    parse_address,
    read_until_closed,
    request,
    short_directory,
)
from .prefork_helpers import launcher_in
from .test_scrape import requests_total, total

pytestmark = [pytest.mark.slow, pytest.mark.integration]  # starts real processes

Families = dict[str, Any]
METRICS_LINE = r"metrics: GET /metrics on (?P<addresses>.+)$"


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launcher]:
    yield from launcher_in(tmp_path)


def metrics_addresses(server: ServerProcess) -> list[Address]:
    match = server.wait_for(METRICS_LINE)
    return [parse_address(text) for text in match["addresses"].split(", ")]


def scrape(launch: Launcher, address: Address) -> Families:
    sock = launch.connect(address)
    try:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\n\r\n")
        response = ResponseReader(sock).read_response()
    finally:
        sock.close()
    assert response.status == 200, response
    assert response.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    text = response.body.decode("utf-8")
    return {family.name: family for family in text_string_to_metric_families(text)}


def one_request(launch: Launcher, address: Address, raw: bytes | None = None) -> bytes:
    """One request on a connection of its own, read until the server closes it."""
    sock = launch.connect(address)
    try:
        sock.sendall(raw if raw is not None else request("/", close=True))
        return read_until_closed(sock, 5.0)
    finally:
        sock.close()


def spread(launch: Launcher, address: Address, at_least: int, timeout: float = 20.0) -> int:
    """Requests until ``at_least`` were sent and two workers answered; how many were sent."""
    pids: set[bytes] = set()
    sent = 0
    deadline = time.monotonic() + timeout
    while sent < at_least or len(pids) < 2:
        assert time.monotonic() < deadline, f"only {pids} answered {sent} requests"
        answer = one_request(launch, address)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        pids.add(answer.rpartition(b"\r\n\r\n")[2].split()[0])
        sent += 1
    return sent


def test_the_counters_are_the_sum_over_two_workers_exactly(launch: Launcher) -> None:
    server = launch.start(
        "--port", "0", "--workers", "2", "--threads", "3", "--metrics-bind", "127.0.0.1:0",
        "--no-access-log", app="verapp:app",
    )  # fmt: skip
    (address,) = server.serving()
    (metrics,) = metrics_addresses(server)
    before = scrape(launch, metrics)
    assert requests_total(before) == 0
    sent = spread(launch, address, at_least=20)
    after = scrape(launch, metrics)
    assert requests_total(after) == sent
    assert requests_total(after, method="GET", status_class="2xx") == sent
    duration = "wsgibridge_request_duration_seconds"
    assert total(after, duration, f"{duration}_count") == sent
    assert total(after, duration, f"{duration}_bucket", le="+Inf") == sent
    size = "wsgibridge_response_size_bytes"
    assert total(after, size, f"{size}_sum") == total(
        after, "wsgibridge_sent_bytes", "wsgibridge_sent_bytes_total"
    )
    assert total(after, "wsgibridge_worker_processes") == 2
    assert total(after, "wsgibridge_worker_threads") == 6  # 2 workers x 3 threads
    assert total(after, "wsgibridge_start_time_seconds") <= time.time()
    # A malformed request: refused by whichever worker got it, counted once in the sum.
    answer = one_request(launch, address, b"GET / HTTP/1.1 junk\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    refused = scrape(launch, metrics)
    assert total(refused, "wsgibridge_refused", "wsgibridge_refused_total", reason="400") == 1
    assert requests_total(refused) == sent + 1
    assert requests_total(refused, status_class="4xx") == 1
    # The metrics listener is not the app's, and the app's port is not the metrics'.
    other = launch.get(metrics, "/")
    assert other.status == 404
    assert launch.get(address, "/metrics").status == 200  # the app's answer: "PID v1"
    assert requests_total(scrape(launch, metrics)) == sent + 2


def test_counters_never_go_down_as_workers_are_recycled(launch: Launcher) -> None:
    """--max-requests 4: workers are replaced again and again; what a worker counted
    stays in the sum after it exits (its last message is its final figures)."""
    server = launch.start(
        "--port", "0", "--workers", "2", "--max-requests", "4", "--metrics-bind",
        "127.0.0.1:0", "--no-access-log", app="verapp:app",
    )  # fmt: skip
    (address,) = server.serving()
    (metrics,) = metrics_addresses(server)
    seen = 0.0
    sent = 0
    for _ in range(6):
        for _ in range(5):
            assert one_request(launch, address).startswith(b"HTTP/1.1 200 ")
            sent += 1
        count = requests_total(scrape(launch, metrics))
        assert seen <= count <= sent  # never down, never more than were sent
        seen = count
    server.wait_for(r"worker \d+ retired")
    # Once the workers asked to go have gone, every request is in the sum, exactly.
    deadline = time.monotonic() + 15
    while (count := requests_total(scrape(launch, metrics))) != sent:
        assert seen <= count < sent
        seen = count
        assert time.monotonic() < deadline, f"{count} of {sent} requests counted"
        time.sleep(0.1)


def test_a_worker_that_does_not_answer_delays_a_scrape_by_a_second_at_most(
    launch: Launcher,
) -> None:
    """A stopped worker (SIGSTOP) cannot answer: the scrape comes after the arbiter's
    bounded wait, with that worker's last figures, and the next worker's are fresh; the
    scrapes after it are not held up by the same worker again; woken, it catches up."""
    server = launch.start(
        "--port", "0", "--workers", "2", "--metrics-bind", "127.0.0.1:0", "--no-access-log",
        app="verapp:app",
    )  # fmt: skip
    (address,) = server.serving()
    (metrics,) = metrics_addresses(server)
    sent = spread(launch, address, at_least=6)
    assert requests_total(scrape(launch, metrics)) == sent  # both answered: last figures
    answer = one_request(launch, address)
    sent += 1
    pid = int(answer.rpartition(b"\r\n\r\n")[2].split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        late = scrape(launch, metrics)
        took = time.monotonic() - started
        server.wait_for(rf"metrics: no figures from worker\(s\) \[{pid}\] within 1s")
        # The silent worker is not waited for again: the next scrapes come at once.
        scrapers = [launch.connect(metrics) for _ in range(4)]
        started = time.monotonic()
        for sock in scrapers:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\n\r\n")
        statuses = [ResponseReader(sock).read_response().status for sock in scrapers]
        together = time.monotonic() - started
        for sock in scrapers:
            sock.close()
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 0.9 < took < 4.0
    assert statuses == [200] * 4
    assert together < 0.9  # less than one wait; one each: 4 s
    # Its last request may be missing (it was counted after its last figures), no more.
    assert sent - 1 <= requests_total(late) <= sent
    # Woken, it answers the ask it missed, and the figures catch up.
    deadline = time.monotonic() + 5
    while requests_total(scrape(launch, metrics)) != sent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests_total(scrape(launch, metrics)) == sent


@needs_unix
def test_a_unix_metrics_socket_under_the_arbiter_is_removed_at_the_stop(launch: Launcher) -> None:
    with short_directory("wbm-") as directory:
        path = directory / "metrics.sock"
        server = launch.start(
            "--port", "0", "--workers", "2", "--metrics-bind", f"unix:{path}",
            "--metrics-bind", "127.0.0.1:0", "--no-access-log", app="verapp:app",
        )  # fmt: skip
        (address,) = server.serving()
        unix, tcp = metrics_addresses(server)
        assert unix == str(path)
        sent = spread(launch, address, at_least=4)
        assert requests_total(scrape(launch, unix)) == sent
        assert requests_total(scrape(launch, tcp)) == sent
        server.send(signal.SIGTERM)
        assert server.wait(20) == 0
        assert not path.exists()
        assert not isinstance(tcp, str)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(tcp, timeout=2).close()
