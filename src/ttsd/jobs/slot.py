"""The one slot loop: take a batch, speak its sentences, report each, honour a cancel.

``SlotCore`` is the engine's inner loop and nothing else (as vLLM's ``EngineCore`` is apart from
the process around it): the engine process (``jobs.slots.process``) wraps it in a process with a
pipe, for both runners, and ``synthesize_master`` runs it inline for tools that need no cache. A cancel is
looked at before every sentence and between the chunks of engines that yield them, so barge-in
has one place that stops a slot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .. import audio
from ..engines import Engine, Pcm
from ..errors import JobCancelled, TtsdError, job_error_from
from ..keys import SynthesisSpec
from .messages import BatchDone, BatchFailed, SlotEvent, Spoken
from .model import Layout, SentenceBatch

log = logging.getLogger("ttsd.slot")


_EMPTY = np.zeros(0, np.float32)


def _never() -> bool:
    return False


class SlotCore:
    """Speaks batches on loaded engines; ``emit`` sees every sentence, then how the batch ended."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        self._engines = engines

    def speak(
        self,
        batch: SentenceBatch,
        emit: Callable[[SlotEvent], None],
        cancelled: Callable[[], bool] = _never,
    ) -> None:
        started = time.perf_counter()
        try:
            spec = batch.spec
            engine, voice = self._engines[spec.engine], spec.voice_ref
            rate = engine.sample_rate
            speeds = batch.speeds or (spec.speed,) * len(batch.indices)
            for i, sentence, speed in zip(batch.indices, batch.sentences, speeds, strict=True):
                if cancelled():
                    raise JobCancelled("every listener of this stream left")
                began = time.perf_counter()
                chunks: list[Pcm] = []
                for chunk in engine.chunks(sentence, voice, speed=speed, seed=spec.seed):
                    chunks.append(chunk)
                    if cancelled():
                        raise JobCancelled("every listener of this stream left")
                seconds = time.perf_counter() - began
                pcm = audio.fade(chunks[0] if len(chunks) == 1 else np.concatenate(chunks or [_EMPTY]), rate)
                emit(Spoken(batch.request_id, i, rate, pcm.tobytes(), seconds))
        except TtsdError as exc:
            emit(BatchFailed(batch.request_id, exc.code, exc.message))
        except Exception:  # a fault boundary: one bad text must not take the slot down
            log.exception("synthesis failed", extra={"request_id": batch.request_id})
            emit(BatchFailed(batch.request_id, "synthesis_failed", "the engine failed on this text"))
        else:
            emit(BatchDone(batch.request_id, time.perf_counter() - started))


def synthesize_master(
    engine: Engine,
    spec: SynthesisSpec,
    *,
    sentences: Sequence[str] | None = None,
    layout: Layout | None = None,
    on_piece: Callable[[audio.Pcm16, int, int], None] | None = None,
) -> audio.Pcm16:
    """A whole text on a loaded engine, with no cache or pool (``ttsd say``, benchmarks): the same
    slot loop, sentences (``Job.sentences``, lexicons applied; else the text's), fades and joins
    as the service (``layout``: an SSML document's rates and breaks). Raises the engine's error."""
    from ..text import split_sentences

    sentences = split_sentences(spec.text) if sentences is None else sentences
    rate = engine.sample_rate
    joiner = audio.Joiner(rate, spec.speed, *((layout.pauses, layout.tail) if layout else ()))
    wire: list[audio.Pcm16] = []

    def collect(event: SlotEvent) -> None:
        if isinstance(event, BatchFailed):
            raise job_error_from(event.code, event.message)
        if isinstance(event, Spoken) and (out := joiner.add(event.samples)) is not None:
            wire.append(out)
            if on_piece is not None:
                on_piece(out, event.index, len(sentences))

    speeds = tuple(round(spec.speed * r, 3) for r in layout.rates) if layout else None
    batch = SentenceBatch("offline", spec, tuple(range(len(sentences))), tuple(sentences), speeds=speeds)
    SlotCore({spec.engine: engine}).speak(batch, collect)
    if (end := joiner.end()) is not None:
        wire.append(end)
    return audio.finish(wire, rate)
