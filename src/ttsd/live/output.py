"""A live context's audio on its way out: one encoder for all its sentences (so a resampled format
joins them without a seam), the pause before every sentence but the first that has sound (as every
master has it), and where in the context's audio each sentence starts and when the caller, playing
it from its first byte, will have heard what was sent."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from .. import audio
from ..audio_stream import StreamEncoder
from ..text import weight


class Output:
    def __init__(self, fmt: audio.AudioFormat, rate: int, speed: float) -> None:
        self.format = fmt
        self.rate = rate  # the engine's
        self._encoder = StreamEncoder(fmt, rate)
        self.out_rate = self._encoder.rate
        self._gap = audio.pause(rate, speed)
        self._sounded = False
        self.native = 0  # samples sent, at the engine's rate
        self._started: float | None = None  # when the first audio was sent
        self.weight = 0  # of the sentences sent (``weight``)

    @property
    def seconds(self) -> float:
        return self.native / self.rate

    def gap(self) -> audio.Pcm16:
        """The silence the next sentence starts with."""
        return self._gap if self._sounded else self._gap[:0]

    def silence(self, seconds: float) -> audio.Pcm16:
        """What a document put before the next sentence instead of the usual pause."""
        return np.zeros(int(self.rate * seconds), np.int16)

    def offset(self, gap: audio.Pcm16) -> int:
        """Where a sentence starting after ``gap`` begins, in samples at the output rate."""
        return round((self.native + len(gap)) * self.out_rate / self.rate)

    def needed(self, after: float = 0.0) -> float:
        """When a sentence asked for now will be needed (``time.monotonic()``): once what was sent
        has played out (at once before anything was sent), and then ``after`` seconds of sentences
        to be sent before it."""
        now = time.monotonic()
        if self._started is None:
            return now + after
        return max(now, self._started + self.seconds) + after

    def expected(self, text: str) -> float:
        """Seconds of audio ``text`` will make, at the pace of what was sent so far (before that,
        a short guess: an early deadline is the safe side)."""
        pace = self.seconds / self.weight if self.weight else _FIRST_PACE
        return weight(text) * pace

    async def encode(self, pcm: audio.Pcm16) -> bytes:
        if self._started is None:
            self._started = time.monotonic()
        self.native += len(pcm)
        self._sounded = True  # as ``audio.joined``: a sentence with samples is followed by a pause
        if self.format.container == "RAW" or self.format.base == "wav":
            return self._encoder.feed(pcm)  # a table lookup or a resample: cheaper than a thread hop
        return await asyncio.to_thread(self._encoder.feed, pcm)

    async def finish(self) -> bytes:
        return await asyncio.to_thread(self._encoder.finish)


_FIRST_PACE = 0.04  # seconds a letter; a speaker says about 15 a second
