"""Single flight per sentence across worker processes: a claim on a piece, held as a lease.

A worker that is to synthesize a sentence first claims its piece (``SET NX`` with a short expiry);
another worker that needs the same sentence sees the claim and waits for the piece to appear in the
index instead of synthesizing it too. The holder renews its claims while it works, so a worker that
dies lets go within one lease rather than after a job timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio

from ..errors import BackendUnavailable
from .redis_keys import RedisKeys

LEASE_SECONDS = 6.0
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisClaims:
    def __init__(self, client: redis.asyncio.Redis, keys: RedisKeys, owner: str) -> None:
        self._r = client
        self._k = keys
        self._owner = owner
        self._held: set[str] = set()
        self._renewer: asyncio.Task[None] | None = None

    async def claim(self, keys: list[str]) -> list[bool]:
        lease = int(LEASE_SECONDS * 1000)
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.set(self._k.piece_claim(key), self._owner, nx=True, px=lease)
                granted = [bool(ok) for ok in await pipe.execute()]
        except redis.RedisError as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc
        self._held.update(k for k, ok in zip(keys, granted, strict=True) if ok)
        if self._held and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.create_task(self._renew())
        return granted

    async def release(self, keys: list[str]) -> None:
        self._held.difference_update(keys)
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.eval(_RELEASE, 1, self._k.piece_claim(key), self._owner)
                await pipe.execute()
        except redis.RedisError as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc

    async def held(self, key: str) -> bool:
        try:
            return bool(await self._r.exists(self._k.piece_claim(key)))
        except redis.RedisError as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc

    async def _renew(self) -> None:
        lease = int(LEASE_SECONDS * 1000)
        while self._held:
            await asyncio.sleep(LEASE_SECONDS / 3)
            held: list[Any] = list(self._held)
            with contextlib.suppress(redis.RedisError):  # Redis away: the claims lapse, others proceed
                async with self._r.pipeline(transaction=False) as pipe:
                    for key in held:
                        pipe.pexpire(self._k.piece_claim(key), lease)
                    await pipe.execute()
