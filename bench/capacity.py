"""``python -m bench capacity``: the unit costs of distributed mode, and the machines a peak needs.

Measured here, on the suite's stack (Redis, SeaweedFS, one ``ttsd worker`` with one eSpeak slot,
one API): 200 one-sentence texts are made, then asked for again 4,000 times (32 at a time) by an
API process that keeps one entry in memory (``TTSD_HOT_ENTRIES=1``: every hit reads Redis, as over
a working set larger than its memory) and by one with the default memory (the first ask of each
text reads Redis, the rest its memory).
For each phase: the API's CPU per request, Redis commands per request (``INFO commandstats``,
Lua's included), Redis CPU per command, and SeaweedFS's CPU (object-storage requests: a hit makes
none). The costs of a miss, per job and per sentence, come from ``bench/results/distributed.json``
(``python -m bench distributed``).

From them, the model of ``docs/deploy.md``: for a peak of requests per second with a share of
repeats, the API cores, worker cores, Redis load, object-storage writes and GPU processes needed,
at the original service's peak (800 requests/s, 58 % repeats, ChatTTS at about 3 GB of GPU memory a
process) and at ten times that. Writes ``bench/results/capacity.{md,json}``.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from .common import ROOT, commit, machine, publish, table
from .distributed import VOICE, _run, short_texts, tag

HITS = 4000
CONCURRENCY = 32
# What the support corpus measured (``python -m bench reuse``): sentences per distinct text, and
# the share of them no earlier text had (the rest are pieces already in the bucket).
SENTENCES_PER_TEXT = 3.25
NEW_SENTENCE_SHARE = 0.35
# Assumptions, not measured here (no GPU, no ChatTTS weights): engine seconds per sentence of one
# ChatTTS process on a datacentre GPU, and its memory; a sentence of a support reply is ~2.5 s of
# audio and ChatTTS runs at a real-time factor of about 0.3 without batching.
CHATTTS_SECONDS_PER_SENTENCE = 0.75
CHATTTS_GB = 3.0
GPU_GB = 80.0
# Plan every process at this share of its capacity, for bursts.
HEADROOM = 0.7


def _cpu(process: psutil.Process, *, children: bool = False) -> float:
    procs = [process, *(process.children(recursive=True) if children else [])]
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


async def _hits(url: str, texts: list[str], n: int) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        gate = asyncio.Semaphore(CONCURRENCY)
        done = 0

        async def one(i: int) -> None:
            nonlocal done
            async with gate:
                r = await client.post("/v1/synthesize", json={"text": texts[i % len(texts)], "voice": VOICE})
                done += r.status_code == 200 and r.json().get("cached") is True

        await asyncio.gather(*(one(i) for i in range(n)))
        return done


def measure(tmp: Path) -> dict[str, Any]:
    import redis
    from tests.servers import stop_server
    from tests.stack import start_stack

    stack = start_stack(tmp, workers=1, env={"TTSD_ENGINES": "espeak"})
    phases: dict[str, Any] = {}
    try:
        api = stack.server(env={"TTSD_MAX_WAIT": "600"})
        texts = short_texts(tag())
        asyncio.run(_run(api.url, texts))
        stop_server(api)
        r = redis.Redis.from_url(stack.redis.url)
        s3 = psutil.Process(stack.s3.process.pid)
        redis_process = psutil.Process(stack.redis.process.pid)
        for phase, hot in (("hits from Redis", "1"), ("hits from the API's memory", "32768")):
            api = stack.server(env={"TTSD_HOT_ENTRIES": hot}, name=f"api-{hot}")
            api_process = psutil.Process(api.process.pid)
            before = (_cpu(api_process), _cpu(redis_process), _cpu(s3, children=True))
            r.config_resetstat()
            started = time.perf_counter()
            hits = asyncio.run(_hits(api.url, texts, HITS))
            seconds = time.perf_counter() - started
            commands = sum(v["calls"] for v in r.info("commandstats").values())
            after = (_cpu(api_process), _cpu(redis_process), _cpu(s3, children=True))
            api_cpu, redis_cpu, s3_cpu = (a - b for a, b in zip(after, before, strict=True))
            phases[phase] = {
                "requests": HITS,
                "hits": hits,
                "seconds": seconds,
                "api_cpu": api_cpu,
                "redis_cpu": redis_cpu,
                "s3_cpu": s3_cpu,
                "redis_commands": commands,
            }
            stop_server(api)
    finally:
        stack.discard()
    return phases


def model(hit: dict[str, float], miss: dict[str, float], rps: float, repeats: float) -> dict[str, float]:
    """Resources for ``rps`` requests a second, ``repeats`` of them hits."""
    hits, misses = rps * repeats, rps * (1 - repeats)
    new_sentences = misses * SENTENCES_PER_TEXT * NEW_SENTENCE_SHARE
    redis_commands = hits * hit["redis_commands"] + misses * miss["redis_commands"]
    gpu_processes = new_sentences * CHATTTS_SECONDS_PER_SENTENCE / HEADROOM
    return {
        "hits/s": hits,
        "misses/s": misses,
        "new sentences/s": new_sentences,
        "API cores": (hits * hit["api_cpu"] + misses * miss["api_cpu"]) / HEADROOM,
        "worker cores (outside engines)": misses * miss["worker_cpu"] / HEADROOM,
        "Redis commands/s": redis_commands,
        "Redis cores": redis_commands * hit["redis_cpu_per_command"] / HEADROOM,
        "object PUTs/s": misses * miss["objects"],
        "ChatTTS processes": gpu_processes,
        "GPUs (80 GB, by memory)": gpu_processes * CHATTTS_GB / GPU_GB,
    }


def _pooled(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one run, summed: their CPU by process, jobs, Redis commands and objects."""
    return {
        "cpu": {k: sum(r["cpu"][k] for r in runs) for k in runs[0]["cpu"]},
        **{k: sum(r[k] for r in runs) for k in ("jobs", "redis_commands", "objects")},
    }


def run() -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-capacity-") as tmp:
        phases = measure(Path(tmp))
    dist = json.loads((ROOT / "bench" / "results" / "distributed.json").read_text())
    # Each kind of run is repeated (``bench distributed``): its costs per job are over all of them.
    one, eight = _pooled(dist["espeak"]["short"]), _pooled(dist["espeak"]["one worker"])
    per_job = {k: one["cpu"][k] / one["jobs"] for k in ("worker", "api")}
    per_eight = {k: eight["cpu"][k] / eight["jobs"] for k in ("worker", "api")}
    sentences = SENTENCES_PER_TEXT * NEW_SENTENCE_SHARE
    # A miss of the support corpus: a one-sentence job's costs plus, per further new sentence, the
    # difference an eight-sentence job showed per sentence.
    extra = max(sentences - 1, 0) / 7

    def miss_cost(one_value: float, eight_value: float) -> float:
        return one_value + extra * (eight_value - one_value)

    fresh = phases["hits from Redis"]
    hit = {
        "api_cpu": fresh["api_cpu"] / fresh["requests"],
        "redis_commands": fresh["redis_commands"] / fresh["requests"],
        "redis_cpu_per_command": fresh["redis_cpu"] / max(fresh["redis_commands"], 1),
    }
    miss = {
        "api_cpu": miss_cost(per_job["api"], per_eight["api"]),
        "worker_cpu": miss_cost(per_job["worker"], per_eight["worker"]),
        "redis_commands": miss_cost(
            one["redis_commands"] / one["jobs"], eight["redis_commands"] / eight["jobs"]
        ),
        "objects": miss_cost(one["objects"] / one["jobs"], eight["objects"] / eight["jobs"]),
    }
    result = {
        "scenario": "capacity",
        "commit": commit(),
        "machine": machine(),
        "phases": phases,
        "hit": hit,
        "miss": miss,
        "peak": model(hit, miss, 800, 0.58),
        "ten_times": model(hit, miss, 8000, 0.58),
        "seconds": time.monotonic() - started,
    }
    publish("capacity", result, render(result))
    return result


def render(r: dict[str, Any]) -> str:
    rows = [("phase", "requests", "hits", "API CPU µs/request", "Redis commands/request", "SeaweedFS CPU ms")]
    for name, p in r["phases"].items():
        n = p["requests"]
        rows.append((name, str(n), str(p["hits"]), f"{1e6 * p['api_cpu'] / n:.0f}",
                     f"{p['redis_commands'] / n:.2f}", f"{1000 * p['s3_cpu']:.0f}"))  # fmt: skip
    hit, miss = r["hit"], r["miss"]
    units = [
        ("unit cost (measured)", "value"),
        ("hit: API CPU", f"{1e6 * hit['api_cpu']:.0f} µs"),
        ("hit: Redis commands (read from Redis)", f"{hit['redis_commands']:.2f}"),
        ("hit: object-storage requests", "0 (presigned or CDN URLs)"),
        ("Redis CPU per command (this mix, Lua included)", f"{1e6 * hit['redis_cpu_per_command']:.1f} µs"),
        ("support-corpus miss: API CPU", f"{1000 * miss['api_cpu']:.1f} ms"),
        ("support-corpus miss: worker CPU outside synthesis", f"{1000 * miss['worker_cpu']:.1f} ms"),
        ("support-corpus miss: Redis commands", f"{miss['redis_commands']:.0f}"),
        ("support-corpus miss: objects stored", f"{miss['objects']:.1f}"),
    ]
    plan = [("needed", "800 req/s, 58 % repeats", "8,000 req/s")]
    for key, value in r["peak"].items():
        plan.append((key, f"{value:,.1f}", f"{r['ten_times'][key]:,.1f}"))
    m = r["machine"]
    return (
        "## Capacity model (`python -m bench capacity`)\n\n"
        f"commit {r['commit']}, {m['cpu']} x {m['cores']} cores, {r['seconds'] / 60:.1f} minutes.\n\n"
        f"{table(rows)}\n\n{table(units)}\n\n"
        f"A support-corpus miss: {SENTENCES_PER_TEXT} sentences, {NEW_SENTENCE_SHARE:.0%} of them new. "
        f"ChatTTS assumed at {CHATTTS_SECONDS_PER_SENTENCE} GPU-seconds a sentence and "
        f"{CHATTTS_GB:g} GB a process; every process planned at {HEADROOM:.0%} of its capacity.\n\n"
        f"{table(plan)}\n"
    )


if __name__ == "__main__":
    run()
