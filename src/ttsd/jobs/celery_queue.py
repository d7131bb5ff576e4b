"""Distributed mode's queue, as the API sees it: Celery on a Redis broker, single flight through
Redis marks shared by every API process."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

import redis
from kombu.exceptions import OperationalError

from ..config import Settings
from ..errors import BackendUnavailable, Overloaded
from ..metrics import Metrics
from ..state.base import Stage, Status, TaskBoard, TaskStatus
from ..state.redis import WorkerRegistry, redis_errors
from ..state.redis_keys import RedisKeys
from .base import JobQueue, Submission
from .celery_app import QUEUE, TASK_NAME, broker_queue_key, make_celery
from .model import Job

_POLL_FIRST, _POLL_MAX = 0.02, 0.2


class CeleryQueue(JobQueue):
    def __init__(self, settings: Settings, client: redis.Redis, board: TaskBoard, metrics: Metrics) -> None:
        self._settings = settings
        self._client = client
        self._keys = RedisKeys(settings.redis_prefix)
        self._board = board
        self._app = make_celery(settings)
        self._registry = WorkerRegistry(client, self._keys)
        self._broker_queue = broker_queue_key(settings)
        # A mark outlives a redelivery; a job not heard of for this long is presumed lost.
        self._mark_ttl = settings.visibility_timeout + int(settings.job_timeout) + 60
        metrics.watch(metrics.queue_depth, self._gauge(lambda: self.depth))
        metrics.watch(metrics.slots, self._gauge(self._registry.alive))

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
        pass  # connections are made on first use, so the API starts (not ready) while Redis is away

    async def stop(self) -> None:
        self._app.close()

    def _stale(self, status: TaskStatus) -> bool:
        return status.updated_at < time.time() - self._mark_ttl

    async def submit(self, job: Job) -> Submission:
        now = time.time()
        status = TaskStatus(
            task_id=job.task_id,
            status=Status.QUEUED,
            stage=Stage.QUEUED,
            key=job.key,
            format=job.fmt,
            created_at=now,
            updated_at=now,
        )
        mark = self._keys.inflight(job.task_id)
        with redis_errors():
            fresh = bool(self._client.set(mark, b"1", nx=True, ex=self._mark_ttl))
        if not fresh:
            existing = self._board.get(job.task_id)
            if existing is None:
                # Another API process set the mark an instant ago and is about to write the status.
                return Submission(status, merged=True)
            if not existing.finished and not self._stale(existing):
                return Submission(existing, merged=True)
            # Finished (its mark is about to go) or lost: this request starts it afresh.
        depth = self.depth
        if depth >= self._settings.queue_limit:
            if fresh:
                with contextlib.suppress(BackendUnavailable), redis_errors():
                    self._client.delete(mark)
            raise Overloaded(
                f"the synthesis queue is full ({depth} jobs waiting)", retry_after=self.retry_after(depth)
            )
        with redis_errors():
            self._client.set(mark, b"1", ex=self._mark_ttl)
        self._board.put(status)
        try:
            self._app.send_task(
                TASK_NAME, args=[job.to_dict()], task_id=job.task_id, queue=QUEUE, retry=False
            )
        except (OperationalError, redis.RedisError, OSError) as exc:
            with contextlib.suppress(BackendUnavailable), redis_errors():
                self._client.delete(mark)
            raise BackendUnavailable(f"the job broker is unreachable: {exc}", retry_after=2) from exc
        return Submission(status, merged=False)

    async def wait(self, task_id: str) -> TaskStatus | None:
        delay = _POLL_FIRST
        while True:
            status = self._board.get(task_id)
            if status is None or status.finished:
                return status
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 1.5)
