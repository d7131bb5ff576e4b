"""An open-loop load generator that runs in its own process, so its CPU use and its event loop
never slow the server's measurements down (or flatter them)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Sample:
    kind: str  # "miss" (a new text) or "hit" (a cached text)
    status: int
    latency: float
    task_id: str | None
    retry_after: str | None


async def _open_loop(url: str, rate: float, seconds: float, hit_rate: float, hot: dict[str, Any],
                     tag: str) -> list[Sample]:  # fmt: skip
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(kind: str, body: dict[str, Any]) -> None:
            started = time.perf_counter()
            try:
                response = await client.post("/v1/synthesize", json=body)
            except httpx.HTTPError:
                samples.append(Sample(kind, 0, time.perf_counter() - started, None, None))
                return
            latency = time.perf_counter() - started
            task_id = response.json().get("task_id") if response.status_code == 202 else None
            samples.append(
                Sample(kind, response.status_code, latency, task_id, response.headers.get("retry-after"))
            )

        tasks = []
        t0 = time.perf_counter()
        n_miss = int(rate * seconds)
        n_hit = int(hit_rate * seconds)
        schedule = sorted(
            [(i / rate, "miss", i) for i in range(n_miss)] + [(i / hit_rate, "hit", i) for i in range(n_hit)]
            if rate > 0
            else [(i / hit_rate, "hit", i) for i in range(n_hit)]
        )
        for at, kind, i in schedule:
            delay = t0 + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = hot if kind == "hit" else {"text": f"Open loop request {tag} {i} of the benchmark."}
            tasks.append(asyncio.create_task(one(kind, body)))
        await asyncio.gather(*tasks)
    return samples


def _worker(queue: Any, args: tuple[Any, ...]) -> None:
    queue.put(asyncio.run(_open_loop(*args)))


def open_loop(
    url: str, rate: float, seconds: float, *, hit_rate: float, hot: dict[str, Any], tag: str
) -> list[Sample]:
    """Offer ``rate`` new texts per second (and ``hit_rate`` repeats of ``hot``) for ``seconds``."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_worker, args=(queue, (url, rate, seconds, hit_rate, hot, tag)))
    process.start()
    samples: list[Sample] = queue.get(timeout=seconds + 300)
    process.join(timeout=30)
    return samples
