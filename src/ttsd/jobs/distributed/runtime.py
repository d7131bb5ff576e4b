"""Distributed mode's job runner: what one Celery worker process holds and how it runs a job.

Every job a worker receives is leased to it (``state.redis.leases``): the worker's main process
takes the lease on receipt and renews it while Celery holds the job (``keeper.LeaseKeeper``); its
engine process runs the job under the same token, and every write others can see is fenced by it.
A job whose process dies is given up at once; one whose whole worker is killed, frozen or cut off
lapses after ``TTSD_JOB_LEASE``; either way an API process publishes it again (``sweeper``).
Messages are acknowledged when the run ends, however it ends: redelivery is the leases' business,
and the broker's visibility timeout is only a last resort whose late duplicates are dropped.

The job runs through the one lifecycle (``jobs.lifecycle``), which retries transient faults in
place: object storage ``TTSD_JOB_RETRIES`` times, Redis up to the job timeout (then the run gives
up and its lease hands the job on once Redis is back). A bad request is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

from ...config import Settings
from ...engines import load_engines
from ...errors import BackendUnavailable, EngineCrashed, EngineUnavailable, JobCancelled, TtsdError
from ...links import Links
from ...logs import configure_logging
from ...pools import PoolSpec
from ...state.redis.board import RedisTaskBoard
from ...state.redis.claims import RedisClaims
from ...state.redis.client import connect, connect_async, redis_errors
from ...state.redis.index import RedisCacheIndex
from ...state.redis.keys import RedisKeys
from ...state.redis.leases import JobLeases, LeaseLost
from ...state.redis.registry import WorkerRegistry
from ...state.redis.stats import RedisJobStats
from ...store import build_store
from ..admission import JobTime
from ..body import run_job
from ..host import JobHost, build_host
from ..lifecycle import Lifecycle, Retries
from ..model import Job, JobOutcome, SentenceBatch
from ..post import post_stage
from .protocol import MAX_DELIVERIES, bookkeeping, lease_token, mark_ttl
from .reporter import RedisReporter
from .slot import ThreadSlot

log = logging.getLogger("ttsd.worker")


class WorkerRuntime:
    """One Celery worker process: its engines (its slot, on a thread), an event loop on which the
    job body runs, post-processing threads, backends and heartbeat. Built after the fork (``load``).

    The job body stores each sentence while the engine speaks the next; the process takes its next
    job once the text is encoded and stored (a Celery process is one slot). Embedded mode goes
    further: its slots are processes that only speak (``jobs.embedded``)."""

    def __init__(self, settings: Settings, node: str, pool: PoolSpec) -> None:
        self.settings = settings
        self.node = node
        self.pool = pool
        self.keys = RedisKeys(settings.redis_prefix)
        self.name = WorkerRegistry.member(pool.name, f"{socket.gethostname()}:{os.getpid()}")
        self._stop = threading.Event()
        self.broken: TtsdError | None = None
        self.host: JobHost | None = None

    def load(self, device_index: int = 0) -> None:
        configure_logging(self.settings)
        os.nice(self.settings.engine_nice)
        self.name = WorkerRegistry.member(self.pool.name, f"{socket.gethostname()}:{os.getpid()}")
        device = self.pool.device(device_index)
        # Backends first: they make no connection yet, and a process whose engines fail to load
        # must still be able to fail its jobs clearly (and never announce itself as ready).
        self.client = connect(self.settings)
        self.store = build_store(self.settings, Links.of(self.settings))
        self.index = RedisCacheIndex(self.client, self.keys)
        self.board = RedisTaskBoard(self.client, self.keys, self.settings.task_ttl)
        self.leases = JobLeases(self.client, self.keys, self.settings.job_lease, mark_ttl(self.settings))
        self.stats = RedisJobStats(self.client, self.keys)
        self.registry = WorkerRegistry(self.client, self.keys)
        self.post = post_stage(self.settings)
        self.lifecycle = Lifecycle(
            timeout=self.settings.job_timeout,
            stats=self.stats,
            retries=Retries(storage=self.settings.job_retries, backend_for=self.settings.job_timeout),
            on_timeout=self._replace_process,
            passthrough=(LeaseLost,),
        )
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="ttsd-jobs", daemon=True).start()
        try:
            engines = load_engines(self.settings, self.pool.engines, device)
        except TtsdError as exc:
            self.broken = exc
            log.error("engines failed to load", extra={"worker": self.name, "error": exc.message})
            return
        claims = RedisClaims(connect_async(self.settings), self.keys, self.name)
        slot = ThreadSlot(engines, self._on_batch)
        self.host = build_host(self.settings, slot, self.store, self.index, self.stats, self.post, claims)
        threading.Thread(target=self._heartbeat, name="ttsd-heartbeat", daemon=True).start()
        log.info(
            "engine process ready", extra={"worker": self.name, "pool": self.pool.name, "device": device}
        )

    @staticmethod
    def _replace_process() -> None:
        # The engine thread may be hung inside native code, where nothing interrupts it: this
        # process is replaced once the failure is recorded, so the slot does not stay stuck.
        threading.Timer(1.0, os._exit, args=(1,)).start()

    def _on_batch(self, batch: SentenceBatch, busy_seconds: float, synthesis_seconds: float) -> None:
        self.post.submit(self._record, batch, busy_seconds, synthesis_seconds)

    def _record(self, batch: SentenceBatch, busy_seconds: float, synthesis_seconds: float) -> None:
        with contextlib.suppress(BackendUnavailable):
            self.stats.engine_time(batch.spec.engine, batch.spec.voice, busy_seconds, synthesis_seconds)

    def _heartbeat(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(BackendUnavailable), redis_errors():
                self.registry.beat(self.name)
            self._stop.wait(WorkerRegistry.HEARTBEAT_SECONDS)

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(BackendUnavailable, AttributeError):
            self.registry.leave(self.name)

    def run(self, payload: dict[str, Any]) -> None:
        """The Celery task's body: the job on this process's event loop, until it ends."""
        asyncio.run_coroutine_threadsafe(self.handle(payload), self.loop).result()

    async def handle(self, payload: dict[str, Any]) -> None:
        """Run one delivery of a job under its lease. A delivery whose lease another worker holds,
        or lost to one meanwhile, ends without a trace."""
        job = Job.from_dict(payload)
        token = lease_token(self.node, payload)
        try:
            begun = await self.lifecycle.retrying(lambda: asyncio.to_thread(self._begin, job, token))
            if begun is None:
                return
            reporter, deliveries = begun
            await self.lifecycle.run(job, reporter, lambda: self._body(job, reporter, deliveries))
            await self.lifecycle.retrying(lambda: asyncio.to_thread(self._release, job, token))
        except LeaseLost:
            log.warning("job handed to another worker meanwhile; stopping", extra={"task_id": job.task_id})

    def _begin(self, job: Job, token: str) -> tuple[RedisReporter, int] | None:
        deliveries = self.leases.acquire(job.task_id, token)
        if deliveries is None:
            log.info("job leased to another worker; dropping this delivery", extra={"task_id": job.task_id})
            return None
        status = self.board.get(job.task_id) or job.queued()
        if status.finished:
            # A late duplicate (the broker's last-resort redelivery) of a job already finished.
            self.leases.release(job.task_id, token)
            return None
        return RedisReporter(self.leases, token, status, deliveries, self.settings.task_ttl), deliveries

    async def _body(self, job: Job, reporter: RedisReporter, deliveries: int) -> JobOutcome:
        await asyncio.to_thread(self._check, job, deliveries)
        assert self.host is not None
        started = time.monotonic()
        await asyncio.to_thread(self.registry.busy, self.name, True)
        try:
            outcome = await run_job(job, self.host, reporter)
        finally:
            with contextlib.suppress(BackendUnavailable):
                await asyncio.to_thread(self.registry.busy, self.name, False)
        await asyncio.to_thread(self._record_job_seconds, job.spec.engine, time.monotonic() - started)
        return outcome

    def _check(self, job: Job, deliveries: int) -> None:
        """Why this delivery must fail before it starts, if it must."""
        with redis_errors():
            if self.client.exists(self.keys.cancel(job.task_id)):
                raise JobCancelled("every listener of this stream left before it started")
        if self.broken is not None:
            raise EngineUnavailable(f"this worker could not load its engines: {self.broken}")
        if deliveries > MAX_DELIVERIES:
            raise EngineCrashed(
                f"the engine process died on each of {MAX_DELIVERIES} attempts at this request"
            )

    def _record_job_seconds(self, engine: str, seconds: float) -> None:
        """A moving average shared by all workers, for the API's admission and Retry-After."""
        name = self.keys.job_seconds(engine)
        with redis_errors():
            raw = self.client.get(name)
            job_time = JobTime(float(raw) if raw else None)
            job_time.observe(seconds)
            self.client.set(name, job_time.seconds or seconds, ex=86400)

    def _release(self, job: Job, token: str) -> None:
        with redis_errors():
            self.client.delete(*bookkeeping(self.keys, job.task_id))
            self.client.zrem(self.keys.pending, job.task_id)
        self.leases.release(job.task_id, token)
