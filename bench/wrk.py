"""wrk, the load generator of the hit benchmarks: one request body over and over, or a request
picked per request among many (uniformly or by Zipf's law), each run after a warm-up, read back as
a ``Load``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import psutil

SECONDS = 15
WARMUP_SECONDS = 2
CONNECTIONS = 64
THREADS = 2
Pick = Literal["uniform", "zipf"]

DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"status_errors":%d,'
    .. '"socket_errors":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    rss_mb: float | None = None


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (Debian package) ...", file=sys.stderr)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, env={**os.environ,
                   "DEBIAN_FRONTEND": "noninteractive"})  # fmt: skip
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk could not be installed")
    return found


def _lua(method: str, body: dict[str, Any] | None, headers: dict[str, str]) -> str:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    return "\n".join(lines) + "\n"


def wrk(
    url: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    seconds: float = SECONDS,
    pid: int | None = None,
) -> Load:
    return _run(url, seconds, pid, lambda tmp: _lua(method, body, headers or {}))


def _run(url: str, seconds: float, pid: int | None, script_in: Callable[[str], str]) -> Load:
    """wrk with the script ``script_in(a temporary directory)`` and our ``done``, after a warm-up."""
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "load.lua")
        with open(script, "w") as fh:
            fh.write(script_in(tmp) + DONE_LUA)
        return _wrk(script, url, seconds, pid)


def _wrk(script: str, url: str, seconds: float, pid: int | None) -> Load:
    base = ["wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", "-s", script, url]
    subprocess.run([*base[:3], f"-d{WARMUP_SECONDS}s", *base[3:]], capture_output=True, check=True)
    out = subprocess.run(
        [*base[:3], f"-d{int(seconds)}s", *base[3:]], capture_output=True, text=True, check=True
    )
    match = re.search(r"WRK_JSON (\{.*\})", out.stdout)
    if not match:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    return load_of(json.loads(match.group(1)), pid)


def load_of(r: dict[str, Any], pid: int | None) -> Load:
    rss = psutil.Process(pid).memory_info().rss / 2**20 if pid else None
    return Load(
        rps=r["requests"] / (r["duration_us"] / 1e6),
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        requests=r["requests"],
        errors=r["status_errors"] + r["socket_errors"],
        rss_mb=rss,
    )


_LUA = """
local requests = {}
for line in io.lines(BODIES) do requests[#requests + 1] = wrk.format(nil, nil, nil, line) end
local cdf = nil
if PICK == "zipf" then
  cdf, total = {}, 0
  for i = 1, #requests do total = total + 1 / i; cdf[i] = total end
  for i = 1, #requests do cdf[i] = cdf[i] / total end
end
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + (thread_number or 0))
end
function request()
  if cdf == nil then return requests[math.random(#requests)] end
  local r, lo, hi = math.random(), 1, #requests
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return requests[lo]
end
"""


def lua_over(bodies: list[dict[str, Any]], pick: Pick, headers: dict[str, str], bodies_path: str) -> str:
    """A wrk script sending POSTs of ``bodies`` (written one a line to ``bodies_path``), picked
    uniformly or by Zipf's law (s = 1: the i-th most asked is asked 1/i as often as the first)."""
    with open(bodies_path, "w") as fh:
        fh.writelines(json.dumps(body) + "\n" for body in bodies)
    lines = [
        'wrk.method = "POST"',
        'wrk.headers["Content-Type"] = "application/json"',
        *(f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()),
        f"BODIES = {json.dumps(bodies_path)}",
        f'PICK = "{pick}"',
    ]
    return "\n".join(lines) + "\n" + _LUA


def wrk_over(
    url: str,
    bodies: list[dict[str, Any]],
    pick: Pick,
    *,
    headers: dict[str, str],
    seconds: float = SECONDS,
    pid: int | None = None,
) -> Load:
    """POSTs to ``url`` over ``bodies`` (after the same warm-up as ``wrk``)."""
    return _run(url, seconds, pid, lambda tmp: lua_over(bodies, pick, headers, f"{tmp}/bodies.jsonl"))
