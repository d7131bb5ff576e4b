"""Distributed mode's job runner: a Celery task wrapping the one job body.

Late acknowledgement plus ``reject_on_worker_lost`` put a job back on the queue when the process
running it dies; a whole worker that vanishes has its unacknowledged jobs redelivered after
``TTSD_VISIBILITY_TIMEOUT``. Transient faults (object storage, Redis) are retried with back-off; a
bad request is not. Each engine process loads its engines once, after the fork.

(Celery's thread pool would let one process keep engine slots apart from post-processing as the
embedded mode does, but its Redis consumer does not survive a broker restart: kombu closes a
channel another thread already tore down and the worker exits. Prefork stays.)
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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown

from ..audio import Pcm16, fade
from ..backends import build_store, load_engines
from ..config import Settings
from ..engines import Engine
from ..errors import (
    BackendUnavailable,
    EngineCrashed,
    EngineUnavailable,
    JobCancelled,
    JobError,
    JobTimeout,
    StorageError,
    TtsdError,
)
from ..keys import audio_id
from ..logs import configure_logging
from ..state.base import Stage, TaskBoard, TaskError, TaskStatus
from ..state.claims import RedisClaims
from ..state.redis import (
    RedisCacheIndex,
    RedisJobStats,
    RedisTaskBoard,
    WorkerRegistry,
    connect,
    connect_async,
    redis_errors,
)
from ..state.redis_keys import RedisKeys
from .model import Job, JobOutcome, SentenceBatch
from .pool import BatchHook, BatchResult
from .synth import build_host, post_executor, run_job

log = logging.getLogger("ttsd.worker")

QUEUE = "ttsd"
TASK_NAME = "ttsd.synthesize"
# Deliveries of one job (the first, then redeliveries after its worker died) before it is failed for
# good, so a text that kills its engine cannot crash workers forever.
MAX_DELIVERIES = 4


def broker_queue_key(settings: Settings) -> str:
    """The Redis list holding the queue's pending messages (its length is the queue depth)."""
    return f"{settings.redis_prefix}:celery:{QUEUE}"


def make_celery(settings: Settings) -> Celery:
    app = Celery("ttsd", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Sweep for jobs of vanished workers often enough that they come back soon after the
            # visibility timeout, not minutes later (kombu's default is every 100 s).
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 5)),
            "unacked_restore_throttle": 1,
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # The task raises only when Redis stayed away too long; leaving the message unacknowledged
        # gets it redelivered instead of dropped. Every other failure is recorded and returns.
        task_acks_on_failure_or_timeout=False,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_concurrency=settings.engine_slots,
        worker_send_task_events=False,
    )
    return app


PCM_STREAM_TTL = 300


class RedisReporter:
    """Progress to the task board; master pieces to a Redis stream the listening API reads.

    Its calls are synchronous Redis round trips; the job body awaits them off the worker's event
    loop (``to_thread``), which other jobs share."""

    def __init__(self, board: TaskBoard, status: TaskStatus, client: redis.Redis, keys: RedisKeys) -> None:
        self._board = board
        self.status = status
        self._client = client
        self._keys = keys

    def put_stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        if stage is not self.status.stage:
            log.info(
                "job stage",
                extra={"task_id": self.status.task_id, "key": self.status.key, "stage": stage.value},
            )
        self.status = self.status.advance(stage, progress, **changes)
        self._board.put(self.status)

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        await asyncio.to_thread(self.put_stage, stage, progress, **changes)

    def _publish(self, fields: dict[str, bytes | str | int]) -> None:
        stream = self._keys.pcm(self.status.task_id)
        with redis_errors():
            pipe = self._client.pipeline(transaction=False)
            pipe.xadd(stream, fields)  # type: ignore[arg-type]
            pipe.expire(stream, PCM_STREAM_TTL)
            pipe.exists(self._keys.cancel(self.status.task_id))
            cancelled = pipe.execute()[-1]
        if cancelled:
            raise JobCancelled("every listener of this stream left")

    async def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        await asyncio.to_thread(self._publish, {"rate": sample_rate, "pcm": pcm.tobytes()})

    async def audio_end(self) -> None:
        await asyncio.to_thread(self._publish, {"end": 1})

    def error(self, exc: TtsdError) -> None:
        with contextlib.suppress(JobCancelled):
            self._publish({"error": exc.code, "message": exc.message})


class LocalSynthesizer:
    """The engine slot of one Celery worker process: its own engines, spoken on one thread so the
    event loop running the job body stores earlier sentences while the engine speaks the next."""

    def __init__(self, engines: dict[str, Engine], on_batch: BatchHook) -> None:
        self._engines = engines
        self._on_batch = on_batch
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ttsd-engine")

    async def synthesize(
        self,
        batch: SentenceBatch,
        on_sentence: Callable[[int, Any, int], None],
        on_start: Callable[[], None] | None = None,
    ) -> BatchResult:
        loop = asyncio.get_running_loop()
        spec = batch.spec
        engine, voice = self._engines[spec.engine], spec.voice_ref
        if on_start is not None:
            on_start()
        started = time.monotonic()
        spoken = 0.0
        try:
            for i, sentence in zip(batch.indices, batch.sentences, strict=True):
                began = time.monotonic()
                samples = await loop.run_in_executor(
                    self._thread,
                    functools.partial(engine.synthesize, sentence, voice, speed=spec.speed, seed=spec.seed),
                )
                spoken += time.monotonic() - began
                on_sentence(i, fade(samples, engine.sample_rate), engine.sample_rate)
        finally:
            held = time.monotonic() - started
            self._on_batch(batch, held, spoken)
        return BatchResult(held, spoken)


class WorkerRuntime:
    """What one Celery worker process holds: its engines (its slot), an event loop on which the job
    body runs, post-processing threads, backends and heartbeat. Built after the fork.

    The job body stores each sentence while the engine speaks the next; the process takes its next
    job once the text is encoded and stored (a Celery process is one slot). Embedded mode goes
    further: its slots are processes that only speak (``jobs.pool``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = RedisKeys(settings.redis_prefix)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self.broken: TtsdError | None = None

    def load(self) -> None:
        configure_logging(self.settings)
        os.nice(self.settings.engine_nice)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # Backends first: they make no connection yet, and a process whose engines fail to load
        # must still be able to fail its jobs clearly (and never announce itself as ready).
        self.client = connect(self.settings)
        self.store = build_store(self.settings)
        self.index = RedisCacheIndex(self.client, self.keys)
        self.board = RedisTaskBoard(self.client, self.keys, self.settings.task_ttl)
        self.stats = RedisJobStats(self.client, self.keys)
        self.registry = WorkerRegistry(self.client, self.keys)
        self.post = post_executor(self.settings)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="ttsd-jobs", daemon=True).start()
        try:
            engines = load_engines(self.settings)
        except TtsdError as exc:
            self.broken = exc
            log.error("engines failed to load", extra={"worker": self.name, "error": exc.message})
            return
        claims = RedisClaims(connect_async(self.settings), self.keys, self.name)
        synthesizer = LocalSynthesizer(engines, self._on_batch)
        self.host = build_host(
            self.settings, synthesizer, self.store, self.index, self.stats, self.post, claims
        )
        threading.Thread(target=self._heartbeat, name="ttsd-heartbeat", daemon=True).start()
        log.info("engine process ready", extra={"worker": self.name, "engines": list(engines)})

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
        """Run a job, retrying transient faults in place with back-off.

        Retrying in place, not through ``Task.retry``, matters: a retry is a new message, and when
        the broker is the thing that is down it cannot be published and the job would be dropped.
        Object storage gets ``TTSD_JOB_RETRIES`` attempts, then the job fails cleanly; Redis gets
        until half the visibility timeout, then the exception leaves the message unacknowledged
        and the broker hands it out again later."""
        job = Job.from_dict(payload)
        started = time.monotonic()
        delay = 1.0
        storage_failures = 0
        deliveries = 0
        while True:
            try:
                if not deliveries:
                    with redis_errors():
                        deliveries = int(self.client.incr(self.keys.deliveries(job.task_id)))
                        self.client.expire(
                            self.keys.deliveries(job.task_id), self.settings.visibility_timeout * 2
                        )
                self._run(job, deliveries)
                return
            except StorageError as exc:
                storage_failures += 1
                if storage_failures > self.settings.job_retries:
                    self._fail(job, None, exc)
                    return
                error: TtsdError = exc
            except BackendUnavailable as exc:
                if time.monotonic() - started > self.settings.visibility_timeout / 2:
                    raise
                error = exc
            log.warning("transient failure; retrying", extra={"task_id": job.task_id, "code": error.code})
            time.sleep(delay)
            delay = min(30.0, delay * 2)

    def _run(self, job: Job, deliveries: int) -> None:
        with redis_errors():
            self.client.zrem(self.keys.pending, job.task_id)  # received: the sweeper can stop watching
        status = self.board.get(job.task_id) or job.queued()
        reporter = RedisReporter(self.board, status, self.client, self.keys)
        with redis_errors():
            if self.client.exists(self.keys.cancel(job.task_id)):
                self._fail(
                    job, reporter, JobCancelled("every listener of this stream left before it started")
                )
                return
        if self.broken is not None:
            self._fail(
                job, reporter, EngineUnavailable(f"this worker could not load its engines: {self.broken}")
            )
            return
        if deliveries > MAX_DELIVERIES:
            self._fail(
                job, reporter, EngineCrashed("the engine process died on every attempt at this request")
            )
            return
        started = time.monotonic()
        self.registry.busy(self.name, True)
        try:
            outcome = self._attempt(job, reporter)
        finally:
            with contextlib.suppress(BackendUnavailable):
                self.registry.busy(self.name, False)
        if outcome is None:
            return
        self.registry.record_job_seconds(time.monotonic() - started)
        reporter.put_stage(Stage.DONE, 100, audio_id=audio_id(job.key, job.fmt))
        self._release(job)

    def _attempt(self, job: Job, reporter: RedisReporter) -> JobOutcome | None:
        """One run of the job body; a failure is recorded and gives None, transient faults raise."""
        try:
            return asyncio.run_coroutine_threadsafe(self._job(job, reporter), self.loop).result()
        except (StorageError, BackendUnavailable):
            raise
        except TtsdError as exc:
            self._fail(job, reporter, exc)
        except Exception:  # a fault boundary: one bad text must not take the worker down
            log.exception("job failed", extra={"task_id": job.task_id, "key": job.key})
            self._fail(job, reporter, JobError("the engine failed on this text"))
        return None

    async def _job(self, job: Job, reporter: RedisReporter) -> JobOutcome:
        try:
            return await asyncio.wait_for(run_job(job, self.host, reporter), self.settings.job_timeout)
        except TimeoutError as exc:
            # The engine thread may be hung inside native code, where nothing interrupts it: this
            # process is replaced once the failure is recorded, so the slot does not stay stuck.
            threading.Timer(1.0, os._exit, args=(1,)).start()
            raise JobTimeout(f"the job took longer than {self.settings.job_timeout:g} s") from exc

    def _fail(self, job: Job, reporter: RedisReporter | None, exc: TtsdError) -> None:
        """Never cached; the error stays on the task for polling clients."""
        log.warning("job failed", extra={"task_id": job.task_id, "key": job.key, "code": exc.code})
        if reporter is None:
            reporter = RedisReporter(
                self.board, self.board.get(job.task_id) or job.queued(), self.client, self.keys
            )
        reporter.error(exc)
        reporter.put_stage(
            Stage.FAILED, reporter.status.progress, error=TaskError(code=exc.code, message=exc.message)
        )
        self.stats.failed(exc.code)
        self._release(job)

    def _release(self, job: Job) -> None:
        with redis_errors():
            self.client.delete(
                self.keys.inflight(job.task_id),
                self.keys.deliveries(job.task_id),
                self.keys.listeners(job.task_id),
                self.keys.pinned(job.task_id),
                self.keys.cancel(job.task_id),
                self.keys.job(job.task_id),
            )
            self.client.zrem(self.keys.pending, job.task_id)


def make_worker_app(settings: Settings) -> Celery:
    """The Celery app for ``ttsd worker``: the task, bound to a per-process runtime."""
    app = make_celery(settings)
    runtime = WorkerRuntime(settings)

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def synthesize(payload: dict[str, Any]) -> None:
        runtime.run(payload)

    def on_process_init(**_: Any) -> None:
        runtime.load()

    def on_process_shutdown(**_: Any) -> None:
        runtime.shutdown()

    worker_process_init.connect(on_process_init, weak=False)
    worker_process_shutdown.connect(on_process_shutdown, weak=False)
    return app
