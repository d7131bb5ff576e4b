"""A sentence of a live context on its way (its stream opened ahead, its playing), how it is let
go of, and how the whole text is kept once every sentence was said."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from ..engines.base import Phonemes, segments
from ..jobs.model import Job
from ..prepare import SynthesisRequest
from ..service import NEAR_HIT_WAIT, TtsService
from ..state.base import Status
from ..streaming import AudioStream


@dataclass(eq=False)
class Sentence:
    index: int
    text: str
    opening: asyncio.Task[AudioStream] | None = None
    play: asyncio.Task[None] | None = None
    played: bool = False
    # From an SSML document: the one-sentence document it is asked for as (its rate, its
    # phonemes), the silence before it, the marks just before it.
    document: str | None = None
    pause: float | None = None
    marks: tuple[str, ...] = ()

    def request(self, template: SynthesisRequest) -> SynthesisRequest:
        """What it is asked for as: its text, or its document (normalised, the lexicons applied)."""
        if self.document is None:
            return template._replace(text=self.text)
        return template._replace(text=self.document, text_type="ssml", lexicons=())


def from_document(job: Job, first: int) -> list[Sentence]:
    """An SSML document's sentences (a prepared job's), each asked for as a document of its own,
    so it is keyed, cached and shared as the same sentence anywhere else."""
    layout = job.layout
    assert layout is not None
    out = []
    for i, said in enumerate(job.sentences):
        parts = [
            f"<phoneme alphabet={quoteattr(p.alphabet)} ph={quoteattr(p.text)}>-</phoneme>"
            if isinstance(p, Phonemes)
            else escape(p)
            for p in segments(said)
        ]
        body = "".join(parts)
        if layout.rates[i] != 1.0:
            body = f'<prosody rate="{layout.rates[i] * 100:g}%">{body}</prosody>'
        shown = "".join(p for p in segments(said) if isinstance(p, str))
        marks = tuple(name for name, index, _ in layout.marks if index == i)
        document = f"<speak>{body}</speak>"
        out.append(Sentence(first + i, shown, document=document, pause=layout.pauses[i], marks=marks))
    return out


async def keep_spoken(service: TtsService, request: SynthesisRequest, spoken: tuple[str, ...]) -> str | None:
    """Store a text a live session spoke, sentence by sentence as ``spoken`` (lexicons applied),
    under the text's own key, so the same text later is a hit: assembled from the sentences it
    just cached, without an engine. Returns the key once stored (None: not within the wait, or
    its engine does not cache sentences)."""
    job = service.prepare(request)
    if await service.lookup(job.key, job.fmt) is not None:
        return job.key
    if not service.reuses(job.spec.engine):
        return None
    await service.queue.submit(dataclasses.replace(job, spoken=spoken, rewrite=None, live=True))
    try:
        async with asyncio.timeout(NEAR_HIT_WAIT):
            status = await service.queue.wait(job.task_id)
    except TimeoutError:
        return None
    return job.key if status is not None and status.status is Status.DONE else None


async def close(sentence: Sentence) -> None:
    """Let go of a sentence's job: one nobody else wants stops or never starts."""
    task = sentence.opening
    if task is None:
        return
    if not task.done():
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        return
    if not task.cancelled() and task.exception() is None:
        with contextlib.suppress(Exception):
            await task.result().chunks.aclose()
