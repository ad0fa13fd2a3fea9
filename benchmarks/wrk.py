"""Driving wrk: the Lua it runs, the command line, and reading its counters back.

The checked (warm-up) script verifies every response in Lua; the fast one only
counts.  Either way wrk's result comes back as one ``WRKJSON`` line, and any
counter but the EOF ends of close-delimited responses is an error.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass

from common import HOST, BenchError
from scenarios import Scenario
from serverproc import child_setup

WRK_SCRIPT = r"""-- written by benchmarks/run.py
wrk.method = "{method}"
{body}{close}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
{verify}
function done(summary, latency, requests)
  local checked, bad_status, bad_body, first_bad = 0, 0, 0, ""
  for _, t in ipairs(threads) do
    checked = checked + (t:get("checked") or 0)
    bad_status = bad_status + (t:get("bad_status") or 0)
    bad_body = bad_body + (t:get("bad_body") or 0)
    local f = t:get("first_bad")
    if first_bad == "" and f then first_bad = f end
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {{"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,"connect":%.0f,' ..
    '"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,' ..
    '"p99_us":%.0f,"max_us":%.0f,"checked":%.0f,"bad_status":%.0f,' ..
    '"bad_body":%.0f,"first_bad":"%s"}}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99), latency.max,
    checked, bad_status, bad_body, first_bad))
end
"""

WRK_VERIFY = r"""local expected = {expected}
function init(args)
  checked, bad_status, bad_body, first_bad = 0, 0, 0, nil
end
function response(status, headers, body)
  checked = checked + 1
  if status < 200 or status > 299 then
    bad_status = bad_status + 1
    if not first_bad then first_bad = "status " .. status end
  elseif body ~= expected then
    bad_body = bad_body + 1
    if not first_bad then first_bad = "a " .. #body .. "-byte body" end
  end
end
"""


def lua_string(data: bytes) -> str:
    if data and data == data[:1] * len(data):
        return f'string.rep("{data[:1].decode()}", {len(data)})'
    return json.dumps(data.decode("ascii"))  # ASCII bodies: a JSON string is a Lua string


def write_wrk_script(workdir: str, scen: Scenario, verify: bool) -> str:
    path = os.path.join(workdir, f"wrk-{scen.name}-{'verify' if verify else 'fast'}.lua")
    body = ""
    if scen.post_len:
        body = (
            f'wrk.body = string.rep("x", {scen.post_len})\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
        )
    script = WRK_SCRIPT.format(
        method="POST" if scen.post_len else "GET",
        body=body,
        close='wrk.headers["Connection"] = "close"\n' if scen.close else "",
        verify=WRK_VERIFY.format(expected=lua_string(scen.expected_body)) if verify else "",
    )
    with open(path, "w") as f:
        f.write(script)
    return path


@dataclass
class WrkResult:
    seconds: float
    requests: int
    bytes: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int]
    checked: int
    first_bad: str


def run_wrk(
    wrk: str,
    port: int,
    script: str,
    duration: int,
    connections: int,
    timeout: float,
    cpus: set[int] | None,
) -> WrkResult:
    cmd = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        f"{timeout:g}s",
        "-s",
        script,
        f"http://{HOST}:{port}/",
    ]
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=duration + 30,
            preexec_fn=child_setup(cpus),
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish: {shlex.join(cmd)}") from exc
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[len("WRKJSON ") :])
            errors = {k: int(r[k]) for k in ("connect", "read", "write", "timeout", "status")}
            errors["non-2xx"] = int(r["bad_status"])
            errors["bad body"] = int(r["bad_body"])
            return WrkResult(
                seconds=r["duration_us"] / 1e6,
                requests=int(r["requests"]),
                bytes=int(r["bytes"]),
                p50_ms=r["p50_us"] / 1000,
                p99_ms=r["p99_us"] / 1000,
                max_ms=r["max_us"] / 1000,
                errors=errors,
                checked=int(r["checked"]),
                first_bad=str(r["first_bad"]),
            )
    out = (proc.stdout + proc.stderr).strip()[-400:]
    raise BenchError(f"wrk failed (status {proc.returncode}): {shlex.join(cmd)}\n{out}")


def error_text(errors: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in errors.items() if v) or "0"


def eof_ends(result: WrkResult, connections: int, framing: str) -> int:
    """Take out the read errors wrk counts where close-delimited responses end.

    wrk completes such a response at EOF and then counts the EOF itself as one
    read error.  Only when the check saw that framing, and at most one per
    response (plus one per connection), are they not errors.
    """
    reads = result.errors["read"]
    if " eof " not in framing or reads > result.requests + connections:
        return 0
    result.errors["read"] = 0
    return reads
