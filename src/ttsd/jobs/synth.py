"""The one job body: pieces -> synthesize what is missing -> join -> encode -> store -> index.

Both runners call ``run_job``: the embedded queue on the API's event loop, the Celery worker on its
own loop. It is a coroutine because it waits on two scarce things and must not hold either while
waiting for the other: an engine slot (``JobHost.synthesizer``: processes that only speak
sentences) and the post-processing stage (``JobHost.post``: a bounded thread pool for reading,
encoding, storing and indexing). The slot is released the moment its engine has spoken the last
sentence of a batch; everything after that runs here, beside the slots.

Two cache levels. The whole text (master and formats) answers repeats with one lookup and never
reaches this function. Below it, every sentence's audio is a piece, keyed like a text by the
sentence alone, so texts built from the same templates share their common sentences: a job loads
the pieces that exist, streams the leading ones at once, and asks the engine only for the rest.
A piece another job is making right now is awaited, not made again (single flight per sentence, in
this process through ``Flights``, across processes through ``JobHost.claims``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from .. import audio
from ..config import Settings
from ..engines import Engine, select
from ..errors import AudioNotFound, JobError, StorageError
from ..keys import SynthesisSpec
from ..metrics import JobStats
from ..state.base import CacheEntry, CacheIndex, Stage
from ..store.base import MASTER, PIECE, AudioStore, object_name
from ..text import split_sentences
from .model import Job, JobOutcome, Reporter, SentenceBatch

log = logging.getLogger("ttsd.jobs")

T = TypeVar("T")
# A piece that another job failed to make is tried again, by this job, this many times in all.
_ROUNDS = 3
# Markers on a round's arrival queue, beside sentence indices.
_STARTED, _ENDED = -2, -1


def _progress(pieces: list[Any]) -> int:
    """Synthesis is the first 80 % of a job's progress."""
    return int(80 * sum(p is not None for p in pieces) / len(pieces))


class Synthesizer(Protocol):
    """Engine slots (``jobs.pool.EnginePool``): each sentence comes back faded (``audio.fade``)."""

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: Callable[[int, Any, int], None],
        on_start: Callable[[], None] | None = None,
    ) -> Any: ...


class Claims(Protocol):
    """Single flight per sentence across processes (Redis in distributed mode)."""

    async def claim(self, keys: list[str], job: str) -> list[bool]:
        """Claim each piece for this run of ``job``; False where another job holds it (an earlier
        delivery of the same job, whose worker was lost, does not count)."""

    async def release(self, keys: list[str]) -> None: ...

    async def held(self, key: str) -> bool:
        """Whether some process still holds the claim on ``key``."""


class Flights:
    """Pieces being made in this process, so a second job that needs one waits for it."""

    def __init__(self) -> None:
        self._made: dict[str, asyncio.Future[audio.Pcm16]] = {}

    def claim(self, key: str) -> asyncio.Future[audio.Pcm16] | None:
        """None when the caller now makes ``key``; else the future of whoever already does."""
        flight = self._made.get(key)
        if flight is not None:
            return flight
        self._made[key] = asyncio.get_running_loop().create_future()
        return None

    def resolve(self, key: str, pcm: audio.Pcm16) -> None:
        flight = self._made.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_result(pcm)

    def abandon(self, key: str) -> None:
        """The maker gave up: waiters make it themselves."""
        flight = self._made.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_exception(_Abandoned())
            flight.exception()  # retrieved: no waiter is required to exist

    def __len__(self) -> int:
        return len(self._made)


class _Abandoned(Exception):
    pass


@dataclass
class JobHost:
    """What job bodies run against; one per process that runs them."""

    synthesizer: Synthesizer
    store: AudioStore
    index: CacheIndex
    stats: JobStats
    post: Executor
    sample_rates: Mapping[str, int]
    cache_ttl: float
    cache_max_bytes: int
    # Engines whose sentences are cached and shared as pieces (prosody that spans sentences would
    # make a joined text sound different from one spoken whole).
    reuse_engines: frozenset[str]
    flights: Flights = dataclasses.field(default_factory=Flights)
    claims: Claims | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the post-processing stage."""
        return await asyncio.get_running_loop().run_in_executor(self.post, fn, *args)


# -- pieces ----------------------------------------------------------------------------------


def piece_keys(spec: SynthesisSpec, sentences: Sequence[str]) -> list[str]:
    """Each sentence keyed like a text of its own (engine, version, voice, language, speed, seed),
    by what the engine says: ``sentences`` have the lexicons applied, so a lexicon edit misses only
    the sentences whose words it changes."""
    return [dataclasses.replace(spec, text=s, lexicons="").key for s in sentences]


def keep(
    store: AudioStore, index: CacheIndex, key: str, fmt: str, data: bytes, content_type: str, rate: int,
    duration: float, ttl: float,
) -> CacheEntry:  # fmt: skip
    """Store one file, then index it: a reader never finds an entry whose object is not whole."""
    name = object_name(key, fmt)
    store.put(name, data, content_type)
    now = time.time()
    entry = CacheEntry(
        key=key,
        fmt=fmt,
        object_name=name,
        size=len(data),
        etag=hashlib.sha256(data).hexdigest()[:32],
        content_type=content_type,
        sample_rate=rate,
        duration=duration,
        created_at=now,
        expires_at=now + ttl,
    )
    index.put(entry)
    return entry


def keep_piece(
    store: AudioStore, index: CacheIndex, key: str, pcm: audio.Pcm16, rate: int, ttl: float
) -> None:
    keep(store, index, key, PIECE, pcm.astype("<i2").tobytes(), "audio/pcm", rate, len(pcm) / rate, ttl)


def load_piece(store: AudioStore, index: CacheIndex, key: str, rate: int) -> audio.Pcm16 | None:
    """A cached piece, or None. One whose object is missing, or whose bytes do not match what was
    indexed (size, digest, sample rate), is dropped so the sentence is synthesized again."""
    entry = index.get(key, PIECE)
    if entry is None:
        return None
    try:
        data = store.get(entry.object_name)
    except AudioNotFound:
        data = None
    if (
        data is None
        or len(data) != entry.size
        or entry.sample_rate != rate
        or hashlib.sha256(data).hexdigest()[:32] != entry.etag
    ):
        log.warning("cached piece missing or corrupt; synthesizing it again", extra={"key": key})
        index.delete(key, PIECE)
        if data is not None:
            store.delete(entry.object_name)
        return None
    return np.frombuffer(data, dtype="<i2").astype(np.int16)


def load_pieces(store: AudioStore, index: CacheIndex, keys: list[str], rate: int) -> list[audio.Pcm16 | None]:
    return [load_piece(store, index, key, rate) for key in keys]


# -- the text's master -------------------------------------------------------------------------


def synthesize_master(
    engine: Engine,
    spec: SynthesisSpec,
    *,
    sentences: Sequence[str] | None = None,
    on_piece: Callable[[audio.Pcm16, int, int], None] | None = None,
) -> audio.Pcm16:
    """A whole text on a loaded engine, with no cache or slots (``ttsd say``, benchmarks): the same
    sentences (``Job.sentences``, lexicons applied; else the text's), fades and joins as the service."""
    voice = spec.voice_ref
    sentences = split_sentences(spec.text) if sentences is None else sentences
    rate = engine.sample_rate
    gap = audio.pause(rate, spec.speed)
    wire: list[audio.Pcm16] = []  # as ``audio.joined`` makes them, one at a time
    for i, sentence in enumerate(sentences):
        pcm = audio.fade(engine.synthesize(sentence, voice, speed=spec.speed, seed=spec.seed), rate)
        if pcm.size:
            wire.append(np.concatenate([gap, pcm]) if wire else pcm)
            if on_piece is not None:
                on_piece(wire[-1], i, len(sentences))
    return audio.finish(wire, rate)


@dataclass
class _Made:
    pcm: audio.Pcm16
    rate: int
    sentences: int = 0
    reused: int = 0
    merged: int = 0
    synthesized: int = 0  # sentences this job had an engine speak
    synthesized_audio: float = 0.0
    slot_seconds: float = 0.0
    synthesis_seconds: float = 0.0
    from_cache: bool = False


def _cached_master(job: Job, store: AudioStore, index: CacheIndex) -> tuple[audio.Pcm16, int] | None:
    entry = index.get(job.key, MASTER)
    if entry is None:
        return None
    try:
        return audio.decode(store.get(entry.object_name))
    except AudioNotFound:
        index.delete(job.key, MASTER)  # the object went away under the index: make it again
        return None


class _InOrder:
    """Passes sentences to the reporter in text order, each as soon as it and all before it exist."""

    def __init__(self, reporter: Reporter, pieces: list[audio.Pcm16 | None], rate: int, speed: float) -> None:
        self._reporter = reporter
        self._pieces = pieces
        self._rate = rate
        self._gap = audio.pause(rate, speed)
        self._next = 0
        self._sounded = False

    async def flush(self) -> None:
        while self._next < len(self._pieces) and (pcm := self._pieces[self._next]) is not None:
            self._next += 1
            if pcm.size:
                await self._reporter.audio(
                    np.concatenate([self._gap, pcm]) if self._sounded else pcm, self._rate
                )
                self._sounded = True


async def _await_flight(flight: asyncio.Future[audio.Pcm16]) -> audio.Pcm16 | None:
    try:
        return await asyncio.shield(flight)
    except _Abandoned:
        return None


async def _await_remote(host: JobHost, key: str, rate: int) -> audio.Pcm16 | None:
    """Another process is making this piece: wait until its claim goes, then read what it left."""
    assert host.claims is not None
    delay = 0.02
    while await host.claims.held(key):
        await asyncio.sleep(delay)
        delay = min(0.2, delay * 1.5)
    return await host.run(load_piece, host.store, host.index, key, rate)


async def _make_master(job: Job, host: JobHost, reporter: Reporter) -> _Made:
    spec = job.spec
    rate = host.sample_rates[spec.engine]
    sentences = job.sentences
    n = len(sentences)
    reuse = spec.engine in host.reuse_engines
    keys = piece_keys(spec, sentences)
    pieces: list[audio.Pcm16 | None] = (
        await host.run(load_pieces, host.store, host.index, keys, rate) if reuse else [None] * n
    )
    made = _Made(np.zeros(0, np.int16), rate, sentences=n, reused=sum(p is not None for p in pieces))
    out = _InOrder(reporter, pieces, rate, spec.speed)
    # Still queued: the job leaves the queue when an engine slot takes its first sentence (or at
    # once if it needs none), which is what the queue's depth and Retry-After count.
    await reporter.stage(Stage.QUEUED, 0, sentences=n, sentences_reused=made.reused)
    await out.flush()  # cached leading sentences go out before any engine is asked
    for _ in range(_ROUNDS):
        missing = [i for i in range(n) if pieces[i] is None]
        if not missing:
            break
        await _round(job, host, reporter, out, sentences, pieces, keys, missing, made)
    else:
        raise JobError("the sentences of this text could not be made")
    made.pcm = audio.finish(audio.joined([p for p in pieces if p is not None], rate, spec.speed), rate)
    return made


async def _round(
    job: Job,
    host: JobHost,
    reporter: Reporter,
    out: _InOrder,
    sentences: Sequence[str],
    pieces: list[audio.Pcm16 | None],
    keys: list[str],
    missing: list[int],
    made: _Made,
) -> None:
    """Make or await every missing sentence once. A sentence whose maker gave up stays missing."""
    spec = job.spec
    rate = made.rate
    reuse = spec.engine in host.reuse_engines
    own: list[int] = []
    waits: dict[int, Awaitable[audio.Pcm16 | None]] = {}
    claimed: list[str] = []  # in-process flights this job must resolve or abandon
    remote: list[str] = []  # cross-process claims this job holds
    for i in missing:
        if not reuse:
            own.append(i)
            continue
        flight = host.flights.claim(keys[i])
        if flight is not None:
            waits[i] = _await_flight(flight)
        else:
            claimed.append(keys[i])
            own.append(i)
    if host.claims is not None and own and reuse:
        granted = await host.claims.claim([keys[i] for i in own], job.task_id)
        for i, ok in zip(list(own), granted, strict=True):
            if ok:
                remote.append(keys[i])
            else:
                own.remove(i)
                waits[i] = _await_remote(host, keys[i], rate)

    arrivals: asyncio.Queue[tuple[int, audio.Pcm16 | None]] = asyncio.Queue()

    def on_sentence(i: int, pcm: audio.Pcm16, sample_rate: int) -> None:
        arrivals.put_nowait((i, pcm))

    async def waited(i: int, wait: Awaitable[audio.Pcm16 | None]) -> None:
        arrivals.put_nowait((i, await wait))

    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(waited(i, w)) for i, w in waits.items()]
    batch: asyncio.Task[Any] | None = None
    if own:
        request = SentenceBatch(job.task_id, spec, tuple(own), tuple(sentences[i] for i in own))
        batch = asyncio.create_task(
            host.synthesizer.synthesize(request, on_sentence, lambda: arrivals.put_nowait((_STARTED, None)))
        )
        batch.add_done_callback(lambda _: arrivals.put_nowait((_ENDED, None)))
    else:
        await reporter.stage(Stage.SYNTHESIZING, _progress(pieces))
    stores: list[asyncio.Future[Any]] = []
    expected = len(own) + len(waits)
    batch_open = batch is not None
    try:
        while expected or batch_open:
            i, pcm = await arrivals.get()
            if i == _STARTED:
                await reporter.stage(Stage.SYNTHESIZING, _progress(pieces))
                continue
            if i == _ENDED:  # a failure ends the job; success leaves nothing to wait for
                assert batch is not None
                batch_open = False
                result = batch.result()
                made.slot_seconds += result.slot_seconds
                made.synthesis_seconds += result.synthesis_seconds
                continue
            expected -= 1
            if pcm is None:
                continue  # its maker gave up; the next round makes it here
            pieces[i] = pcm
            if i in waits:
                made.merged += 1
            else:
                made.synthesized += 1
                made.synthesized_audio += len(pcm) / rate
                if reuse:
                    host.flights.resolve(keys[i], pcm)
                    claimed.remove(keys[i])
                    stores.append(asyncio.ensure_future(_store_piece(host, keys[i], pcm, rate, remote)))
            await reporter.stage(Stage.SYNTHESIZING, _progress(pieces))
            await out.flush()
    finally:
        for task in tasks:
            task.cancel()
        if batch is not None and not batch.done():
            batch.cancel()
            with contextlib.suppress(BaseException):
                await batch
        for key in claimed:
            host.flights.abandon(key)
        if stores:
            # A finished sentence is complete, valid audio: it is kept even when the text fails.
            await asyncio.gather(*stores, return_exceptions=True)
        if host.claims is not None and remote:
            with contextlib.suppress(JobError, StorageError):
                await host.claims.release(remote)
            remote.clear()


async def _store_piece(host: JobHost, key: str, pcm: audio.Pcm16, rate: int, remote: list[str]) -> None:
    try:
        await host.run(keep_piece, host.store, host.index, key, pcm, rate, host.cache_ttl)
    except Exception:
        log.warning("could not cache a sentence", extra={"key": key}, exc_info=True)
    if host.claims is not None and key in remote:
        # Released only once the piece is indexed, so a process that waited on the claim finds it.
        remote.remove(key)
        with contextlib.suppress(Exception):
            await host.claims.release([key])


def _encode(job: Job, pcm: audio.Pcm16, rate: int, with_master: bool) -> tuple[bytes | None, bytes]:
    fmt = audio.get_format(job.fmt)
    master = audio.encode(pcm, rate, audio.MASTER) if with_master else None
    return master, audio.encode(pcm, rate, fmt)


def _store(
    job: Job, host: JobHost, duration: float, rate: int, master: bytes | None, data: bytes
) -> tuple[CacheEntry, tuple[str, ...]]:
    """Master (when made here) and format stored and indexed; then the byte budget kept."""
    fmt = audio.get_format(job.fmt)
    ttl = host.cache_ttl
    if master is not None:
        keep(host.store, host.index, job.key, MASTER, master, audio.MASTER.media_type, rate, duration, ttl)
    rate_out = audio.encoded_rate(fmt, rate)
    entry = keep(host.store, host.index, job.key, fmt.name, data, fmt.media_type, rate_out, duration, ttl)
    evicted = tuple(host.index.evict(host.cache_max_bytes))
    for dropped in evicted:
        host.store.delete(dropped)
    return entry, evicted


async def run_job(job: Job, host: JobHost, reporter: Reporter) -> JobOutcome:
    cached = await host.run(_cached_master, job, host.store, host.index)
    if cached is not None:
        made = _Made(cached[0], cached[1], from_cache=True)
    else:
        made = await _make_master(job, host, reporter)
    try:
        await reporter.stage(Stage.ENCODING, 85)
        # With its sentences cached as pieces a text's master is redundant (any other format of it
        # is a near-hit, assembled from them), so it is kept only for engines without sentence
        # reuse: one encode, one file and one index write fewer per text.
        with_master = not made.from_cache and job.spec.engine not in host.reuse_engines
        master, data = await host.run(_encode, job, made.pcm, made.rate, with_master)
        await reporter.stage(Stage.STORING, 95)
        duration = len(made.pcm) / made.rate
        entry, evicted = await host.run(_store, job, host, duration, made.rate, master, data)
        await host.run(_record, host.stats, job, made)
    finally:
        if not made.from_cache:
            # Streams end once the text is stored and counted, so a repeat right after a stream is
            # a hit. They end cleanly even if storing failed: every sample was already sent.
            await reporter.audio_end()
    return JobOutcome(
        entry=entry,
        synthesized=made.synthesized > 0,
        audio_seconds=len(made.pcm) / made.rate,
        synthesis_seconds=made.synthesis_seconds,
        slot_seconds=made.slot_seconds,
        sentences=made.sentences,
        sentences_reused=made.reused,
        sentences_merged=made.merged,
        evicted=evicted,
    )


def _record(stats: JobStats, job: Job, made: _Made) -> None:
    if made.synthesized:
        stats.synthesized(job.spec.engine, job.spec.voice, made.synthesized_audio)
    if made.sentences:
        stats.sentences(reused=made.reused, made=made.synthesized, merged=made.merged)
    stats.encoded(job.fmt)


def build_host(
    settings: Settings,
    synthesizer: Synthesizer,
    store: AudioStore,
    index: CacheIndex,
    stats: JobStats,
    post: Executor,
    claims: Claims | None = None,
) -> JobHost:
    specs = select(settings.engines, settings)
    return JobHost(
        synthesizer=synthesizer,
        store=store,
        index=index,
        stats=stats,
        post=post,
        sample_rates={name: spec.sample_rate for name, spec in specs.items()},
        cache_ttl=settings.cache_ttl,
        cache_max_bytes=settings.cache_max_bytes,
        reuse_engines=frozenset(
            name
            for name, spec in specs.items()
            if settings.reuses_sentences(name, engine_default=spec.sentence_reuse)
        ),
        claims=claims,
    )


def post_executor(settings: Settings) -> ThreadPoolExecutor:
    """The post-processing stage's threads. On shared cores they yield to the engines (and the
    engines to the event loop): a piece stored a moment later costs nothing, an engine slot that
    waits for CPU costs the scarce thing."""
    nice = min(19, settings.engine_nice + 5)

    def lower_priority() -> None:
        with contextlib.suppress(OSError):  # Linux: a thread is a task with its own priority
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)

    return ThreadPoolExecutor(
        settings.post_workers, thread_name_prefix="ttsd-post", initializer=lower_priority
    )
