"""Task statuses and idempotency keys in Redis, shared by every API process and the workers."""

from __future__ import annotations

import redis
import redis.asyncio

from ..base import IdempotencyKeys, TaskBoard, TaskStatus
from .autopipeline import AutoPipeline
from .client import guarded, redis_errors
from .keys import RedisKeys


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
        self.put_in(self._r, status)

    def put_in(self, pipe: redis.Redis | redis.client.Pipeline, status: TaskStatus) -> None:
        """The write of ``put``, queued on the caller's pipeline."""
        pipe.set(self._k.task(status.task_id), status.model_dump_json(), ex=self._ttl)


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
