"""Sentence claims across workers: one maker of a sentence at a time, leased."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio

from ttsd.config import Settings
from ttsd.errors import BackendUnavailable
from ttsd.state.redis.claims import RedisClaims
from ttsd.state.redis.keys import RedisKeys

from ..servers import free_port

# -- sentence claims --------------------------------------------------------------------------------


def test_sentence_claims_across_workers(settings: Settings) -> None:
    keys = RedisKeys(settings.redis_prefix)

    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            a, b = RedisClaims(r, keys, "worker-a"), RedisClaims(r, keys, "worker-b")
            assert await a.claim(["k1", "k2"], "job-1") == [True, True]
            assert await b.claim(["k1", "k3"], "job-2") == [False, True]
            assert await b.held("k1") and not await b.held("k4")
            ttl: Any = await r.pttl(keys.piece_claim("k1"))
            assert 0 < ttl <= 6000  # a lease: a dead holder lets go by itself
            # The next delivery of job-1, on another worker, takes its earlier run's claim at once.
            assert await b.claim(["k2"], "job-1") == [True]
            await a.release(["k1", "k2"])
            assert not await a.held("k1")
            assert await a.held("k2")  # an earlier holder's release does not drop the new one's
            await b.release(["k2", "k3", "never-claimed"])
            assert not any([await b.held("k2"), await b.held("k3")])
            assert await a.claim(["k2"], "job-3") == [True]
            await a.release(["k2"])
        finally:
            await r.aclose()

    asyncio.run(scenario())


def test_sentence_claims_with_redis_away_are_a_backend_error(settings: Settings) -> None:
    keys = RedisKeys(settings.redis_prefix)

    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
        try:
            claims = RedisClaims(r, keys, "worker-a")
            with pytest.raises(BackendUnavailable):
                await claims.claim(["k1"], "job-1")
            with pytest.raises(BackendUnavailable):
                await claims.held("k1")
        finally:
            await r.aclose()

    asyncio.run(scenario())
