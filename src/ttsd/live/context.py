"""One context of a live session: a bot's turn, spoken while it is still being written.

Text arrives in deltas of any size; the one splitter (``text.SentenceSplitter``) hands over each
sentence the moment it is complete (the first one early, at a clause, so speech starts sooner), and
each becomes a request of its own through the service: the same keys, sentence cache, single flight,
lexicons and queue as every other route, so a cached sentence is sent at once. Sentences are opened
a few ahead of the one playing (``lookahead``), so an engine works ahead of playback while a burst
from one context cannot fill every slot; their audio goes out in order, re-encoded by one stream
encoder for the whole context (one resampler, so sentences join without a seam at 8 kHz), with the
pause between sentences that every master has.

The context owns ordering; the slot core owns stopping. A cancel stops the pump first, so nothing
of the context is sent after it, then closes every sentence stream it opened: a job only this
context wanted leaves the line, or stops at its engine's next chunk.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable

import numpy as np

from .. import audio
from ..errors import InvalidRequest, TtsdError
from ..prepare import SynthesisRequest
from ..service import TtsService
from ..text import script_language, weight
from .events import Audio, Done, Event, Failed, Flushed, SentenceStarted
from .limits import LiveLimits
from .output import Output
from .sentence import Sentence, close, from_document, keep_spoken
from .transcript import Transcript

log = logging.getLogger("ttsd.live")

_FLUSHED, _END = "flushed", "end"
_TAGS = re.compile(r"<[^>]*>")


class LiveContext:
    def __init__(
        self,
        service: TtsService,
        context_id: str,
        template: SynthesisRequest,
        output: audio.AudioFormat,
        limits: LiveLimits,
        emit: Callable[[Event], Awaitable[None]],
        on_closed: Callable[[str], None],
    ) -> None:
        self.id = context_id
        self._service = service
        # Format pcm at the engine's rate; the voice pinned, or None: the first sentence's script
        # picks it (as on every route), then it is pinned, so a context speaks with one voice.
        self._template = template
        self._limits = limits
        self._emit = emit
        self._on_closed = on_closed
        job = service.prepare(template._replace(text="ok"))  # validates voice, speed, lexicons
        rate = service.catalogue.specs[job.spec.engine].sample_rate
        self._out = Output(output, rate, template.speed)
        self._text = Transcript(context_id, limits)
        self._sentences: list[Sentence] = []
        self._items: collections.deque[Sentence | str] = collections.deque()
        self._arrived = asyncio.Event()
        self._flushed = 0  # sentences given before the last flush
        self._dropped = 0
        self._failed = False
        self._documents = False  # an SSML document was said: no one text to keep
        self.closing = False
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._idle: asyncio.TimerHandle | None = None
        self._pump = asyncio.create_task(self._run(), name=f"ttsd-live-{context_id}")

    # -- commands ------------------------------------------------------------------------------

    def speak(self, text: str, *, phrase: bool = False, ssml: bool = False) -> None:
        """``phrase``: ``text`` is whole (a sentence or phrase), said now: it ends at a word
        boundary even when the next one starts without a space. ``ssml``: a whole document."""
        if self.closing:
            raise InvalidRequest(f"context {self.id!r} has ended; open another")
        if ssml:
            self._add_document(text)
            return
        self._add(self._text.add(text, phrase=phrase))
        self._arm_idle()

    def flush(self) -> None:
        if self.closing:
            raise InvalidRequest(f"context {self.id!r} has ended")
        self._add(self._text.flush())
        self._flushed = len(self._sentences)
        self._push(_FLUSHED)

    def end(self, *, flushed_only: bool = False) -> None:
        """No more text. ``flushed_only`` (ElevenLabs' close_context): what was flushed before it
        is still spoken; later sentences and the unflushed buffer are dropped."""
        if self.closing:
            return
        self.closing = True
        self._disarm_idle()
        if flushed_only:
            self._text.flush()
            late = [s for s in self._sentences[self._flushed :] if not s.played]
            self._dropped = len(late)
            self._items = collections.deque(i for i in self._items if i not in late)
            del self._sentences[self._flushed :]
            for sentence in late:
                if sentence.play is not None:
                    sentence.play.cancel()  # playing now: it closes its own stream
                else:
                    self._closing_tasks.add(asyncio.create_task(close(sentence)))
        else:
            self._add(self._text.flush())
        self._push(_END)

    async def cancel(self) -> None:
        """Stop at once: nothing more is emitted once this returns."""
        self.closing = True
        self._disarm_idle()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        await asyncio.gather(*(close(s) for s in self._sentences if not s.played))
        self._on_closed(self.id)

    @property
    def busy(self) -> bool:
        """Sentences to say, or being said (not merely open, waiting for text)."""
        return not self._pump.done() and (bool(self._items) or any(not s.played for s in self._sentences))

    async def finished(self) -> None:
        """Until everything it will say is sent (or it is cancelled)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._pump)

    # -- inside --------------------------------------------------------------------------------

    def _add(self, sentences: list[str]) -> None:
        if sentences and self._template.voice is None:
            self._pin(sentences[0])
        for text in sentences:
            sentence = Sentence(len(self._sentences), text)
            self._sentences.append(sentence)
            self._items.append(sentence)
        self._open_ahead()
        self._arrived.set()

    def _add_document(self, document: str) -> None:
        """An SSML document: what was buffered is said first, then its sentences, each with its
        rate, the silence before it and its marks. The context's whole text is not kept then."""
        self._add(self._text.flush())
        if self._template.voice is None:
            self._pin(_TAGS.sub(" ", document))
        job = self._service.prepare(self._template._replace(text=document, text_type="ssml"))
        self._documents = True
        for sentence in from_document(job, len(self._sentences)):
            self._sentences.append(sentence)
            self._items.append(sentence)
        self._open_ahead()
        self._arrived.set()

    def _pin(self, first: str) -> None:
        catalogue = self._service.catalogue
        seen = script_language(first)
        voice = catalogue.resolve(None, seen if seen in catalogue.languages else None)
        self._template = self._template._replace(voice=voice.name)
        rate = catalogue.specs[voice.engine].sample_rate
        if rate != self._out.rate:  # nothing was sent yet
            self._out = Output(self._out.format, rate, self._template.speed)

    def _push(self, marker: str) -> None:
        self._items.append(marker)
        self._arrived.set()

    def _open_ahead(self) -> None:
        waiting = [s for s in self._sentences if not s.played]
        ahead = 0.0  # opened ahead, it is needed once those before it have played (its deadline)
        for sentence in waiting[: self._limits.lookahead]:
            if sentence.opening is None:
                request, due = sentence.request(self._template), self._out.needed(ahead)
                sentence.opening = asyncio.create_task(self._service.sentence(request, due))
            ahead += self._out.expected(sentence.text)

    def _arm_idle(self) -> None:
        self._disarm_idle()
        if self._text.pending.strip():
            self._idle = asyncio.get_running_loop().call_later(self._limits.idle_flush, self._idle_flush)

    def _disarm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def _idle_flush(self) -> None:
        """A fragment with no ending, and no more text for a while: say it rather than wait."""
        self._idle = None
        if not self.closing:
            self._add(self._text.flush())

    async def _run(self) -> None:
        try:
            while True:
                while not self._items:
                    self._arrived.clear()
                    await self._arrived.wait()
                item = self._items.popleft()
                if item == _FLUSHED:
                    await self._emit(Flushed(self.id))
                elif item == _END:
                    await self._finish()
                    return
                elif isinstance(item, Sentence):
                    play = item.play = asyncio.create_task(self._play(item))
                    try:
                        await play
                    except asyncio.CancelledError:
                        current = asyncio.current_task()
                        if not play.cancelled() or (current is not None and current.cancelling()):
                            raise
                        # that sentence was dropped (close_context): on to the next
        except asyncio.CancelledError:
            raise
        except Exception:  # a fault boundary: the socket and the other contexts go on
            log.exception("live context failed", extra={"context": self.id})
            await self._emit(Failed(self.id, TtsdError("this context failed; open another")))
            self.closing = True
        self._on_closed(self.id)

    async def _play(self, sentence: Sentence) -> None:
        try:
            await self._speak(sentence)
        except asyncio.CancelledError:
            await close(sentence)  # its job stops, or never starts, unless someone else wants it
            raise
        sentence.played = True
        self._out.weight += weight(sentence.text)

    async def _speak(self, sentence: Sentence) -> None:
        self._open_ahead()
        assert sentence.opening is not None
        try:
            stream = await sentence.opening
        except TtsdError as exc:
            self._failed = True
            await self._emit(Failed(self.id, exc, sentence=sentence.index))
            return
        gap = self._out.gap() if sentence.pause is None else self._out.silence(sentence.pause)
        offset, rate = self._out.offset(gap), self._out.out_rate
        started = SentenceStarted(
            self.id, sentence.index, sentence.text, offset, rate, stream.cached, sentence.marks
        )
        await self._emit(started)
        span: tuple[float, float] | None = None
        try:
            async for chunk in stream.chunks:
                pcm = np.frombuffer(chunk, dtype="<i2").astype(np.int16)
                if not pcm.size:
                    continue
                if span is None:  # its first audio: the pause before it, and its own span
                    seconds = stream.entry.duration if stream.entry is not None else len(pcm) / self._out.rate
                    span = (len(gap) / self._out.rate, seconds)
                    data = await self._out.encode(np.concatenate([gap, pcm]) if gap.size else pcm)
                    await self._emit(Audio(self.id, sentence.index, data, span, sentence.text))
                else:
                    await self._emit(Audio(self.id, sentence.index, await self._out.encode(pcm)))
        except TtsdError as exc:
            self._failed = True
            await self._emit(Failed(self.id, exc, sentence=sentence.index))

    async def _finish(self) -> None:
        tail = await self._out.finish()
        if tail:
            last = self._sentences[-1].index if self._sentences else 0
            await self._emit(Audio(self.id, last, tail))
        key = None
        played = [s for s in self._sentences if s.played]
        if played and not self._failed and not self._dropped and not self._documents:
            key = await self._keep_whole(played)
        await self._emit(Done(self.id, key, len(played), round(self._out.seconds, 3), self._dropped))

    async def _keep_whole(self, played: list[Sentence]) -> str | None:
        """The whole text stored under its own key, from the sentences as they were spoken."""
        whole = self._template._replace(text=self._text.whole, format=self._out.format.name)
        spoken = tuple(
            s
            for sentence in played
            for s in self._service.prepare(self._template._replace(text=sentence.text)).sentences
        )
        try:
            return await keep_spoken(self._service, whole, spoken)
        except TtsdError as exc:
            log.info("live text not stored", extra={"context": self.id, "code": exc.code})
            return None
