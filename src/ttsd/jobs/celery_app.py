"""Distributed mode's job runner: a Celery task wrapping the one job body.

Late acknowledgement plus ``reject_on_worker_lost`` put a job back on the queue when the process
running it dies; a whole worker that vanishes has its unacknowledged jobs redelivered after
``TTSD_VISIBILITY_TIMEOUT``. Transient faults (object storage, Redis) are retried with back-off; a
bad request is not. Each engine process loads its engines once, after the fork.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init, worker_process_shutdown

from ..audio import Pcm16
from ..backends import build_store, load_engines
from ..config import Settings
from ..engines import Engine
from ..errors import (
    BackendUnavailable,
    EngineCrashed,
    EngineUnavailable,
    JobError,
    JobTimeout,
    StorageError,
    TtsdError,
)
from ..keys import audio_id
from ..logs import configure_logging
from ..state.base import Stage, Status, TaskBoard, TaskError, TaskStatus
from ..state.redis import (
    RedisCacheIndex,
    RedisJobStats,
    RedisTaskBoard,
    WorkerRegistry,
    connect,
    redis_errors,
)
from ..state.redis_keys import RedisKeys
from .model import Job
from .synth import run_job

log = logging.getLogger("ttsd.worker")

QUEUE = "ttsd"
TASK_NAME = "ttsd.synthesize"
# Redeliveries after crashes (on top of retries) before a job is failed for good, so a text that
# kills its engine cannot crash workers forever.
MAX_CRASHES = 3


def broker_queue_key(settings: Settings) -> str:
    """The Redis list holding the queue's pending messages (its length is the queue depth)."""
    return f"{settings.redis_prefix}:celery:{QUEUE}"


def make_celery(settings: Settings) -> Celery:
    app = Celery("ttsd", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_concurrency=settings.engine_slots,
        worker_send_task_events=False,
        # A slow job is failed (soft limit); a hung engine is killed and its process replaced (hard).
        task_soft_time_limit=settings.job_timeout,
        task_time_limit=settings.job_timeout + 15,
    )
    return app


class RedisReporter:
    def __init__(self, board: TaskBoard, status: TaskStatus) -> None:
        self._board = board
        self.status = status

    def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        self.status = self.status.advance(stage, progress, **changes)
        self._board.put(self.status)

    def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        pass  # streaming to the API arrives with the streaming endpoints


class WorkerRuntime:
    """What one engine process holds: engines, backends and its heartbeat. Built after the fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = RedisKeys(settings.redis_prefix)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._engines: dict[str, Engine] = {}
        self._stop = threading.Event()
        self.broken: TtsdError | None = None

    def load(self) -> None:
        configure_logging(self.settings)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        # Backends first: they make no connection yet, and a process whose engines fail to load
        # must still be able to fail its jobs clearly (and never announce itself as ready).
        self.client = connect(self.settings)
        self.store = build_store(self.settings)
        self.index = RedisCacheIndex(self.client, self.keys)
        self.board = RedisTaskBoard(self.client, self.keys, self.settings.task_ttl)
        self.stats = RedisJobStats(self.client, self.keys)
        self.registry = WorkerRegistry(self.client, self.keys)
        try:
            self._engines = load_engines(self.settings)
        except TtsdError as exc:
            self.broken = exc
            log.error("engines failed to load", extra={"worker": self.name, "error": exc.message})
            return
        threading.Thread(target=self._heartbeat, name="ttsd-heartbeat", daemon=True).start()
        log.info("engine process ready", extra={"worker": self.name, "engines": list(self._engines)})

    def _heartbeat(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(BackendUnavailable), redis_errors():
                self.registry.beat(self.name)
            self._stop.wait(WorkerRegistry.HEARTBEAT_SECONDS)

    def shutdown(self) -> None:
        self._stop.set()
        with contextlib.suppress(BackendUnavailable, AttributeError):
            self.registry.leave(self.name)

    @contextlib.contextmanager
    def master_lock(self, key: str) -> Iterator[None]:
        timeout = self.settings.job_timeout
        lock = self.client.lock(self.keys.master_lock(key), timeout=timeout, blocking_timeout=timeout)
        with redis_errors():
            acquired = lock.acquire()
        if not acquired:
            raise BackendUnavailable("timed out waiting for another worker to make this text's master")
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # expired or Redis gone: the lock times out by itself
                lock.release()

    def run(self, task: Task, payload: dict[str, Any]) -> None:
        job = Job.from_dict(payload)
        try:
            self._run(task, job)
        except (StorageError, BackendUnavailable) as exc:
            retries = self.settings.job_retries
            if task.request.retries < retries:
                log.warning("transient failure; retrying", extra={"task_id": job.task_id, "code": exc.code})
                countdown = min(30, 2**task.request.retries)
                raise task.retry(exc=exc, countdown=countdown, max_retries=retries) from exc
            with contextlib.suppress(BackendUnavailable):
                self._fail(job, None, exc)

    def _run(self, task: Task, job: Job) -> None:
        with redis_errors():
            deliveries = int(self.client.incr(self.keys.deliveries(job.task_id)))
            self.client.expire(self.keys.deliveries(job.task_id), self.settings.visibility_timeout * 2)
        status = self.board.get(job.task_id) or _queued(job)
        reporter = RedisReporter(self.board, status)
        if self.broken is not None:
            self._fail(
                job, reporter, EngineUnavailable(f"this worker could not load its engines: {self.broken}")
            )
            return
        if deliveries > self.settings.job_retries + MAX_CRASHES:
            self._fail(
                job, reporter, EngineCrashed("the engine process died on every attempt at this request")
            )
            return
        started = time.monotonic()
        try:
            outcome = run_job(
                job,
                self._engines,
                self.store,
                self.index,
                reporter,
                cache_ttl=self.settings.cache_ttl,
                cache_max_bytes=self.settings.cache_max_bytes,
                master_lock=self.master_lock,
            )
        except (StorageError, BackendUnavailable):
            raise
        except SoftTimeLimitExceeded:
            self._fail(
                job, reporter, JobTimeout(f"synthesis took longer than {self.settings.job_timeout:g} s")
            )
            return
        except TtsdError as exc:
            self._fail(job, reporter, exc)
            return
        except Exception:  # a fault boundary: one bad text must not take the worker down
            log.exception("job failed", extra={"task_id": job.task_id, "key": job.key})
            self._fail(job, reporter, JobError("the engine failed on this text"))
            return
        if outcome.synthesized:
            self.stats.synthesized(
                job.spec.engine, job.spec.voice, outcome.synthesis_seconds, outcome.audio_seconds
            )
        self.stats.encoded(job.fmt)
        self.registry.record_job_seconds(time.monotonic() - started)
        reporter.stage(Stage.DONE, 100, audio_id=audio_id(job.key, job.fmt))
        self._release(job)

    def _fail(self, job: Job, reporter: RedisReporter | None, exc: TtsdError) -> None:
        """Never cached; the error stays on the task for polling clients."""
        log.warning("job failed", extra={"task_id": job.task_id, "key": job.key, "code": exc.code})
        if reporter is None:
            reporter = RedisReporter(self.board, self.board.get(job.task_id) or _queued(job))
        reporter.stage(
            Stage.FAILED, reporter.status.progress, error=TaskError(code=exc.code, message=exc.message)
        )
        self.stats.failed(exc.code)
        self._release(job)

    def _release(self, job: Job) -> None:
        with redis_errors():
            self.client.delete(self.keys.inflight(job.task_id), self.keys.deliveries(job.task_id))


def _queued(job: Job) -> TaskStatus:
    now = time.time()
    return TaskStatus(
        task_id=job.task_id,
        status=Status.QUEUED,
        stage=Stage.QUEUED,
        key=job.key,
        format=job.fmt,
        created_at=now,
        updated_at=now,
    )


def make_worker_app(settings: Settings) -> Celery:
    """The Celery app for ``ttsd worker``: the task, bound to a per-process runtime."""
    app = make_celery(settings)
    runtime = WorkerRuntime(settings)

    @app.task(name=TASK_NAME, bind=True, max_retries=settings.job_retries)  # type: ignore[untyped-decorator]
    def synthesize(self: Task, payload: dict[str, Any]) -> None:
        runtime.run(self, payload)

    def on_process_init(**_: Any) -> None:
        runtime.load()

    def on_process_shutdown(**_: Any) -> None:
        runtime.shutdown()

    worker_process_init.connect(on_process_init, weak=False)
    worker_process_shutdown.connect(on_process_shutdown, weak=False)
    return app
