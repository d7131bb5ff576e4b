"""Embedded mode's queue: a bounded asyncio queue in front of the engine process pool.

Single flight: the task id is derived from the key and format, so an identical request joins the
job in flight. Jobs for the same key in other formats wait for that job, then find its master in
the cache and only encode.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..config import Settings
from ..errors import JobCancelled, JobError, NotReady, Overloaded
from ..keys import audio_id
from ..metrics import JobStats, Metrics
from ..state.base import Stage, TaskBoard, TaskError, TaskStatus
from ..state.recent import RecentEntries
from ..store.base import parse_object_name
from .base import JobQueue, Submission
from .model import Job, Piece
from .pool import EnginePool

log = logging.getLogger("ttsd.queue")

# A job's duration before any was measured: used for Retry-After only. Shedding on a predicted
# wait starts once real durations are known, so a cold server does not refuse work on a guess.
_INITIAL_JOB_SECONDS = 1.0
_EWMA = 0.2


@dataclass(eq=False)
class _Feed:
    """The pieces of one job's master, kept while the job is in flight so a listener that joins
    late hears it from the start."""

    pieces: list[Piece] = field(default_factory=list)
    ended: bool = False
    error: JobError | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, piece: Piece | None) -> None:
        if piece is None:
            self.ended = True
        else:
            self.pieces.append(piece)
        self.changed.set()

    def close(self, error: JobError | None) -> None:
        if not self.ended:
            self.ended, self.error = True, error
        self.changed.set()


@dataclass
class _Interest:
    listeners: int = 0
    pinned: bool = False
    cancelled: bool = False


class InProcessQueue(JobQueue):
    def __init__(
        self, settings: Settings, board: TaskBoard, metrics: Metrics, stats: JobStats, recent: RecentEntries
    ) -> None:
        self._recent = recent
        self._settings = settings
        self._board = board
        self._stats = stats
        self._pool = EnginePool(settings)
        self._inflight: dict[str, asyncio.Future[TaskStatus]] = {}
        self._last_of_key: dict[str, asyncio.Future[TaskStatus]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._feeds: dict[str, _Feed] = {}
        self._interest: dict[str, _Interest] = {}
        self._job_seconds = _INITIAL_JOB_SECONDS
        self._measured = False
        self._draining = False
        metrics.watch(metrics.queue_depth, lambda: self.depth)
        metrics.watch(metrics.busy_slots, lambda: self._pool.busy)
        metrics.watch(metrics.slots, lambda: self._pool.size)
        metrics.watch(metrics.engine_restarts, lambda: self._pool.restarts)

    @property
    def pool(self) -> EnginePool:
        return self._pool

    @property
    def depth(self) -> int:
        """Jobs accepted and not yet running."""
        return len(self._inflight) - self._pool.busy

    @property
    def ready(self) -> bool:
        return self._pool.ready and not self._draining

    @property
    def not_ready_reason(self) -> str:
        if self._draining:
            return "shutting down"
        if self._pool.fatal:
            return f"engines failed to load: {self._pool.fatal}"
        return "engines are loading"

    def retry_after(self) -> int:
        """An honest wait: the work ahead divided among the slots."""
        return max(1, math.ceil(self.depth * self._job_seconds / self._pool.size))

    async def start(self) -> None:
        await self._pool.start()

    async def stop(self) -> None:
        """Graceful: refuse new work, let accepted jobs finish (up to TTSD_SHUTDOWN_GRACE), stop."""
        self._draining = True
        if self._tasks:
            log.info("draining accepted jobs", extra={"jobs": len(self._tasks)})
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=self._settings.shutdown_grace)
            if unfinished:
                log.warning("shutdown grace over; abandoning jobs", extra={"jobs": len(unfinished)})
            for task in unfinished:
                task.cancel()
        await self._pool.stop()

    async def submit(self, job: Job, *, stream: bool = False) -> Submission:
        status = job.queued()
        if self._draining:
            raise NotReady("the service is shutting down", retry_after=5)
        if job.task_id in self._inflight:
            self._register(job.task_id, stream)
            # The board never expires an unfinished task, so the fallback is only for safety.
            return Submission(self._board.get(job.task_id) or status, merged=True)
        predicted = self.depth * self._job_seconds / self._pool.size if self._measured else 0.0
        if self.depth >= self._settings.queue_limit or predicted > self._settings.max_wait:
            raise Overloaded(
                f"the synthesis queue is full ({self.depth} jobs waiting, about {predicted:.0f} s)",
                retry_after=self.retry_after(),
            )
        self._board.put(status)
        self._feeds[job.task_id] = _Feed()
        self._interest[job.task_id] = _Interest()
        self._register(job.task_id, stream)
        done: asyncio.Future[TaskStatus] = asyncio.get_running_loop().create_future()
        self._inflight[job.task_id] = done
        before = self._last_of_key.get(job.key)
        self._last_of_key[job.key] = done
        task = asyncio.create_task(self._run(job, status, before, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Submission(status, merged=False)

    async def _run(
        self,
        job: Job,
        status: TaskStatus,
        before: asyncio.Future[TaskStatus] | None,
        done: asyncio.Future[TaskStatus],
    ) -> None:
        current = status

        def on_stage(stage: Stage, progress: int) -> None:
            nonlocal current
            if stage is not current.stage:
                log.info("job stage", extra={"task_id": job.task_id, "key": job.key, "stage": stage.value})
            current = current.advance(stage, progress)
            self._board.put(current)

        feed = self._feeds[job.task_id]
        try:
            if before is not None:
                # Same text, other format: let that job make the master, then only encode.
                await asyncio.wait([before])
            if self._interest[job.task_id].cancelled:
                raise JobCancelled("every listener of this stream left before it started")
            outcome = await self._pool.run(job, on_stage, feed.push)
        except JobError as exc:
            feed.close(exc)
            self._stats.failed(exc.code)
            log.warning("job failed", extra={"task_id": job.task_id, "key": job.key, "code": exc.code})
            current = current.advance(
                Stage.FAILED, current.progress, error=TaskError(code=exc.code, message=exc.message)
            )
        else:
            for name in outcome.evicted:
                if (dropped := parse_object_name(name)) is not None:
                    self._recent.drop(*dropped)
            seconds = outcome.service_seconds
            if self._measured:
                self._job_seconds += _EWMA * (seconds - self._job_seconds)
            else:
                self._job_seconds, self._measured = seconds, True
            if outcome.synthesized:
                self._stats.synthesized(
                    job.spec.engine, job.spec.voice, outcome.synthesis_seconds, outcome.audio_seconds
                )
            self._stats.encoded(job.fmt)
            log.info(
                "job done",
                extra={
                    "task_id": job.task_id,
                    "key": job.key,
                    "synthesized": outcome.synthesized,
                    "audio_seconds": round(outcome.audio_seconds, 3),
                    "service_seconds": round(outcome.service_seconds, 3),
                },
            )
            current = current.advance(Stage.DONE, 100, audio_id=audio_id(job.key, job.fmt))
        finally:
            feed.close(None)
            self._board.put(current)
            del self._inflight[job.task_id]
            del self._feeds[job.task_id]
            del self._interest[job.task_id]
            if self._last_of_key.get(job.key) is done:
                del self._last_of_key[job.key]
            done.set_result(current)

    def _register(self, task_id: str, stream: bool) -> None:
        interest = self._interest[task_id]
        if stream:
            interest.listeners += 1
        else:
            interest.pinned = True

    async def audio(self, task_id: str) -> AsyncIterator[Piece]:
        feed = self._feeds.get(task_id)
        if feed is None:
            return
        sent = 0
        while True:
            while sent < len(feed.pieces):
                yield feed.pieces[sent]
                sent += 1
            if feed.ended:
                if feed.error is not None:
                    raise feed.error
                return
            feed.changed.clear()
            await feed.changed.wait()

    async def release(self, task_id: str) -> None:
        interest = self._interest.get(task_id)
        if interest is None:
            return
        interest.listeners -= 1
        if interest.listeners <= 0 and not interest.pinned and not interest.cancelled:
            interest.cancelled = True
            self._pool.cancel(task_id)  # running: stops after its sentence; queued: never starts

    async def wait(self, task_id: str) -> TaskStatus | None:
        running = self._inflight.get(task_id)
        if running is not None:
            return await asyncio.shield(running)
        return self._board.get(task_id)
