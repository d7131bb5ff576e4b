"""Distributed mode's job runner: one worker node of one pool, in Celery's main process.

Its engine slots are processes that only speak (``jobs.slots``, the pool embedded mode uses);
consuming, leases, claims, reporting, storing and indexing run beside them, on this process's
event loop and post-processing stage. Celery runs with its solo pool: the task only hands a job to
this runner and returns once the node wants another (``accept``), so a job waits for each slot
when it frees, and the broker connection is never shared between threads (Celery's thread pool
was tried: its Redis consumer exits when the broker restarts). Work goes to idle nodes first: a node
whose slots all speak takes no more while another has one idle that no waiting job would fill,
and gives back a job waiting on it when another frees first (``idle``).

Every job a node takes is leased to it (``state.redis.leases``): the lease is taken on receipt and
renewed while Celery or this runner holds the job (``keeper.LeaseKeeper``); every write others can
see is fenced by it. Messages are acknowledged once the job is handed over: a node that dies,
freezes or is cut off stops renewing, its leases lapse after ``TTSD_JOB_LEASE``, and an API
process publishes those jobs again (``sweeper``). An engine process that dies is replaced and its
batch retried once on another, as in embedded mode.

The job runs through the one lifecycle (``jobs.lifecycle``), which retries transient faults in
place: object storage ``TTSD_JOB_RETRIES`` times, Redis up to the job timeout (then the run gives
up and its lease hands the job on once Redis is back). A bad request is not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ...config import Settings
from ...errors import BackendUnavailable, EngineCrashed, JobCancelled, StorageError
from ...links import Links
from ...pools import PoolSpec
from ...state.base import Stage, TaskStatus
from ...state.redis.claims import RedisClaims
from ...state.redis.client import connect, connect_async, redis_errors
from ...state.redis.index import RedisCacheIndex
from ...state.redis.keys import RedisKeys
from ...state.redis.leases import JobLeases, LeaseLost
from ...state.redis.registry import WorkerRegistry
from ...state.redis.stats import RedisJobStats
from ...store import build_store
from ..body import run_job
from ..host import build_host
from ..lifecycle import Lifecycle, Retries
from ..made import Tries
from ..model import EWMA_WEIGHT, Job, JobOutcome, SentenceBatch
from ..post import post_stage
from ..slots.pool import EnginePool
from .holding import Holding
from .idle import RECHECK, HandBack, IdleElsewhere
from .protocol import MAX_DELIVERIES, bookkeeping, lease_token, mark_ttl
from .reporter import RedisReporter

log = logging.getLogger("ttsd.worker")

Held = tuple[str, str]  # (task id, lease token)

# How often the node's busy slots are written for the API's figures (when they changed).
_BUSY_EVERY = 0.25


class WorkerRuntime:
    """One worker node of one pool: its engine processes, the event loop its jobs run on, the
    post-processing stage, backends and heartbeat. Built in Celery's main process (``load``)."""

    def __init__(
        self, settings: Settings, node: str, pool: PoolSpec, publish: Callable[[str, dict[str, Any]], None]
    ) -> None:
        self.settings = settings
        self._publish = publish  # a job again, to its engine's queue
        self.node = node
        self.pool = pool
        self.keys = RedisKeys(settings.redis_prefix)
        self.name = WorkerRegistry.member(pool.name, f"{socket.gethostname()}:{os.getpid()}")
        self._stop = threading.Event()
        self._room = threading.Condition()
        self._jobs: dict[Held, Future[None]] = {}
        self._queued: set[Held] = set()  # taken, and not yet given an engine slot
        self._holding = Holding(pool.slots, settings.held_audio_mb)  # what the node may hold
        self._draining = False

    def load(self) -> None:
        self.client = connect(self.settings)
        self.store = build_store(self.settings, Links.of(self.settings))
        self.index = RedisCacheIndex(self.client, self.keys)
        self.leases = JobLeases(self.client, self.keys, self.settings.job_lease, mark_ttl(self.settings))
        self.stats = RedisJobStats(self.client, self.keys)
        self.registry = WorkerRegistry(self.client, self.keys)
        self.post = post_stage(self.settings)
        self.lifecycle = Lifecycle(
            timeout=self.settings.job_timeout,
            stats=self.stats,
            retries=Retries(storage=self.settings.job_retries, backend_for=self.settings.job_timeout),
            passthrough=(LeaseLost,),
        )
        self.engines = EnginePool(
            self.settings, self.pool, on_batch=self._on_batch, gate=lambda: self.post.open
        )
        self.post.on_room(self.engines.wake)
        self.idle_elsewhere = IdleElsewhere(self.registry, self.name, self.settings, self.pool)
        self.hand_back = HandBack(
            self.leases,
            self._publish,
            full=lambda: self.engines.busy >= self.pool.slots,
            unspoken=self.engines.unspoken,
            idle_elsewhere=self.idle_elsewhere,
            given_back=lambda: self.stats.requeued("handed_back"),
        )
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="ttsd-jobs", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self.engines.start(), self.loop).result()
        asyncio.run_coroutine_threadsafe(self.hand_back.run(), self.loop)
        claims = RedisClaims(connect_async(self.settings), self.keys, self.name)
        self.host = build_host(
            self.settings, self.engines, self.store, self.index, self.stats, self.post, claims
        )
        threading.Thread(target=self._heartbeat, name="ttsd-heartbeat", daemon=True).start()
        threading.Thread(target=self._busy_gauge, name="ttsd-busy", daemon=True).start()

    # -- what Celery's task calls, on its consumer's thread ---------------------------------------

    def accept(self, payload: dict[str, Any]) -> None:
        """Take a job, then return once the node wants another: when fewer jobs wait here for an
        engine slot than it has slots (so each slot has its next job at hand when it frees), and
        it holds fewer than its bound."""
        job = Job.from_dict(payload)
        held = (job.task_id, lease_token(self.node, payload))
        with self._room:
            self._queued.add(held)
            future = asyncio.run_coroutine_threadsafe(self._handle(job, held, payload), self.loop)
            self._jobs[held] = future
        future.add_done_callback(lambda _: self._ended(held))
        with self._room:
            # Rechecked now and then: a warm shutdown's signal handler sets ``_draining`` without
            # taking this lock.
            while not self._room.wait_for(self._wants_another, timeout=0.5):
                pass
        # Every slot here speaking while another node has one idle that no job waiting in the broker
        # would fill: the next job is left to that node (here it would wait for a slot; ``idle``).
        while not self._draining and self.engines.busy >= self.pool.slots and self.idle_elsewhere():
            time.sleep(RECHECK)

    def _wants_another(self) -> bool:
        slots = self.pool.slots
        return self._draining or (len(self._queued) < slots and not self._holding.full(len(self._jobs)))

    def held(self) -> set[Held]:
        """The jobs this node runs (for the lease keeper: it renews them after Celery let go)."""
        with self._room:
            return set(self._jobs)

    def _started(self, held: Held, tries: Tries | None = None, stage: Stage | None = None) -> None:
        if stage is Stage.QUEUED:
            return
        with self._room:
            # Room comes of a job leaving the queue or weighing less, never of a sentence arriving.
            if held in self._queued or stage is not Stage.SYNTHESIZING:
                self._room.notify_all()
            self._queued.discard(held)
            if tries is not None and stage is not None:
                self._holding.weigh(held, tries, stage)

    def _ended(self, held: Held) -> None:
        with self._room:
            self._queued.discard(held)
            self._holding.release(held)
            self._jobs.pop(held, None)
            self._room.notify_all()

    def stop_taking(self) -> None:
        """A warm shutdown began (in a signal handler: no lock taken): the task waiting for room
        returns, so Celery can stop consuming."""
        self._draining = True

    def drain(self) -> None:
        """Warm shutdown: let the jobs taken finish (up to ``TTSD_SHUTDOWN_GRACE``); the lease
        keeper hands on whatever is left."""
        with self._room:
            self._draining = True
            self._room.notify_all()
            jobs = list(self._jobs.values())
        if jobs:
            log.info("draining taken jobs", extra={"worker": self.name, "jobs": len(jobs)})
        deadline = time.monotonic() + self.settings.shutdown_grace
        for future in jobs:
            with contextlib.suppress(Exception):
                future.result(timeout=max(0.0, deadline - time.monotonic()))
        self._stop.set()
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.engines.stop(), self.loop).result(timeout=10)
        with contextlib.suppress(BackendUnavailable):
            self.registry.leave(self.name, self.pool.slots)

    # -- the node's figures for the API ------------------------------------------------------------

    def _on_batch(self, batch: SentenceBatch, busy_seconds: float, synthesis_seconds: float) -> None:
        self.post.submit(self._record, batch, busy_seconds, synthesis_seconds)

    def _record(self, batch: SentenceBatch, busy_seconds: float, synthesis_seconds: float) -> None:
        """The batch's engine time, and the slot time per job that all workers average (as
        embedded mode's admission and Retry-After divide the queue by it), in one round trip."""
        with contextlib.suppress(BackendUnavailable), self.stats.together():
            self.stats.engine_time(batch.spec.engine, batch.spec.voice, busy_seconds, synthesis_seconds)
            self.stats.slot_time(batch.spec.engine, busy_seconds, EWMA_WEIGHT)

    def _heartbeat(self) -> None:
        """One registry member per slot: what the API counts as this pool's live slots. A slot
        whose process is being replaced still counts (as embedded mode admits to it): the jobs
        sent meanwhile wait for the replacement, where otherwise a reload longer than the
        registry's staleness would turn every API's new jobs away."""
        while not self._stop.is_set():
            with contextlib.suppress(BackendUnavailable), redis_errors():
                if self.engines.live:
                    self.registry.beat(self.name, self.pool.slots)
            self._stop.wait(WorkerRegistry.HEARTBEAT_SECONDS)

    def _busy_gauge(self) -> None:
        """Busy slots as they change (and at every heartbeat, so a slot busy for long is not
        taken for a dead one's)."""
        written, at = 0, 0.0
        while not self._stop.wait(_BUSY_EVERY):
            busy = self.engines.busy
            if busy != written or (busy and time.monotonic() - at > WorkerRegistry.HEARTBEAT_SECONDS):
                with contextlib.suppress(BackendUnavailable):
                    self.registry.set_busy(self.name, busy, self.pool.slots)
                    written, at = busy, time.monotonic()

    # -- one job, on the event loop ----------------------------------------------------------------

    async def _handle(self, job: Job, held: Held, payload: dict[str, Any]) -> None:
        """Run one delivery of a job under its lease. A delivery whose lease another worker holds,
        or lost to one meanwhile, ends without a trace."""
        task_id, token = held
        try:
            begun = await self.lifecycle.retrying(lambda: asyncio.to_thread(self._begin, job, token))
            if begun is None:
                return
            reporter, deliveries, cancelled = begun
            tries = Tries()
            reporter.on_stage = functools.partial(self._started, held, tries)
            body = functools.partial(self._body, job, reporter, deliveries, cancelled, tries, held)
            self.hand_back.begun(held, reporter)
            try:
                await self.lifecycle.run(job, reporter, body)
            except asyncio.CancelledError:
                if not self.hand_back.giving(held):
                    raise
                await self.hand_back.give_back(held, payload)
                return
            finally:
                self.hand_back.ended(held)
            await self.lifecycle.retrying(lambda: asyncio.to_thread(self._release, job, token))
        except LeaseLost:
            log.warning("job handed to another worker meanwhile; stopping", extra={"task_id": task_id})
        except BackendUnavailable:
            log.warning(
                "Redis away past the job timeout; its lease hands the job on", extra={"task_id": task_id}
            )
        except Exception:  # a fault boundary: the node must outlive any one job
            log.exception("job run failed", extra={"task_id": task_id})

    def _begin(self, job: Job, token: str) -> tuple[RedisReporter, int, bool] | None:
        deliveries, stored, cancelled = self.leases.begin(job.task_id, token)
        if deliveries is None:
            log.info("job leased to another worker; dropping this delivery", extra={"task_id": job.task_id})
            return None
        status = job.queued() if stored is None else TaskStatus.model_validate_json(stored)
        if status.finished:
            # A late duplicate (the broker's last-resort redelivery) of a job already finished.
            self.leases.release(job.task_id, token)
            return None
        reporter = RedisReporter(self.leases, token, status, deliveries, self.settings.task_ttl)
        return reporter, deliveries, cancelled

    async def _body(
        self, job: Job, reporter: RedisReporter, deliveries: int, cancelled: bool, tries: Tries, held: Held
    ) -> JobOutcome:
        # Why this delivery must fail before it starts, if it must: inside the run, so it fails
        # as any job does.
        if cancelled:
            raise JobCancelled("every listener of this stream left before it started")
        if deliveries > MAX_DELIVERIES:
            raise EngineCrashed(f"the worker running this request died on each of {MAX_DELIVERIES} attempts")
        try:
            return await run_job(job, self.host, reporter, tries)
        except StorageError:
            self._started(held)  # it waits for storage, not for a slot: the node takes other work
            raise

    def _release(self, job: Job, token: str) -> None:
        self.leases.release(job.task_id, token, forget=bookkeeping(self.keys, job.task_id))
