"""Redis-backed state for distributed mode: cache index, task board, idempotency keys, counters.

Workers call the job body synchronously, so the index and the board take a synchronous client; the
API answers from its event loop, so what it calls per request (index and board lookups, rate
limits, idempotency keys) goes through an asyncio client and never blocks the loop. Short
timeouts throughout; connection failures become ``BackendUnavailable`` (503 + Retry-After), so the
API degrades to clear errors while Redis is away and recovers without a restart.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, ParamSpec, TypeVar

import redis
import redis.asyncio
from prometheus_client.core import CounterMetricFamily, Metric
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..config import Settings
from ..errors import BackendUnavailable
from ..metrics import (
    AUDIO_SECONDS,
    ENCODES,
    FAILURES,
    SENTENCES,
    SLOT_BUSY_SECONDS,
    SYNTHESES,
    SYNTHESIS_SECONDS,
)
from ..store.base import PIECE, object_name
from .autopipeline import AutoPipeline
from .base import (
    CacheEntry,
    CacheIndex,
    CacheStats,
    IdempotencyKeys,
    RateDecision,
    RateLimiter,
    TaskBoard,
    TaskStatus,
)
from .redis_keys import RedisKeys, member, parse_member

P = ParamSpec("P")
R = TypeVar("R")

_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, redis.ReadOnlyError)


_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
    "health_check_interval": 15,
    "decode_responses": False,
}


def connect(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, retry=Retry(NoBackoff(), 1), **_CLIENT_OPTIONS)


def connect_async(settings: Settings) -> redis.asyncio.Redis:
    from redis.asyncio.retry import Retry as AsyncRetry

    return redis.asyncio.Redis.from_url(
        settings.redis_url, retry=AsyncRetry(NoBackoff(), 1), **_CLIENT_OPTIONS
    )


@contextmanager
def redis_errors() -> Iterator[None]:
    try:
        yield
    except _REDIS_DOWN as exc:
        raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with redis_errors():
            return fn(*args, **kwargs)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


# KEYS: entry, lru, expiry, sizes, total ARGV: member, json, expires_ms, now, size
_PUT = """
local old = redis.call('HGET', KEYS[4], ARGV[1])
if old then redis.call('DECRBY', KEYS[5], old) end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
redis.call('INCRBY', KEYS[5], ARGV[5])
"""

# KEYS: entry, lru ARGV: member, now
_GET = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[1]) end
return value
"""

# KEYS: lru, expiry, sizes, total ARGV: entry prefix, now_ms, max_bytes, member-or-empty, channel
# Drops expired members, then least recently used ones until the total fits; returns the members
# and publishes them, so API processes stop handing out what is gone.
_EVICT = """
local dropped = {}
local function drop(m)
  local size = redis.call('HGET', KEYS[3], m)
  if size then
    redis.call('DECRBY', KEYS[4], size)
    redis.call('HDEL', KEYS[3], m)
  end
  redis.call('ZREM', KEYS[1], m)
  redis.call('ZREM', KEYS[2], m)
  redis.call('DEL', ARGV[1] .. m)
  table.insert(dropped, m)
end
if ARGV[4] ~= '' then
  drop(ARGV[4])
else
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2], 'LIMIT', 0, 500)) do drop(m) end
  local max = tonumber(ARGV[3])
  while tonumber(redis.call('GET', KEYS[4]) or '0') > max do
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
    if not oldest then break end
    drop(oldest)
  end
end
if #dropped > 0 then redis.call('PUBLISH', ARGV[5], table.concat(dropped, ' ')) end
return dropped
"""


def _member_object(value: bytes | str) -> str:
    return object_name(*parse_member(value))


class RedisCacheIndex(CacheIndex):
    def __init__(self, client: redis.Redis, keys: RedisKeys, batch: AutoPipeline | None = None) -> None:
        self._r = client
        self._k = keys
        self._put = client.register_script(_PUT)
        self._get = client.register_script(_GET)
        self._evict = client.register_script(_EVICT)
        self._batch = batch

    def _budget_keys(self) -> list[str]:
        return [self._k.lru, self._k.expiry, self._k.sizes, self._k.total_bytes]

    @guarded
    def get(self, key: str, fmt: str) -> CacheEntry | None:
        m = member(key, fmt)
        raw = self._get(keys=[self._k.entry(m), self._k.lru], args=[m, time.time()])
        return None if raw is None else CacheEntry(**json.loads(raw))

    async def aget(self, key: str, fmt: str) -> CacheEntry | None:
        if self._batch is None:
            return self.get(key, fmt)
        m = member(key, fmt)
        keys = (self._k.entry(m), self._k.lru)
        with redis_errors():
            raw = await self._batch.call(lambda pipe: pipe.eval(_GET, 2, *keys, m, time.time()))
        return None if raw is None else CacheEntry(**json.loads(raw))

    @guarded
    def put(self, entry: CacheEntry) -> None:
        m = member(entry.key, entry.fmt)
        self._put(
            keys=[self._k.entry(m), self._k.lru, self._k.expiry, self._k.sizes, self._k.total_bytes],
            args=[m, json.dumps(asdict(entry)), int(entry.expires_at * 1000), time.time(), entry.size],
        )

    @guarded
    def delete(self, key: str, fmt: str) -> None:
        self._evict(
            keys=self._budget_keys(), args=[self._k.entry_prefix, 0, 0, member(key, fmt), self._k.evicted]
        )

    @guarded
    def evict(self, max_bytes: int) -> list[str]:
        dropped = self._evict(
            keys=self._budget_keys(),
            args=[self._k.entry_prefix, int(time.time() * 1000), max_bytes, "", self._k.evicted],
        )
        return [_member_object(m) for m in dropped]

    @guarded
    def stats(self, *, levels: bool = False) -> CacheStats:
        pipe = self._r.pipeline(transaction=False)
        pipe.zcard(self._k.lru)
        pipe.get(self._k.total_bytes)
        count, total = pipe.execute()
        pieces = piece_bytes = 0
        if levels:  # a scan of every entry's size: for `ttsd cache stats`, not for readiness
            suffix = f":{PIECE}".encode()
            for m, size in self._r.hscan_iter(self._k.sizes, count=1000):
                if m.endswith(suffix):
                    pieces += 1
                    piece_bytes += int(size)
        return CacheStats(int(count), int(total or 0), pieces, piece_bytes)

    def close(self) -> None:
        self._r.close()


class RedisTaskBoard(TaskBoard):
    def __init__(
        self, client: redis.Redis, keys: RedisKeys, ttl: int, batch: AutoPipeline | None = None
    ) -> None:
        self._r = client
        self._batch = batch
        self._k = keys
        self._ttl = ttl

    @guarded
    def get(self, task_id: str) -> TaskStatus | None:
        raw = self._r.get(self._k.task(task_id))
        return None if raw is None else TaskStatus.model_validate_json(raw)

    async def aget(self, task_id: str) -> TaskStatus | None:
        if self._batch is None:
            return self.get(task_id)
        name = self._k.task(task_id)
        with redis_errors():
            raw = await self._batch.call(lambda pipe: pipe.get(name))
        return None if raw is None else TaskStatus.model_validate_json(raw)

    @guarded
    def put(self, status: TaskStatus) -> None:
        self._r.set(self._k.task(status.task_id), status.model_dump_json(), ex=self._ttl)


class RedisIdempotencyKeys(IdempotencyKeys):
    def __init__(self, client: redis.asyncio.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys

    async def bind(self, key: str, fingerprint: str, ttl: float) -> str:
        name = self._k.idempotency(key)
        pipe = self._r.pipeline(transaction=False)  # one round trip: bind if free, then read
        pipe.set(name, fingerprint, nx=True, ex=max(1, int(ttl)))
        pipe.get(name)
        with redis_errors():
            _, bound = await pipe.execute()
        return fingerprint if bound is None else str(bound.decode())


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


class RedisJobStats:
    """Worker-side job counters in one Redis hash, exported by the API as Prometheus counters.

    Fields are ``metric|label|label``: e.g. ``ttsd_syntheses|piper|en-joe``."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys

    def _add(self, *fields: tuple[str, float]) -> None:
        pipe = self._r.pipeline(transaction=False)
        for field, amount in fields:
            pipe.hincrbyfloat(self._k.stats, field, amount)
        pipe.execute()

    @guarded
    def synthesized(self, engine: str, voice: str, audio_seconds: float) -> None:
        labels = f"{engine}|{voice}"
        self._add((f"{SYNTHESES[0]}|{labels}", 1), (f"{AUDIO_SECONDS[0]}|{labels}", audio_seconds))

    @guarded
    def engine_time(self, engine: str, voice: str, busy_seconds: float, synthesis_seconds: float) -> None:
        labels = f"{engine}|{voice}"
        self._add(
            (f"{SLOT_BUSY_SECONDS[0]}|{labels}", busy_seconds),
            (f"{SYNTHESIS_SECONDS[0]}|{labels}", synthesis_seconds),
        )

    @guarded
    def sentences(self, *, reused: int, made: int, merged: int) -> None:
        counts = (("hit", reused), ("miss", made), ("merged", merged))
        self._add(*((f"{SENTENCES[0]}|{result}", count) for result, count in counts if count))

    @guarded
    def encoded(self, fmt: str) -> None:
        self._r.hincrbyfloat(self._k.stats, f"{ENCODES[0]}|{fmt}", 1)

    @guarded
    def failed(self, code: str) -> None:
        self._r.hincrbyfloat(self._k.stats, f"{FAILURES[0]}|{code}", 1)

    def collect(self) -> Iterator[Metric]:
        families = {
            SYNTHESES[0]: CounterMetricFamily(*SYNTHESES, labels=["engine", "voice"]),
            SYNTHESIS_SECONDS[0]: CounterMetricFamily(*SYNTHESIS_SECONDS, labels=["engine", "voice"]),
            SLOT_BUSY_SECONDS[0]: CounterMetricFamily(*SLOT_BUSY_SECONDS, labels=["engine", "voice"]),
            SENTENCES[0]: CounterMetricFamily(*SENTENCES, labels=["result"]),
            AUDIO_SECONDS[0]: CounterMetricFamily(*AUDIO_SECONDS, labels=["engine", "voice"]),
            ENCODES[0]: CounterMetricFamily(*ENCODES, labels=["format"]),
            FAILURES[0]: CounterMetricFamily(*FAILURES, labels=["code"]),
        }
        try:
            fields: dict[Any, Any] = self._r.hgetall(self._k.stats)
        except _REDIS_DOWN:
            fields = {}  # a scrape while Redis is away shows no job figures rather than failing
        for field, value in fields.items():
            name, *labels = field.decode().split("|")
            if name in families:
                families[name].add_metric(labels, float(value))
        yield from families.values()


class WorkerRegistry:
    """Engine processes announce themselves with a heartbeat, under their pool's name; the API
    reads which pools (so which engines) have live processes, and how many."""

    HEARTBEAT_SECONDS = 10.0
    STALE_SECONDS = 35.0

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._k = keys

    @staticmethod
    def member(pool: str, process: str) -> str:
        return f"{pool}|{process}"

    def beat(self, name: str) -> None:
        now = time.time()
        pipe = self._r.pipeline(transaction=False)
        pipe.zadd(self._k.workers, {name: now})
        pipe.zremrangebyscore(self._k.workers, "-inf", now - self.STALE_SECONDS)
        pipe.execute()

    def leave(self, name: str) -> None:
        with redis_errors():
            self._r.zrem(self._k.workers, name)

    def busy(self, name: str, running: bool) -> None:
        with redis_errors():
            if running:
                self._r.zadd(self._k.busy, {name: time.time()})
            else:
                self._r.zrem(self._k.busy, name)

    @staticmethod
    def _by_pool(members: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for raw in members:
            pool = raw.decode().partition("|")[0]
            counts[pool] = counts.get(pool, 0) + 1
        return counts

    @guarded
    def busy_by_pool(self, within: float) -> dict[str, int]:
        """Processes that started a job less than ``within`` seconds ago and have not finished it
        (a process that died mid-job drops out after that long), by pool."""
        return self._by_pool(self._r.zrangebyscore(self._k.busy, time.time() - within, "+inf"))

    @guarded
    def alive_by_pool(self) -> dict[str, int]:
        live = self._r.zrangebyscore(self._k.workers, time.time() - self.STALE_SECONDS, "+inf")
        return self._by_pool(live)

    def alive(self) -> int:
        return sum(self.alive_by_pool().values())

    @guarded
    def job_seconds(self, engine: str) -> float:
        raw = self._r.get(self._k.job_seconds(engine))
        return float(raw) if raw else 1.0

    @guarded
    def record_job_seconds(self, engine: str, seconds: float) -> None:
        # A rough moving average shared by all workers: good enough for Retry-After.
        current = self.job_seconds(engine)
        self._r.set(self._k.job_seconds(engine), current + 0.2 * (seconds - current), ex=86400)
