"""One job lifecycle for every runner: timeout, retries of what is retryable, the fault boundary,
the final status and the failure statistics.

The embedded queue, the distributed worker and the offline tools each hand ``Lifecycle.run`` a
job, its reporter and the body to run (``run_job`` plus whatever the runner checks first), so a
job ends the same way whoever runs it: done with its audio id, or failed with a typed error that
polling clients and live listeners see and that is never cached.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from ..errors import BackendUnavailable, JobError, JobTimeout, StorageError, TtsdError
from ..keys import file_id
from ..metrics import JobStats
from ..state.base import Mark, Stage, TaskError, TaskStatus
from .model import Job, JobOutcome, Reporter

log = logging.getLogger("ttsd.jobs")

T = TypeVar("T")


@dataclass(frozen=True)
class Retries:
    """Transient faults retried in place, with back-off. Object storage: ``storage`` times, then
    the job fails. Redis: until ``backend_for`` seconds after the first try, then the fault is
    raised to the runner, which hands the job on (None: it fails the job like any error).

    In place, not as a new broker message: when the broker is what is down, a retry could not be
    published and the job would be dropped."""

    storage: int = 0
    backend_for: float | None = None
    first: float = 1.0
    most: float = 4.0  # so a job notices within seconds that what was away is back


@dataclass(frozen=True)
class Ended:
    status: TaskStatus  # final: done or failed
    outcome: JobOutcome | None = None
    error: TtsdError | None = None


@dataclass
class Lifecycle:
    timeout: float  # per try
    stats: JobStats
    retries: Retries = field(default_factory=Retries)
    # Raised through untouched: the runner's own signals (a lease lost to another worker).
    passthrough: tuple[type[BaseException], ...] = ()
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    # Jobs waiting out a storage fault: woken when another job's try stores (storage is back), so
    # a backlog is stored at once, not each job at the end of its own back-off.
    _storage_waiters: set[asyncio.Future[None]] = field(default_factory=set, init=False, repr=False)

    async def run(self, job: Job, reporter: Reporter, body: Callable[[], Awaitable[JobOutcome]]) -> Ended:
        error: TtsdError
        try:
            outcome = await self.retrying(lambda: self._timed(body), stores=True)
        except self.passthrough:
            raise
        except TtsdError as exc:
            if isinstance(exc, BackendUnavailable) and self.retries.backend_for is not None:
                raise  # past its deadline: the runner hands the job on
            error = exc
        except Exception:  # a fault boundary: one bad text must not take the runner down
            log.exception("job failed", extra={"task_id": job.task_id, "key": job.key})
            error = JobError("the job failed on this text")
        else:
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
            marks = [Mark(name=name, seconds=seconds) for name, seconds in outcome.marks] or None
            await reporter.stage(Stage.DONE, 100, audio_id=file_id(job.key, job.fmt), marks=marks)
            return Ended(reporter.status, outcome=outcome)
        return await self._fail(job, reporter, error)

    async def _fail(self, job: Job, reporter: Reporter, error: TtsdError) -> Ended:
        """End a job as failed: never cached; its error stays on the task for polling clients."""
        log.warning("job failed", extra={"task_id": job.task_id, "key": job.key, "code": error.code})
        await reporter.failed(error)
        failure = TaskError(code=error.code, message=error.message)
        await reporter.stage(Stage.FAILED, reporter.status.progress, error=failure)
        await asyncio.to_thread(self.stats.failed, error.code)
        return Ended(reporter.status, error=error)

    async def _timed(self, body: Callable[[], Awaitable[JobOutcome]]) -> JobOutcome:
        try:
            # In this task, not another as wait_for makes: Python 3.11's wait_for can drop a cancel
            # (a hand-back, a shutdown) that comes as the body ends.
            async with asyncio.timeout(self.timeout):
                return await body()
        except TimeoutError as exc:
            raise JobTimeout(f"the job took longer than {self.timeout:g} s") from exc

    async def retrying(self, attempt: Callable[[], Awaitable[T]], *, stores: bool = False) -> T:
        """``attempt`` until it succeeds or a fault is not to be retried (see ``Retries``).
        ``stores``: the attempt writes to object storage, so its success wakes the jobs waiting
        out a storage fault."""
        started = self.clock()
        delay = self.retries.first
        storage_failures = 0
        while True:
            try:
                result = await attempt()
            except StorageError as exc:
                storage_failures += 1
                if storage_failures > self.retries.storage:
                    raise
                log.warning("transient failure; retrying", extra={"code": exc.code, "delay": delay})
                await self._wait_for_storage(delay)
            except BackendUnavailable as exc:
                backend_for = self.retries.backend_for
                if backend_for is None or self.clock() - started > backend_for:
                    raise
                log.warning("transient failure; retrying", extra={"code": exc.code, "delay": delay})
                await self.sleep(delay)
            else:
                if stores:
                    self._storage_is_back()
                return result
            delay = min(self.retries.most, delay * 2)

    async def _wait_for_storage(self, delay: float) -> None:
        """The back-off, or less: until another job's try stored."""
        woken = asyncio.get_running_loop().create_future()
        self._storage_waiters.add(woken)
        sleeping = asyncio.ensure_future(self.sleep(delay))
        try:
            await asyncio.wait((sleeping, woken), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeping.cancel()
            self._storage_waiters.discard(woken)

    def _storage_is_back(self) -> None:
        for woken in self._storage_waiters:
            if not woken.done():
                woken.set_result(None)
        self._storage_waiters.clear()
