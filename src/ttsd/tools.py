"""Offline cache tools behind ``ttsd warm``, ``ttsd batch`` and ``ttsd cache``: they run the same job
body on a local engine pool, against the configured cache (SQLite and files, or Redis and S3), so what
they make is what the service serves (each text's sentences included: warming a text warms the
sentences it shares with others)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from .audio import Pcm16
from .config import Settings
from .errors import TtsdError
from .jobs.body import run_job
from .jobs.embedded.router import PoolRouter
from .jobs.host import build_host
from .jobs.lifecycle import Lifecycle
from .jobs.post import post_stage
from .jobs.slots.pool import EnginePool
from .links import Links
from .metrics import PrometheusJobStats
from .prepare import SynthesisRequest, prepare_job
from .state import build_index
from .state.base import CacheEntry, CacheStats, Stage, TaskStatus
from .store import build_store
from .voices import Catalogue


@dataclass(frozen=True)
class Result:
    index: int
    entry: CacheEntry | None
    cached: bool  # it was in the cache already
    error: TtsdError | None = None


def read_lines(path: Path) -> list[str]:
    """Texts, one per non-empty line (``#`` starts a comment line)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


async def synthesize_all(
    settings: Settings,
    requests: Sequence[SynthesisRequest],
    on_result: Callable[[Result], None],
    *,
    skip: Callable[[int], bool] = lambda i: False,
) -> None:
    """Run every request that is not cached (and not skipped) on a local engine pool."""
    catalogue = Catalogue.of(settings)
    links = Links.of(settings)
    index = build_index(settings)
    post = post_stage(settings)
    pools = [EnginePool(settings, spec, gate=lambda: post.open) for spec in settings.pool_layout]
    for engine_pool in pools:
        post.on_room(engine_pool.wake)
    pool = PoolRouter(pools)
    stats = PrometheusJobStats(CollectorRegistry())
    host = build_host(settings, pool, build_store(settings, links), index, stats, post)
    lifecycle = Lifecycle(timeout=settings.job_timeout, stats=stats)
    await pool.start()
    # Enough jobs at once to keep every slot busy while others are in post-processing.
    slots = asyncio.Semaphore(settings.total_slots * 2 + settings.post_workers)

    async def one(i: int, request: SynthesisRequest) -> None:
        if skip(i):
            return
        try:
            job = prepare_job(
                request,
                catalogue,
                links,
                max_text_chars=settings.max_text_chars,
                normalize_text=settings.text_normalization,
            )
            entry = index.get(job.key, job.fmt)
            if entry is not None:
                on_result(Result(i, entry, cached=True))
                return
            async with slots:
                reporter = _Quiet(job.queued())
                ended = await lifecycle.run(job, reporter, lambda: run_job(job, host, reporter))
            if ended.outcome is None:
                on_result(Result(i, None, cached=False, error=ended.error))
            else:
                on_result(Result(i, ended.outcome.entry, cached=False))
        except TtsdError as exc:  # the request itself is invalid
            on_result(Result(i, None, cached=False, error=exc))

    try:
        await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    finally:
        await pool.stop()
        post.shutdown()
        index.close()


class _Quiet:
    """Nobody polls or listens to an offline job."""

    def __init__(self, status: TaskStatus) -> None:
        self.status = status

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        self.status = self.status.advance(stage, progress, **changes)

    async def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        pass

    async def audio_end(self) -> None:
        pass

    async def failed(self, error: TtsdError) -> None:
        pass


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fetch(settings: Settings, entry: CacheEntry) -> bytes:
    return build_store(settings, Links.of(settings)).get(entry.object_name, entry.span)


def cache_stats(settings: Settings) -> CacheStats:
    index = build_index(settings)
    try:
        return index.stats(levels=True)
    finally:
        index.close()


def purge(settings: Settings, *, everything: bool) -> int:
    """Drop expired entries (and any beyond the byte budget), or every entry; returns how many."""
    index = build_index(settings)
    store = build_store(settings, Links.of(settings))
    try:
        dropped = index.evict(-1 if everything else settings.cache_max_bytes)
        for name in dropped:
            store.delete(name)
        return len(dropped)
    finally:
        index.close()
