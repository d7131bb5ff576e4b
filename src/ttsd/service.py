"""The service: turns requests into cache hits or jobs. The HTTP layer only translates."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import NamedTuple

from . import audio
from .config import Settings
from .errors import (
    AudioNotFound,
    BackendUnavailable,
    NotReady,
    TaskNotFound,
    Unavailable,
    job_error_from,
)
from .idempotency import check_idempotency
from .jobs.model import Job
from .jobs.pieces import Marks, load_marks, piece_keys
from .jobs.queue import JobQueue
from .links import TASK_ID_RE, Links
from .metrics import Metrics
from .prepare import SynthesisRequest, prepare_job
from .state.base import CacheEntry, CacheIndex, IdempotencyKeys, RateLimiter, Status, TaskBoard, TaskStatus
from .state.recent import RecentEntries
from .store.base import PIECE, AudioStore, Location, Redirect
from .streaming import AudioStream, AudioStreams
from .tenants import Tenants
from .voices import Catalogue

log = logging.getLogger("ttsd.service")

# A text whose sentences are all cached needs no engine: the request waits this long for it to be
# assembled and answers 200 like a hit, instead of a 202 to poll (a live session's text likewise).
NEAR_HIT_WAIT = 2.0
# Requests are remembered (repeats are most of the traffic, and normalising and hashing a text costs
# more than the rest of a hit): what a hit needs of each (its key, format and task id) for as many
# as TTSD_HOT_ENTRIES requests, as plain tuples of strings, which the cyclic collector stops tracking
# (a Job it would scan at every full collection: a working set of them makes those pauses long);
# whole jobs for the repeats of a miss (merged requests, retries). Long texts are rare repeats: not
# remembered.
_PREPARED_MAX = 4096
_PREPARED_MAX_CHARS = 512
Identity = tuple[str, str, str]


# Value types made for every request are NamedTuples: a frozen dataclass costs several times more
# to build, and a cache hit builds one of each (SynthesisRequest too, in ``prepare``).
class Hit(NamedTuple):
    entry: CacheEntry
    # Set when the text was not cached whole but assembled just now from cached sentences.
    sentences: int | None = None
    task_id: str | None = None
    marks: Marks | None = None  # an SSML document's


class Queued(NamedTuple):
    status: TaskStatus
    merged: bool
    sentences: int | None = None
    sentences_reused: int | None = None


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
        links: Links,
        tenants: Tenants,
    ) -> None:
        self.settings = settings
        self.links = links
        self.tenants = tenants
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
        self._identities = functools.lru_cache(maxsize=settings.hot_entries)(self._identity)
        self._reuse_engines = frozenset(
            name
            for name, spec in catalogue.specs.items()
            if settings.reuses_sentences(name, engine_default=spec.sentence_reuse)
        )
        self._hits = metrics.cache_requests.labels("hit")
        self._misses = metrics.cache_requests.labels("miss")
        self._merges = metrics.cache_requests.labels("merged")
        self._streams = AudioStreams(self)

    def reuses(self, engine: str) -> bool:
        """Whether the engine's sentences are cached as pieces and shared across texts."""
        return engine in self._reuse_engines

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
        return prepare_job(
            request,
            self.catalogue,
            self.links,
            max_text_chars=self.settings.max_text_chars,
            normalize_text=self.settings.text_normalization,
        )

    def prepare(self, request: SynthesisRequest) -> Job:
        if len(request.text) <= _PREPARED_MAX_CHARS:
            return self._prepared(request)
        return self._prepare(request)

    def _identity(self, fields: tuple[object, ...]) -> Identity:
        job = self.prepare(SynthesisRequest._make(fields))
        return job.key, job.fmt, job.task_id

    def identify(self, request: SynthesisRequest) -> Identity:
        """The request's cache key, format and task id (validated as ``prepare`` validates)."""
        if len(request.text) <= _PREPARED_MAX_CHARS:
            return self._identities(tuple(request))
        job = self._prepare(request)
        return job.key, job.fmt, job.task_id

    async def lookup(self, key: str, fmt: str) -> CacheEntry | None:
        """The index entry for (key, format): from memory when it was read a moment ago (read again
        in the background meanwhile, see ``RecentEntries``)."""
        entry = self.recent.serve(key, fmt)
        if entry is None:
            read_at = time.time()
            try:
                entry = await self.index.aget(key, fmt)
            except BackendUnavailable:
                # The index is away: a hit this process answered before still answers.
                entry = self.recent.last_known(key, fmt)
                if entry is None:
                    raise
                return entry
            if entry is not None:
                self.recent.put(entry, read_at=read_at)
        return entry

    def count_hit(self) -> None:
        self._hits.inc()

    def count_submission(self, merged: bool) -> None:
        """A miss: a new job, or one merged into a job already under way."""
        (self._merges if merged else self._misses).inc()

    def scoped(self, request: SynthesisRequest, tenant: str) -> SynthesisRequest:
        """The request in its tenant's cache under TTSD_CACHE_SCOPE=tenant: its key, sentence
        pieces, in-flight job and task id are that tenant's alone."""
        scope = self.scope_of(tenant)
        return request._replace(scope=scope) if scope else request

    def scope_of(self, tenant: str) -> str:
        """Whose cache a tenant's requests use: its own under TTSD_CACHE_SCOPE=tenant, else ""."""
        return tenant if self.settings.cache_scope == "tenant" else ""

    async def synthesize(
        self, request: SynthesisRequest, idempotency_key: str | None = None, *, owner: str = ""
    ) -> Hit | Queued:
        """``owner``: whose idempotency keys these are (a caller's identity): one caller's key
        never tells another anything."""
        key, fmt, task = self.identify(request)
        if idempotency_key is not None:
            await check_idempotency(self.idempotency, idempotency_key, task, owner, self.settings.task_ttl)
        entry = await self.lookup(key, fmt)
        if entry is not None:
            self.count_hit()
            if "<mark" not in request.text:
                return Hit(entry)
            return Hit(entry, marks=await asyncio.to_thread(load_marks, self.store, self.index, key))
        job = self.prepare(request)
        sentences, reused = await self.plan(job)
        submission = await self.queue.submit(job)
        self.count_submission(submission.merged)
        if reused == sentences and not submission.merged:
            status = await self._assembled(job)
            if status is not None and (entry := await self.lookup(job.key, job.fmt)) is not None:
                marks = tuple((m.name, m.seconds) for m in status.marks or ())
                return Hit(entry, sentences, job.task_id, marks)
        return Queued(submission.status, submission.merged, sentences, reused)

    async def plan(self, job: Job) -> tuple[int, int]:
        """The text's sentences, and how many of them the piece cache holds now."""
        sentences = job.sentences
        if job.spec.engine not in self._reuse_engines:
            return len(sentences), 0
        keys = piece_keys(job.spec, sentences, job.speeds)
        found = await asyncio.gather(*(self.index.aget(k, PIECE) for k in keys))
        return len(sentences), sum(entry is not None for entry in found)

    async def _assembled(self, job: Job) -> TaskStatus | None:
        """A job that needs no engine, once it is done (None if it takes longer or failed)."""
        try:
            async with asyncio.timeout(NEAR_HIT_WAIT):
                status = await self.queue.wait(job.task_id)
        except TimeoutError:
            return None
        return status if status is not None and status.status is Status.DONE else None

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
        """Open a stream of the request's audio (``AudioStreams.open``: on a miss its first chunk is
        already made)."""
        return await self._streams.open(request)

    async def sentence(self, request: SynthesisRequest, deadline: float) -> AudioStream:
        """Open a live sentence's stream (``AudioStreams.open_sentence``)."""
        return await self._streams.open_sentence(request, deadline)

    async def read(self, entry: CacheEntry) -> bytes:
        return await asyncio.to_thread(self.store.get, entry.object_name, entry.span)

    async def task(self, task_id_: str) -> TaskStatus:
        status = await self.board.aget(task_id_) if TASK_ID_RE.match(task_id_) else None
        # A task id another secret made is nobody's, even while the shared board still holds it
        # (after a rotation: "links and task ids handed out before stop working").
        if status is None or not self.links.names_task(task_id_, status.key, status.format):
            raise TaskNotFound(f"no task {task_id_!r} (unknown or expired)")
        return status

    async def task_url(self, status: TaskStatus, api_base: str) -> str | None:
        """A finished task's audio URL. Handed out directly (presigned, CDN), it names the object
        the index recorded: a worker that still had the last secret stored it under that one."""
        if not status.audio_id:
            return None
        entry = await self.lookup(status.key, status.format) if self.store.direct_urls else None
        return self.audio_url(status.key, status.format, api_base, entry.object_name if entry else None)

    async def audio(self, audio_id_: str) -> tuple[CacheEntry, Location]:
        parsed = self.links.parse_audio_id(audio_id_)
        entry = await self.lookup(*parsed) if parsed is not None and parsed[1] in audio.FORMATS else None
        if entry is None:
            raise AudioNotFound(f"no audio {audio_id_!r} (unknown or expired)")
        return entry, self.store.locate(entry.object_name)

    def audio_url(self, key: str, fmt: str, api_base: str, object_name: str | None = None) -> str:
        """Object storage behind a CDN or presigned URL is handed out directly, sparing a redirect:
        the object the index recorded. Without one (evicted already), the API's own URL."""
        if self.store.direct_urls and object_name is not None:
            location = self.store.locate(object_name)
            if isinstance(location, Redirect):
                return location.url
        return f"{api_base}/v1/audio/{self.links.audio_id(key, fmt)}"

    def forget(self, entry: CacheEntry) -> None:
        """The index pointed at an object that is gone: drop it so the next request re-synthesizes."""
        log.warning(
            "cached object missing; dropping index entry", extra={"key": entry.key, "format": entry.fmt}
        )
        self.recent.drop(entry.key, entry.fmt)
        self.index.delete(entry.key, entry.fmt)
