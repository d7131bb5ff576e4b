"""One maker per sentence (``run_job``, in process as ``test_job_body``): jobs in this process
that need one sentence share its flight; a sentence another process claims is awaited and read
from the cache; a try that fails while claiming leaves nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ttsd import audio
from ttsd.errors import BackendUnavailable
from ttsd.jobs.body import run_job
from ttsd.jobs.model import Job, JobOutcome
from ttsd.jobs.pieces import keep_pieces, piece_keys
from ttsd.state.base import CacheIndex, Stage

from .job_fakes import (
    RATE,
    RecordingReporter,
    ToneSynthesizer,
    bench,
    job,
    tone,
    wire,
)
from .job_runs import A, B, C, OtherProcessClaims, heard, piece, same, text


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
