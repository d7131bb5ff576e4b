"""Distributed mode's queue, as the API sees it: Celery on a Redis broker, single flight through
Redis marks shared by every API process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import redis
import redis.asyncio
from kombu.exceptions import OperationalError

from ..config import Settings
from ..errors import BackendUnavailable, Overloaded, job_error_from
from ..metrics import Metrics
from ..state.base import TaskBoard, TaskStatus
from ..state.leases import JobLeases
from ..state.recent import RecentEntries
from ..state.redis import WorkerRegistry, redis_errors
from ..state.redis_keys import RedisKeys, parse_member
from .base import JobQueue, Submission
from .celery_app import QUEUE, TASK_NAME, broker_queue_key, make_celery, mark_ttl, publication
from .model import Job, Piece

log = logging.getLogger("ttsd.queue")

_POLL_FIRST, _POLL_MAX = 0.02, 0.2
# Lapsed leases are looked for this often (each lapsed job is handed on by exactly one API
# process), and so are jobs published but not taken (by one API process at a time).
_SWEEP_SECONDS = 1.0
_POPPED_GRACE = 2.0
_XREAD_BLOCK_MS = 500


class CeleryQueue(JobQueue):
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        board: TaskBoard,
        metrics: Metrics,
        recent: RecentEntries,
    ) -> None:
        self._settings = settings
        self._recent = recent
        self._client = client
        self._keys = RedisKeys(settings.redis_prefix)
        self._board = board
        self._app = make_celery(settings)
        self._registry = WorkerRegistry(client, self._keys)
        self._broker_queue = broker_queue_key(settings)
        # Blocking stream reads must not hold the event loop: they use an asyncio client.
        self._async_client = redis.asyncio.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        # A mark outlives every redelivery; a job not heard of for this long is presumed lost.
        self._mark_ttl = mark_ttl(settings)
        self._leases = JobLeases(client, self._keys, settings.job_lease, self._mark_ttl)
        self._gone: dict[str, float] = {}  # pending jobs seen missing from the queue, since when
        self._requeued = metrics.requeued
        metrics.watch(metrics.queue_depth, self._gauge(lambda: self.depth))
        metrics.watch(metrics.slots, self._gauge(self._registry.alive))
        busy_window = settings.job_timeout + 60
        metrics.watch(metrics.busy_slots, self._gauge(lambda: self._registry.busy_count(busy_window)))

    @staticmethod
    def _gauge(read: Callable[[], float]) -> Callable[[], float]:
        def safe() -> float:
            try:
                return float(read())
            except BackendUnavailable:
                return float("nan")  # a scrape while Redis is away must not fail

        return safe

    @property
    def depth(self) -> int:
        with redis_errors():
            return int(self._client.llen(self._broker_queue))

    @property
    def ready(self) -> bool:
        try:
            return self._registry.alive() > 0
        except BackendUnavailable:
            return False

    @property
    def not_ready_reason(self) -> str:
        try:
            self._registry.alive()
        except BackendUnavailable as exc:
            return exc.message
        return "no engine worker is running (start `ttsd worker`)"

    def retry_after(self, depth: int) -> int:
        slots = max(1, self._registry.alive())
        return max(1, math.ceil(depth * self._registry.job_seconds() / slots))

    async def start(self) -> None:
        # Connections are made on first use, so the API starts (not ready) while Redis is away.
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._eviction_watcher = asyncio.create_task(self._watch_evictions())

    async def stop(self) -> None:
        self._sweeper.cancel()
        self._eviction_watcher.cancel()
        self._app.close()
        await self._async_client.aclose()

    def _stale(self, status: TaskStatus) -> bool:
        return status.updated_at < time.time() - self._mark_ttl

    async def submit(self, job: Job, *, stream: bool = False) -> Submission:
        status = job.queued()
        mark = self._keys.inflight(job.task_id)
        with redis_errors():
            fresh = bool(self._client.set(mark, b"1", nx=True, ex=self._mark_ttl))
        if not fresh:
            existing = self._board.get(job.task_id)
            if existing is None:
                # Another API process set the mark an instant ago and is about to write the status.
                return Submission(status, merged=True)
            if not existing.finished and not self._stale(existing):
                self._register(job.task_id, stream)
                return Submission(existing, merged=True)
            # Finished (its mark is about to go) or lost: this request starts it afresh.
        depth = self.depth
        wait = self.retry_after(depth) if depth else 0
        if depth >= self._settings.queue_limit or wait > self._settings.max_wait:
            if fresh:
                with contextlib.suppress(BackendUnavailable), redis_errors():
                    self._client.delete(mark)
            raise Overloaded(
                f"the synthesis queue is full ({depth} jobs waiting, about {wait} s)", retry_after=wait or 1
            )
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.set(mark, b"1", ex=self._mark_ttl)
            # Leftovers of an earlier run of this task (cancelled or failed) must not leak in.
            for stale in (self._keys.pcm, self._keys.cancel, self._keys.listeners, self._keys.pinned):
                pipe.delete(stale(job.task_id))
            pipe.execute()
        self._register(job.task_id, stream)
        self._board.put(status)
        payload = json.dumps(job.to_dict())
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._keys.job(job.task_id), payload, ex=self._mark_ttl)
            pipe.zadd(self._keys.pending, {job.task_id: time.time()})
            pipe.execute()
        try:
            self._publish(job.task_id, job.to_dict())
        except BackendUnavailable:
            with contextlib.suppress(BackendUnavailable), redis_errors():
                self._client.delete(mark)
                self._client.zrem(self._keys.pending, job.task_id)
            raise
        return Submission(status, merged=False)

    def _publish(self, task_id: str, payload: dict[str, Any]) -> None:
        try:
            self._app.send_task(
                TASK_NAME, args=[publication(payload)], task_id=task_id, queue=QUEUE, retry=False
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            raise BackendUnavailable(f"the job broker is unreachable: {exc}", retry_after=2) from exc

    async def _watch_evictions(self) -> None:
        """Forget what any worker evicts, as it happens. While not subscribed (Redis away, or
        reconnecting) evictions go unheard, so the memory is cleared at every (re)subscription;
        not before, so that while Redis is away what it holds still answers hits."""
        while True:
            try:
                async with self._async_client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._keys.evicted)
                    self._recent.clear()
                    async for message in pubsub.listen():
                        for dropped in message["data"].split():
                            self._recent.drop(*parse_member(dropped))
            except (redis.RedisError, OSError):
                await asyncio.sleep(1.0)

    async def _sweep_forever(self) -> None:
        resumed = True
        while True:
            await asyncio.sleep(_SWEEP_SECONDS)
            try:
                if resumed:
                    # Redis was away: no worker could renew its lease either. Give them a beat to
                    # renew before handing on what only looks lapsed.
                    resumed = False
                    await asyncio.sleep(self._settings.job_lease / 2)
                await asyncio.to_thread(self.sweep)
            except BackendUnavailable:
                resumed = True
            except Exception:  # the sweeper must outlive any one bad sweep
                log.exception("sweep failed")

    def sweep(self) -> int:
        """Publish again the jobs whose lease lapsed (their worker is lost), and those published but
        not taken: popped from the queue by a worker that stopped before it took the lease, or
        lost by the broker. Returns how many."""
        republished = 0
        for task_id, given_up in self._leases.sweep():
            republished += self._republish(task_id, "given_up" if given_up else "lease_lapsed")
        now = time.time()
        with redis_errors():
            if not self._client.set(self._keys.sweeper, b"1", nx=True, px=int(_SWEEP_SECONDS * 900)):
                return republished  # another API process sweeps the pending jobs this second
            found: Any = self._client.zrangebyscore(
                self._keys.pending, "-inf", now - self._settings.job_lease, withscores=True
            )
        waiting = {task_id.decode(): published for task_id, published in found}
        gone = self._popped(waiting) if waiting else set()
        # A message is taken within milliseconds of leaving the queue: one missing from it for a
        # couple of sweeps went to a worker that stopped at that instant.
        self._gone = {t: self._gone.get(t, now) for t in gone}
        for task_id, published in waiting.items():
            if task_id in gone and now - self._gone[task_id] >= _POPPED_GRACE:
                republished += self._republish(task_id, "popped_not_taken")
            elif published < now - self._settings.requeue_after:
                republished += self._republish(task_id, "never_taken")
        return republished

    def _popped(self, waiting: dict[str, float]) -> set[str]:
        """Of these jobs (published, not taken), those whose message is no longer in the queue."""
        with redis_errors():
            messages: Any = self._client.lrange(self._broker_queue, 0, -1)
        queued = set()
        for message in messages:
            try:
                queued.add(json.loads(message)["headers"]["id"])
            except (ValueError, KeyError, TypeError):
                continue
        return {task_id for task_id in waiting if task_id not in queued}

    def _republish(self, task_id: str, reason: str) -> int:
        with redis_errors():
            payload: Any = self._client.get(self._keys.job(task_id))
        status = self._board.get(task_id)
        if payload is None or status is None or status.finished:
            with redis_errors():
                self._client.zrem(self._keys.pending, task_id)
            return 0
        log.warning("publishing a job again", extra={"task_id": task_id, "reason": reason})
        with redis_errors():
            self._client.zadd(self._keys.pending, {task_id: time.time()})
        self._publish(task_id, json.loads(payload))
        self._requeued.labels(reason).inc()
        return 1

    def _register(self, task_id: str, stream: bool) -> None:
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            if stream:
                pipe.incr(self._keys.listeners(task_id))
                pipe.expire(self._keys.listeners(task_id), self._mark_ttl)
            else:
                pipe.set(self._keys.pinned(task_id), b"1", ex=self._mark_ttl)
            pipe.execute()

    async def release(self, task_id: str) -> None:
        with redis_errors():
            left = int(self._client.decr(self._keys.listeners(task_id)))
            if left <= 0 and not self._client.exists(self._keys.pinned(task_id)):
                self._client.set(self._keys.cancel(task_id), b"1", ex=self._mark_ttl)

    async def audio(self, task_id: str) -> AsyncIterator[Piece]:
        stream = self._keys.pcm(task_id)
        last = "0-0"
        # A job handed to another worker starts its stream again from the first sentence (under a
        # higher attempt): what this listener already heard is skipped.
        attempt, heard, sent = 0, 0, 0
        while True:
            try:
                batch: Any = await self._async_client.xread({stream: last}, count=64, block=_XREAD_BLOCK_MS)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc
            if not batch:
                # Nothing new: a job that ends without pieces made no master (it was cached).
                status = self._board.get(task_id)
                if status is None or status.finished:
                    if status is not None and status.error is not None:
                        raise job_error_from(status.error.code, status.error.message)
                    return
                continue
            for _, entries in batch:
                for entry_id, fields in entries:
                    last = entry_id
                    if b"end" in fields:
                        return
                    if b"error" in fields:
                        raise job_error_from(fields[b"error"].decode(), fields[b"message"].decode())
                    entry_attempt = int(fields.get(b"attempt", 0))
                    if entry_attempt != attempt:
                        attempt, heard = entry_attempt, 0
                    heard += 1
                    if heard <= sent:
                        continue
                    sent += 1
                    yield Piece(np.frombuffer(fields[b"pcm"], dtype=np.int16), int(fields[b"rate"]))

    async def wait(self, task_id: str) -> TaskStatus | None:
        delay = _POLL_FIRST
        while True:
            status = self._board.get(task_id)
            if status is None or status.finished:
                return status
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 1.5)
