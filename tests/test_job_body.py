"""The job body (``run_job``) in process: a tone synthesizer in place of engine slots, a real local
store and SQLite index, and a reporter that records what listeners and pollers were told."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ttsd import audio
from ttsd.errors import BackendUnavailable, EngineCrashed, StorageError
from ttsd.jobs.body import run_job
from ttsd.jobs.made import Tries
from ttsd.jobs.model import Job, JobOutcome
from ttsd.jobs.pieces import keep_pieces, load_piece, piece_keys
from ttsd.jobs.recall import PieceMemory
from ttsd.jobs.writer import STORE_EVERY
from ttsd.state.base import CacheEntry, CacheIndex, Stage
from ttsd.state.redis.leases import LeaseLost
from ttsd.store.base import MASTER, PIECE

from .job_fakes import (
    ENGINE,
    RATE,
    WHOLE,
    Bench,
    RecordingReporter,
    ToneSynthesizer,
    bench,
    job,
    tone,
    wire,
)

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


def test_a_text_is_streamed_in_order_stored_and_kept_as_pieces(tmp_path: Path) -> None:
    j = job(text(A, B, C))
    assert j.sentences == (A, B, C)
    synth = ToneSynthesizer()
    with bench(tmp_path, synth) as b:
        outcome, reporter = run(j, b)

        assert reporter.distinct_stages == [Stage.QUEUED, Stage.SYNTHESIZING, Stage.ENCODING, Stage.STORING]
        assert reporter.status.progress == 95  # storing is the body's last word: DONE is the lifecycle's
        assert reporter.changes[0] == {"sentences": 3, "sentences_reused": 0}
        # One batch for the whole text, its sentences in their places.
        assert [(bt.indices, bt.sentences) for bt in synth.batches] == [((0, 1, 2), (A, B, C))]

        # Listeners hear each sentence once, in text order, with the pause before all but the first.
        assert same(heard(reporter), wire([A, B, C]))
        assert reporter.ended == 1
        # The stored text is exactly what was streamed.
        assert np.array_equal(stored_pcm(b, j), np.concatenate(wire([A, B, C])))
        assert outcome.entry == b.index.get(j.key, "pcm")

        # Each sentence is a piece of its own; the master is redundant with pieces and not kept.
        for sentence in (A, B, C):
            found = piece(b, sentence)
            assert found is not None and np.array_equal(found, tone(sentence))
        assert b.index.get(j.key, MASTER) is None

        assert outcome.synthesized and outcome.sentences == 3
        assert (outcome.sentences_reused, outcome.sentences_merged) == (0, 0)
        assert outcome.slot_seconds == 1.5 and outcome.synthesis_seconds == 0.75
        assert outcome.audio_seconds == len(np.concatenate(wire([A, B, C]))) / RATE
        assert b.metric("ttsd_sentence_requests_total", result="miss") == 3
        assert b.metric("ttsd_sentence_requests_total", result="hit") == 0
        assert b.metric("ttsd_syntheses_total", engine=ENGINE, voice="t-voice") == 1
        assert b.metric("ttsd_encodes_total", format="pcm") == 1


def test_progress_only_rises_and_synthesis_is_its_first_80_percent(tmp_path: Path) -> None:
    with bench(tmp_path, ToneSynthesizer()) as b:
        _, reporter = run(job(text(A, B, C, D)), b)
    progress = reporter.progress
    assert progress == sorted(progress)
    assert progress[0] == 0 and progress[-2:] == [85, 95]
    assert max(progress[:-2]) == 80


def test_a_job_handed_on_keeps_the_stage_and_progress_it_had(tmp_path: Path) -> None:
    """A lost worker's job, run again elsewhere: what the board showed (synthesizing, half done)
    is not shown as queued at 0 % again, and its progress never falls."""
    with bench(tmp_path, ToneSynthesizer()) as b:
        run(job(text(A, B)), b)  # the first worker's finished sentences are in the cache
        handed = job(text(A, B, C, D))
        reporter = RecordingReporter(handed)
        reporter.status = handed.queued().advance(Stage.SYNTHESIZING, 40)
        asyncio.run(run_job(handed, b.host, reporter))
    assert Stage.QUEUED not in reporter.stages
    assert reporter.progress[0] == 40 and reporter.progress == sorted(reporter.progress)
    assert reporter.stages[-1] is Stage.STORING  # then the lifecycle marks it done


def test_a_second_text_asks_the_engine_only_for_its_new_sentence(tmp_path: Path) -> None:
    gate = asyncio.Event()
    synth = ToneSynthesizer(gate=gate)
    with bench(tmp_path, synth) as b:
        gate.set()
        run(job(text(A, B, C)), b)
        gate.clear()
        second = job(text(A, D, C))

        async def scenario() -> tuple[JobOutcome, RecordingReporter]:
            synth.arrived.clear()
            reporter = RecordingReporter(second)
            task = asyncio.create_task(run_job(second, b.host, reporter))
            await synth.arrived.wait()
            # The cached leading sentence went out before any engine was asked for the rest.
            assert same(heard(reporter), wire([A]))
            gate.set()
            return await task, reporter

        outcome, reporter = asyncio.run(scenario())
        assert [(bt.indices, bt.sentences) for bt in synth.batches[1:]] == [((1,), (D,))]
        assert reporter.changes[0] == {"sentences": 3, "sentences_reused": 2}
        assert (outcome.sentences, outcome.sentences_reused, outcome.sentences_merged) == (3, 2, 0)
        assert same(heard(reporter), wire([A, D, C]))
        assert np.array_equal(stored_pcm(b, second), np.concatenate(wire([A, D, C])))
        assert b.metric("ttsd_sentence_requests_total", result="hit") == 2
        assert b.metric("ttsd_sentence_requests_total", result="miss") == 4


def test_a_text_made_entirely_of_cached_sentences_needs_no_engine(tmp_path: Path) -> None:
    synth = ToneSynthesizer()
    with bench(tmp_path, synth) as b:
        run(job(text(A, B)), b)
        run(job(text(C)), b)
        outcome, reporter = run(job(text(C, A)), b)
    assert len(synth.batches) == 2
    assert not outcome.synthesized and outcome.sentences_reused == 2
    # It leaves the queue at once, never waiting for a slot.
    assert reporter.distinct_stages == [Stage.QUEUED, Stage.ENCODING, Stage.STORING]
    assert same(heard(reporter), wire([C, A]))
    assert reporter.ended == 1


def test_two_concurrent_jobs_needing_one_sentence_make_it_once(tmp_path: Path) -> None:
    gate = asyncio.Event()
    synth = ToneSynthesizer(gate=gate)
    first, second = job(text(A, B)), job(text(B, C))
    with bench(tmp_path, synth) as b:

        async def scenario() -> list[tuple[JobOutcome, RecordingReporter]]:
            reporters = [RecordingReporter(first), RecordingReporter(second)]
            one = asyncio.create_task(run_job(first, b.host, reporters[0]))
            await synth.arrived.wait()
            synth.arrived.clear()
            two = asyncio.create_task(run_job(second, b.host, reporters[1]))
            await synth.arrived.wait()
            # The second job asked only for what nobody was making; it waits for B.
            assert synth.batches[1].sentences == (C,)
            assert len(b.host.flights) == 3
            gate.set()
            outcomes = await asyncio.gather(one, two)
            return list(zip(outcomes, reporters, strict=True))

        (o1, r1), (o2, r2) = asyncio.run(scenario())
        assert synth.spoken.count(B) == 1
        assert (o1.sentences_merged, o2.sentences_merged) == (0, 1)
        assert b.metric("ttsd_sentence_requests_total", result="merged") == 1
        assert same(heard(r1), wire([A, B])) and same(heard(r2), wire([B, C]))
        assert len(b.host.flights) == 0  # every flight resolved, none left for a later job to wait on


@pytest.mark.parametrize("fmt", ["pcm", "mp3"])
def test_a_sentence_spoken_but_not_yet_stored_is_not_made_again(tmp_path: Path, fmt: str) -> None:
    # Between a sentence being spoken and its piece reaching the cache (up to STORE_EVERY later,
    # or with its text's file), a job that needs it must get it from its maker, not the engine.
    synth = ToneSynthesizer(pause=0.4)
    first, second = job(text(A, B), fmt), job(text(A), fmt)
    with bench(tmp_path, synth) as b:

        async def scenario() -> JobOutcome:
            one = asyncio.create_task(run_job(first, b.host, RecordingReporter(first)))
            await synth.arrived.wait()  # A is spoken; B takes the slot 0.4 s more
            assert piece(b, A) is None
            outcome = await run_job(second, b.host, RecordingReporter(second))
            await one
            return outcome

        outcome = asyncio.run(scenario())
        assert synth.spoken == [A, B]
        assert outcome.sentences_merged == 1
        assert len(b.host.flights) == 0


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


def test_a_sentence_another_process_is_making_is_awaited_and_read_from_the_cache(tmp_path: Path) -> None:
    synth = ToneSynthesizer()
    j = job(text(A, B))
    key_a, key_b = piece_keys(j.spec, [A, B])
    theirs = tone("how the other process said it")  # tells their piece from one made here
    with bench(tmp_path, synth) as b:
        claims = OtherProcessClaims(b.index, {key_b})
        b.host.claims = claims

        async def scenario() -> tuple[JobOutcome, RecordingReporter]:
            reporter = RecordingReporter(j)
            task = asyncio.create_task(run_job(j, b.host, reporter))
            await claims.polled.wait()
            assert not task.done()
            keep_pieces(b.store, b.index, [(key_b, theirs)], RATE, 3600)
            claims.others.clear()
            return await task, reporter

        outcome, reporter = asyncio.run(scenario())
        assert synth.spoken == [A]
        assert claims.asked == [([key_a, key_b], j.task_id)]
        assert claims.released == [(key_a, True)]
        assert outcome.sentences_merged == 1
        assert same(heard(reporter), audio.joined([tone(A), theirs], RATE, 1.0))


def test_a_claim_let_go_without_a_piece_is_made_here(tmp_path: Path) -> None:
    synth = ToneSynthesizer()
    j = job(text(A, B))
    key_a, key_b = piece_keys(j.spec, [A, B])
    with bench(tmp_path, synth) as b:
        claims = OtherProcessClaims(b.index, {key_b})
        b.host.claims = claims

        async def scenario() -> JobOutcome:
            task = asyncio.create_task(run_job(j, b.host, RecordingReporter(j)))
            await claims.polled.wait()
            claims.others.clear()  # the other process died: its claim lapsed, nothing stored
            return await task

        outcome = asyncio.run(scenario())
        assert [bt.sentences for bt in synth.batches] == [(A,), (B,)]
        assert claims.asked == [([key_a, key_b], j.task_id), ([key_b], j.task_id)]
        assert sorted(claims.released) == sorted([(key_a, True), (key_b, True)])
        assert outcome.sentences_merged == 0
        found = piece(b, B)
        assert found is not None and np.array_equal(found, tone(B))


def test_an_in_process_waiter_gets_a_piece_its_maker_read_from_another_process(tmp_path: Path) -> None:
    """Job one waits on another process for B; job two, here, waits on job one. When B appears in
    the cache, job two must get it through job one's flight, not make it again."""
    gate = asyncio.Event()
    synth = ToneSynthesizer(gate=gate)
    first, second = job(text(A, B)), job(text(B, C))
    key_b = piece_keys(first.spec, [B])[0]
    theirs = tone("how the other process said it")
    with bench(tmp_path, synth) as b:
        claims = OtherProcessClaims(b.index, {key_b})
        b.host.claims = claims

        async def scenario() -> list[JobOutcome]:
            one = asyncio.create_task(run_job(first, b.host, RecordingReporter(first)))
            await synth.arrived.wait()
            await claims.polled.wait()
            synth.arrived.clear()
            two = asyncio.create_task(run_job(second, b.host, RecordingReporter(second)))
            await synth.arrived.wait()
            keep_pieces(b.store, b.index, [(key_b, theirs)], RATE, 3600)
            claims.others.clear()
            gate.set()
            return list(await asyncio.gather(one, two))

        o1, o2 = asyncio.run(scenario())
        assert B not in synth.spoken
        assert (o1.sentences_merged, o2.sentences_merged) == (1, 1)


@pytest.mark.parametrize("left", ["a piece", "nothing"])
def test_a_sentence_said_twice_and_made_by_another_process_does_not_stall_the_job(
    tmp_path: Path, left: str
) -> None:
    """The second "Yes." waits on this job's own flight for the first, which waits on another
    process: whatever that process leaves must reach both, or the job waits for itself."""
    synth = ToneSynthesizer()
    j = job(text("Yes.", A, "Yes."))
    key = piece_keys(j.spec, ["Yes."])[0]
    theirs = tone("their yes")
    with bench(tmp_path, synth) as b:
        claims = OtherProcessClaims(b.index, {key})
        b.host.claims = claims

        async def scenario() -> tuple[JobOutcome, RecordingReporter]:
            reporter = RecordingReporter(j)
            task = asyncio.create_task(run_job(j, b.host, reporter))
            await claims.polled.wait()
            if left == "a piece":
                keep_pieces(b.store, b.index, [(key, theirs)], RATE, 3600)
            claims.others.clear()
            # Bounded, so a regression fails here instead of hanging the suite.
            return await asyncio.wait_for(task, 10), reporter

        outcome, reporter = asyncio.run(scenario())
        yes = theirs if left == "a piece" else tone("Yes.")
        assert same(heard(reporter), audio.joined([yes, tone(A), yes], RATE, 1.0))
        assert len(b.host.flights) == 0
        if left == "a piece":
            assert synth.spoken == [A] and outcome.sentences_merged == 2
        else:
            assert synth.spoken == [A, "Yes."]


class RedisAwayOnce(OtherProcessClaims):
    """Claims whose first ``claim`` meets Redis away, as the Redis-stop fault does mid-job."""

    def __init__(self, index: CacheIndex, others: set[str]) -> None:
        super().__init__(index, others)
        self.away = True

    async def claim(self, keys: list[str], job: str) -> list[bool]:
        if self.away:
            self.away = False
            raise BackendUnavailable("Redis is unreachable")
        return await super().claim(keys, job)


class StageFailsOnce(RecordingReporter):
    """A reporter whose first SYNTHESIZING write meets Redis away."""

    def __init__(self, j: Job) -> None:
        super().__init__(j)
        self.away = True

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        if stage is Stage.SYNTHESIZING and self.away:
            self.away = False
            raise BackendUnavailable("Redis is unreachable")
        await super().stage(stage, progress, **changes)


@pytest.mark.parametrize("fails", ["claiming", "reporting"])
def test_a_try_that_fails_while_claiming_leaves_no_flight_behind(tmp_path: Path, fails: str) -> None:
    """A try that meets Redis away between claiming its sentences' flights in this process and
    making them must let the flights go: the runner tries the job again in place, and the next
    try (or any job here needing the sentence) would otherwise wait for a flight nobody makes."""
    synth = ToneSynthesizer()
    j = job(text(A, B))
    key_b = piece_keys(j.spec, [B])[0]
    with bench(tmp_path, synth) as b:
        # "reporting": B is another process's, so this try only waits and reports SYNTHESIZING.
        keep_pieces(b.store, b.index, [(piece_keys(j.spec, [A])[0], tone(A))], RATE, 3600)
        claims, reporter = (
            (RedisAwayOnce(b.index, set()), RecordingReporter(j))
            if fails == "claiming"
            else (OtherProcessClaims(b.index, {key_b}), StageFailsOnce(j))
        )
        b.host.claims = claims

        async def scenario() -> JobOutcome:
            with pytest.raises(BackendUnavailable):
                await asyncio.wait_for(run_job(j, b.host, reporter), 10)
            assert len(b.host.flights) == 0
            claims.others.clear()
            # Bounded, so a regression fails here instead of hanging the suite.
            return await asyncio.wait_for(run_job(j, b.host, reporter), 10)

        outcome = asyncio.run(scenario())
        assert synth.spoken == [B]
        assert outcome.sentences_reused == 1
        assert len(b.host.flights) == 0


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


@pytest.mark.parametrize("fmt", ["pcm", "wav", "mp3"])
@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_a_fast_batch_is_one_object_and_a_slow_engines_sentences_are_stored_as_they_come(
    tmp_path: Path, pause: float, fmt: str
) -> None:
    # One object a batch saves a request to object storage per sentence; a slow engine's sentences
    # are further apart than a piece waits for company (STORE_EVERY), so each is stored alone, soon
    # after it is spoken, and a job elsewhere waiting on one does not wait for the whole batch.
    # What is still waiting when the batch ends goes with the text: a pcm or wav file holds its
    # samples unchanged, so the pieces are ranges of it; an mp3 does not: they are an object apart.
    assert pause == 0.0 or pause > 1.5 * STORE_EVERY
    j = job(text(A, B, C), fmt)
    with bench(tmp_path, ToneSynthesizer(pause=pause)) as b:
        run(j, b)
        found = [b.index.get(k, PIECE) for k in piece_keys(j.spec, [A, B, C])]
        entries = [e for e in found if e is not None]
        assert len(entries) == 3 and all(piece(b, s) is not None for s in (A, B, C))
        text_entry = b.index.get(j.key, fmt)
        assert text_entry is not None
        names = {e.object_name for e in entries}
        sizes = [2 * len(tone(s)) for s in (A, B, C)]
        if pause:
            assert len(names) == 3 and text_entry.object_name not in names
            assert [e.start for e in entries] == [0, 0, 0]
        elif fmt == "mp3":
            assert len(names) == 1 and text_entry.object_name not in names
            assert [e.start for e in entries] == [0, sizes[0], sizes[0] + sizes[1]]
        else:
            assert names == {text_entry.object_name}  # one object for the whole miss
            file = b.store.get(text_entry.object_name)
            header = 44 if fmt == "wav" else 0
            samples = np.concatenate(wire([A, B, C]))
            assert file[header:] == samples.astype("<i2").tobytes()
            gap = len(audio.pause(RATE, 1.0)) * 2
            starts = [header, header + sizes[0] + gap, header + sizes[0] + sizes[1] + 2 * gap]
            assert [e.start for e in entries] == starts


class LostAfterSpeaking(RecordingReporter):
    """A job handed to another worker just as its sentences were spoken."""

    async def stage(self, stage: Stage, progress: int, **changes: object) -> None:
        if stage is Stage.ENCODING:
            raise LeaseLost("the task was handed to another worker")
        await super().stage(stage, progress, **changes)


def test_sentences_held_for_a_text_that_is_never_stored_are_kept_on_their_own(tmp_path: Path) -> None:
    # A fast batch's sentences wait to go with the text's file; a text that fails after they were
    # spoken must not take them with it: they are stored apart and their claims let go.
    j = job(text(A, B))
    keys = piece_keys(j.spec, [A, B])
    with bench(tmp_path, ToneSynthesizer()) as b:
        claims = OtherProcessClaims(b.index, set())
        b.host.claims = claims
        with pytest.raises(LeaseLost):
            asyncio.run(run_job(j, b.host, LostAfterSpeaking(j)))
        assert b.index.get(j.key, "pcm") is None
        entries = [b.index.get(key, PIECE) for key in keys]
        assert all(e is not None for e in entries)
        assert len({e.object_name for e in entries if e is not None}) == 1
        assert sorted(claims.released) == sorted((key, True) for key in keys)
        for sentence in (A, B):
            found = piece(b, sentence)
            assert found is not None and np.array_equal(found, tone(sentence))


def test_two_writers_of_one_piece_never_write_one_object(tmp_path: Path) -> None:
    # A worker that woke after its job was handed on, with an engine that never says a sentence
    # the same way twice: each write is an object of its own, so whichever entry the index
    # holds, and whatever a reader took from it earlier, names the bytes it describes.
    j = job(text(A))
    key = piece_keys(j.spec, [A])[0]
    with bench(tmp_path, ToneSynthesizer()) as b:
        first, second = tone(A), tone(A) // 2
        keep_pieces(b.store, b.index, [(key, first)], RATE, 60)
        early = b.index.get(key, PIECE)
        keep_pieces(b.store, b.index, [(key, second)], RATE, 60)
        late = b.index.get(key, PIECE)
        assert early is not None and late is not None and early.object_name != late.object_name
        assert b.store.get(early.object_name) == first.astype("<i2").tobytes()
        loaded = load_piece(b.store, b.index, key, RATE)
        assert loaded is not None and np.array_equal(loaded, second)
        keep_pieces(b.store, b.index, [(key, second)], RATE, 60)  # the same bytes: the same object
        again = b.index.get(key, PIECE)
        assert again is not None and again.object_name == late.object_name


@pytest.mark.parametrize("damage", ["flipped", "truncated", "missing"])
def test_a_corrupt_piece_is_dropped_and_made_again(tmp_path: Path, damage: str) -> None:
    j = job(text(A, B))
    synth = ToneSynthesizer()
    with bench(tmp_path, synth) as b:
        run(j, b)
        entry = b.index.get(piece_keys(j.spec, [B])[0], PIECE)
        assert entry is not None
        # A and B were made in one batch: one object, B the second range of it.
        assert entry.start > 0
        path = b.store.root / entry.object_name
        data = bytearray(path.read_bytes())
        if damage == "flipped":  # same size: only the digest tells
            data[entry.start + entry.size // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        elif damage == "truncated":
            path.write_bytes(bytes(data[: entry.start + entry.size // 2]))
        else:
            path.unlink()

        # The same text again: with pieces and no master, it is assembled from what is whole.
        outcome, reporter = run(j, b)
        lost = (A, B) if damage == "missing" else (B,)
        assert [bt.sentences for bt in synth.batches] == [(A, B), lost]
        assert outcome.sentences_reused == 2 - len(lost)
        assert same(heard(reporter), wire([A, B]))
        found = piece(b, B)
        assert found is not None and np.array_equal(found, tone(B))


def test_an_engine_without_sentence_reuse_keeps_a_master_and_no_pieces(tmp_path: Path) -> None:
    synth = ToneSynthesizer()
    as_pcm, as_wav = job(text(A, B), engine=WHOLE), job(text(A, B), fmt="wav", engine=WHOLE)
    with bench(tmp_path, synth) as b:
        run(as_pcm, b)
        assert b.index.get(as_pcm.key, MASTER) is not None
        assert all(load_piece(b.store, b.index, k, RATE) is None for k in piece_keys(as_pcm.spec, [A, B]))

        # Another format of it is encoded from the master: no engine, no stream, no pieces.
        outcome, reporter = run(as_wav, b)
        assert len(synth.batches) == 1
        assert not outcome.synthesized and outcome.sentences == 0
        assert reporter.distinct_stages == [Stage.ENCODING, Stage.STORING]
        assert reporter.sent == [] and reporter.ended == 0
        entry = b.index.get(as_wav.key, "wav")
        assert entry is not None
        pcm, rate = audio.decode(b.store.get(entry.object_name))
        assert rate == RATE and np.array_equal(pcm, stored_pcm(b, as_pcm))


def test_a_budget_that_holds_two_texts_files_holds_them_with_their_sentences(tmp_path: Path) -> None:
    """A pcm or wav file holds its sentences, indexed as ranges of it: the budget counts the file
    once, so room for two texts' files keeps both texts and every sentence."""
    one, two = job(text(A, B)), job(text(C, D))
    with bench(tmp_path / "measure", ToneSynthesizer()) as b:
        sizes = [run(j, b)[0].entry.size for j in (one, two)]
    with bench(tmp_path / "budget", ToneSynthesizer(), max_bytes=sum(sizes)) as b:
        assert run(one, b)[0].evicted == () and run(two, b)[0].evicted == ()
        assert b.index.stats().bytes == sum(sizes)
        assert all(piece(b, s) is not None for s in (A, B, C, D))


def test_a_text_over_the_byte_budget_evicts_the_oldest_objects(tmp_path: Path) -> None:
    one, two = job(text(A)), job(text(B))
    size_a, size_b = 2 * len(tone(A)), 2 * len(tone(B))
    # Room for the newest text and its piece, not for the older ones besides.
    with bench(tmp_path, ToneSynthesizer(), max_bytes=2 * size_b + size_a // 2) as b:
        first, _ = run(one, b)
        assert first.evicted == ()
        piece = b.index.get(piece_keys(one.spec, [A])[0], PIECE)
        assert piece is not None
        gone = {piece.object_name, first.entry.object_name}
        second, _ = run(two, b)
        assert set(second.evicted) == gone
        assert not any(b.store.exists(name) for name in gone)
        assert b.index.get(one.key, "pcm") is None and b.index.get(two.key, "pcm") is not None
