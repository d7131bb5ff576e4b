"""Which engine processes are alive and busy, by pool: heartbeats in Redis."""

from __future__ import annotations

import time
from typing import Any

import redis

from .client import guarded, redis_errors
from .keys import RedisKeys


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
