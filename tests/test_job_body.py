"""The job body (``run_job``) in process: a tone synthesizer in place of engine slots, a real local
store and SQLite index, and a reporter that records what listeners and pollers were told. Here:
a text streamed, stored and reused, its progress, and the cache's byte budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from ttsd import audio
from ttsd.jobs.body import run_job
from ttsd.jobs.model import JobOutcome
from ttsd.jobs.pieces import load_piece, piece_keys
from ttsd.state.base import Stage
from ttsd.store.base import MASTER, PIECE

from .job_fakes import (
    ENGINE,
    RATE,
    WHOLE,
    RecordingReporter,
    ToneSynthesizer,
    bench,
    job,
    tone,
    wire,
)
from .job_runs import A, B, C, D, heard, piece, run, same, stored_pcm, text


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
