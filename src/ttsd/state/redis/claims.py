"""Single flight per sentence across worker processes: a claim on a piece, held as a lease.

A worker that is to synthesize a sentence first claims its piece (``SET NX`` with a short expiry);
another worker that needs the same sentence sees the claim and waits for the piece to appear in the
index instead of synthesizing it too. The holder renews its claims while it works, so a worker that
dies lets go within one lease rather than after a job timeout. A claim names the job it is for: the
next delivery of a job whose worker was lost takes its claims over at once, rather than waiting for
them to lapse behind its own earlier run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio

from ...errors import BackendUnavailable
from .keys import RedisKeys

LEASE_SECONDS = 6.0
# KEYS: claims ARGV: holder, lease_ms, "|job". Free claims, and those held for the same job by an
# earlier delivery, are granted.
_CLAIM = """
local granted = {}
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  local suffix = ARGV[3]
  if not current or current == ARGV[1] or string.sub(current, -#suffix) == suffix then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
    granted[i] = 1
  else
    granted[i] = 0
  end
end
return granted
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisClaims:
    def __init__(self, client: redis.asyncio.Redis, keys: RedisKeys, owner: str) -> None:
        self._r = client
        self._k = keys
        self._owner = owner
        self._held: dict[str, str] = {}  # piece key -> the holder value its claim carries
        self._renewer: asyncio.Task[None] | None = None

    async def claim(self, keys: list[str], job: str) -> list[bool]:
        lease = int(LEASE_SECONDS * 1000)
        holder = f"{self._owner}|{job}"
        names = [self._k.piece_claim(key) for key in keys]
        try:
            answer: Any = await self._r.eval(_CLAIM, len(names), *names, holder, lease, f"|{job}")
        except redis.RedisError as exc:
            raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc
        granted = [bool(ok) for ok in answer]
        self._held.update((k, holder) for k, ok in zip(keys, granted, strict=True) if ok)
        if self._held and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.create_task(self._renew())
        return granted

    async def release(self, keys: list[str]) -> None:
        holders = [(key, self._held.pop(key, None)) for key in keys]
        try:
            async with self._r.pipeline(transaction=False) as pipe:
                for key, holder in holders:
                    if holder is not None:
                        pipe.eval(_RELEASE, 1, self._k.piece_claim(key), holder)
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
