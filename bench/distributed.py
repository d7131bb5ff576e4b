"""Distributed mode's cost outside synthesis: issue 29's run, side by side with embedded mode and the
bare engine in one run.

40 unique 8-sentence texts (every sentence new) submitted at once, eSpeak ``en-us-female``, one
engine slot: on an embedded server, and on Redis + SeaweedFS + one ``ttsd worker --slots 1`` + one
API (the suite's stack); the same 320 sentences spoken by a bare eSpeak loop in this process. For
the distributed run: Redis commands per job (``INFO commandstats``, reset before the run) and the
objects stored per text. Slot efficiency is the bare loop's seconds over the run's, and time outside
synthesis per sentence is the difference over 320.

To see where a worker's time goes, run ``py-spy record -p <pid> -f raw`` on the worker's Celery
child and the API during the distributed run (the note of issue 29 has what it showed).
Needs the dev extras (redis-server, SeaweedFS). Writes ``bench/results/distributed.md`` and
``distributed.json``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from .common import commit, machine, publish, table, ttsd_server

VOICE = "en-us-female"
TEXTS = 40
SENTENCES = (
    "Your order has shipped today",
    "It should arrive within three days",
    "You can track it from your account page",
    "We sent the details to your email",
    "If anything is missing, please tell us",
    "Our team is here every day of the week",
    "Thank you for choosing us",
    "Have a wonderful afternoon",
)


def texts(tag: str) -> list[list[str]]:
    """Each text's sentences, every one new (it names the text)."""
    return [[f"{s}, case {tag} {i}." for s in SENTENCES] for i in range(TEXTS)]


def tag() -> str:
    """A run's name in letters (digits would be read out one by one, lengthening every sentence)."""
    return "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:6])


async def _run(url: str, bodies: list[str]) -> float:
    """Seconds from submitting every text at once to the last one done."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(
                client.post("/v1/synthesize", json={"text": b, "voice": VOICE, "format": "wav"})
                for b in bodies
            )
        )
        # One task polled at a time, in the order they were queued: the polls must not take the
        # CPU the slot is measured on.
        for answer in answers:
            while (status := (await client.get(f"/v1/tasks/{answer.json()['task_id']}")).json())[
                "status"
            ] != "done":
                if status["status"] == "failed":
                    raise RuntimeError(f"a job failed: {status}")
                await asyncio.sleep(0.02)
        return time.perf_counter() - started


def bare(sentences: list[str]) -> float:
    from ttsd.engines import REGISTRY
    from ttsd.textnorm import normalizer

    spec = REGISTRY["espeak"]
    engine = spec.load(threads=1)
    voice = next(v for v in spec.voices if v.name == VOICE)
    norm = normalizer(voice.language)
    said = [norm.sentence(s) if norm is not None and norm.applies(s) else s for s in sentences]
    engine.synthesize("Warm up.", voice, speed=1.0, seed=None)
    started = time.perf_counter()
    for sentence in said:
        engine.synthesize(sentence, voice, speed=1.0, seed=None)
    return time.perf_counter() - started


def embedded(tmp: Path, name: str) -> float:
    env = {"TTSD_ENGINES": "espeak", "TTSD_ENGINE_SLOTS": "1", "TTSD_MAX_WAIT": "600"}
    with ttsd_server(tmp / "embedded", **env) as url:
        asyncio.run(_run(url, [" ".join(t) for t in texts(f"warm {tag()}")[:2]]))
        return asyncio.run(_run(url, [" ".join(t) for t in texts(name)]))


def distributed(tmp: Path, name: str) -> dict[str, Any]:
    import boto3
    import redis
    from tests.conftest import start_stack, stop_server

    (tmp / "distributed").mkdir()
    stack = start_stack(tmp / "distributed", workers=1, env={"TTSD_ENGINES": "espeak"})
    try:
        api = stack.server(env={"TTSD_MAX_WAIT": "600"})
        r = redis.Redis.from_url(stack.redis.url)
        asyncio.run(_run(api.url, [" ".join(t) for t in texts(f"warm {tag()}")[:2]]))
        bodies = [" ".join(t) for t in texts(name)]
        r.config_resetstat()
        seconds = asyncio.run(_run(api.url, bodies))
        commands = {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}
        s3 = boto3.client(
            "s3",
            endpoint_url=stack.s3.url,
            aws_access_key_id="test",
            aws_secret_access_key="test-secret",
            region_name="us-east-1",
        )
        objects = sum(
            page.get("KeyCount", 0)
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket="ttsd-test")
        )
        stop_server(api)
    finally:
        stack.discard()
    return {"seconds": seconds, "redis_commands": commands, "objects": objects, "texts": TEXTS + 2}


def run() -> dict[str, Any]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-distributed-") as tmp:
        embedded_seconds = embedded(Path(tmp), tag())
        name = tag()  # the bare loop says the distributed run's sentences
        dist = distributed(Path(tmp), name)
    sentences = [s for t in texts(name) for s in t]
    bare_seconds = bare(sentences)
    result = {
        "scenario": "distributed",
        "commit": commit(),
        "machine": machine(),
        "sentences": len(sentences),
        "bare_seconds": bare_seconds,
        "embedded_seconds": embedded_seconds,
        "distributed": dist,
        "seconds": time.monotonic() - started,
    }
    publish("distributed", result, render(result))
    return result


def render(r: dict[str, Any]) -> str:
    n, bare_s, d = r["sentences"], r["bare_seconds"], r["distributed"]
    calls = sum(d["redis_commands"].values())
    most = sorted(d["redis_commands"].items(), key=lambda kv: -kv[1])[:6]
    top = ", ".join(f"{k} {v / TEXTS:.0f}" for k, v in most)
    rows = [
        (
            "eSpeak, one slot, 40 texts x 8 new sentences",
            "s",
            "slot efficiency",
            "outside synthesis, ms/sentence",
        )
    ]
    rows.append(("bare loop", f"{bare_s:.2f}", "1.00", "–"))
    for name, seconds in (("embedded", r["embedded_seconds"]), ("distributed, one worker", d["seconds"])):
        rows.append(
            (name, f"{seconds:.2f}", f"{bare_s / seconds:.2f}", f"{1000 * (seconds - bare_s) / n:.1f}")
        )
    m = r["machine"]
    return (
        "## Distributed mode's cost outside synthesis\n\n"
        f"commit {r['commit']}, {m['cpu']} x {m['cores']} cores, {r['seconds'] / 60:.1f} minutes.\n\n"
        f"{table(rows)}\n\n"
        f"- Redis commands per job (distributed, counting those its Lua scripts run): {calls / TEXTS:.0f} "
        f"({calls / n:.0f} a sentence); "
        f"most: {top}.\n"
        f"- Objects in the bucket after {d['texts']} texts: {d['objects']} "
        f"({d['objects'] / d['texts']:.1f} a text).\n"
        "- Target (issue 29): distributed slot efficiency ≥ 0.7 (embedded's 0.83).\n"
    )


if __name__ == "__main__":
    run()
