"""Rate limits in Redis: token buckets shared by every API process, leased in small batches."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..base import RateDecision, RateLimiter
from .autopipeline import AutoPipeline
from .client import redis_errors
from .keys import RedisKeys

# KEYS: bucket ARGV: rate, burst, wanted. Redis's own clock, so every API process shares one
# timeline. Grants up to ``wanted`` whole tokens (at least one, or none and the wait for one).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - stamp) * rate)
local granted = math.min(wanted, math.floor(tokens))
local wait = 0
if granted >= 1 then
  tokens = tokens - granted
else
  granted = 0
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(tokens), tostring(wait)}
"""


@dataclass
class _Lease:
    tokens: int
    expires: float
    started: float
    used: int


class RedisRateLimiter(RateLimiter):
    """Token buckets in Redis, shared by every API process, with tokens leased in small batches.

    A request that finds no leased token asks Redis for some: one, or as many as this caller used in
    this process over the last ``LEASE_SECONDS`` (twice that, at most a quarter of the burst). So a
    caller sending a few requests a second costs a round trip per request, as without leases, and
    one sending thousands costs a round trip every few milliseconds instead of one per request.
    Leases never admit more than the bucket holds (their tokens left it when granted); the price is
    that tokens a process leased and did not use lapse after ``LEASE_SECONDS``, as if spent.
    """

    LEASE_SECONDS = 0.05
    MAX_CALLERS = 100_000

    def __init__(self, batch: AutoPipeline, keys: RedisKeys) -> None:
        self._k = keys
        self._batch = batch
        self._leases: OrderedDict[str, _Lease] = OrderedDict()

    async def take(self, caller: str, rate: float, burst: int) -> RateDecision:
        now = time.monotonic()
        lease = self._leases.get(caller)
        if lease is not None and lease.tokens > 0 and now < lease.expires:
            lease.tokens -= 1
            lease.used += 1
            return RateDecision(allowed=True, remaining=lease.tokens, retry_after=0.0)
        wanted = 1
        if lease is not None and now > lease.started:
            demand = lease.used / max(now - lease.started, self.LEASE_SECONDS)
            wanted = max(1, min(math.ceil(2 * demand * self.LEASE_SECONDS), burst // 4))
        bucket = self._k.rate(caller)
        # EVAL rather than EVALSHA: Redis keeps compiled scripts by their hash all the same, and a
        # pipeline needs no NOSCRIPT recovery.
        with redis_errors():
            granted, tokens, wait = await self._batch.call(
                lambda pipe: pipe.eval(_TAKE, 1, bucket, rate, burst, wanted)
            )
        granted = int(granted)
        if granted == 0:
            return RateDecision(allowed=False, remaining=0, retry_after=float(wait))
        now = time.monotonic()
        current = self._leases.get(caller)
        if current is not None and current.tokens > 0 and now < current.expires:
            current.tokens += granted - 1  # requests that asked together pool what they got
            current.used += 1
        else:
            self._leases[caller] = current = _Lease(granted - 1, now + self.LEASE_SECONDS, now, 1)
            self._leases.move_to_end(caller)
            while len(self._leases) > self.MAX_CALLERS:
                self._leases.popitem(last=False)
        return RateDecision(allowed=True, remaining=current.tokens + int(float(tokens)), retry_after=0.0)
