"""``--upload-gib G``: a server's memory while a G GiB body streams to ``apps:upload_sink``.

The body is sent once with ``Content-Length`` and once chunked (64 KiB
chunks); the byte count the app answers is checked, and the server's peak
RSS (``VmHWM``) is what is reported.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from client import HTTPConnection
from common import MIB, BenchError, Settings, base_name, out, say
from serverproc import ServerProcess
from servers import ServerSpec


@dataclass
class UploadResult:
    server: str
    framing: str
    size: int
    seconds: float = 0.0
    rss_before_mib: float = 0.0
    peak_rss_mib: float = 0.0
    error: str = ""


def upload_test(spec: ServerSpec, size: int, framing: str, st: Settings) -> UploadResult:
    result = UploadResult(spec.name, framing, size)
    chunk = memoryview(b"u" * 65536)
    with ServerProcess(spec, "upload_sink", st.server_cpus, st.workdir) as server:
        try:
            server.wait_ready()
            result.rss_before_mib = server.peak_rss_kib() / 1024
            with HTTPConnection(server.port, timeout=60.0) as conn:
                framing_header = (
                    f"Content-Length: {size}"
                    if framing == "length"
                    else "Transfer-Encoding: chunked"
                )
                head = conn.head(
                    "POST", True, ["Content-Type: application/octet-stream", framing_header]
                )
                began = time.perf_counter()
                conn.sock.sendall(head)
                left = size
                while left > 0:
                    piece = chunk[: min(left, len(chunk))]
                    if framing == "chunked":
                        conn.sock.sendall(b"%x\r\n" % len(piece))
                        conn.sock.sendall(piece)
                        conn.sock.sendall(b"\r\n")
                    else:
                        conn.sock.sendall(piece)
                    left -= len(piece)
                if framing == "chunked":
                    conn.sock.sendall(b"0\r\n\r\n")
                conn.begin(60.0)
                resp = conn.read_response()
                result.seconds = time.perf_counter() - began
            if resp.status != 200 or resp.body != str(size).encode():
                raise BenchError(f"upload answered {resp.status} {resp.body[:60]!r}")
            result.peak_rss_mib = server.peak_rss_kib() / 1024
        except (BenchError, OSError) as exc:
            result.error = str(exc).strip().splitlines()[0]
    return result


def format_upload(r: UploadResult) -> str:
    if r.error:
        return f"{r.server} {r.framing}: FAIL {r.error}"
    return f"{r.server} {r.framing}: {r.seconds:.1f} s, peak RSS {r.peak_rss_mib:.1f} MiB"


def upload_table(rows: list[UploadResult]) -> str:
    lines = [
        "| server | body | size | MiB/s | RSS before MiB | peak RSS MiB (VmHWM) | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        body = "Content-Length" if r.framing == "length" else "chunked (64 KiB chunks)"
        if r.error:
            lines.append(
                f"| {r.server} | {body} | {r.size / (1 << 30):g} GiB | **FAIL**: {r.error} |||"
            )
            continue
        target = "-"
        if base_name(r.server) == "wsgibridge":
            target = "<= 64 MiB: " + ("met" if r.peak_rss_mib <= 64 else "**missed**")
        lines.append(
            f"| {r.server} | {body} | {r.size / (1 << 30):g} GiB | {r.size / MIB / r.seconds:,.0f} "
            f"| {r.rss_before_mib:.1f} | {r.peak_rss_mib:.1f} | {target} |"
        )
    return "\n".join(lines)


def report_upload(
    specs: list[ServerSpec], gib: float, st: Settings, record: dict[str, Any]
) -> bool:
    """Both framings for every installed server that serves the sink; True if a row failed."""
    size = int(gib * (1 << 30))
    up_specs = [s for s in specs if not s.missing() and s.supports("upload_sink")]
    rows_up = []
    for spec in up_specs:
        for framing in ("length", "chunked"):
            rows_up.append(upload_test(spec, size, framing, st))
            say(f"  {format_upload(rows_up[-1])}")
    record["upload"] = [asdict(r) for r in rows_up]
    out()
    out(f"### A {gib:g} GiB upload streamed to apps:upload_sink")
    out()
    out(upload_table(rows_up))
    return any(r.error for r in rows_up)
