"""In-memory task board for embedded mode (tasks live and die with the process that runs them)."""

from __future__ import annotations

import time
from collections import OrderedDict

from .base import IdempotencyKeys, RateDecision, RateLimiter, TaskBoard, TaskStatus


class MemoryTaskBoard(TaskBoard):
    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        # Ordered by last update, so expiry only ever looks at the front.
        self._tasks: OrderedDict[str, tuple[float, TaskStatus]] = OrderedDict()

    def _expire(self, now: float) -> None:
        while self._tasks:
            task_id, (expires_at, status) = next(iter(self._tasks.items()))
            if expires_at > now or not status.finished:
                break
            del self._tasks[task_id]

    def get(self, task_id: str) -> TaskStatus | None:
        now = time.time()
        self._expire(now)
        item = self._tasks.get(task_id)
        if item is None or (item[0] <= now and item[1].finished):
            return None
        return item[1]

    def put(self, status: TaskStatus) -> None:
        self._tasks.pop(status.task_id, None)
        self._tasks[status.task_id] = (time.time() + self._ttl, status)
        self._expire(time.time())


class MemoryIdempotencyKeys(IdempotencyKeys):
    def __init__(self) -> None:
        self._keys: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def bind(self, key: str, fingerprint: str, ttl: float) -> str:
        now = time.time()
        while self._keys and next(iter(self._keys.values()))[0] <= now:
            self._keys.popitem(last=False)
        bound = self._keys.get(key)
        if bound is not None:
            return bound[1]
        self._keys[key] = (now + ttl, fingerprint)
        return fingerprint


class MemoryRateLimiter(RateLimiter):
    # Callers idle long enough to have a full bucket again are forgotten first; this bounds memory
    # when many addresses pass by.
    MAX_CALLERS = 100_000

    def __init__(self) -> None:
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    async def take(self, caller: str, rate: float, burst: int) -> RateDecision:
        now = time.monotonic()
        tokens, stamp = self._buckets.pop(caller, (float(burst), now))
        tokens = min(float(burst), tokens + (now - stamp) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[caller] = (tokens, now)
        while len(self._buckets) > self.MAX_CALLERS:
            self._buckets.popitem(last=False)
        wait = 0.0 if allowed else (1.0 - tokens) / rate
        return RateDecision(allowed=allowed, remaining=int(tokens), retry_after=wait)
