"""A text's sentences put on the wire in order as they come in (``audio.Joiner``), the master made
of exactly what was passed on, and where its SSML marks fell."""

from __future__ import annotations

from .. import audio
from .made import Tries
from .model import Job, Layout, Reporter


class InOrder:
    """Passes sentences to the reporter in text order, each as soon as it and all before it exist,
    as they go on the wire (``audio.Joiner``); what it passed is the master. A job tried again in
    place starts its master again from the first sentence: what an earlier try sent is not sent
    again (``Tries.sent``)."""

    def __init__(
        self, reporter: Reporter, pieces: list[audio.Pcm16 | None], rate: int, job: Job, tries: Tries
    ) -> None:
        self._reporter = reporter
        self._tries = tries
        self._pieces = pieces
        self._rate = rate
        layout = job.layout
        self.joiner = audio.Joiner(rate, job.spec.speed, *((layout.pauses, layout.tail) if layout else ()))
        self.wire: list[audio.Pcm16] = []
        self._next = 0

    async def flush(self) -> None:
        while self._next < len(self._pieces) and (pcm := self._pieces[self._next]) is not None:
            self._next += 1
            if (out := self.joiner.add(pcm)) is not None:
                await self._send(out)

    async def end(self) -> audio.Pcm16:
        if (tail := self.joiner.end()) is not None:
            await self._send(tail)
        return audio.finish(self.wire, self._rate)

    async def _send(self, chunk: audio.Pcm16) -> None:
        self.wire.append(chunk)
        if len(self.wire) > self._tries.sent:
            await self._reporter.audio(chunk, self._rate)
            self._tries.sent += 1  # counted once taken: one Redis never took is sent again

    def marks(self, layout: Layout | None) -> tuple[tuple[str, float], ...]:
        """Each mark's offset in the audio: where the sentence after it starts, and as far into
        the silence before it as the document put the mark."""
        if layout is None:
            return ()
        starts, total = self.joiner.starts, self.joiner.samples
        return tuple(
            (name, round((starts[index] if index < len(starts) else total) / self._rate + into, 3))
            for name, index, into in layout.marks
        )
