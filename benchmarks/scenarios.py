"""The matrix's scenarios: which app each one serves, how it asks, and what must come back.

A scenario is data only; ``client.check_server`` and ``wrk`` send its request
and compare against ``expected_body``.
"""

from __future__ import annotations

from dataclasses import dataclass

import apps


@dataclass(frozen=True)
class Scenario:
    name: str
    app: str
    description: str
    close: bool = False  # send Connection: close
    post_len: int = 0  # POST a body of this many bytes
    unit: str = "req/s"  # what the ratio columns compare: req/s or MiB/s

    @property
    def expected_body(self) -> bytes:
        if self.app == "big":
            return apps.BIG_CHUNK * apps.BIG_CHUNKS
        if self.app == "echo":
            return b"%d" % self.post_len
        return apps.BODY


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("hello-ka", "hello", "13 bytes, Content-Length, keep-alive"),
        Scenario("hello-close", "hello", "13 bytes, Connection: close", close=True),
        Scenario("nolen-ka", "hello_nolen", "13 bytes from a generator, no length"),
        Scenario("big-ka", "big", "1 MiB (16 x 64 KiB), keep-alive", unit="MiB/s"),
        Scenario("echo64k-ka", "echo", "POST 64 KiB read by the app", post_len=65536),
        Scenario("flask-ka", "flask_hello", "Flask hello, keep-alive"),
    )
}
