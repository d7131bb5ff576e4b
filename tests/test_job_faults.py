"""A job's tries after faults (``run_job``, in process as ``test_job_body``): what a failed try
keeps, a try after a storage fault storing what an earlier one made, listeners sent only what they
have not heard, and pieces read from memory while storage is away."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ttsd.errors import BackendUnavailable, EngineCrashed, StorageError
from ttsd.jobs.body import run_job
from ttsd.jobs.made import Tries
from ttsd.jobs.model import Job
from ttsd.jobs.pieces import keep_pieces, load_piece, piece_keys
from ttsd.jobs.recall import PieceMemory
from ttsd.state.base import CacheEntry
from ttsd.store.base import MASTER, PIECE

from .job_fakes import (
    RATE,
    RecordingReporter,
    ToneSynthesizer,
    bench,
    job,
    tone,
    wire,
)
from .job_runs import A, B, C, heard, piece, run, same, stored_pcm, text


def test_a_failing_synthesizer_keeps_finished_sentences_but_not_the_text(tmp_path: Path) -> None:
    j = job(text(A, B, C))
    with bench(tmp_path, ToneSynthesizer(fail={B: EngineCrashed("the engine died on B")})) as b:
        reporter = RecordingReporter(j)
        with pytest.raises(EngineCrashed, match="died on B"):
            asyncio.run(run_job(j, b.host, reporter))
        assert b.index.get(j.key, "pcm") is None and b.index.get(j.key, MASTER) is None
        found = piece(b, A)
        assert found is not None and np.array_equal(found, tone(A))
        assert piece(b, B) is None and piece(b, C) is None
        assert len(b.host.flights) == 0  # abandoned, so a later job makes them instead of waiting
        assert reporter.ended == 0  # a failure is the lifecycle's to report, not a clean end
        assert b.metric("ttsd_encodes_total", format="pcm") == 0

        # A retry speaks only what the failure left unsaid.
        retry = ToneSynthesizer()
        b.host.synthesizer = retry
        outcome, reporter = run(j, b)
        assert [bt.sentences for bt in retry.batches] == [(B, C)]
        assert outcome.sentences_reused == 1
        assert same(heard(reporter), wire([A, B, C]))


def test_a_try_after_a_storage_fault_stores_what_an_earlier_try_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = job(text(A, B, C))
    synth = ToneSynthesizer()
    with bench(tmp_path, synth) as b:
        working = b.store.put

        def unreachable(name: str, data: bytes, content_type: str) -> None:
            raise StorageError("the object store is unreachable")

        monkeypatch.setattr(b.store, "put", unreachable)
        tries = Tries()
        reporter = RecordingReporter(j)
        with pytest.raises(StorageError):
            asyncio.run(run_job(j, b.host, reporter, tries))
        assert piece(b, A) is None and b.index.get(j.key, "pcm") is None
        assert same(heard(reporter), wire([A, B, C]))  # listeners heard the text already

        monkeypatch.setattr(b.store, "put", working)  # storage is back
        outcome = asyncio.run(run_job(j, b.host, reporter, tries))
        assert len(synth.batches) == 1  # made once: the second try only stored
        assert np.array_equal(stored_pcm(b, j), np.concatenate(wire([A, B, C])))
        for sentence in (A, B, C):
            found = piece(b, sentence)
            assert found is not None and np.array_equal(found, tone(sentence))
        assert outcome.synthesized and outcome.sentences == 3
        assert same(heard(reporter), wire([A, B, C]))  # nothing sent twice
        assert reporter.ended == 1  # its end too
        assert b.metric("ttsd_sentence_requests_total", result="miss") == 3


class AudioFailsOnce(RecordingReporter):
    """A reporter whose second sentence meets Redis away: the first was heard."""

    def __init__(self, j: Job) -> None:
        super().__init__(j)
        self.calls = 0

    async def audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        self.calls += 1
        if self.calls == 2:
            raise BackendUnavailable("Redis is unreachable")
        await super().audio(pcm, sample_rate)


def test_a_try_again_in_place_sends_listeners_only_what_they_have_not_heard(tmp_path: Path) -> None:
    """Redis away mid-stream: the job is tried again in place, from its first sentence. A listener
    who heard the opening must hear the rest, not the opening twice."""
    j = job(text(A, B, C))
    synth = ToneSynthesizer()
    with bench(tmp_path, synth) as b:
        tries, reporter = Tries(), AudioFailsOnce(j)
        with pytest.raises(BackendUnavailable):
            asyncio.run(run_job(j, b.host, reporter, tries))
        assert same(heard(reporter), wire([A, B, C])[:1])
        asyncio.run(run_job(j, b.host, reporter, tries))
        assert same(heard(reporter), wire([A, B, C]))
        assert reporter.ended == 1


def test_pieces_in_memory_are_read_while_storage_is_away_and_never_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, again = job(text(A, B)), job(text(A, C))
    synth = ToneSynthesizer()
    with bench(tmp_path, synth) as b:
        b.host.memory = PieceMemory(1 << 20)
        run(first, b)
        assert len(b.host.memory) == 2  # kept as they were made

        def unreachable(name: str, span: object = None) -> bytes:
            raise StorageError("the object store is unreachable")

        monkeypatch.setattr(b.store, "get", unreachable)
        outcome, _ = run(again, b)  # reads nothing from storage: A from memory, C made
        assert outcome.sentences_reused == 1
        assert [bt.sentences for bt in synth.batches][-1] == (C,)

        # A piece made again under its key by another process (other bytes, another digest) is
        # not answered from the copy in memory: the index says which bytes are current.
        (key,) = piece_keys(first.spec, [A])
        keep_pieces(b.store, b.index, [(key, tone(A)[::-1].copy())], RATE, 3600)
        with pytest.raises(StorageError):
            load_piece(b.store, b.index, key, RATE, b.host.memory)
        monkeypatch.undo()
        found = load_piece(b.store, b.index, key, RATE, b.host.memory)
        assert found is not None and np.array_equal(found, tone(A)[::-1])


def test_piece_memory_keeps_the_most_recent_within_its_budget() -> None:
    memory = PieceMemory(250)
    entries = [
        CacheEntry(f"k{i}", PIECE, f"o{i}", 100, f"e{i}", "audio/pcm", RATE, 1.0, 0.0, 1.0) for i in range(3)
    ]
    for entry in entries:
        memory.put(entry, bytes(100))
    assert memory.get(entries[0]) is None and memory.bytes == 200
    assert memory.get(entries[1]) is not None
    memory.put(entries[0], bytes(100))  # the least recently used (entries[2]) goes
    assert memory.get(entries[2]) is None and memory.get(entries[1]) is not None
    other = dataclasses.replace(entries[1], etag="made again")
    assert memory.get(other) is None
