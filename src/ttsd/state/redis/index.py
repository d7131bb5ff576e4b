"""The cache index in Redis: one entry per (key, format), a byte budget (each object counted once)
kept by Lua scripts that evict in O(log n) per entry, and a channel announcing what was evicted."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import redis

from ...store.base import PIECE, object_name
from ..base import CacheEntry, CacheIndex, CacheStats, charges
from .autopipeline import AutoPipeline
from .client import guarded, redis_errors
from .keys import RedisKeys, member, parse_member

# KEYS: entry, then the budget's (lru, expiry, sizes, total, objects, refs, orphans)
# ARGV: member, json, expires_ms, now, charge (its bytes in the total: ``charges``), object name,
# shared ('1': the object holds other entries too, and the refs hash counts them, so only the last
# one to go frees it). A member that moves to another object leaves the old one as eviction would.
_PUT = """
local old = redis.call('HGET', KEYS[4], ARGV[1])
local was = redis.call('HGET', KEYS[6], ARGV[1])
local freed = tonumber(old or '0')
if was and was ~= ARGV[6] and redis.call('HEXISTS', KEYS[7], was) == 1 then
  if redis.call('HINCRBY', KEYS[7], was, -1) > 0 then
    redis.call('HINCRBY', KEYS[8], was, freed)
    freed = 0
  else
    redis.call('HDEL', KEYS[7], was)
    freed = freed + tonumber(redis.call('HGET', KEYS[8], was) or '0')
    redis.call('HDEL', KEYS[8], was)
  end
end
if freed ~= 0 then redis.call('DECRBY', KEYS[5], freed) end
if ARGV[7] == '1' and was ~= ARGV[6] then redis.call('HINCRBY', KEYS[7], ARGV[6], 1) end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
redis.call('INCRBY', KEYS[5], ARGV[5])
redis.call('HSET', KEYS[6], ARGV[1], ARGV[6])
"""

# KEYS: entry, lru ARGV: member, now
_GET = """
local value = redis.call('GET', KEYS[1])
if value then redis.call('ZADD', KEYS[2], 'XX', ARGV[2], ARGV[1]) end
return value
"""

# KEYS: lru, expiry, sizes, total, objects, refs, orphans ARGV: entry prefix, now_ms, max_bytes,
# member-or-empty, channel. Drops expired members, then least recently used ones until the total
# fits (an object's bytes leave it with the last member naming it); returns the members and their
# object names ('' for entries stored before names were recorded, '=' for an object other entries
# still name), and publishes the members, so API processes stop handing out what is gone.
_EVICT = """
local dropped, names = {}, {}
local function drop(m)
  local size = tonumber(redis.call('HGET', KEYS[3], m) or '0')
  redis.call('HDEL', KEYS[3], m)
  local name = redis.call('HGET', KEYS[5], m) or ''
  if name ~= '' and redis.call('HEXISTS', KEYS[6], name) == 1 then
    if redis.call('HINCRBY', KEYS[6], name, -1) > 0 then
      redis.call('HINCRBY', KEYS[7], name, size)
      size, name = 0, '='
    else
      redis.call('HDEL', KEYS[6], name)
      size = size + tonumber(redis.call('HGET', KEYS[7], name) or '0')
      redis.call('HDEL', KEYS[7], name)
    end
  end
  if size ~= 0 then redis.call('DECRBY', KEYS[4], size) end
  table.insert(names, name)
  redis.call('HDEL', KEYS[5], m)
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
return {dropped, names}
"""


Arg = str | int | float
_SHARED = b"="  # an object other entries still name: not to be deleted


def _object_names(found: list[list[bytes]]) -> list[str]:
    dropped, names = found
    # An entry stored before object names were recorded was named by its bare key.
    return [
        name.decode() if name else object_name(*parse_member(m))
        for m, name in zip(dropped, names, strict=True)
        if name != _SHARED
    ]


class RedisCacheIndex(CacheIndex):
    def __init__(self, client: redis.Redis, keys: RedisKeys, batch: AutoPipeline | None = None) -> None:
        self._r = client
        self._k = keys
        self._put = client.register_script(_PUT)
        self._get = client.register_script(_GET)
        self._evict = client.register_script(_EVICT)
        self._batch = batch

    def _budget_keys(self) -> list[str]:
        return [
            self._k.lru,
            self._k.expiry,
            self._k.sizes,
            self._k.total_bytes,
            self._k.objects,
            self._k.refs,
            self._k.orphans,
        ]

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

    # A pipeline of many calls sends each script's text (EVAL): a registered script in a pipeline
    # costs a SCRIPT EXISTS round trip first, which is what the pipeline is there to save.
    @guarded
    def get_many(self, keys: list[str], fmt: str) -> list[CacheEntry | None]:
        if len(keys) < 2:
            return [self.get(key, fmt) for key in keys]
        pipe = self._r.pipeline(transaction=False)
        now = time.time()
        for key in keys:
            m = member(key, fmt)
            pipe.eval(_GET, 2, self._k.entry(m), self._k.lru, m, now)
        return [None if raw is None else CacheEntry(**json.loads(raw)) for raw in pipe.execute()]

    def _put_call(
        self, entry: CacheEntry, charge: int, shared: str, now: float
    ) -> tuple[list[str], list[Arg]]:
        m = member(entry.key, entry.fmt)
        expires_ms = int(entry.expires_at * 1000)
        data = json.dumps(asdict(entry))
        return [self._k.entry(m), *self._budget_keys()], [
            m, data, expires_ms, now, charge, entry.object_name, shared,
        ]  # fmt: skip

    @guarded
    def put(self, entry: CacheEntry) -> None:
        keys, args = self._put_call(entry, entry.size, "0", time.time())
        self._put(keys=keys, args=args)

    @guarded
    def put_many(self, entries: list[CacheEntry]) -> None:
        if len(entries) < 2:
            for entry in entries:
                self.put(entry)
            return
        shared = "1" if len({e.object_name for e in entries}) < len(entries) else "0"
        pipe = self._r.pipeline(transaction=False)
        now = time.time()
        for entry, charge in zip(entries, charges(entries), strict=True):
            keys, args = self._put_call(entry, charge, shared, now)
            pipe.eval(_PUT, len(keys), *keys, *args)
        pipe.execute()

    @guarded
    def delete(self, key: str, fmt: str) -> list[str]:
        dropped = self._evict(
            keys=self._budget_keys(), args=[self._k.entry_prefix, 0, 0, member(key, fmt), self._k.evicted]
        )
        return _object_names(dropped)

    @guarded
    def evict(self, max_bytes: int) -> list[str]:
        dropped = self._evict(
            keys=self._budget_keys(),
            args=[self._k.entry_prefix, int(time.time() * 1000), max_bytes, "", self._k.evicted],
        )
        return _object_names(dropped)

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
            # Objects only pieces still name (a text's file is named by no other text).
            piece_bytes += sum(int(size) for _, size in self._r.hscan_iter(self._k.orphans, count=1000))
        return CacheStats(int(count), int(total or 0), pieces, piece_bytes)

    def close(self) -> None:
        self._r.close()
