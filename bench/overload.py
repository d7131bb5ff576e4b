"""Overload: open-loop arrivals at 2x and 4x the measured capacity, with cache hits mixed in.

What a production service must do there: shed the excess with 503 + Retry-After (no other 5xx),
finish every job it accepted, and keep answering cache hits quickly."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from .common import RESULTS, commit, machine, table, ttsd_server
from .loadgen import Sample, open_loop

HOT = {"text": "Thank you for calling. Please hold while we connect you.", "format": "mp3"}
SECONDS = 10.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_all(url: str, task_ids: list[str], timeout: float = 600) -> tuple[int, int, float]:
    started = time.monotonic()
    done = failed = 0
    pending = set(task_ids)
    with httpx.Client(base_url=url, timeout=30) as client:
        while pending and time.monotonic() - started < timeout:
            for task_id in list(pending):
                status = client.get(f"/v1/tasks/{task_id}").json()["status"]
                if status in ("done", "failed"):
                    pending.discard(task_id)
                    done += status == "done"
                    failed += status == "failed"
            time.sleep(0.02)
    return done, failed + len(pending), time.monotonic() - started


def capacity(url: str) -> float:
    """Jobs per second with every slot busy: a batch of new texts at once, timed until all are done."""
    with httpx.Client(base_url=url, timeout=120) as client:
        started = time.monotonic()
        ids = [
            client.post("/v1/synthesize", json={"text": f"Capacity probe {i} of the benchmark."}).json()[
                "task_id"
            ]
            for i in range(16)
        ]
        wait_all(url, ids)
        return len(ids) / (time.monotonic() - started)


def summarise(name: str, offered: float, samples: list[Sample], url: str) -> dict[str, Any]:
    misses = [s for s in samples if s.kind == "miss"]
    hits = [s for s in samples if s.kind == "hit"]
    accepted = [s.task_id for s in misses if s.status == 202 and s.task_id]
    shed = [s for s in misses if s.status == 503]
    other = [s for s in samples if s.status not in (200, 202, 503)]
    done, lost, drain = wait_all(url, accepted)
    return {
        "phase": name,
        "offered_per_s": offered,
        "requests": len(misses),
        "accepted": len(accepted),
        "shed_503": len(shed),
        "shed_with_retry_after": sum(1 for s in shed if s.retry_after),
        "other_errors": len(other),
        "accepted_done": done,
        "accepted_lost_or_failed": lost,
        "drain_seconds": drain,
        "hit_p50_ms": percentile([s.latency for s in hits if s.status == 200], 0.5) * 1000,
        "hit_p99_ms": percentile([s.latency for s in hits if s.status == 200], 0.99) * 1000,
        "hits_not_200": sum(1 for s in hits if s.status != 200),
        "miss_response_p99_ms": percentile([s.latency for s in misses], 0.99) * 1000,
    }


def run() -> dict[str, Any]:
    phases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        env = {"TTSD_ENGINES": "piper", "TTSD_ENGINE_SLOTS": "2", "TTSD_MAX_WAIT": "5"}
        with ttsd_server(data, **env) as url:
            with httpx.Client(base_url=url, timeout=60) as client:
                task = client.post("/v1/synthesize", json=HOT).json()
                wait_all(url, [task["task_id"]])
            cap = capacity(url)
            for name, factor in (("idle (hits only)", 0.0), ("2x capacity", 2.0), ("4x capacity", 4.0)):
                offered = factor * cap
                samples = open_loop(url, offered, SECONDS, hit_rate=20.0, hot=HOT, tag=name)
                phases.append(summarise(name, offered, samples, url))
    result = {"scenario": "overload", "commit": commit(), "machine": machine(), "capacity_jobs_per_s": cap,
              "phases": phases}  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "overload.json").write_text(json.dumps(result, indent=2))
    rows = [("phase", "offered/s", "accepted", "503 (with Retry-After)", "other errors", "accepted done",
             "hit P50", "hit P99")]  # fmt: skip
    for p in phases:
        rows.append(
            (
                p["phase"],
                f"{p['offered_per_s']:.1f}",
                str(p["accepted"]),
                f"{p['shed_503']} ({p['shed_with_retry_after']})",
                str(p["other_errors"]),
                f"{p['accepted_done']}/{p['accepted']}",
                f"{p['hit_p50_ms']:.1f} ms",
                f"{p['hit_p99_ms']:.1f} ms",
            )
        )
    text = (
        f"## Overload (open loop)\n\ncommit {result['commit']}, {machine()['cpu']} x {machine()['cores']}; "
        f"Piper, 2 engine slots, TTSD_MAX_WAIT=5; measured capacity {cap:.1f} jobs/s; "
        f"{SECONDS:.0f} s per phase, load generated by a separate process; hits at 20/s throughout.\n\n"
        f"{table(rows)}\n"
    )
    (RESULTS / "overload.md").write_text(text)
    print(text)
    return result
