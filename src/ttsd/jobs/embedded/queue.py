"""Embedded mode's queue: job bodies on the API's event loop, in front of the engine process pool.

Single flight: the task id is derived from the key and format, so an identical request joins the
job in flight; below that, jobs share sentences in flight (``jobs.flights.Flights``), so a job for
the same text in another format, or for another text with a sentence in common, waits for the
sentence instead of synthesizing it again. Each engine pool (``TTSD_POOLS``) is a lane of its own:
its own processes, queue depth, queue limit, Retry-After and readiness, so a backlog for one
engine never delays another's. A lane's depth is its jobs that still wait for an engine slot;
post-processing runs on one bounded stage shared by all (``jobs.post``), never holds a slot, and
pauses every slot while it is behind, so its backlog shows in the lanes' depths.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from ...audio import Pcm16
from ...config import Settings
from ...errors import EngineDown, JobCancelled, NotReady, TtsdError
from ...metrics import JobStats, Metrics, PoolFigures
from ...pools import PoolSpec
from ...state.base import CacheIndex, Stage, TaskBoard, TaskStatus
from ...state.recent import RecentEntries
from ...store.base import AudioStore, parse_object_name
from ..admission import Admission, JobTime
from ..body import run_job
from ..host import build_host
from ..lifecycle import Lifecycle
from ..model import Job, JobOutcome, Piece, SentenceBatch
from ..post import PostStage, post_stage
from ..queue import JobQueue, Submission
from ..slots.pool import EnginePool
from .feed import Feed, Interest
from .router import PoolRouter

log = logging.getLogger("ttsd.queue")


class _Lane:
    """One pool and the jobs waiting for it."""

    def __init__(
        self, settings: Settings, spec: PoolSpec, stats: JobStats, metrics: Metrics, post: PostStage
    ) -> None:
        self.pool = EnginePool(settings, spec, on_batch=self._on_batch, gate=lambda: post.open)
        post.on_room(self.pool.wake)
        self.waiting: set[str] = set()  # accepted jobs that have not yet had one of its slots
        self._stats = stats
        # Retry-After and shedding divide the work ahead by what a slot takes per job.
        self.job_time = JobTime()
        self.queue_wait = metrics.queue_wait.labels(spec.name)

    def _on_batch(self, batch: SentenceBatch, busy_seconds: float, synthesis_seconds: float) -> None:
        self._stats.engine_time(batch.spec.engine, batch.spec.voice, busy_seconds, synthesis_seconds)
        self.job_time.observe(busy_seconds)

    @property
    def depth(self) -> int:
        return len(self.waiting)

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
        if stage not in (Stage.QUEUED, Stage.SYNTHESIZING):
            self._interest.work = None  # its audio exists: no longer worth cancelling
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

    async def failed(self, error: TtsdError) -> None:
        self._feed.close(error)


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
        self._post = post_stage(settings)
        self._lanes: dict[str, _Lane] = {}
        for spec in settings.pool_layout:
            lane = _Lane(settings, spec, stats, metrics, self._post)
            self._lanes.update(dict.fromkeys(spec.engines, lane))
        self._pools = PoolRouter([lane.pool for lane in self.lanes])
        self._host = build_host(settings, self._pools, store, index, stats, self._post)
        self._lifecycle = Lifecycle(timeout=settings.job_timeout, stats=stats)
        self._admission = Admission(settings.queue_limit, settings.max_wait)
        self._inflight: dict[str, asyncio.Future[TaskStatus]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._feeds: dict[str, Feed] = {}
        self._interest: dict[str, Interest] = {}
        self._draining = False
        metrics.watch_pools(lambda: [lane.figures() for lane in self.lanes], lambda: self._post.pending)

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
        self._post.shutdown()

    async def submit(self, job: Job, *, stream: bool = False) -> Submission:
        status = job.queued()
        if self._draining:
            raise NotReady("the service is shutting down", retry_after=5)
        while (running := self._inflight.get(job.task_id)) is not None:
            if not self._interest[job.task_id].cancelled:
                self._register(job.task_id, stream)
                # The board never expires an unfinished task, so the fallback is only for safety.
                return Submission(self._board.get(job.task_id) or status, merged=True)
            # Every listener left and it is stopping (a caller who hung up asks again): it ends
            # within a sentence, then this request starts the text afresh.
            await asyncio.shield(running)
        lane = self._lanes[job.spec.engine]
        if not lane.pool.live:
            raise EngineDown(
                f"engine {job.spec.engine} has no live slot ({lane.pool.state})",
                retry_after=2 if lane.pool.fatal is None else 30,
                details={"engine": job.spec.engine},
            )
        self._admission.admit(lane.pool.name, lane.depth, lane.pool.size, lane.job_time, self._post.load())
        self._board.put(status)
        self._feeds[job.task_id] = Feed()
        self._interest[job.task_id] = Interest()
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
        interest = self._interest[job.task_id]

        async def body() -> JobOutcome:
            if interest.cancelled:
                raise JobCancelled("every listener of this stream left before it started")
            work: asyncio.Future[JobOutcome] = asyncio.ensure_future(run_job(job, self._host, reporter))
            interest.work = work
            try:
                return await work
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if work.cancelled() and interest.cancelled and not (current and current.cancelling()):
                    raise JobCancelled("every listener of this stream left") from None
                raise

        try:
            ended = await self._lifecycle.run(job, reporter, body)
        except asyncio.CancelledError:  # shutdown grace over
            self._forget(job.task_id)
            raise
        if ended.outcome is not None:
            for name in ended.outcome.evicted:
                if (dropped := parse_object_name(name)) is not None:
                    self._recent.drop(*dropped)
        self._forget(job.task_id)
        done.set_result(ended.status)

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
            # Speaking: the slot stops at its next sentence or chunk; waiting for a slot: it leaves
            # the line at once, so the slot goes to other work.
            self._pools.cancel(task_id)
            if interest.work is not None:
                interest.work.cancel()

    async def wait(self, task_id: str) -> TaskStatus | None:
        running = self._inflight.get(task_id)
        if running is not None:
            return await asyncio.shield(running)
        return self._board.get(task_id)
