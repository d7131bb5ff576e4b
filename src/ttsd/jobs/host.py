"""What job bodies run against (``JobHost``: engine slots, cache, post-processing stage, flights and
claims), one per process that runs them, and how it is built from the settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..config import Settings
from ..engines import select
from ..metrics import JobStats
from ..state.base import CacheIndex
from ..store.base import AudioStore
from .flights import Claims, Flights
from .model import BatchResult, SentenceBatch, SentenceCallback
from .post import PostStage
from .recall import PieceMemory

T = TypeVar("T")


class Synthesizer(Protocol):
    """Engine slots (``jobs.slots.pool.EnginePool``, or ``jobs.embedded.router.PoolRouter`` over
    several): each sentence comes back faded (``audio.fade``)."""

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: SentenceCallback,
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult: ...


@dataclass
class JobHost:
    """What job bodies run against; one per process that runs them."""

    synthesizer: Synthesizer
    store: AudioStore
    index: CacheIndex
    stats: JobStats
    post: PostStage
    sample_rates: Mapping[str, int]
    cache_ttl: float
    cache_max_bytes: int
    # Engines whose sentences are cached and shared as pieces (prosody that spans sentences would
    # make a joined text sound different from one spoken whole).
    reuse_engines: frozenset[str]
    flights: Flights = dataclasses.field(default_factory=Flights)
    claims: Claims | None = None
    memory: PieceMemory | None = None  # pieces read or made lately (``TTSD_PIECE_MEMORY_BYTES``)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in the post-processing stage."""
        return await self.post.run(fn, *args)


def build_host(
    settings: Settings,
    synthesizer: Synthesizer,
    store: AudioStore,
    index: CacheIndex,
    stats: JobStats,
    post: PostStage,
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
        memory=PieceMemory(settings.piece_memory) if settings.piece_memory else None,
    )
