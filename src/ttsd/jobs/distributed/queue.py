"""Distributed mode's queue, as the API sees it: Celery on a Redis broker, a queue per engine
(workers consume the queues of the engines their pools host), single flight through Redis marks
shared by every API process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import redis
import redis.asyncio

from ...config import Settings
from ...errors import BackendUnavailable, EngineDown, Overloaded, job_error_from
from ...metrics import Metrics, PoolFigures
from ...state.base import TaskStatus
from ...state.recent import RecentEntries
from ...state.redis.board import RedisTaskBoard
from ...state.redis.client import raise_dropped_cancel, redis_errors
from ...state.redis.keys import RedisKeys, parse_member
from ...state.redis.leases import JobLeases
from ...state.redis.registry import WorkerRegistry
from ...state.redis.stats import RedisJobStats
from ..admission import Admission, JobTime
from ..model import Job, Piece
from ..queue import JobQueue, Submission
from .broker import make_celery, publish
from .protocol import StreamEntry, broker_queue_key, leftovers, mark_ttl
from .sweeper import Sweeper

log = logging.getLogger("ttsd.queue")

# KEYS: listeners, pinned, cancel ARGV: ttl_s. The last listener out cancels the job unless it is
# pinned; in one step, so a listener joining meanwhile (which clears the flag) is never cancelled.
# A job that ended took its counter with it: a listener leaving after that has nothing to let go.
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return end
if redis.call('DECR', KEYS[1]) <= 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[3], '1', 'EX', ARGV[1])
end
"""
_POLL_FIRST, _POLL_MAX = 0.02, 0.2
_XREAD_BLOCK_MS = 500
# Which pools have live workers is read from the registry at most this often: every miss needs it.
_POOLS_FRESH = 1.0


class CeleryQueue(JobQueue):
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        board: RedisTaskBoard,
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
        self._engines = settings.engines
        self._live: tuple[float, dict[str, int]] = (0.0, {})
        # Blocking stream reads must not hold the event loop: they use an asyncio client.
        self._async_client = redis.asyncio.Redis.from_url(settings.redis_url, socket_connect_timeout=2)
        # A mark outlives every redelivery; a job not heard of for this long is presumed lost.
        self._mark_ttl = mark_ttl(settings)
        self._admission = Admission(settings.queue_limit, settings.max_wait)
        self._release = client.register_script(_RELEASE)
        leases = JobLeases(client, self._keys, settings.job_lease, self._mark_ttl)
        requeued = RedisJobStats(client, self._keys).requeued
        self.sweeper = Sweeper(settings, client, self._keys, board, leases, self._publish, requeued)
        metrics.watch_pools(self._figures)

    def _figures(self) -> list[PoolFigures]:
        """Per pool of live workers: its slots, busy slots, and the jobs in its engines' queues."""
        alive = self._registry.alive_by_pool()
        busy = self._registry.busy_by_pool(self._settings.job_timeout + 60)
        depths = self._depths()
        return [
            PoolFigures(pool, sum(depths.get(e, 0) for e in pool.split("+")), busy.get(pool, 0), slots)
            for pool, slots in alive.items()
        ]

    def _depths(self) -> dict[str, int]:
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            for engine in self._engines:
                pipe.llen(broker_queue_key(self._settings, engine))
            return dict(zip(self._engines, (int(n) for n in pipe.execute()), strict=True))

    def _alive(self, *, fresh: bool = False) -> dict[str, int]:
        """Live worker processes by pool (read at most once a second, unless ``fresh``)."""
        read_at, alive = self._live
        if fresh or time.monotonic() - read_at > _POOLS_FRESH:
            alive = self._registry.alive_by_pool()
            self._live = (time.monotonic(), alive)
        return alive

    @staticmethod
    def _slots(engine: str, alive: dict[str, int]) -> int:
        """Live worker processes whose pool hosts ``engine``."""
        return sum(n for pool, n in alive.items() if engine in pool.split("+"))

    @property
    def ready(self) -> bool:
        try:
            alive = self._alive(fresh=True)
        except BackendUnavailable:
            return False
        return any(self._slots(engine, alive) for engine in self._engines)

    @property
    def not_ready_reason(self) -> str:
        try:
            self._registry.alive()
        except BackendUnavailable as exc:
            return exc.message
        return "no engine worker is running (start `ttsd worker`)"

    def engine_states(self) -> dict[str, str]:
        alive = self._alive(fresh=True)
        return {
            engine: "ready" if self._slots(engine, alive) else "no live worker hosts it"
            for engine in self._engines
        }

    async def start(self) -> None:
        # Connections are made on first use, so the API starts (not ready) while Redis is away.
        self._sweeper = asyncio.create_task(self.sweeper.run())
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
        try:
            self._admit(job.spec.engine)
        except (Overloaded, EngineDown):
            if fresh:
                with contextlib.suppress(BackendUnavailable), redis_errors():
                    self._client.delete(mark)
            raise
        # The job's start, in one round trip (the API's event loop waits on each): what an earlier
        # run left goes, then its listener or pin, status, payload and place among the pending.
        with redis_errors():
            pipe = self._client.pipeline(transaction=True)
            pipe.set(mark, b"1", ex=self._mark_ttl)
            pipe.delete(*leftovers(self._keys, job.task_id))
            self._listen(pipe, job.task_id, stream)
            self._board.put_in(pipe, status)
            pipe.set(self._keys.job(job.task_id), json.dumps(job.to_dict()), ex=self._mark_ttl)
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

    def _admit(self, engine: str) -> None:
        """Refuse a job its engine's queue cannot take: no live worker hosts the engine, or the
        queue is full, or its predicted wait is too long."""
        slots = self._slots(engine, self._alive())
        if not slots:
            raise EngineDown(
                f"engine {engine} has no live slot: no running worker hosts it "
                f"(start `ttsd worker --pools {engine}:N`)",
                retry_after=5,
                details={"engine": engine},
            )
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.llen(broker_queue_key(self._settings, engine))
            pipe.get(self._keys.job_seconds(engine))
            depth, seconds = pipe.execute()
        job_time = JobTime(float(seconds) if seconds else None)
        self._admission.admit(engine, int(depth), slots, job_time)

    def _publish(self, task_id: str, payload: dict[str, Any]) -> None:
        publish(self._app, task_id, Job.from_dict(payload).spec.engine, payload)

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

    def _register(self, task_id: str, stream: bool) -> None:
        """A listener, or a pin, on the job. It takes back a cancel its last listener left (a caller
        who hung up and asks again at once): a worker that has not acted on it yet goes on."""
        with redis_errors():
            pipe = self._client.pipeline(transaction=True)
            self._listen(pipe, task_id, stream)
            pipe.execute()

    def _listen(self, pipe: redis.client.Pipeline, task_id: str, stream: bool) -> None:
        if stream:
            pipe.incr(self._keys.listeners(task_id))
            pipe.expire(self._keys.listeners(task_id), self._mark_ttl)
        else:
            pipe.set(self._keys.pinned(task_id), b"1", ex=self._mark_ttl)
        pipe.delete(self._keys.cancel(task_id))

    async def release(self, task_id: str) -> None:
        keys = [self._keys.listeners(task_id), self._keys.pinned(task_id), self._keys.cancel(task_id)]
        with redis_errors():
            self._release(keys=keys, args=[self._mark_ttl])

    async def audio(self, task_id: str) -> AsyncIterator[Piece]:
        stream = self._keys.pcm(task_id)
        last = "0-0"
        # A job handed to another worker starts its stream again from the first sentence (under a
        # higher attempt): what this listener already heard is skipped.
        attempt, heard, sent = 0, 0, 0
        # Seen finished: a job writes its last entries before its final status, and they may have
        # come between an empty read and the status read, so the stream is read once more, without
        # waiting, before the listener gives up on it.
        ended, status = False, None
        while True:
            block = None if ended else _XREAD_BLOCK_MS
            try:
                batch: Any = await self._async_client.xread({stream: last}, count=64, block=block)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise BackendUnavailable(f"Redis is unreachable: {exc}", retry_after=2) from exc
            raise_dropped_cancel()
            if not batch:
                if ended:  # nothing more: a job that ends without pieces made no master (cached)
                    if status is not None and status.error is not None:
                        raise job_error_from(status.error.code, status.error.message)
                    return
                status = self._board.get(task_id)
                ended = status is None or status.finished
                continue
            for _, entries in batch:
                for entry_id, fields in entries:
                    last = entry_id
                    entry = StreamEntry.parse(fields)
                    if entry.end:
                        return
                    if entry.error is not None:
                        raise job_error_from(*entry.error)
                    if entry.attempt != attempt:
                        attempt, heard = entry.attempt, 0
                    heard += 1
                    if heard <= sent:
                        continue
                    sent += 1
                    yield Piece(np.frombuffer(entry.pcm, dtype=np.int16), entry.rate)

    async def wait(self, task_id: str) -> TaskStatus | None:
        delay = _POLL_FIRST
        while True:
            status = self._board.get(task_id)
            if status is None or status.finished:
                return status
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 1.5)
