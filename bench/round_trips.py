"""What a distributed job asks of Redis and object storage (issue 29's profile): Redis round trips
by the process that makes them, and S3 requests by type with the time SeaweedFS took for each.

A round trip is a wait on the network for the process that makes it, whatever it carries (one
command, a pipeline, a script), so it is counted where Redis sees one: each ``read`` of a client's
socket by the Redis server, traced with ``strace`` and attributed, by the client's port, to the
process that holds the connection. The run: the stack of ``bench.distributed`` (Redis, SeaweedFS,
one ``ttsd worker --slots 1``, one API), eSpeak; first 3 s idle (heartbeats, busy gauges, the
broker's blocking pops), then 200 one-sentence texts and 40 eight-sentence texts, each submitted at
once and polled as ``bench.distributed`` does. The idle rate is taken off each run's count. Tracing
slows Redis, so the same runs are made again, untraced (new texts), for the S3 requests: their
count and SeaweedFS's own time for them (its Prometheus histogram). Throughput belongs to
``bench.distributed``.

Needs ``strace`` (Debian's package) and leave to trace (root, or ``ptrace_scope`` 0). Writes
``bench/results/round-trips.md`` and ``round-trips.json``.
"""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from .common import commit, machine, publish, table
from .distributed import _run, joined, short_texts, tag

_READ = re.compile(r"read\((\d+),.*\) = (\d+)$")
_S3 = re.compile(r'^SeaweedFS_s3_request_seconds_(sum|count)\{bucket="ttsd-test",type="(\w+)"\} (\S+)$')
IDLE_SECONDS = 3.0


def _traced(redis_pid: int, out: Path, action: Any) -> float:
    """Run ``action`` while Redis's reads are traced to ``out``; its seconds."""
    tracer = subprocess.Popen(
        ["strace", "-f", "-e", "trace=read", "-p", str(redis_pid), "-o", str(out)],
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # attached to every thread
    started = time.monotonic()
    action()
    seconds = time.monotonic() - started
    time.sleep(0.3)
    tracer.terminate()
    tracer.wait()
    return seconds


def _reads(
    out: Path, fd_port: dict[int, int], port_pid: dict[int, int], names: dict[int, str]
) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for line in out.read_text().splitlines():
        match = _READ.search(line.strip())
        if match is None:
            continue
        port = fd_port.get(int(match.group(1)))
        counts[names.get(port_pid.get(port, -1), "other") if port else "other"] += 1
    return dict(counts)


def _s3(metrics_url: str) -> dict[str, dict[str, float]]:
    """SeaweedFS's S3 requests so far, by type: how many, and its seconds for them."""
    import httpx

    found: dict[str, dict[str, float]] = {}
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        match = _S3.match(line)
        if match is not None:
            found.setdefault(match.group(2), {})[match.group(1)] = float(match.group(3))
    return found


def _s3_run(metrics_url: str, url: str, bodies: list[str]) -> dict[str, dict[str, float]]:
    before = _s3(metrics_url)
    asyncio.run(_run(url, bodies))
    after = _s3(metrics_url)
    return {
        kind: {k: v - before.get(kind, {}).get(k, 0.0) for k, v in figures.items()}
        for kind, figures in after.items()
        if figures.get("count", 0.0) > before.get(kind, {}).get("count", 0.0)
    }


def run() -> dict[str, Any]:
    import redis
    from tests.servers import stop_server
    from tests.stack import start_stack

    if shutil.which("strace") is None:
        raise SystemExit("round_trips needs strace (apt-get install strace)")
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-round-trips-") as tmp:
        stack = start_stack(Path(tmp), workers=1, env={"TTSD_ENGINES": "espeak"})
        try:
            api = stack.server(env={"TTSD_MAX_WAIT": "600"})
            client = redis.Redis.from_url(stack.redis.url)
            asyncio.run(_run(api.url, joined(f"warm {tag()}", 2)))
            worker = psutil.Process(stack.workers[0].pid)
            names = {worker.pid: "worker", api.process.pid: "api"}
            work: dict[str, list[str] | None] = {
                "idle": None,
                "one-sentence": short_texts(tag()),
                "eight-sentence": joined(tag()),
            }
            for name, bodies in work.items():
                out = Path(tmp) / f"{name}.strace"
                url = api.url

                def action(bodies: list[str] | None = bodies, url: str = url) -> None:
                    if bodies is None:
                        time.sleep(IDLE_SECONDS)
                    else:
                        asyncio.run(_run(url, bodies))

                seconds = _traced(stack.redis.process.pid, out, action)
                fd_port = {int(c["fd"]): int(c["addr"].rsplit(":", 1)[1]) for c in client.client_list()}
                port_pid = {c.laddr.port: c.pid for c in psutil.net_connections("tcp") if c.laddr and c.pid}
                runs[name] = {
                    "seconds": seconds,
                    "jobs": len(bodies or []),
                    "reads": _reads(out, fd_port, port_pid, names),
                }
                if bodies is not None:
                    again = short_texts(tag()) if name == "one-sentence" else joined(tag())
                    runs[name]["s3"] = _s3_run(stack.s3.metrics_url, api.url, again)
            stop_server(api)
        finally:
            stack.discard()
    result = {
        "scenario": "round-trips",
        "commit": commit(),
        "machine": machine(),
        "runs": runs,
        "seconds": time.monotonic() - started,
    }
    publish("round-trips", result, render(result))
    return result


def per_job(r: dict[str, Any], run: str, process: str) -> float:
    idle = r["runs"]["idle"]
    rate = idle["reads"].get(process, 0) / idle["seconds"]
    d = r["runs"][run]
    return (d["reads"].get(process, 0) - rate * d["seconds"]) / d["jobs"]


def render(r: dict[str, Any]) -> str:
    idle = r["runs"]["idle"]
    rows = [
        (
            "per job",
            "Redis round trips: worker",
            "API (the submission and the client's polls)",
            "S3 requests (SeaweedFS's mean time)",
        ),
        (
            "idle, per second",
            f"{idle['reads'].get('worker', 0) / idle['seconds']:.1f}",
            f"{idle['reads'].get('api', 0) / idle['seconds']:.1f}",
            "–",
        ),
        *(
            (
                f"{run} job",
                f"{per_job(r, run, 'worker'):.1f}",
                f"{per_job(r, run, 'api'):.1f}",
                _s3_cell(r["runs"][run]),
            )
            for run in ("one-sentence", "eight-sentence")
        ),
    ]
    m = r["machine"]
    return (
        "## What a distributed job asks of Redis and S3\n\n"
        f"commit {r['commit']}, {m['cpu']} x {m['cores']} cores, {r['seconds']:.0f} s; eSpeak, one worker "
        "of one slot, one API. Round trips: reads of each client's socket by Redis, traced, less the idle "
        "rate; S3 requests: the same runs again, untraced.\n\n"
        f"{table(rows)}\n"
    )


def _s3_cell(d: dict[str, Any]) -> str:
    jobs = d["jobs"]
    return (
        ", ".join(
            f"{f['count'] / jobs:.1f} {kind} ({1000 * f['sum'] / f['count']:.1f} ms)"
            for kind, f in sorted(d.get("s3", {}).items())
        )
        or "none"
    )
