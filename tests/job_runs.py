"""What the job-body tests (``test_job_*``) share: their sentences, running one job on a bench, and
reading back what it stored."""

from __future__ import annotations

import asyncio

import numpy as np

from ttsd.jobs.body import run_job
from ttsd.jobs.model import Job, JobOutcome
from ttsd.jobs.pieces import load_piece, piece_keys
from ttsd.state.base import CacheIndex
from ttsd.store.base import PIECE

from .job_fakes import RATE, Bench, RecordingReporter, job

A, B, C, D = "Good morning.", "The parcel left the depot.", "It arrives today!", "Sign for it at the door."


def text(*sentences: str) -> str:
    return " ".join(sentences)


def heard(reporter: RecordingReporter) -> list[np.ndarray]:
    assert all(rate == RATE for _, rate in reporter.sent)
    return [pcm for pcm, _ in reporter.sent]


def same(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    return len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


def stored_pcm(b: Bench, j: Job) -> np.ndarray:
    entry = b.index.get(j.key, j.fmt)
    assert entry is not None, "the text was not indexed"
    return np.frombuffer(b.store.get(entry.object_name), dtype="<i2")


def piece(b: Bench, sentence: str) -> np.ndarray | None:
    (key,) = piece_keys(job(sentence).spec, [sentence])
    return load_piece(b.store, b.index, key, RATE)


def run(j: Job, b: Bench) -> tuple[JobOutcome, RecordingReporter]:
    reporter = RecordingReporter(j)
    return asyncio.run(run_job(j, b.host, reporter)), reporter


class OtherProcessClaims:
    """``Claims`` where another process holds some pieces' claims until the test lets them go."""

    def __init__(self, index: CacheIndex, others: set[str]) -> None:
        self.index = index
        self.others = set(others)
        self.asked: list[tuple[list[str], str]] = []
        # Each release, with whether its piece was indexed by then (a waiter must find it).
        self.released: list[tuple[str, bool]] = []
        self.polled = asyncio.Event()

    async def claim(self, keys: list[str], job: str) -> list[bool]:
        self.asked.append((list(keys), job))
        return [key not in self.others for key in keys]

    async def release(self, keys: list[str]) -> None:
        self.released += [(key, self.index.get(key, PIECE) is not None) for key in keys]

    async def held(self, key: str) -> bool:
        self.polled.set()
        return key in self.others
