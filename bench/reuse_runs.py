"""``bench.reuse``'s first two runs: engine time on the support-bot replies with reuse on and off
(a closed loop of users), and slot efficiency on unique texts against the bare engine."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path
from typing import Any

import httpx

from .common import ttsd_process
from .overload import percentile
from .reuse_measure import BIG, ESPEAK_VOICE, PIPER_ENV, CpuMeter, bare_engine_checked, counters

USERS = 16
EFFICIENCY_SENTENCES = 8

# -- 1. engine seconds, reuse on and off ------------------------------------------------------


async def _closed_loop(url: str, texts: list[str], users: int) -> tuple[list[tuple[int, float, str]], float]:
    """Every text once, in order, by ``users`` clients each sending the next as soon as the last
    answered; (status, latency, X-Cache) per request, and the wall time."""
    calls: list[tuple[int, float, str]] = []
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    pending = iter(texts)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def user() -> None:
            for text in pending:
                body = {"input": text, "voice": "en-joe", "response_format": "wav"}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/audio/speech", json=body)
                    latency = time.perf_counter() - started
                    calls.append((response.status_code, latency, response.headers.get("x-cache", "")))
                except httpx.HTTPError:
                    calls.append((0, time.perf_counter() - started, ""))

        began = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(users)))
        return calls, time.perf_counter() - began


def _closed_loop_worker(queue: Any, url: str, texts: list[str], users: int) -> None:
    queue.put(asyncio.run(_closed_loop(url, texts, users)))


def closed_loop(url: str, texts: list[str], users: int) -> tuple[list[tuple[int, float, str]], float]:
    """The closed loop in its own process, so the client's event loop is not the bench's."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_closed_loop_worker, args=(queue, url, texts, users))
    process.start()
    result: tuple[list[tuple[int, float, str]], float] = queue.get(timeout=1800)
    process.join(timeout=30)
    return result


def engine_run(tmp: Path, texts: list[str], *, reuse: bool) -> dict[str, Any]:
    name = "on" if reuse else "off"
    env = {"TTSD_SENTENCE_REUSE": str(reuse).lower(), **PIPER_ENV}
    with ttsd_process(tmp / f"engine-{name}", **env) as (url, process):
        meter = CpuMeter(process.pid)
        before, cpu_before = counters(url), meter.read()
        calls, elapsed = closed_loop(url, texts, USERS)
        time.sleep(0.5)  # the last jobs' figures are recorded after their answers
        after, cpu = counters(url), CpuMeter.delta(cpu_before, meter.read())
    d = {k: after[k] - before[k] for k in after}
    ok = [latency for status, latency, _ in calls if status == 200]
    statuses: dict[str, int] = {}
    for status, _, _ in calls:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    text_requests = d["text_hit"] + d["text_miss"] + d["text_merged"]
    sentence_requests = d["sentence_hit"] + d["sentence_miss"] + d["sentence_merged"]
    return {
        "reuse": reuse,
        "requests": len(calls),
        "ok": len(ok),
        "errors": len(calls) - len(ok),
        "statuses": statuses,
        "x_cache": {v: sum(1 for _, _, c in calls if c == v) for v in sorted({c for _, _, c in calls})},
        "seconds": elapsed,
        "throughput": len(ok) / elapsed,
        "p50_ms": percentile(ok, 0.5) * 1000,
        "p99_ms": percentile(ok, 0.99) * 1000,
        "text_hit_ratio": d["text_hit"] / max(text_requests, 1),
        "sentence_hit_ratio": d["sentence_hit"] / max(sentence_requests, 1),
        "busy_over_synthesis": d["slot_busy_seconds"] / max(d["engine_seconds"], 1e-9),
        **d,
        **cpu,
    }


# -- 2. slot efficiency on unique texts -------------------------------------------------------

_FRAMES = (
    "Notice {n}: the parcel for this account left the depot this morning.",
    "Item {n} will be carried by the regional courier until the evening.",
    "Please keep reference {n} ready if you call us again about it.",
    "The driver on route {n} may ring your bell before six o'clock.",
    "If nobody answers, parcel {n} goes to the nearest pickup point.",
    "You can follow shipment {n} on our website at any time of day.",
    "Our records show that invoice {n} was paid in full last week.",
    "Thank you for waiting, and goodbye from desk number {n}.",
)


def unique_texts(count: int, start: int) -> list[str]:
    """``count`` texts of eight sentences, each sentence unique (it carries its own number)."""
    return [
        " ".join(
            frame.format(n=start + t * EFFICIENCY_SENTENCES + i)
            for i, frame in enumerate(_FRAMES[:EFFICIENCY_SENTENCES])
        )
        for t in range(count)
    ]


async def _submit_all(url: str, texts: list[str]) -> tuple[float, list[str], list[int]]:
    limits = httpx.Limits(max_connections=len(texts), max_keepalive_connections=len(texts))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.time()
        responses = await asyncio.gather(
            *(
                client.post("/v1/synthesize", json={"text": t, "voice": ESPEAK_VOICE, "format": "wav"})
                for t in texts
            )
        )
    return started, [r.json().get("task_id", "") for r in responses], [r.status_code for r in responses]


def efficiency_run(tmp: Path, texts: list[str], tag: str) -> dict[str, Any]:
    from ttsd.text import normalize, split_sentences

    sentences = [s for t in texts for s in split_sentences(normalize(t, max_chars=5000))]
    assert len(sentences) == len(texts) * EFFICIENCY_SENTENCES == len(set(sentences))
    bare_times, bare_other = bare_engine_checked("espeak", ESPEAK_VOICE, sentences)
    bare = sum(bare_times)
    env = {"TTSD_ENGINES": "espeak", "TTSD_DEFAULT_VOICE": ESPEAK_VOICE, "TTSD_ENGINE_SLOTS": "1", **BIG}
    with ttsd_process(tmp / f"efficiency-{tag}", **env) as (url, process):
        meter = CpuMeter(process.pid)
        before, cpu_before = counters(url), meter.read()
        started, task_ids, statuses = asyncio.run(_submit_all(url, texts))
        # Poll the oldest unfinished task only (one slot works through them in order), lightly.
        done_at: dict[str, float] = {}
        failed = 0
        observed_end = started
        with httpx.Client(base_url=url, timeout=30) as client:
            for task_id, status in zip(task_ids, statuses, strict=True):
                if status != 202:
                    continue
                while True:
                    body = client.get(f"/v1/tasks/{task_id}").json()
                    if body["status"] in ("done", "failed"):
                        failed += body["status"] == "failed"
                        done_at[task_id] = float(body["updated_at"])
                        observed_end = time.time()
                        break
                    time.sleep(0.02)
        time.sleep(0.3)
        after, cpu = counters(url), CpuMeter.delta(cpu_before, meter.read())
    d = {k: after[k] - before[k] for k in after}
    # The server's own clock when the last job ended (same machine, same clock as ``started``).
    ttsd_seconds = max(done_at.values(), default=observed_end) - started
    return {
        "texts": len(texts),
        "sentences": len(sentences),
        "submit_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "failed": failed,
        "bare_seconds": bare,
        "bare_other_cpu_seconds": bare_other,
        "ttsd_seconds": ttsd_seconds,
        "ttsd_seconds_observed_by_polling": observed_end - started,
        "efficiency": bare / ttsd_seconds,
        "engine_seconds": d["engine_seconds"],
        "slot_busy_seconds": d["slot_busy_seconds"],
        "busy_over_synthesis": d["slot_busy_seconds"] / max(d["engine_seconds"], 1e-9),
        "engine_over_bare": d["engine_seconds"] / bare,
        "sentence_miss": d["sentence_miss"],
        **cpu,
    }
