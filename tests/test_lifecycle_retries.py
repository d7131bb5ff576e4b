"""Which faults the job lifecycle retries (with back-off on an injected sleep and clock), what it
fails at once, and what it raises through to the runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from prometheus_client import CollectorRegistry

from ttsd.errors import BackendUnavailable, EngineCrashed, JobError, StorageError
from ttsd.jobs.lifecycle import Ended, Retries
from ttsd.jobs.model import Job, JobOutcome
from ttsd.state.base import Status
from ttsd.state.redis.leases import LeaseLost

from .job_fakes import RecordingReporter, job
from .lifecycle_fakes import A, Sleeps, failing, failures, lifecycle, outcome


@pytest.mark.parametrize(
    ("storage", "most", "delays"),
    [(3, 10.0, [1.0, 2.0, 4.0]), (5, 4.0, [1.0, 2.0, 4.0, 4.0, 4.0]), (0, 10.0, [])],
)
def test_storage_errors_are_retried_with_capped_back_off_then_fail(
    storage: int, most: float, delays: list[float]
) -> None:
    j, registry, time_ = job(A), CollectorRegistry(), Sleeps()
    body, tries = failing(StorageError("the bucket is away"))
    cycle = lifecycle(registry, retries=Retries(storage=storage, first=1.0, most=most), sleep=time_.sleep)
    reporter = RecordingReporter(j)
    ended = asyncio.run(cycle.run(j, reporter, body))
    assert time_.delays == delays
    assert len(tries) == storage + 1
    assert ended.status.status is Status.FAILED and ended.status.error is not None
    assert ended.status.error.code == "storage_error"
    assert failures(registry, "storage_error") == 1  # the job failed once, whatever its tries
    assert len(reporter.errors) == 1


def test_a_storage_error_that_clears_ends_done() -> None:
    j, registry, time_ = job(A), CollectorRegistry(), Sleeps()
    body, tries = failing(StorageError("the bucket is away"), times=2, then=outcome(j))
    cycle = lifecycle(registry, retries=Retries(storage=8), sleep=time_.sleep)
    ended = asyncio.run(cycle.run(j, RecordingReporter(j), body))
    assert ended.status.status is Status.DONE
    assert (len(tries), time_.delays) == (3, [1.0, 2.0])
    assert failures(registry, "storage_error") == 0


async def _forever(_seconds: float) -> None:
    """A back-off that never ends: a job waiting on it goes on only if something wakes it."""
    await asyncio.Event().wait()


def test_a_job_that_stores_wakes_the_jobs_waiting_out_a_storage_fault() -> None:
    cycle = lifecycle(CollectorRegistry(), retries=Retries(storage=8), sleep=_forever)
    storage = {"up": False}
    waiting = [job(f"Waiting {i}.") for i in range(2)]
    tries: list[str] = []
    tried: list[asyncio.Event] = []

    def storing(j: Job) -> Callable[[], Awaitable[JobOutcome]]:
        async def body() -> JobOutcome:
            tries.append(j.spec.text)
            if len(tries) == len(waiting):
                tried[0].set()
            if not storage["up"]:
                raise StorageError("the bucket is away")
            return outcome(j)

        return body

    async def scenario() -> list[Ended]:
        tried.append(asyncio.Event())
        runs = [asyncio.ensure_future(cycle.run(j, RecordingReporter(j), storing(j))) for j in waiting]
        await asyncio.wait_for(tried[0].wait(), 10)  # both tried once: now they wait out a back-off
        # A try that does not store (a Redis read) succeeding says nothing of storage.
        assert await cycle.retrying(lambda: asyncio.sleep(0, "read")) == "read"
        for _ in range(10):
            await asyncio.sleep(0)
        assert not any(run.done() for run in runs) and len(tries) == len(waiting)
        storage["up"] = True
        fresh = job("A new text.")
        assert (await cycle.run(fresh, RecordingReporter(fresh), storing(fresh))).status.status is Status.DONE
        return await asyncio.wait_for(asyncio.gather(*runs), 10)

    ended = asyncio.run(scenario())
    assert [e.status.status for e in ended] == [Status.DONE, Status.DONE]
    assert len(tries) == 2 * len(waiting) + 1  # each waiting job tried again once, when woken


def test_backend_unavailable_is_retried_until_backend_for_then_raised_to_the_runner() -> None:
    j, registry, time_ = job(A), CollectorRegistry(), Sleeps()
    body, tries = failing(BackendUnavailable("Redis is unreachable"))
    cycle = lifecycle(
        registry, retries=Retries(backend_for=10.0, most=8.0), sleep=time_.sleep, clock=time_.clock
    )
    reporter = RecordingReporter(j)
    with pytest.raises(BackendUnavailable):
        asyncio.run(cycle.run(j, reporter, body))
    # Tries at 0, 1, 3, 7 and 15 s: the last is past the 10 s deadline.
    assert time_.delays == [1.0, 2.0, 4.0, 8.0] and len(tries) == 5
    # Not failed: the runner hands the job on, so nothing final is written.
    assert reporter.stages == [] and reporter.errors == []
    assert failures(registry, "backend_unavailable") == 0


def test_backend_unavailable_without_a_deadline_fails_the_job_at_once() -> None:
    j, registry, time_ = job(A), CollectorRegistry(), Sleeps()
    body, tries = failing(BackendUnavailable("Redis is unreachable"))
    ended = asyncio.run(lifecycle(registry, sleep=time_.sleep).run(j, RecordingReporter(j), body))
    assert len(tries) == 1 and time_.delays == []
    assert ended.status.error is not None and ended.status.error.code == "backend_unavailable"


def test_other_job_errors_are_not_retried() -> None:
    j, registry, time_ = job(A), CollectorRegistry(), Sleeps()
    body, tries = failing(EngineCrashed("died"))
    cycle = lifecycle(registry, retries=Retries(storage=8, backend_for=60.0), sleep=time_.sleep)
    ended = asyncio.run(cycle.run(j, RecordingReporter(j), body))
    assert len(tries) == 1 and time_.delays == []
    assert ended.status.error is not None and ended.status.error.code == "engine_crashed"


def test_an_unexpected_exception_becomes_a_generic_synthesis_failure() -> None:
    j, registry = job(A), CollectorRegistry()
    body, _ = failing(KeyError("a bug"))
    reporter = RecordingReporter(j)
    ended = asyncio.run(lifecycle(registry).run(j, reporter, body))
    assert type(ended.error) is JobError
    assert ended.status.error is not None
    assert ended.status.error.code == "synthesis_failed"
    assert "a bug" not in ended.status.error.message  # internals stay in the log
    assert [type(e) for e in reporter.errors] == [JobError]
    assert failures(registry, "synthesis_failed") == 1


@pytest.mark.parametrize("passed_through", [True, False])
def test_passthrough_exceptions_propagate_untouched(passed_through: bool) -> None:
    j, registry = job(A), CollectorRegistry()
    lost = LeaseLost("handed to another worker")
    body, _ = failing(lost)
    cycle = lifecycle(registry, passthrough=(LeaseLost,) if passed_through else ())
    reporter = RecordingReporter(j)
    if passed_through:
        with pytest.raises(LeaseLost) as raised:
            asyncio.run(cycle.run(j, reporter, body))
        assert raised.value is lost
        assert reporter.stages == [] and reporter.errors == []
        assert failures(registry, "lease_lost") == 0
    else:  # the same error, not named, is a typed failure like any other
        ended = asyncio.run(cycle.run(j, reporter, body))
        assert ended.status.error is not None and ended.status.error.code == "lease_lost"


def test_retrying_returns_what_the_attempt_gives_after_transient_faults() -> None:
    time_ = Sleeps()
    cycle = lifecycle(CollectorRegistry(), retries=Retries(storage=1, backend_for=5.0), sleep=time_.sleep)
    faults: list[BaseException] = [BackendUnavailable("away"), StorageError("away")]

    async def attempt() -> str:
        if faults:
            raise faults.pop(0)
        return "begun"

    assert asyncio.run(cycle.retrying(attempt)) == "begun"
    # One back-off sequence across both kinds of fault.
    assert time_.delays == [1.0, 2.0]
