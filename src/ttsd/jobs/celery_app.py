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
import signal
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from redis.exceptions import LockError

from ..audio import Pcm16
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
from ..state.redis import (
    RedisCacheIndex,
    RedisJobStats,
    RedisTaskBoard,
    WorkerRegistry,
    connect,
    redis_errors,
)
from ..state.redis_keys import RedisKeys
from .model import Job, JobOutcome
from .synth import run_job

log = logging.getLogger("ttsd.worker")

QUEUE = "ttsd"
TASK_NAME = "ttsd.synthesize"
# Deliveries of one job (the first, then redeliveries after its worker died) before it is failed for
# good, so a text that kills its engine cannot crash workers forever.
MAX_DELIVERIES = 4
MASTER_LEASE_SECONDS = 5.0


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
        # Each attempt has its own deadline (``_deadline``); this hard limit is the backstop that
        # kills a process stuck where no signal reaches, after waits for Redis are allowed for.
        task_time_limit=settings.job_timeout + settings.visibility_timeout // 2 + 60,
    )
    return app


PCM_STREAM_TTL = 300


class RedisReporter:
    """Progress to the task board; master pieces to a Redis stream the listening API reads."""

    def __init__(self, board: TaskBoard, status: TaskStatus, client: redis.Redis, keys: RedisKeys) -> None:
        self._board = board
        self.status = status
        self._client = client
        self._keys = keys

    def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        if stage is not self.status.stage:
            log.info(
                "job stage",
                extra={"task_id": self.status.task_id, "key": self.status.key, "stage": stage.value},
            )
        self.status = self.status.advance(stage, progress, **changes)
        self._board.put(self.status)

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

    def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        self._publish({"rate": sample_rate, "pcm": pcm.tobytes()})

    def audio_end(self) -> None:
        self._publish({"end": 1})

    def error(self, exc: TtsdError) -> None:
        with contextlib.suppress(JobCancelled):
            self._publish({"error": exc.code, "message": exc.message})


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
        """A short lease, renewed while held: if its holder dies, the lease (not the job timeout)
        bounds how long the job's redelivery waits for it."""
        lock = self.client.lock(
            self.keys.master_lock(key),
            timeout=MASTER_LEASE_SECONDS,
            blocking_timeout=self.settings.job_timeout,
            thread_local=False,  # renewed from another thread
        )
        with redis_errors():
            acquired = lock.acquire()
        if not acquired:
            raise BackendUnavailable("timed out waiting for another worker to make this text's master")
        done = threading.Event()

        def renew() -> None:
            while not done.wait(MASTER_LEASE_SECONDS / 3):
                try:
                    lock.extend(MASTER_LEASE_SECONDS, replace_ttl=True)
                except (LockError, redis.RedisError):
                    return  # lost or Redis away: the lease lapses and another worker may proceed

        threading.Thread(target=renew, name="ttsd-lease", daemon=True).start()
        try:
            yield
        finally:
            done.set()
            with contextlib.suppress(LockError, redis.RedisError):
                lock.release()

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
        if outcome.synthesized:
            self.stats.synthesized(
                job.spec.engine, job.spec.voice, outcome.synthesis_seconds, outcome.audio_seconds
            )
        self.stats.encoded(job.fmt)
        self.registry.record_job_seconds(time.monotonic() - started)
        reporter.stage(Stage.DONE, 100, audio_id=audio_id(job.key, job.fmt))
        self._release(job)

    def _attempt(self, job: Job, reporter: RedisReporter) -> JobOutcome | None:
        """One run of the job body; a failure is recorded and gives None, transient faults raise."""
        try:
            with _deadline(self.settings.job_timeout):
                return run_job(
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
        except _AttemptTimeout:
            self._fail(
                job, reporter, JobTimeout(f"synthesis took longer than {self.settings.job_timeout:g} s")
            )
        except TtsdError as exc:
            self._fail(job, reporter, exc)
        except Exception:  # a fault boundary: one bad text must not take the worker down
            log.exception("job failed", extra={"task_id": job.task_id, "key": job.key})
            self._fail(job, reporter, JobError("the engine failed on this text"))
        return None

    def _fail(self, job: Job, reporter: RedisReporter | None, exc: TtsdError) -> None:
        """Never cached; the error stays on the task for polling clients."""
        log.warning("job failed", extra={"task_id": job.task_id, "key": job.key, "code": exc.code})
        if reporter is None:
            reporter = RedisReporter(
                self.board, self.board.get(job.task_id) or job.queued(), self.client, self.keys
            )
        reporter.error(exc)
        reporter.stage(
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


class _AttemptTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the engine after ``seconds``: the job fails with job_timeout, the slot is free.
    (Celery's own time limits count the whole task, retries and waits for Redis included.)"""

    def on_alarm(signum: int, frame: object) -> None:
        raise _AttemptTimeout

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


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
