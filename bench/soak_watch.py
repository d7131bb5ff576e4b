"""What the soak watches besides its own requests: the server's processes, its data directory, its
``/v1/stats`` and its log, every few seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import psutil

if TYPE_CHECKING:
    from .soak import Soak


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memory(pid: int | None) -> tuple[float, float]:
    """RSS of the API process, and of its engine processes together, in MB: apart, because the
    400 MB target is the API's, and the engines' models are most of what the service holds."""
    if pid is None:
        return math.nan, math.nan
    try:
        api = psutil.Process(pid)
        engines = 0
        for child in api.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                engines += child.memory_info().rss
        return api.memory_info().rss / 1e6, engines / 1e6
    except psutil.Error:
        return math.nan, math.nan


def disk(data_dir: Path, seen: dict[str, int]) -> tuple[int, int]:
    """Bytes of the files under ``data_dir`` (apparent sizes, as the budget counts them), and of
    those the SQLite index's (with its WAL, which the budget does not count); every file met is
    remembered in ``seen``, so the run's bytes written have a floor even after eviction."""
    total = index = 0
    for root, _, files in os.walk(data_dir):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError):  # evicted while we walk
                size = os.stat(path).st_size
                total += size
                if name.startswith("index.sqlite3"):
                    index += size
                else:
                    seen[path] = max(size, seen.get(path, 0))
    return total, index


def server_log(path: Path) -> dict[str, list[str]]:
    """From a server's JSON log: the tasks it logged done, in order, and its errors (and any jobs
    it abandoned at the end of its shutdown grace)."""
    done: list[str] = []
    errors: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") == "job done":
                done.append(event["task_id"])
            elif event.get("level") in ("error", "critical") or "abandon" in str(event.get("event")):
                errors.append(str(event.get("event")))
    return {"done": done, "errors": errors}


async def sample(state: Soak, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
    """Every ``sample_seconds`` until ``stop``: one row of ``state.samples``, rates over the interval."""
    marks = {"hits": 0, "assembled": 0, "done": 0, **state.counts}
    last = 0.0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), state.config.sample_seconds)
        now, url = state.now(), state.url
        stats: dict[str, Any] = {}
        if url is not None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                stats = (await client.get(f"{url}/v1/stats")).json()
        pid = state.process.pid if state.process is not None else None
        api_mb, engines_mb = await asyncio.to_thread(memory, pid)
        disk_bytes, index_bytes = await asyncio.to_thread(disk, state.data_dir, state.file_sizes)
        current = {"hits": len(state.hits), "assembled": len(state.assembled), "done": len(state.done),
                   **state.counts}  # fmt: skip
        delta = {k: current[k] - marks[k] for k in current}
        marks, dt = current, max(now - last, 1e-9)
        latencies = [lat for _, lat in state.hits[len(state.hits) - delta["hits"] :]]
        row = {
            "t": round(now, 2),
            "generation": state.generation if url else None,
            "jobs_per_s": delta["done"] / dt,
            "hits_per_s": delta["hits"] / dt,
            "assembled_per_s": delta["assembled"] / dt,
            "hit_p50_ms": percentile(latencies, 0.5) * 1000,
            "hit_p99_ms": percentile(latencies, 0.99) * 1000,
            "accepted": delta["accepted"],
            "shed_503": delta["shed_503"],
            "not_sent_down": delta["not_sent_down"],
            "open_tasks": len(state.pending),
            "api_rss_mb": api_mb,
            "engines_rss_mb": engines_mb,
            "disk_mb": disk_bytes / 1e6,
            "index_mb": index_bytes / 1e6,
        }
        # post_backlog is new in /v1/stats: older servers lack it.
        row.update({k: stats.get(k) for k in ("queue_depth", "busy_slots", "post_backlog")})
        state.samples.append(row)
        last = now
