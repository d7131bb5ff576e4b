"""Streams of a request's audio: from storage on a hit, else encoded piece by piece as the engine
speaks (the encoding itself is ``audio_stream``'s). ``TtsService.stream`` opens them here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from . import audio
from .audio_stream import STREAMABLE, StreamEncoder
from .errors import AudioNotFound, job_error_from
from .jobs.model import Job
from .jobs.pieces import piece_keys
from .jobs.queue import Submission
from .state.base import CacheEntry
from .store.base import MASTER, PIECE

if TYPE_CHECKING:
    from .prepare import SynthesisRequest
    from .service import TtsService

_READ_CHUNK = 64 * 1024


class Chunks(Protocol):
    """A stream's bytes; ``aclose`` lets go of its job (a listener leaving)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class AudioStream:
    """Audio on its way: from storage on a hit, else encoded piece by piece as the engine speaks."""

    key: str
    format: audio.AudioFormat
    sample_rate: int
    cached: bool
    task_id: str
    chunks: Chunks
    merged: bool = False
    # On a hit, the stored file: the HTTP layer may send it whole (zero-copy) instead of ``chunks``,
    # which are then never started.
    entry: CacheEntry | None = None


class AudioStreams:
    """Opens streams for one service, which it asks for lookups, jobs and stored files."""

    def __init__(self, service: TtsService) -> None:
        self._service = service

    async def open(self, request: SynthesisRequest, deadline: float | None = None) -> AudioStream:
        """Open a stream. On a miss the first chunk is awaited here, so a job that fails before
        making any audio is still an ordinary error response rather than a broken stream; on a hit
        nothing is read yet, since the caller may send the stored file whole."""
        service = self._service
        job = service.prepare(request)
        fmt = audio.get_format(job.fmt)
        native = service.catalogue.specs[job.spec.engine].sample_rate
        rate = audio.encoded_rate(fmt, native)
        entry = await service.lookup(job.key, job.fmt)
        if entry is not None:
            service.count_hit()
            return AudioStream(job.key, fmt, rate, True, job.task_id, self._stored(entry), entry=entry)
        merged = False
        chunks: AsyncGenerator[bytes, None]
        if fmt.name not in STREAMABLE or await service.lookup(job.key, MASTER) is not None:
            # Nothing to hear live: a format that cannot stream, or only an encode to wait for.
            chunks = self._stored_when_done(request)
        else:
            if deadline is not None:
                job = dataclasses.replace(job, deadline=deadline)
            submission = await self._listen(job)
            merged = submission.merged
            service.count_submission(merged)
            chunks = self._live(job, fmt)
        try:
            first = await anext(chunks, b"")
        except BaseException:
            await chunks.aclose()
            raise
        return AudioStream(job.key, fmt, rate, False, job.task_id, _Prepended(first, chunks), merged)

    async def _listen(self, job: Job) -> Submission:
        """Submit ``job`` as a streaming listener of it. A listener cancelled meanwhile (its client
        hung up) lets go of the job once it is queued, so that nobody is left holding it."""
        queue = self._service.queue
        submitting = asyncio.ensure_future(queue.submit(job, stream=True))
        try:
            return await asyncio.shield(submitting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await submitting
                await queue.release(job.task_id)
            raise

    async def open_sentence(self, request: SynthesisRequest, deadline: float) -> AudioStream:
        """A live session's sentence, as raw pcm at the engine's rate: its cached piece, read as
        it is stored, when the sentence was ever spoken (in any text); else ``open``, queued for an
        engine slot by ``deadline``, when its audio is needed."""
        service = self._service
        job = service.prepare(request)
        if service.reuses(job.spec.engine) and len(job.sentences) == 1:
            entry = await service.lookup(piece_keys(job.spec, job.sentences, job.speeds)[0], PIECE)
            if entry is not None:
                service.count_hit()
                fmt = audio.get_format("pcm")
                return AudioStream(
                    job.key, fmt, entry.sample_rate, True, job.task_id, self._stored(entry), entry=entry
                )
        return await self.open(request, deadline)

    async def _stored(self, entry: CacheEntry) -> AsyncGenerator[bytes, None]:
        data = await self._service.read(entry)
        for start in range(0, len(data), _READ_CHUNK):
            yield data[start : start + _READ_CHUNK]

    async def _stored_when_done(self, request: SynthesisRequest) -> AsyncGenerator[bytes, None]:
        entry = await self._service.synthesize_and_wait(request)
        async for chunk in self._stored(entry):
            yield chunk

    async def _live(self, job: Job, fmt: audio.AudioFormat) -> AsyncGenerator[bytes, None]:
        queue = self._service.queue
        encoder: StreamEncoder | None = None
        complete = False
        try:
            async for piece in queue.audio(job.task_id):
                if encoder is None:
                    encoder = StreamEncoder(fmt, piece.sample_rate)
                data = await asyncio.to_thread(encoder.feed, piece.pcm)
                if data:
                    yield data
            complete = True
        finally:
            if not complete:
                # The listener left (or the job failed): the engine may stop if nobody else waits.
                await queue.release(job.task_id)
        if encoder is None:
            # The job made no pieces: its master was already cached, so the file only needed encoding.
            status = await queue.wait(job.task_id)
            if status is not None and status.error is not None:
                raise job_error_from(status.error.code, status.error.message)
            entry = await self._service.lookup(job.key, job.fmt)
            if entry is None:
                raise AudioNotFound("the audio was evicted before it could be sent")
            async for chunk in self._stored(entry):
                yield chunk
            return
        tail = await asyncio.to_thread(encoder.finish)
        if tail:
            yield tail


class _Prepended:
    """``first``, then the rest of the generator it came from. Closing it closes that generator
    even when iteration never started, which releases the job (a generator that was never started
    would skip its own cleanup when closed)."""

    def __init__(self, first: bytes, rest: AsyncGenerator[bytes, None]) -> None:
        self._first: bytes | None = first
        self._rest = rest

    def __aiter__(self) -> _Prepended:
        return self

    async def __anext__(self) -> bytes:
        if self._first:
            first, self._first = self._first, None
            return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        await self._rest.aclose()
