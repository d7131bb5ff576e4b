"""An open-loop load generator that runs in its own process, so its CPU use and its event loop
never slow the server's measurements down (or flatter them)."""

from __future__ import annotations

import asyncio
import math
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


@dataclass(frozen=True)
class Call:
    status: int
    latency: float
    size: int


def _request(kind: str, text: str) -> tuple[str, dict[str, Any]]:
    """The same ask in each server's own words: a WAV of ``text`` in the Joe voice."""
    if kind == "piper":
        return "/synthesize", {"text": text}
    if kind == "ttsd-synthesize":
        return "/v1/synthesize", {"text": text, "voice": "en-joe", "format": "wav"}
    return "/v1/audio/speech", {"input": text, "voice": "en-joe", "response_format": "wav"}


async def _calls(
    url: str, kind: str, texts: list[str], *, users: int, rate: float, seconds: float
) -> list[Call]:
    """Closed loop (``users`` each sending the next text as soon as the last answered) when
    ``rate`` is 0, else open loop (a new request every 1/rate s, whatever is outstanding)."""
    calls: list[Call] = []
    limits = httpx.Limits(max_connections=max(users, 1000), max_keepalive_connections=max(users, 200))
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def one(text: str) -> None:
            path, body = _request(kind, text)
            started = time.perf_counter()
            try:
                response = await client.post(path, json=body)
                calls.append(Call(response.status_code, time.perf_counter() - started, len(response.content)))
            except httpx.HTTPError:
                calls.append(Call(0, time.perf_counter() - started, 0))

        began = time.perf_counter()
        deadline = began + seconds
        if rate <= 0:
            position = 0

            async def user() -> None:
                nonlocal position
                while time.perf_counter() < deadline:
                    text = texts[position % len(texts)]
                    position += 1
                    await one(text)

            await asyncio.gather(*(user() for _ in range(users)))
        else:
            tasks = []
            t0 = time.perf_counter()
            for i in range(int(rate * seconds)):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(one(texts[i % len(texts)])))
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    return calls, elapsed


def _calls_worker(queue: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    queue.put(asyncio.run(_calls(*args, **kwargs)))


USERS_PER_PROCESS = 16  # one Python client process saturates well before the server does


def run_calls(url: str, kind: str, texts: list[str], *, users: int = 0, rate: float = 0.0,
              seconds: float = 10.0) -> tuple[list[Call], float]:  # fmt: skip
    """Run a load from separate processes (16 closed-loop users, or 20 arrivals/s, each); returns
    every call and the wall time the load took."""
    count = max(1, math.ceil(users / USERS_PER_PROCESS) if rate <= 0 else math.ceil(rate / 20))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    processes = []
    for j in range(count):
        share_users = users // count + (1 if j < users % count else 0)
        process = ctx.Process(
            target=_calls_worker,
            args=(
                queue,
                (url, kind, texts[j::count] or texts),
                {"users": share_users, "rate": rate / count, "seconds": seconds},
            ),
        )
        process.start()
        processes.append(process)
    calls: list[Call] = []
    elapsed = 0.0
    for _ in processes:
        part, took = queue.get(timeout=seconds + 600)
        calls.extend(part)
        elapsed = max(elapsed, took)
    for process in processes:
        process.join(timeout=30)
    return calls, elapsed
