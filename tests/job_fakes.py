"""Fakes for the in-process job tests: a tone synthesizer instead of engine processes, a reporter
that records what a job told it, and a JobHost on a real local store and SQLite index."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from ttsd import audio
from ttsd.errors import TtsdError
from ttsd.jobs.host import JobHost, Synthesizer
from ttsd.jobs.model import BatchResult, Job, SentenceBatch, SentenceCallback
from ttsd.jobs.post import PostStage
from ttsd.keys import SynthesisSpec
from ttsd.links import Links
from ttsd.metrics import PrometheusJobStats
from ttsd.state.base import Stage, TaskStatus
from ttsd.state.sqlite import SqliteCacheIndex
from ttsd.store.local import LocalStore

RATE = 16000
LINKS = Links(b"a secret for the tests")
ENGINE = "tone"  # reuses sentences
WHOLE = "whole"  # speaks a text whole: no pieces, a master instead


def spec(text: str, engine: str = ENGINE, speed: float = 1.0) -> SynthesisSpec:
    return SynthesisSpec(
        engine=engine,
        engine_version="1",
        voice="t-voice",
        speaker="0",
        language="en",
        text=text,
        speed=speed,
        seed=0,
    )


def job(text: str, fmt: str = "pcm", engine: str = ENGINE) -> Job:
    s = spec(text, engine)
    return Job(task_id=LINKS.task_id(s.key, fmt), spec=s, fmt=fmt)


def tone(sentence: str, rate: int = RATE) -> audio.Pcm16:
    """What the fake engine says for a sentence: a pitch and a length of its own, always the same."""
    digest = zlib.crc32(sentence.encode())
    n = 400 + digest % 400
    t = np.arange(n, dtype=np.float32) / rate
    wave = 0.4 * np.sin(2 * np.pi * (200 + digest % 800) * t).astype(np.float32)
    return audio.fade(wave, rate)


def wire(sentences: list[str], speed: float = 1.0) -> list[audio.Pcm16]:
    """The sentences as a listener hears them: a pause before each after the first."""
    return audio.joined([tone(s) for s in sentences], RATE, speed)


class ToneSynthesizer:
    """A ``Synthesizer`` that speaks ``tone`` per sentence. ``gate`` holds every batch before its
    first sentence until set; ``fail`` raises that error in place of the sentence it names;
    ``pause``: seconds each sentence takes after the first (a slow engine)."""

    def __init__(
        self,
        *,
        gate: asyncio.Event | None = None,
        fail: dict[str, TtsdError] | None = None,
        pause: float = 0.0,
    ) -> None:
        self.batches: list[SentenceBatch] = []
        self.arrived = asyncio.Event()
        self._gate = gate
        self._fail = fail or {}
        self._pause = pause

    @property
    def spoken(self) -> list[str]:
        return [s for batch in self.batches for s in batch.sentences]

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: SentenceCallback,
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult:
        self.batches.append(batch)
        self.arrived.set()
        if self._gate is not None:
            await self._gate.wait()
        if on_start is not None:
            on_start()
        for i, sentence in zip(batch.indices, batch.sentences, strict=True):
            if sentence in self._fail:
                raise self._fail[sentence]
            on_sentence(i, tone(sentence), RATE)
            await asyncio.sleep(self._pause)  # as a slot, let the job store what came before the next
        return BatchResult(
            slot_seconds=0.5 * len(batch.sentences), synthesis_seconds=0.25 * len(batch.sentences)
        )


class RecordingReporter:
    """Everything a job reported, in order."""

    def __init__(self, job: Job) -> None:
        self.status: TaskStatus = job.queued()
        self.stages: list[Stage] = []
        self.changes: list[dict[str, Any]] = []
        self.progress: list[int] = []
        self.sent: list[tuple[audio.Pcm16, int]] = []
        self.ended = 0
        self.errors: list[TtsdError] = []

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        self.status = self.status.advance(stage, progress, **changes)
        self.stages.append(stage)
        self.changes.append(changes)
        self.progress.append(self.status.progress)

    async def audio(self, pcm: audio.Pcm16, sample_rate: int) -> None:
        self.sent.append((pcm, sample_rate))

    async def audio_end(self) -> None:
        self.ended += 1

    async def failed(self, error: TtsdError) -> None:
        self.errors.append(error)

    @property
    def distinct_stages(self) -> list[Stage]:
        """The stages as a poller would see them change (repeats of one stage are progress)."""
        out: list[Stage] = []
        for stage in self.stages:
            if not out or out[-1] is not stage:
                out.append(stage)
        return out


@dataclass
class Bench:
    """A JobHost and what it is built on, for a test to look into."""

    host: JobHost
    store: LocalStore
    index: SqliteCacheIndex
    registry: CollectorRegistry

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@contextmanager
def bench(tmp: Path, synthesizer: Synthesizer, *, max_bytes: int = 1 << 30) -> Iterator[Bench]:
    registry = CollectorRegistry()
    store = LocalStore(tmp / "audio")
    index = SqliteCacheIndex(tmp / "index.sqlite3")
    post = PostStage(2, limit=32)
    host = JobHost(
        synthesizer=synthesizer,
        store=store,
        index=index,
        stats=PrometheusJobStats(registry),
        post=post,
        sample_rates={ENGINE: RATE, WHOLE: RATE},
        cache_ttl=3600,
        cache_max_bytes=max_bytes,
        reuse_engines=frozenset({ENGINE}),
    )
    try:
        yield Bench(host, store, index, registry)
    finally:
        post.shutdown(wait=True)
        index.close()
