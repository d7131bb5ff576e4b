"""A deployment's pools as one synthesizer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..model import BatchResult, SentenceBatch, SentenceCallback
from ..slots.pool import EnginePool


class PoolRouter:
    """A deployment's pools as one synthesizer: each batch goes to the pool of its engine."""

    def __init__(self, pools: list[EnginePool]) -> None:
        self.pools = pools
        self._by_engine = {engine: pool for pool in pools for engine in pool.spec.engines}

    def of(self, engine: str) -> EnginePool:
        return self._by_engine[engine]

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: SentenceCallback,
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult:
        return await self._by_engine[batch.spec.engine].synthesize(batch, on_sentence, on_start)

    def cancel(self, request_id: str) -> None:
        for pool in self.pools:
            pool.cancel(request_id)

    async def start(self) -> None:
        for pool in self.pools:
            await pool.start()

    async def stop(self) -> None:
        await asyncio.gather(*(pool.stop() for pool in self.pools))
