"""The slot core (the one slot loop) and ``synthesize_master``, on fake engines: what a slot emits
per sentence, how a cancel and an engine's faults end a batch."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from ttsd import audio
from ttsd.engines import Engine, Pcm, Voice
from ttsd.errors import EngineOutOfMemory
from ttsd.jobs.messages import BatchDone, BatchFailed, SlotEvent, Spoken
from ttsd.jobs.model import SentenceBatch
from ttsd.jobs.slot import SlotCore, synthesize_master

from .job_fakes import spec

RATE = 8000
NAME = "fake"


def sine(text: str) -> Pcm:
    """Float samples at full swing at both ends, so a missing fade shows."""
    n = 300 + zlib.crc32(text.encode()) % 300
    return np.cos(np.linspace(0, 40 * np.pi, n, dtype=np.float32)).astype(np.float32) * np.float32(0.6)


class SaidEngine(Engine):
    """Says ``sine(text)``; raises what ``fail`` names for a sentence."""

    sample_rate = RATE

    def __init__(
        self, fail: dict[str, Exception] | None = None, silent: frozenset[str] = frozenset()
    ) -> None:
        self.said: list[tuple[str, Voice, float, int | None]] = []
        self._fail = fail or {}
        self._silent = silent

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        self.said.append((text, voice, speed, seed))
        if text in self._fail:
            raise self._fail[text]
        return np.zeros(0, np.float32) if text in self._silent else sine(text)


class ChunkEngine(Engine):
    """Streams each sentence in three chunks. With ``hold``, it waits for it before making a
    sentence's second chunk (``holding`` says it is there): the slot has taken the first by then."""

    sample_rate = RATE

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.yielded = 0
        self.hold = hold
        self.holding = threading.Event()
        self.closed = threading.Event()

    @staticmethod
    def parts(text: str) -> list[Pcm]:
        return list(np.array_split(sine(text), 3))

    def synthesize(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Pcm:
        return sine(text)

    def chunks(self, text: str, voice: Voice, *, speed: float, seed: int | None) -> Iterator[Pcm]:
        try:
            for n, part in enumerate(self.parts(text)):
                if n == 1 and self.hold is not None:
                    self.holding.set()
                    self.hold.wait(10)
                self.yielded += 1
                yield part
        finally:
            self.closed.set()


def batch(*sentences: str, indices: tuple[int, ...] | None = None, speed: float = 1.0) -> SentenceBatch:
    return SentenceBatch(
        "req-1",
        spec(" ".join(sentences), engine=NAME, speed=speed),
        indices if indices is not None else tuple(range(len(sentences))),
        sentences,
    )


def speak(engine: Engine, b: SentenceBatch, cancelled: Callable[[], bool] = lambda: False) -> list[SlotEvent]:
    events: list[SlotEvent] = []
    SlotCore({NAME: engine}).speak(b, events.append, cancelled)
    return events


def test_every_sentence_is_emitted_faded_then_the_batch_is_done() -> None:
    engine = SaidEngine()
    b = batch("First one.", "Second one!", indices=(4, 7), speed=1.5)
    events = speak(engine, b)
    assert [type(e) for e in events] == [Spoken, Spoken, BatchDone]
    for event, index, sentence in zip(events[:2], (4, 7), b.sentences, strict=True):
        assert isinstance(event, Spoken)
        assert (event.request_id, event.index, event.sample_rate) == ("req-1", index, RATE)
        assert np.array_equal(event.samples, audio.fade(sine(sentence), RATE))
        assert event.samples[0] == 0 and event.samples[-1] == 0  # faded in and out
        assert event.seconds >= 0
    assert isinstance(events[-1], BatchDone) and events[-1].request_id == "req-1"
    # The engine hears the batch's voice, speed and seed.
    assert [(t, v, s, seed) for t, v, s, seed in engine.said] == [
        (sentence, b.spec.voice_ref, 1.5, 0) for sentence in b.sentences
    ]


def test_an_engines_chunks_make_one_sentence() -> None:
    (spoken, done) = speak(ChunkEngine(), batch("Streamed in parts."))
    assert isinstance(spoken, Spoken) and isinstance(done, BatchDone)
    assert np.array_equal(
        spoken.samples, audio.fade(np.concatenate(ChunkEngine.parts("Streamed in parts.")), RATE)
    )


def test_a_silent_sentence_is_emitted_empty() -> None:
    (spoken, _) = speak(SaidEngine(silent=frozenset({"..."})), batch("..."))
    assert isinstance(spoken, Spoken) and spoken.pcm == b""


def test_a_cancel_between_sentences_ends_the_batch_before_the_next() -> None:
    engine = SaidEngine()
    events: list[SlotEvent] = []
    SlotCore({NAME: engine}).speak(batch("One.", "Two.", "Three."), events.append, lambda: len(events) >= 1)
    assert [type(e) for e in events] == [Spoken, BatchFailed]
    failed = events[1]
    assert isinstance(failed, BatchFailed) and failed.code == "cancelled"
    assert [said[0] for said in engine.said] == ["One."]


def test_a_cancel_between_chunks_stops_the_engine_mid_sentence() -> None:
    engine = ChunkEngine()
    events = speak(engine, batch("One.", "Two."), lambda: engine.yielded >= 1)
    assert len(events) == 1 and isinstance(events[0], BatchFailed) and events[0].code == "cancelled"
    assert engine.yielded == 1 and engine.closed.is_set()


def test_a_batch_cancelled_before_it_starts_never_reaches_the_engine() -> None:
    engine = SaidEngine()
    events = speak(engine, batch("One."), lambda: True)
    assert [(type(e), getattr(e, "code", None)) for e in events] == [(BatchFailed, "cancelled")]
    assert engine.said == []


def test_an_engines_typed_error_ends_the_batch_with_its_code() -> None:
    engine = SaidEngine(fail={"Two.": EngineOutOfMemory("the device is full")})
    events = speak(engine, batch("One.", "Two.", "Three."))
    assert [type(e) for e in events] == [Spoken, BatchFailed]
    failed = events[1]
    assert isinstance(failed, BatchFailed)
    assert (failed.code, failed.message) == ("engine_out_of_memory", "the device is full")
    assert [said[0] for said in engine.said] == ["One.", "Two."]


def test_any_other_engine_fault_is_a_generic_failure_and_the_slot_lives_on() -> None:
    engine = SaidEngine(fail={"Bad.": ValueError("index out of range in the vocoder")})
    core = SlotCore({NAME: engine})
    events: list[SlotEvent] = []
    core.speak(batch("Bad."), events.append)
    core.speak(batch("Good."), events.append)
    assert [type(e) for e in events] == [BatchFailed, Spoken, BatchDone]
    failed = events[0]
    assert isinstance(failed, BatchFailed) and failed.code == "synthesis_failed"
    assert "vocoder" not in failed.message


def test_synthesize_master_equals_the_pieces_joined() -> None:
    engine = SaidEngine(silent=frozenset({"Hmm."}))
    s = spec("One. Hmm. Two two. Three three three.", engine=NAME, speed=1.25)
    pieces: list[tuple[int, int]] = []
    heard: list[np.ndarray] = []

    def on_piece(pcm: audio.Pcm16, index: int, total: int) -> None:
        pieces.append((index, total))
        heard.append(pcm)

    master = synthesize_master(engine, s, on_piece=on_piece)
    sentences = ["One.", "Hmm.", "Two two.", "Three three three."]
    faded = [audio.fade(sine(t), RATE) if t != "Hmm." else np.zeros(0, np.int16) for t in sentences]
    assert np.array_equal(master, audio.finish(audio.joined(faded, RATE, 1.25), RATE))
    # The silent sentence adds neither sound nor a pause, and is not announced as a piece.
    assert pieces == [(0, 4), (2, 4), (3, 4)]
    assert np.array_equal(np.concatenate(heard), master)


def test_synthesize_master_speaks_the_sentences_it_is_given() -> None:
    engine = SaidEngine()
    master = synthesize_master(engine, spec("Dr. Who.", engine=NAME), sentences=["Doctor Who."])
    assert [said[0] for said in engine.said] == ["Doctor Who."]
    assert np.array_equal(master, audio.fade(sine("Doctor Who."), RATE))


def test_synthesize_master_raises_the_engines_error_as_its_type() -> None:
    engine = SaidEngine(fail={"Two.": EngineOutOfMemory("the device is full")})
    with pytest.raises(EngineOutOfMemory, match="device is full"):
        synthesize_master(engine, spec("One. Two.", engine=NAME))


def test_synthesize_master_of_a_silent_text_is_a_short_silence() -> None:
    master = synthesize_master(SaidEngine(silent=frozenset({"Hmm."})), spec("Hmm.", engine=NAME))
    assert master.size == int(RATE * 0.1) and not master.any()


# -- the distributed worker's slot: the core on a thread beside the event loop ---------------------


class Batches:
    """The slot's hook: (batch, seconds held, engine seconds) per batch, finished or not."""

    def __init__(self) -> None:
        self.seen: list[tuple[SentenceBatch, float, float]] = []

    def __call__(self, b: SentenceBatch, held: float, spoken: float) -> None:
        self.seen.append((b, held, spoken))
