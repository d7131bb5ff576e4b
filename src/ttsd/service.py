"""The service: turns requests into cache hits or jobs. The HTTP layer only translates."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import NamedTuple

from . import audio
from .audio_stream import STREAMABLE, StreamEncoder
from .config import Settings
from .errors import (
    AudioNotFound,
    BackendUnavailable,
    IdempotencyConflict,
    InvalidRequest,
    NotReady,
    TaskNotFound,
    Unavailable,
    job_error_from,
)
from .jobs.base import JobQueue
from .jobs.model import Job
from .jobs.synth import piece_keys
from .keys import TASK_ID_RE, SynthesisSpec, audio_id, parse_audio_id, task_id
from .metrics import Metrics
from .state.base import CacheEntry, CacheIndex, IdempotencyKeys, RateLimiter, Status, TaskBoard, TaskStatus
from .state.recent import RecentEntries
from .store.base import MASTER, PIECE, AudioStore, Location, Redirect, object_name
from .text import normalize
from .voices import Catalogue

log = logging.getLogger("ttsd.service")

MIN_SPEED, MAX_SPEED = 0.5, 2.0
# A text whose sentences are all cached needs no engine: the request waits this long for it to be
# assembled and answers 200 like a hit, instead of a 202 to poll.
NEAR_HIT_WAIT = 2.0
MAX_IDEMPOTENCY_KEY = 255
# Prepared jobs are remembered by request (repeats are most of the traffic, and normalising and
# hashing a text costs more than the rest of a hit). Long texts are rare repeats: not remembered.
_PREPARED_MAX = 4096
_PREPARED_MAX_CHARS = 512


# Value types made for every request are NamedTuples: a frozen dataclass costs several times more
# to build, and a cache hit builds one of each.
class SynthesisRequest(NamedTuple):
    text: str
    voice: str | None = None
    language: str | None = None
    format: str = "wav"
    speed: float = 1.0
    seed: int | None = None
    lexicons: tuple[str, ...] = ()


class Hit(NamedTuple):
    entry: CacheEntry
    # Set when the text was not cached whole but assembled just now from cached sentences.
    sentences: int | None = None
    task_id: str | None = None


class Queued(NamedTuple):
    status: TaskStatus
    merged: bool
    sentences: int | None = None
    sentences_reused: int | None = None


@dataclass(frozen=True)
class AudioStream:
    """Audio on its way: from storage on a hit, else encoded piece by piece as the engine speaks."""

    key: str
    format: audio.AudioFormat
    sample_rate: int
    cached: bool
    task_id: str
    chunks: AsyncGenerator[bytes, None]
    merged: bool = False
    # On a hit, the stored file: the HTTP layer may send it whole (zero-copy) instead of ``chunks``,
    # which are then never started.
    entry: CacheEntry | None = None


_READ_CHUNK = 64 * 1024


def prepare_job(request: SynthesisRequest, catalogue: Catalogue, *, max_text_chars: int) -> Job:
    """Validate and normalise; the job's key and task id follow from the result."""
    fmt = audio.get_format(request.format)
    if not MIN_SPEED <= request.speed <= MAX_SPEED:
        raise InvalidRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}")
    voice = catalogue.resolve(request.voice, request.language)
    text = normalize(request.text, max_chars=max_text_chars)
    engine = catalogue.specs[voice.engine]
    lexicons = catalogue.lexicons.applied(request.lexicons, voice.language, engine.name)
    spec = SynthesisSpec(
        engine=engine.name,
        engine_version=engine.version,
        voice=voice.name,
        speaker=voice.speaker,
        language=voice.language,
        text=text,
        speed=round(float(request.speed), 3),
        seed=request.seed,
        lexicons=lexicons.key,
    )
    rewrite = lexicons.speak if lexicons.table is not None else None
    return Job(task_id=task_id(spec.key, fmt.name), spec=spec, fmt=fmt.name, rewrite=rewrite)


class TtsService:
    def __init__(
        self,
        settings: Settings,
        catalogue: Catalogue,
        index: CacheIndex,
        store: AudioStore,
        queue: JobQueue,
        board: TaskBoard,
        idempotency: IdempotencyKeys,
        limiter: RateLimiter,
        metrics: Metrics,
        recent: RecentEntries,
    ) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.index = index
        self.store = store
        self.queue = queue
        self.board = board
        self.idempotency = idempotency
        self.limiter = limiter
        self.metrics = metrics
        self.recent = recent
        self._prepared = functools.lru_cache(maxsize=_PREPARED_MAX)(self._prepare)
        self._reuse_engines = frozenset(
            name
            for name, spec in catalogue.specs.items()
            if settings.reuses_sentences(name, engine_default=spec.sentence_reuse)
        )
        self._hits = metrics.cache_requests.labels("hit")
        self._misses = metrics.cache_requests.labels("miss")
        self._merges = metrics.cache_requests.labels("merged")

    def check_ready(self) -> None:
        """Raise NotReady unless engines are warmed and every backend answers."""
        if not self.queue.ready:
            raise NotReady(self.queue.not_ready_reason, retry_after=2)
        try:
            self.index.stats()
            self.store.check()
        except Unavailable as exc:
            raise NotReady(exc.message, retry_after=exc.retry_after) from exc

    def engine_states(self) -> dict[str, str]:
        """Each engine's state: "ready" when it has a live slot, else why not."""
        try:
            return self.queue.engine_states()
        except BackendUnavailable as exc:
            return dict.fromkeys(self.catalogue.specs, exc.message)

    def _prepare(self, request: SynthesisRequest) -> Job:
        return prepare_job(request, self.catalogue, max_text_chars=self.settings.max_text_chars)

    def prepare(self, request: SynthesisRequest) -> Job:
        if len(request.text) <= _PREPARED_MAX_CHARS:
            return self._prepared(request)
        return self._prepare(request)

    async def lookup(self, key: str, fmt: str) -> CacheEntry | None:
        """The index entry for (key, format): from memory when it was read a moment ago."""
        entry = self.recent.get(key, fmt)
        if entry is None:
            try:
                entry = await self.index.aget(key, fmt)
            except BackendUnavailable:
                # The index is away: a hit this process answered before still answers.
                entry = self.recent.last_known(key, fmt)
                if entry is None:
                    raise
                return entry
            if entry is not None:
                self.recent.put(entry)
        return entry

    def _counted(self, merged: bool) -> None:
        (self._merges if merged else self._misses).inc()

    async def synthesize(self, request: SynthesisRequest, idempotency_key: str | None = None) -> Hit | Queued:
        job = self.prepare(request)
        if idempotency_key is not None:
            await self._check_idempotency(idempotency_key, job)
        entry = await self.lookup(job.key, job.fmt)
        if entry is not None:
            self._hits.inc()
            return Hit(entry)
        sentences, reused = await self.plan(job)
        submission = await self.queue.submit(job)
        self._counted(submission.merged)
        if reused == sentences and not submission.merged:
            entry = await self._assembled(job)
            if entry is not None:
                return Hit(entry, sentences, job.task_id)
        return Queued(submission.status, submission.merged, sentences, reused)

    async def plan(self, job: Job) -> tuple[int, int]:
        """The text's sentences, and how many of them the piece cache holds now."""
        sentences = job.sentences
        if job.spec.engine not in self._reuse_engines:
            return len(sentences), 0
        found = await asyncio.gather(*(self.index.aget(k, PIECE) for k in piece_keys(job.spec, sentences)))
        return len(sentences), sum(entry is not None for entry in found)

    async def _assembled(self, job: Job) -> CacheEntry | None:
        """The entry of a job that needs no engine, once it is done (None if it takes longer)."""
        try:
            status = await asyncio.wait_for(self.queue.wait(job.task_id), NEAR_HIT_WAIT)
        except TimeoutError:
            return None
        if status is None or status.status is not Status.DONE:
            return None
        return await self.lookup(job.key, job.fmt)

    async def _check_idempotency(self, key: str, job: Job) -> None:
        """Task ids already follow from the normalised body, so a retried request lands on the same
        task by itself; the header adds the guarantee that a reused key with another body is refused."""
        if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
            raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
        bound = await self.idempotency.bind(key, job.task_id, self.settings.task_ttl)
        if bound != job.task_id:
            raise IdempotencyConflict("this Idempotency-Key was already used with a different request")

    async def synthesize_and_wait(self, request: SynthesisRequest) -> CacheEntry:
        result = await self.synthesize(request)
        if isinstance(result, Hit):
            return result.entry
        status = await self.queue.wait(result.status.task_id)
        if status is None:
            raise TaskNotFound(f"task {result.status.task_id} vanished")
        if status.status is Status.FAILED and status.error is not None:
            raise job_error_from(status.error.code, status.error.message)
        entry = await self.lookup(status.key, status.format)
        if entry is None:
            raise AudioNotFound("the audio was evicted before it could be sent")
        return entry

    async def stream(self, request: SynthesisRequest) -> AudioStream:
        """Open a stream. On a miss the first chunk is awaited here, so a job that fails before
        making any audio is still an ordinary error response rather than a broken stream; on a hit
        nothing is read yet, since the caller may send the stored file whole."""
        job = self.prepare(request)
        fmt = audio.get_format(job.fmt)
        native = self.catalogue.specs[job.spec.engine].sample_rate
        rate = audio.encoded_rate(fmt, native)
        entry = await self.lookup(job.key, job.fmt)
        if entry is not None:
            self._hits.inc()
            return AudioStream(job.key, fmt, rate, True, job.task_id, self._stored(entry), entry=entry)
        merged = False
        chunks: AsyncGenerator[bytes, None]
        if fmt.name not in STREAMABLE or await self.lookup(job.key, MASTER) is not None:
            # Nothing to hear live: a format that cannot stream, or only an encode to wait for.
            chunks = self._stored_when_done(request)
        else:
            submission = await self.queue.submit(job, stream=True)
            merged = submission.merged
            self._counted(merged)
            chunks = self._live(job, fmt)
        try:
            first = await anext(chunks, b"")
        except BaseException:
            await chunks.aclose()
            raise
        return AudioStream(job.key, fmt, rate, False, job.task_id, _prepend(first, chunks), merged)

    async def read(self, entry: CacheEntry) -> bytes:
        return await asyncio.to_thread(self.store.get, entry.object_name)

    async def _stored(self, entry: CacheEntry) -> AsyncGenerator[bytes, None]:
        data = await self.read(entry)
        for start in range(0, len(data), _READ_CHUNK):
            yield data[start : start + _READ_CHUNK]

    async def _stored_when_done(self, request: SynthesisRequest) -> AsyncGenerator[bytes, None]:
        entry = await self.synthesize_and_wait(request)
        async for chunk in self._stored(entry):
            yield chunk

    async def _live(self, job: Job, fmt: audio.AudioFormat) -> AsyncGenerator[bytes, None]:
        encoder: StreamEncoder | None = None
        complete = False
        try:
            async for piece in self.queue.audio(job.task_id):
                if encoder is None:
                    encoder = StreamEncoder(fmt, piece.sample_rate)
                data = await asyncio.to_thread(encoder.feed, piece.pcm)
                if data:
                    yield data
            complete = True
        finally:
            if not complete:
                # The listener left (or the job failed): the engine may stop if nobody else waits.
                await self.queue.release(job.task_id)
        if encoder is None:
            # The job made no pieces: its master was already cached, so the file only needed encoding.
            status = await self.queue.wait(job.task_id)
            if status is not None and status.error is not None:
                raise job_error_from(status.error.code, status.error.message)
            entry = await self.lookup(job.key, job.fmt)
            if entry is None:
                raise AudioNotFound("the audio was evicted before it could be sent")
            async for chunk in self._stored(entry):
                yield chunk
            return
        tail = await asyncio.to_thread(encoder.finish)
        if tail:
            yield tail

    async def task(self, task_id_: str) -> TaskStatus:
        status = await self.board.aget(task_id_) if TASK_ID_RE.match(task_id_) else None
        if status is None:
            raise TaskNotFound(f"no task {task_id_!r} (unknown or expired)")
        return status

    async def audio(self, audio_id_: str) -> tuple[CacheEntry, Location]:
        parsed = parse_audio_id(audio_id_)
        entry = await self.lookup(*parsed) if parsed is not None and parsed[1] in audio.FORMATS else None
        if entry is None:
            raise AudioNotFound(f"no audio {audio_id_!r} (unknown or expired)")
        return entry, self.store.locate(entry.object_name)

    def audio_url(self, key: str, fmt: str, api_base: str) -> str:
        """Object storage behind a CDN or presigned URL is handed out directly, sparing a redirect."""
        if self.store.direct_urls:
            location = self.store.locate(object_name(key, fmt))
            if isinstance(location, Redirect):
                return location.url
        return f"{api_base}/v1/audio/{audio_id(key, fmt)}"

    def forget(self, entry: CacheEntry) -> None:
        """The index pointed at an object that is gone: drop it so the next request re-synthesizes."""
        log.warning(
            "cached object missing; dropping index entry", extra={"key": entry.key, "format": entry.fmt}
        )
        self.recent.drop(entry.key, entry.fmt)
        self.index.delete(entry.key, entry.fmt)


async def _prepend(first: bytes, rest: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    try:
        if first:
            yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()
