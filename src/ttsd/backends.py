"""Build what a mode calls for: embedded (SQLite index, memory board, local files, engine
processes) or distributed (Redis state, Celery queue, S3 or local files)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .config import Settings
from .engines import Engine, select
from .jobs.base import JobQueue
from .metrics import Metrics, PrometheusJobStats
from .state.base import CacheIndex, IdempotencyKeys, RateLimiter, TaskBoard
from .state.recent import RecentEntries
from .store.base import AudioStore

WARM_TEXT = "Ready."
WARM_TEXTS = {"ja": "準備ができました。", "cmn": "准备好了。"}


def build_store(settings: Settings) -> AudioStore:
    if settings.storage == "s3":
        from .store.s3 import S3Store

        return S3Store(settings)
    from .store.local import LocalStore

    return LocalStore(settings.audio_dir)


def build_index(settings: Settings) -> CacheIndex:
    """The cache index of the configured mode: SQLite under the data directory, or Redis."""
    if settings.queue == "celery":
        from .state.redis import RedisCacheIndex, connect
        from .state.redis_keys import RedisKeys

        return RedisCacheIndex(connect(settings), RedisKeys(settings.redis_prefix))
    from .state.sqlite import SqliteCacheIndex

    return SqliteCacheIndex(settings.index_path)


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


def build_api_backends(settings: Settings, metrics: Metrics) -> ApiBackends:
    store = build_store(settings)
    recent = RecentEntries()
    if settings.queue == "celery":
        from .jobs.celery_queue import CeleryQueue
        from .state.autopipeline import AutoPipeline
        from .state.redis import (
            RedisCacheIndex,
            RedisIdempotencyKeys,
            RedisJobStats,
            RedisRateLimiter,
            RedisTaskBoard,
            connect,
            connect_async,
        )
        from .state.redis_keys import RedisKeys

        client = connect(settings)
        aclient = connect_async(settings)  # what requests wait on must not block the event loop
        batch = AutoPipeline(aclient)
        keys = RedisKeys(settings.redis_prefix)
        board: TaskBoard = RedisTaskBoard(client, keys, settings.task_ttl, batch)
        metrics.registry.register(RedisJobStats(client, keys))  # job figures come from the workers
        return ApiBackends(
            index=RedisCacheIndex(client, keys, batch),
            board=board,
            idempotency=RedisIdempotencyKeys(aclient, keys),
            limiter=RedisRateLimiter(batch, keys),
            queue=CeleryQueue(settings, client, board, metrics, recent),
            store=store,
            metrics=metrics,
            recent=recent,
        )
    from .jobs.inprocess import InProcessQueue
    from .state.memory import MemoryIdempotencyKeys, MemoryRateLimiter, MemoryTaskBoard

    board = MemoryTaskBoard(ttl=settings.task_ttl)
    index = build_index(settings)
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


def load_engines(settings: Settings, names: Iterable[str], device: str = "cpu") -> dict[str, Engine]:
    """Load a pool's engines onto its device and run one synthesis with each of their voices' first,
    so the first real request does not pay for lazy initialisation (G2P tables, onnxruntime
    arenas, kernels)."""
    engines: dict[str, Engine] = {}
    for name, spec in select(names, settings).items():
        engine = spec.load(threads=settings.engine_threads, device=device)
        for voice in spec.warm_voices:
            engine.synthesize(WARM_TEXTS.get(voice.language, WARM_TEXT), voice, speed=1.0, seed=0)
        engines[name] = engine
    return engines
