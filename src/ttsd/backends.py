"""Build what a mode calls for: embedded (SQLite index, memory board, local files, engine
processes) or distributed (Redis state, Celery queue, S3 or local files)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .config import Settings
from .jobs.queue import JobQueue
from .links import Links
from .metrics import Metrics, PrometheusJobStats
from .state import build_index
from .state.base import CacheEntry, CacheIndex, IdempotencyKeys, RateLimiter, TaskBoard
from .state.recent import RecentEntries, Slot
from .store import build_store
from .store.base import AudioStore


@dataclass
class ApiBackends:
    index: CacheIndex
    board: TaskBoard
    idempotency: IdempotencyKeys
    limiter: RateLimiter
    queue: JobQueue
    store: AudioStore
    metrics: Metrics
    recent: RecentEntries


# The collector's young-generation threshold in an API process: far above the objects of the
# requests in flight (a few thousand under load). At Python's default (700) every few requests start
# a young collection, which moves the requests then in flight to an older generation, and enough of
# those moves start a full collection: every second or two under load, each pausing the event loop
# for tens of milliseconds once the caches hold a working set of texts (most of a hit's P99).
# Reference counting still frees every object the moment it is dropped; only garbage in reference
# cycles waits longer for its collection.
GC_YOUNG_THRESHOLD = 50_000


def build_api_backends(settings: Settings, metrics: Metrics, links: Links) -> ApiBackends:
    young, middle, old = gc.get_threshold()
    if young:  # 0: the collector was turned off on purpose
        gc.set_threshold(max(young, GC_YOUNG_THRESHOLD), middle, old)
    store = build_store(settings, links)
    if settings.queue == "celery":
        from .jobs.distributed.queue import CeleryQueue
        from .state.redis.autopipeline import AutoPipeline
        from .state.redis.board import RedisIdempotencyKeys, RedisTaskBoard
        from .state.redis.client import connect, connect_async
        from .state.redis.index import RedisCacheIndex
        from .state.redis.keys import RedisKeys
        from .state.redis.rate import RedisRateLimiter
        from .state.redis.stats import RedisJobStats

        client = connect(settings)
        aclient = connect_async(settings)  # what requests wait on must not block the event loop
        batch = AutoPipeline(aclient)
        keys = RedisKeys(settings.redis_prefix)
        redis_board = RedisTaskBoard(client, keys, settings.task_ttl, batch)
        metrics.registry.register(RedisJobStats(client, keys))  # job figures come from the workers
        redis_index = RedisCacheIndex(client, keys, batch)
        recent = _recent(settings, _pipelined_reads(redis_index))
        return ApiBackends(
            index=redis_index,
            board=redis_board,
            idempotency=RedisIdempotencyKeys(aclient, keys),
            limiter=RedisRateLimiter(batch, keys),
            queue=CeleryQueue(settings, client, redis_board, metrics, recent),
            store=store,
            metrics=metrics,
            recent=recent,
        )
    from .jobs.embedded.queue import InProcessQueue
    from .state.memory import MemoryIdempotencyKeys, MemoryRateLimiter, MemoryTaskBoard

    board = MemoryTaskBoard(ttl=settings.task_ttl)
    index = build_index(settings)
    recent = _recent(settings, _threaded_reads(index))
    return ApiBackends(
        index=index,
        board=board,
        idempotency=MemoryIdempotencyKeys(),
        limiter=MemoryRateLimiter(),
        queue=InProcessQueue(
            settings, board, metrics, PrometheusJobStats(metrics.registry), recent, store, index
        ),
        store=store,
        metrics=metrics,
        recent=recent,
    )


def _recent(
    settings: Settings, read_many: Callable[[Sequence[Slot]], Awaitable[Sequence[CacheEntry | None]]]
) -> RecentEntries:
    return RecentEntries(
        revalidate=settings.recent_revalidate, capacity=settings.hot_entries, read_many=read_many
    )


def _threaded_reads(index: CacheIndex) -> Callable[[Sequence[Slot]], Awaitable[list[CacheEntry | None]]]:
    """A local index's reads are synchronous: a batch of them runs on one thread, away from the
    event loop (SQLite lets go of the GIL while it searches)."""

    def read(slots: Sequence[Slot]) -> list[CacheEntry | None]:
        return [index.get(key, fmt) for key, fmt in slots]

    async def read_many(slots: Sequence[Slot]) -> list[CacheEntry | None]:
        return await asyncio.to_thread(read, slots)

    return read_many


def _pipelined_reads(index: CacheIndex) -> Callable[[Sequence[Slot]], Awaitable[list[CacheEntry | None]]]:
    """A networked index's reads issued together: its auto-pipeline sends them in one round trip."""

    async def read_many(slots: Sequence[Slot]) -> list[CacheEntry | None]:
        return list(await asyncio.gather(*(index.aget(key, fmt) for key, fmt in slots)))

    return read_many
