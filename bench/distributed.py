"""Distributed mode's cost outside synthesis (issue 29), side by side with embedded mode and the bare
engine in one run.

- Slot efficiency: 40 unique 8-sentence texts (every sentence new) submitted at once, eSpeak
  ``en-us-female``, one engine slot: on an embedded server, and on Redis + SeaweedFS + one ``ttsd
  worker --slots 1`` + one API (the suite's stack); the same texts in both (each mode has its own
  cache). The same with Piper ``en-joe`` (8 texts: its sentences take far longer).
- Scale-out: a second one-slot worker joins the stack, and 40 more such texts are run; the same
  with Piper (8 more texts), whose engine is most of a job's CPU.
- One-sentence texts: 200 of them, jobs per second through the whole system, in both modes.

A run's slot efficiency is the bare loop's seconds over the run's, the bare loop speaking the run's
own sentences in this process just before and just after it: a sentence's length follows its
text's letters, and this machine's speed drifts by a fifth within a minute, so a baseline timed
once, on other sentences, reads runs wrong by as much (an embedded run read 1.12). Each eSpeak run
is repeated (``REPEATS``, new texts each time) and read by its median.

For each distributed run: the CPU seconds of each process (the worker's own, apart from its
engines; the API; Redis; SeaweedFS), the machine's idle share, Redis commands per job (``INFO
commandstats``, with its scripts'), objects stored per text, and Redis's growth per job.

Where a worker's time goes: ``py-spy record --gil -p <pid> -f raw`` on it during a run (issue 29's
notes). Needs the dev extras (redis-server, SeaweedFS). Writes ``bench/results/distributed.*``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psutil

from .common import commit, machine, publish, ttsd_server
from .distributed_report import render

VOICE = "en-us-female"
PIPER_VOICE = "en-joe"
TEXTS = 40
PIPER_TEXTS = 8
SHORT_TEXTS = 200
REPEATS = 5  # of each eSpeak run: the figures are their medians
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


def texts(tag: str, n: int = TEXTS) -> list[list[str]]:
    """Each text's sentences, every one new (it names the text)."""
    return [[f"{s}, case {tag} {i}." for s in SENTENCES] for i in range(n)]


def short_texts(tag: str) -> list[str]:
    return [f"{SENTENCES[i % len(SENTENCES)]}, case {tag} {i}." for i in range(SHORT_TEXTS)]


def tag() -> str:
    """A run's name in letters (digits would be read out one by one, lengthening every sentence)."""
    return "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:6])


def joined(tag_: str, n: int = TEXTS) -> list[str]:
    return [" ".join(t) for t in texts(tag_, n)]


async def _run(url: str, bodies: list[str], voice: str = VOICE) -> float:
    """Seconds from submitting every text at once to the last one done."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(
            *(
                client.post("/v1/synthesize", json={"text": b, "voice": voice, "format": "wav"})
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


def bare(engine_name: str, voice_name: str, sentences: list[str]) -> float:
    from ttsd.engines import REGISTRY
    from ttsd.textnorm import normalizer

    spec = REGISTRY[engine_name]
    engine = spec.load(threads=1)
    voice = next(v for v in spec.voices if v.name == voice_name)
    norm = normalizer(voice.language)
    said = [norm.sentence(s) if norm is not None and norm.applies(s) else s for s in sentences]
    engine.synthesize("Warm up.", voice, speed=1.0, seed=None)
    started = time.perf_counter()
    for sentence in said:
        engine.synthesize(sentence, voice, speed=1.0, seed=None)
    return time.perf_counter() - started


@contextmanager
def bracketed(engine: str, voice: str, said: list[str] | None) -> Iterator[dict[str, float]]:
    """The bare loop on a run's sentences just before and just after it, their mean its
    ``bare_seconds``: this machine drifts by a fifth within a minute, most runs last seconds."""
    timed: dict[str, float] = {}
    if said is not None:
        timed["bare_before"] = bare(engine, voice, said)
    yield timed
    if said is not None:
        timed["bare_after"] = bare(engine, voice, said)
        timed["bare_seconds"] = (timed["bare_before"] + timed["bare_after"]) / 2


def sentences(tag_: str, n: int = TEXTS) -> list[str]:
    return [s for t in texts(tag_, n) for s in t]


def embedded(tmp: Path, eights: list[str], shorts: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each run of 8-sentence texts bracketed by the bare loop on its sentences; the one-sentence
    runs on the texts the distributed runs get."""
    env = {"TTSD_ENGINES": "espeak", "TTSD_ENGINE_SLOTS": "1", "TTSD_MAX_WAIT": "600"}
    with ttsd_server(tmp / "embedded", **env) as url:
        asyncio.run(_run(url, joined(f"warm {tag()}", 2)))
        eight = []
        for t in eights:
            with bracketed("espeak", VOICE, sentences(t)) as timed:
                timed["seconds"] = asyncio.run(_run(url, joined(t)))
            eight.append({"tag": t, **timed})
        short = [{"tag": t, "seconds": asyncio.run(_run(url, short_texts(t)))} for t in shorts]
        return {"eight": eight, "short": short}


def _cpu(process: psutil.Process, *, with_children: bool = False) -> float:
    times = process.cpu_times()
    total = times.user + times.system
    if with_children:
        for child in process.children(recursive=True):
            with_child = child.cpu_times()
            total += with_child.user + with_child.system
    return total


class Run(NamedTuple):
    kind: str  # runs of one kind are repeats: their figures are read together
    tag: str
    bodies: list[str]
    sentences: list[str] | None  # timed in a bare loop around the run, when given


def distributed(
    tmp: Path, engine: str, voice: str, runs: list[Run], grow_before: str | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Each run on one stack (one worker; a second joins before the first run of kind
    ``grow_before``): seconds, CPU seconds per process, Redis commands and objects stored."""
    import boto3
    import redis
    from tests.servers import stop_server
    from tests.stack import start_stack

    where = tmp / f"distributed-{engine}"
    where.mkdir()
    stack = start_stack(where, workers=1, env={"TTSD_ENGINES": engine})
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        api = stack.server(env={"TTSD_MAX_WAIT": "600"})
        r = redis.Redis.from_url(stack.redis.url)
        s3 = boto3.client(
            "s3",
            endpoint_url=stack.s3.url,
            aws_access_key_id="test",
            aws_secret_access_key="test-secret",
            region_name="us-east-1",
        )

        def objects() -> int:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket="ttsd-test")
            return sum(page.get("KeyCount", 0) for page in pages)

        asyncio.run(_run(api.url, joined(f"warm {tag()}", 2), voice))
        for run_ in runs:
            if run_.kind == grow_before and grow_before not in results:
                stack.start_worker("w-second")
                _wait(lambda: r.zcard("ttsd:workers") >= 2, 120)
                asyncio.run(_run(api.url, joined(f"warm {tag()}", 2), voice))
            workers = [psutil.Process(w.pid) for w in stack.workers]
            engines = [
                c for w in workers for c in w.children() if "resource_tracker" not in " ".join(c.cmdline())
            ]
            processes: dict[str, list[psutil.Process]] = {
                "worker": workers,
                "engine processes": engines,
                "api": [psutil.Process(api.process.pid)],
                "redis": [psutil.Process(stack.redis.process.pid)],
            }
            s3_process = psutil.Process(stack.s3.process.pid)
            before_objects = objects()
            with bracketed(engine, voice, run_.sentences) as timed:
                before = {k: sum(_cpu(p) for p in ps) for k, ps in processes.items()}
                before["s3"] = _cpu(s3_process, with_children=True)
                r.config_resetstat()
                memory = r.info("memory")["used_memory"]
                machine_before = psutil.cpu_times()
                timed["seconds"] = asyncio.run(_run(api.url, run_.bodies, voice))
                machine_after = psutil.cpu_times()
                commands = {k.removeprefix("cmdstat_"): v["calls"] for k, v in r.info("commandstats").items()}
                after = {k: sum(_cpu(p) for p in ps) for k, ps in processes.items()}
                after["s3"] = _cpu(s3_process, with_children=True)
            results.setdefault(run_.kind, []).append({
                "tag": run_.tag,
                **timed,
                "jobs": len(run_.bodies),
                "cpu": {k: after[k] - before[k] for k in after},
                # The share of the machine's cores nobody used during the run.
                "idle": (machine_after.idle - machine_before.idle)
                / (sum(machine_after) - sum(machine_before)),
                "redis_commands": sum(commands.values()),
                "redis_command_calls": commands,
                "objects": objects() - before_objects,
                # What the run left in Redis: live streams nobody listened to are deleted at their end.
                "streams_left": sum(1 for _ in r.scan_iter("ttsd:pcm:*")),
                "redis_memory_growth": r.info("memory")["used_memory"] - memory,
            })  # fmt: skip
        stop_server(api)
    finally:
        stack.discard()
    return results


def _wait(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the second worker never came up")
        time.sleep(0.2)


def run() -> dict[str, Any]:
    started = time.monotonic()
    one, two, short = ([tag() for _ in range(REPEATS)] for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-distributed-") as tmp:
        # The same texts in both modes (each has its own cache): a run's sentences' length follows
        # its tag's letters.
        emb = embedded(Path(tmp), one, short)
        espeak = distributed(
            Path(tmp),
            "espeak",
            VOICE,
            [
                *(Run("one worker", t, joined(t), sentences(t)) for t in one),
                *(Run("short", t, short_texts(t), None) for t in short),
                *(Run("two workers", t, joined(t), sentences(t)) for t in two),
            ],
            grow_before="two workers",
        )
        piper = distributed(
            Path(tmp),
            "piper",
            PIPER_VOICE,
            [
                Run(kind, t, joined(t, PIPER_TEXTS), sentences(t, PIPER_TEXTS))
                for kind, t in (("one worker", tag()), ("two workers", tag()))
            ],
            grow_before="two workers",
        )
    result = {
        "scenario": "distributed",
        "commit": commit(),
        "machine": machine(),
        "repeats": REPEATS,
        "texts": TEXTS,
        "piper_texts": PIPER_TEXTS,
        "short_texts": SHORT_TEXTS,
        "sentences_per_text": len(SENTENCES),
        "embedded": emb,
        "espeak": espeak,
        "piper": piper,
        "seconds": time.monotonic() - started,
    }
    publish("distributed", result, render(result))
    return result


if __name__ == "__main__":
    run()
