"""How a job's sentences are stored (``run_job``, in process as ``test_job_body``): a fast batch as
one object and a slow engine's as they come, sentences held for a text that is never stored, two
writers of one piece, and a corrupt piece made again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ttsd import audio
from ttsd.jobs.body import run_job
from ttsd.jobs.pieces import keep_pieces, load_piece, piece_keys
from ttsd.jobs.writer import STORE_EVERY
from ttsd.state.base import Stage
from ttsd.state.redis.leases import LeaseLost
from ttsd.store.base import PIECE

from .job_fakes import (
    RATE,
    RecordingReporter,
    ToneSynthesizer,
    bench,
    job,
    tone,
    wire,
)
from .job_runs import A, B, C, OtherProcessClaims, heard, piece, run, same, text


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
