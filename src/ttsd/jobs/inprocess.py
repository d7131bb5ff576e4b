"""Embedded mode's queue: job bodies on the API's event loop, in front of the engine process pool.

Single flight: the task id is derived from the key and format, so an identical request joins the
job in flight; below that, jobs share sentences in flight (``jobs.synth.Flights``), so a job for
the same text in another format, or for another text with a sentence in common, waits for the
sentence instead of synthesizing it again. Each engine pool (``TTSD_POOLS``) is a lane of its own:
its own processes, queue depth, queue limit, Retry-After and readiness, so a backlog for one
engine never delays another's. A lane's depth is its jobs that still wait for an engine slot;
post-processing runs on one bounded thread pool shared by all and never holds a slot.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..audio import Pcm16
from ..config import Settings
from ..errors import EngineDown, JobCancelled, JobError, JobTimeout, NotReady, Overloaded
from ..keys import audio_id
from ..metrics import JobStats, Metrics, PoolFigures
from ..pools import PoolSpec
from ..state.base import CacheIndex, Stage, TaskBoard, TaskError, TaskStatus
from ..state.recent import RecentEntries
from ..store.base import AudioStore, parse_object_name
from .base import JobQueue, Submission
from .model import Job, Piece, SentenceBatch
from .pool import EnginePool, PoolRouter
from .synth import build_host, post_executor, run_job

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


class _Lane:
    """One pool and the jobs waiting for it."""

    def __init__(self, settings: Settings, spec: PoolSpec, stats: JobStats, metrics: Metrics) -> None:
        self.pool = EnginePool(settings, spec, on_batch=self._on_batch)
        self.waiting: set[str] = set()  # accepted jobs that have not yet had one of its slots
        self._stats = stats
        self._job_seconds = _INITIAL_JOB_SECONDS
        self._measured = False
        self.queue_wait = metrics.queue_wait.labels(spec.name)

    def _on_batch(self, batch: SentenceBatch, busy_seconds: float, synthesis_seconds: float) -> None:
        self._stats.engine_time(batch.spec.engine, batch.spec.voice, busy_seconds, synthesis_seconds)
        # Retry-After and shedding divide the work ahead by what a slot takes per job.
        if self._measured:
            self._job_seconds += _EWMA * (busy_seconds - self._job_seconds)
        else:
            self._job_seconds, self._measured = busy_seconds, True

    @property
    def depth(self) -> int:
        return len(self.waiting)

    def predicted_wait(self) -> float:
        return self.depth * self._job_seconds / self.pool.size if self._measured else 0.0

    def retry_after(self) -> int:
        """An honest wait: the work ahead divided among the slots."""
        return max(1, math.ceil(self.depth * self._job_seconds / self.pool.size))

    def figures(self) -> PoolFigures:
        return PoolFigures(self.pool.name, self.depth, self.pool.busy, self.pool.size, self.pool.restarts)


class _Reporter:
    """A job's progress to the board, its audio to the feed its listeners read."""

    def __init__(self, queue: InProcessQueue, job: Job, status: TaskStatus) -> None:
        self._queue = queue
        self._job = job
        self._lane = queue._lanes[job.spec.engine]
        self.status = status
        self._feed = queue._feeds[job.task_id]
        self._interest = queue._interest[job.task_id]

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        if stage is not self.status.stage:
            extra: dict[str, Any] = {"task_id": self._job.task_id, "key": self._job.key, "stage": stage.value}
            if self.status.stage is Stage.QUEUED:
                waited = max(0.0, time.time() - self.status.created_at)
                self._lane.waiting.discard(self._job.task_id)
                self._lane.queue_wait.observe(waited)
                extra.update(pool=self._lane.pool.name, queue_wait_ms=round(waited * 1000, 2))
            log.info("job stage", extra=extra)
        self.status = self.status.advance(stage, progress, **changes)
        self._queue._board.put(self.status)

    async def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        if self._interest.cancelled:
            raise JobCancelled("every listener of this stream left")
        self._feed.push(Piece(pcm, sample_rate))

    async def audio_end(self) -> None:
        self._feed.push(None)


class InProcessQueue(JobQueue):
    def __init__(
        self,
        settings: Settings,
        board: TaskBoard,
        metrics: Metrics,
        stats: JobStats,
        recent: RecentEntries,
        store: AudioStore,
        index: CacheIndex,
    ) -> None:
        self._recent = recent
        self._settings = settings
        self._board = board
        self._stats = stats
        self._lanes: dict[str, _Lane] = {}
        for spec in settings.pool_layout:
            lane = _Lane(settings, spec, stats, metrics)
            self._lanes.update(dict.fromkeys(spec.engines, lane))
        self._pools = PoolRouter([lane.pool for lane in self.lanes])
        self._post = post_executor(settings)
        self._host = build_host(settings, self._pools, store, index, stats, self._post)
        self._inflight: dict[str, asyncio.Future[TaskStatus]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._feeds: dict[str, _Feed] = {}
        self._interest: dict[str, _Interest] = {}
        self._draining = False
        metrics.watch_pools(lambda: [lane.figures() for lane in self.lanes])

    @property
    def lanes(self) -> list[_Lane]:
        return list(dict.fromkeys(self._lanes.values()))

    def pool(self, engine: str) -> EnginePool:
        return self._pools.of(engine)

    @property
    def ready(self) -> bool:
        return not self._draining and any(lane.pool.ready for lane in self.lanes)

    @property
    def not_ready_reason(self) -> str:
        if self._draining:
            return "shutting down"
        return "; ".join(f"{lane.pool.name}: {lane.pool.state}" for lane in self.lanes)

    def engine_states(self) -> dict[str, str]:
        return {engine: lane.pool.state for engine, lane in self._lanes.items()}

    async def start(self) -> None:
        await self._pools.start()

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
        await self._pools.stop()
        self._post.shutdown(wait=False, cancel_futures=True)

    async def submit(self, job: Job, *, stream: bool = False) -> Submission:
        status = job.queued()
        if self._draining:
            raise NotReady("the service is shutting down", retry_after=5)
        if job.task_id in self._inflight:
            self._register(job.task_id, stream)
            # The board never expires an unfinished task, so the fallback is only for safety.
            return Submission(self._board.get(job.task_id) or status, merged=True)
        lane = self._lanes[job.spec.engine]
        if not lane.pool.live:
            raise EngineDown(
                f"engine {job.spec.engine} has no live slot ({lane.pool.state})",
                retry_after=2 if lane.pool.fatal is None else 30,
                details={"engine": job.spec.engine},
            )
        predicted = lane.predicted_wait()
        if lane.depth >= self._settings.queue_limit or predicted > self._settings.max_wait:
            raise Overloaded(
                f"the {lane.pool.name} queue is full ({lane.depth} jobs waiting, about {predicted:.0f} s)",
                retry_after=lane.retry_after(),
            )
        self._board.put(status)
        self._feeds[job.task_id] = _Feed()
        self._interest[job.task_id] = _Interest()
        self._register(job.task_id, stream)
        done: asyncio.Future[TaskStatus] = asyncio.get_running_loop().create_future()
        self._inflight[job.task_id] = done
        lane.waiting.add(job.task_id)
        task = asyncio.create_task(self._run(job, status, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Submission(status, merged=False)

    async def _run(self, job: Job, status: TaskStatus, done: asyncio.Future[TaskStatus]) -> None:
        reporter = _Reporter(self, job, status)
        feed = self._feeds[job.task_id]
        error: JobError
        try:
            if self._interest[job.task_id].cancelled:
                raise JobCancelled("every listener of this stream left before it started")
            outcome = await asyncio.wait_for(run_job(job, self._host, reporter), self._settings.job_timeout)
        except TimeoutError:
            outcome, error = None, JobTimeout(f"the job took longer than {self._settings.job_timeout:g} s")
        except JobError as exc:
            outcome, error = None, exc
        except Exception:  # a fault boundary: one bad text must not take the queue down
            log.exception("job failed", extra={"task_id": job.task_id, "key": job.key})
            outcome, error = None, JobError("the job failed on this text")
        except asyncio.CancelledError:  # shutdown grace over
            self._forget(job.task_id)
            raise
        if outcome is None:
            feed.close(error)
            self._stats.failed(error.code)
            log.warning("job failed", extra={"task_id": job.task_id, "key": job.key, "code": error.code})
            final = reporter.status.advance(
                Stage.FAILED,
                reporter.status.progress,
                error=TaskError(code=error.code, message=error.message),
            )
        else:
            for name in outcome.evicted:
                if (dropped := parse_object_name(name)) is not None:
                    self._recent.drop(*dropped)
            log.info(
                "job done",
                extra={
                    "task_id": job.task_id,
                    "key": job.key,
                    "synthesized": outcome.synthesized,
                    "sentences": outcome.sentences,
                    "sentences_reused": outcome.sentences_reused,
                    "audio_seconds": round(outcome.audio_seconds, 3),
                    "slot_seconds": round(outcome.slot_seconds, 3),
                },
            )
            final = reporter.status.advance(Stage.DONE, 100, audio_id=audio_id(job.key, job.fmt))
        feed.close(None)
        self._board.put(final)
        self._forget(job.task_id)
        done.set_result(final)

    def _forget(self, task_id: str) -> None:
        self._feeds.pop(task_id).close(None)
        del self._inflight[task_id]
        del self._interest[task_id]
        for lane in self.lanes:
            lane.waiting.discard(task_id)

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
            self._pools.cancel(task_id)  # speaking: stops after its sentence; queued: never starts

    async def wait(self, task_id: str) -> TaskStatus | None:
        running = self._inflight.get(task_id)
        if running is not None:
            return await asyncio.shield(running)
        return self._board.get(task_id)
