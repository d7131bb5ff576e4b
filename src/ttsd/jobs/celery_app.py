"""Distributed mode's job runner: a Celery task wrapping the one job body.

Every job a worker receives is leased to it (``state.leases``): the worker's main process takes the
lease on receipt and renews it while Celery holds the job, started or not (``LeaseKeeper``); its
engine process runs the job under the same token, and every write others can see is fenced by it.
A job whose process dies is given up at once; one whose whole worker is killed, frozen or cut off
lapses after ``TTSD_JOB_LEASE``; either way an API process publishes it again. Messages are
acknowledged when the run ends, however it ends: redelivery is the leases' business, and the
broker's visibility timeout is only a last resort whose late duplicates are dropped.

Transient faults (object storage, Redis) are retried with back-off; a bad request is not. Each
engine process loads its engines once, after the fork.

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
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import billiard.process
from celery import Celery
from celery.exceptions import WorkerLostError
from celery.signals import (
    task_failure,
    task_received,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from celery.worker import state as celery_state

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
from ..pools import PoolSpec
from ..state.base import Stage, TaskError, TaskStatus
from ..state.claims import RedisClaims
from ..state.leases import JobLeases, LeaseLost
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

TASK_NAME = "ttsd.synthesize"
# Deliveries of one job (the first, then redeliveries after its worker died) before it is failed for
# good, so a text that kills its engine cannot crash workers forever.
MAX_DELIVERIES = 4
# Back-off between in-place retries of a job that met a transient fault.
_RETRY_FIRST, _RETRY_MAX = 1.0, 10.0


def mark_ttl(settings: Settings) -> int:
    """How long a job's bookkeeping (single-flight mark, payload, lease token, delivery count) may
    live: every delivery it may get, each up to the job timeout, and some queueing."""
    return int(settings.job_timeout * (MAX_DELIVERIES + 1)) + 600


def publication(payload: dict[str, Any]) -> dict[str, Any]:
    """The message for one publication of a job: a fresh id, so each delivery's lease token is
    its own and a worker holding an older one is fenced out."""
    return {**payload, "publication": secrets.token_hex(8)}


def lease_token(node: str, payload: dict[str, Any]) -> str:
    return f"{node}/{payload.get('publication', '-')}"


def queue_name(engine: str) -> str:
    """Each engine has its own queue: a backlog for one never delays another's jobs, and a worker
    consumes only the queues of the engines its pool hosts."""
    return f"ttsd.{engine}"


def broker_queue_key(settings: Settings, engine: str) -> str:
    """The Redis list holding an engine queue's pending messages (its length is the depth)."""
    return f"{settings.redis_prefix}:celery:{queue_name(engine)}"


def make_celery(settings: Settings, slots: int = 1) -> Celery:
    app = Celery("ttsd", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
            "socket_timeout": 5,
            "socket_connect_timeout": 2,
        },
        broker_connection_retry_on_startup=True,
        # Acknowledged when the run ends, whatever the outcome, a lost process included: a job that
        # did not finish is handed on through its lease (``LeaseKeeper``), not by the broker.
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        task_acks_on_failure_or_timeout=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_concurrency=slots,
        worker_send_task_events=False,
    )
    return app


PCM_STREAM_TTL = 300


class RedisReporter:
    """Progress to the task board; the master's sentences to a Redis stream the listening API reads.

    Both writes are fenced by the delivery's lease token: once the job has been handed to another
    worker they raise ``LeaseLost`` and change nothing. They are synchronous Redis round trips; the
    job body awaits them off the worker's event loop (``to_thread``), which other jobs share."""

    def __init__(
        self, leases: JobLeases, token: str, status: TaskStatus, attempt: int, task_ttl: int
    ) -> None:
        self._leases = leases
        self._token = token
        self.status = status
        self._attempt = attempt
        self._task_ttl = task_ttl

    def put_stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        status = self.status.advance(stage, progress, **changes)
        self._leases.put_status(self._token, status, self._task_ttl)
        if stage is not self.status.stage:
            log.info("job stage", extra={"task_id": status.task_id, "key": status.key, "stage": stage.value})
        self.status = status

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        await asyncio.to_thread(self.put_stage, stage, progress, **changes)

    def _publish(self, fields: dict[str, bytes | str | int]) -> None:
        # The attempt lets a listener that heard part of an earlier delivery skip what it heard.
        fields = {"attempt": self._attempt, **fields}
        if self._leases.publish(self.status.task_id, self._token, fields, PCM_STREAM_TTL):
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


class LeaseKeeper:
    """The worker node's side of the leases, in Celery's main process: a lease is taken when a job
    is received (so a job waiting for a free process is covered too) and renewed every fifth of
    ``TTSD_JOB_LEASE`` while Celery holds the request. When Celery lets go of a request that did
    not finish its job (its process died, or the run gave up on Redis), the lease is given up at
    once. When the whole worker dies or freezes, nothing renews and the lease lapses by itself."""

    def __init__(self, settings: Settings, node: str) -> None:
        self._settings = settings
        self._node = node
        # (task id, token) -> whether the lease was taken (Redis may have been away at receipt).
        self._held: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()
        self._leases: JobLeases | None = None
        self._stop = threading.Event()

    @property
    def leases(self) -> JobLeases:
        if self._leases is None:
            keys = RedisKeys(self._settings.redis_prefix)
            self._leases = JobLeases(
                connect(self._settings), keys, self._settings.job_lease, mark_ttl(self._settings)
            )
        return self._leases

    def _token(self, request: Any) -> str:
        args = request.args or [{}]
        return lease_token(self._node, args[0] if isinstance(args[0], dict) else {})

    def received(self, request: Any, **_: Any) -> None:
        """In the consumer's thread, before the request is handed to a process."""
        held = (request.id, self._token(request))
        try:
            taken = self.leases.acquire(*held) is not None
        except BackendUnavailable:
            taken = False  # taken at the next beat, or by the engine process when it starts the job
        with self._lock:
            self._held[held] = taken

    def failed(self, task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
        if isinstance(exception, WorkerLostError) and task_id is not None:
            self._renew()  # hands the lost process's job on now rather than at the next beat

    def start(self, **_: Any) -> None:
        threading.Thread(target=self._run, name="ttsd-leases", daemon=True).start()

    def stop(self, **_: Any) -> None:
        """Warm shutdown: jobs still held and not finished are handed on now."""
        self._stop.set()
        with self._lock:
            held, self._held = list(self._held), {}
        for task_id, token in held:
            with contextlib.suppress(BackendUnavailable):
                self.leases.lapse(task_id, token)

    def _requests(self) -> set[tuple[str, str]]:
        while True:
            try:  # Celery's consumer thread changes this set as we read it
                return {(r.id, self._token(r)) for r in list(celery_state.reserved_requests)}
            except RuntimeError:
                continue

    def _renew(self) -> None:
        live = self._requests()
        with self._lock:
            held = list(self._held.items())
        for (task_id, token), taken in held:
            try:
                if (task_id, token) not in live:
                    # Celery let go: a finished run released the lease already (this is a no-op);
                    # an unfinished one is handed on at the next sweep.
                    self.leases.lapse(task_id, token)
                elif taken and self.leases.renew(task_id, token):
                    continue
                elif not taken and self.leases.acquire(task_id, token) is not None:
                    with self._lock:
                        self._held[(task_id, token)] = True
                    continue
                # Else lost (handed on while this worker was away: never taken back) or held by
                # another delivery: its process will find so and drop it.
            except BackendUnavailable:
                continue  # keep it and try again at the next beat
            with self._lock:
                self._held.pop((task_id, token), None)

    def _run(self) -> None:
        interval = self._settings.job_lease / 5
        while not self._stop.wait(interval):
            try:
                self._renew()
            except Exception:  # the keeper must outlive any one bad beat
                log.exception("lease renewal failed")


class WorkerRuntime:
    """What one Celery worker process holds: its engines (its slot), an event loop on which the job
    body runs, post-processing threads, backends and heartbeat. Built after the fork.

    The job body stores each sentence while the engine speaks the next; the process takes its next
    job once the text is encoded and stored (a Celery process is one slot). Embedded mode goes
    further: its slots are processes that only speak (``jobs.pool``)."""

    def __init__(self, settings: Settings, node: str, pool: PoolSpec) -> None:
        self.settings = settings
        self.node = node
        self.pool = pool
        self.keys = RedisKeys(settings.redis_prefix)
        self.name = WorkerRegistry.member(pool.name, f"{socket.gethostname()}:{os.getpid()}")
        self._stop = threading.Event()
        self.broken: TtsdError | None = None

    def load(self) -> None:
        configure_logging(self.settings)
        os.nice(self.settings.engine_nice)
        self.name = WorkerRegistry.member(self.pool.name, f"{socket.gethostname()}:{os.getpid()}")
        # billiard numbers its processes 0..concurrency-1, and a replacement takes the number of
        # the one it replaces: so each slot keeps its device.
        device = self.pool.device(getattr(billiard.process.current_process(), "index", 0))
        # Backends first: they make no connection yet, and a process whose engines fail to load
        # must still be able to fail its jobs clearly (and never announce itself as ready).
        self.client = connect(self.settings)
        self.store = build_store(self.settings)
        self.index = RedisCacheIndex(self.client, self.keys)
        self.board = RedisTaskBoard(self.client, self.keys, self.settings.task_ttl)
        self.leases = JobLeases(self.client, self.keys, self.settings.job_lease, mark_ttl(self.settings))
        self.stats = RedisJobStats(self.client, self.keys)
        self.registry = WorkerRegistry(self.client, self.keys)
        self.post = post_executor(self.settings)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="ttsd-jobs", daemon=True).start()
        try:
            engines = load_engines(self.settings, self.pool.engines, device)
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
        log.info(
            "engine process ready", extra={"worker": self.name, "pool": self.pool.name, "device": device}
        )

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
        """Run a job under its delivery's lease, retrying transient faults in place with back-off.

        Retrying in place, not through ``Task.retry``, matters: a retry is a new message, and when
        the broker is the thing that is down it cannot be published and the job would be dropped.
        Object storage gets ``TTSD_JOB_RETRIES`` retries, then the job fails cleanly; Redis gets
        up to the job timeout, then the run gives up and its lease hands the job on once Redis is
        back. A delivery whose lease another worker holds, or lost to one, ends without a trace."""
        job = Job.from_dict(payload)
        token = lease_token(self.node, payload)
        started = time.monotonic()
        delay = _RETRY_FIRST
        storage_failures = 0
        deliveries: int | None = None
        while True:
            try:
                if deliveries is None:
                    deliveries = self.leases.acquire(job.task_id, token)
                    if deliveries is None:
                        log.info(
                            "job leased to another worker; dropping this delivery",
                            extra={"task_id": job.task_id},
                        )
                        return
                try:
                    self._run(job, token, deliveries)
                except StorageError as exc:
                    storage_failures += 1
                    if storage_failures <= self.settings.job_retries:
                        raise
                    self._fail(job, token, deliveries, None, exc)
                return
            except LeaseLost:
                log.warning(
                    "job handed to another worker meanwhile; stopping", extra={"task_id": job.task_id}
                )
                return
            except (StorageError, BackendUnavailable) as exc:
                if (
                    isinstance(exc, BackendUnavailable)
                    and time.monotonic() - started > self.settings.job_timeout
                ):
                    raise
                log.warning("transient failure; retrying", extra={"task_id": job.task_id, "code": exc.code})
            time.sleep(delay)
            delay = min(_RETRY_MAX, delay * 2)

    def _run(self, job: Job, token: str, deliveries: int) -> None:
        status = self.board.get(job.task_id) or job.queued()
        if status.finished:
            # A late duplicate (the broker's last-resort redelivery) of a job already finished.
            self.leases.release(job.task_id, token)
            return
        reporter = RedisReporter(self.leases, token, status, deliveries, self.settings.task_ttl)
        with redis_errors():
            if self.client.exists(self.keys.cancel(job.task_id)):
                self._fail(
                    job, token, deliveries, reporter,
                    JobCancelled("every listener of this stream left before it started"),
                )  # fmt: skip
                return
        if self.broken is not None:
            unavailable = EngineUnavailable(f"this worker could not load its engines: {self.broken}")
            self._fail(job, token, deliveries, reporter, unavailable)
            return
        if deliveries > MAX_DELIVERIES:
            crashed = EngineCrashed(
                f"the engine process died on each of {MAX_DELIVERIES} attempts at this request"
            )
            self._fail(job, token, deliveries, reporter, crashed)
            return
        started = time.monotonic()
        self.registry.busy(self.name, True)
        try:
            outcome = self._attempt(job, token, deliveries, reporter)
        finally:
            with contextlib.suppress(BackendUnavailable):
                self.registry.busy(self.name, False)
        if outcome is None:
            return
        self.registry.record_job_seconds(job.spec.engine, time.monotonic() - started)
        reporter.put_stage(Stage.DONE, 100, audio_id=audio_id(job.key, job.fmt))
        self._release(job, token)

    def _attempt(self, job: Job, token: str, deliveries: int, reporter: RedisReporter) -> JobOutcome | None:
        """One run of the job body; a failure is recorded and gives None, transient faults raise."""
        try:
            return asyncio.run_coroutine_threadsafe(self._job(job, reporter), self.loop).result()
        except (StorageError, BackendUnavailable, LeaseLost):
            raise
        except TtsdError as exc:
            self._fail(job, token, deliveries, reporter, exc)
        except Exception:  # a fault boundary: one bad text must not take the worker down
            log.exception("job failed", extra={"task_id": job.task_id, "key": job.key})
            self._fail(job, token, deliveries, reporter, JobError("the engine failed on this text"))
        return None

    async def _job(self, job: Job, reporter: RedisReporter) -> JobOutcome:
        try:
            return await asyncio.wait_for(run_job(job, self.host, reporter), self.settings.job_timeout)
        except TimeoutError as exc:
            # The engine thread may be hung inside native code, where nothing interrupts it: this
            # process is replaced once the failure is recorded, so the slot does not stay stuck.
            threading.Timer(1.0, os._exit, args=(1,)).start()
            raise JobTimeout(f"the job took longer than {self.settings.job_timeout:g} s") from exc

    def _fail(
        self, job: Job, token: str, deliveries: int, reporter: RedisReporter | None, exc: TtsdError
    ) -> None:
        """Never cached; the error stays on the task for polling clients."""
        log.warning("job failed", extra={"task_id": job.task_id, "key": job.key, "code": exc.code})
        if reporter is None:
            status = self.board.get(job.task_id) or job.queued()
            reporter = RedisReporter(self.leases, token, status, deliveries, self.settings.task_ttl)
        reporter.error(exc)
        reporter.put_stage(
            Stage.FAILED, reporter.status.progress, error=TaskError(code=exc.code, message=exc.message)
        )
        self.stats.failed(exc.code)
        self._release(job, token)

    def _release(self, job: Job, token: str) -> None:
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
        self.leases.release(job.task_id, token)


def make_worker_app(settings: Settings, pool: PoolSpec) -> Celery:
    """The Celery app for one pool of ``ttsd worker``: the task, bound to a per-process runtime
    that loads the pool's engines, and the node's lease keeper in the main process."""
    app = make_celery(settings, pool.slots)
    # One per worker node; its engine processes inherit it, so their tokens match the keeper's.
    node = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    runtime = WorkerRuntime(settings, node, pool)
    keeper = LeaseKeeper(settings, node)

    @app.task(name=TASK_NAME)  # type: ignore[untyped-decorator]
    def synthesize(payload: dict[str, Any]) -> None:
        runtime.run(payload)

    def on_process_init(**_: Any) -> None:
        runtime.load()

    def on_process_shutdown(**_: Any) -> None:
        runtime.shutdown()

    worker_process_init.connect(on_process_init, weak=False)
    worker_process_shutdown.connect(on_process_shutdown, weak=False)
    task_received.connect(keeper.received, weak=False)
    task_failure.connect(keeper.failed, weak=False)
    worker_ready.connect(keeper.start, weak=False)
    worker_shutdown.connect(keeper.stop, weak=False)
    return app
