"""The one job lifecycle in process: how a body's outcome or fault becomes the task's final status
(timeouts and cancels included). Which faults are retried, and what is raised through:
``test_lifecycle_retries``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ttsd.errors import EngineCrashed
from ttsd.jobs.body import run_job
from ttsd.jobs.lifecycle import Ended, Lifecycle
from ttsd.jobs.model import JobOutcome
from ttsd.state.base import Stage, Status

from .job_fakes import RecordingReporter, ToneSynthesizer, bench, job
from .lifecycle_fakes import A, B, failures, lifecycle, outcome


def test_success_ends_done_with_the_audio_id() -> None:
    j, registry = job(A), CollectorRegistry()
    reporter = RecordingReporter(j)
    done = outcome(j)

    async def body() -> JobOutcome:
        return done

    ended = asyncio.run(lifecycle(registry).run(j, reporter, body))
    assert ended.outcome is done and ended.error is None
    assert ended.status.status is Status.DONE and ended.status.stage is Stage.DONE
    assert ended.status.progress == 100 and ended.status.audio_id == f"{j.key}.pcm"
    assert ended.status == reporter.status
    assert reporter.errors == []


def test_a_job_error_fails_the_task_with_its_code_and_caches_nothing(tmp_path: Path) -> None:
    j = job(f"{A} {B}")
    crash = EngineCrashed("the engine process died, twice")
    with bench(tmp_path, ToneSynthesizer(fail={B: crash})) as b:
        reporter = RecordingReporter(j)
        cycle = Lifecycle(5.0, b.host.stats)  # the job's own figures and its failure, one registry
        ended = asyncio.run(cycle.run(j, reporter, lambda: run_job(j, b.host, reporter)))
        assert ended.error is crash and ended.outcome is None
        assert ended.status.status is Status.FAILED and ended.status.stage is Stage.FAILED
        assert ended.status.error is not None
        assert (ended.status.error.code, ended.status.error.message) == ("engine_crashed", crash.message)
        assert ended.status.audio_id is None
        # It keeps the progress it had: a poller sees how far it got.
        assert ended.status.progress == 40
        assert reporter.errors == [crash]
        assert failures(b.registry, "engine_crashed") == 1
        assert b.index.get(j.key, "pcm") is None


def test_a_try_that_times_out_fails_with_job_timeout_and_cancels_the_body() -> None:
    j, registry = job(A), CollectorRegistry()
    stopped = asyncio.Event()

    async def body() -> JobOutcome:
        try:
            await asyncio.Event().wait()  # a hung engine
        finally:
            stopped.set()
        raise AssertionError("unreachable")

    async def scenario() -> Ended:
        cycle = lifecycle(registry, timeout=0.05)
        ended = await cycle.run(j, RecordingReporter(j), body)
        assert stopped.is_set()  # the body was cancelled, not left running
        return ended

    ended = asyncio.run(scenario())
    assert ended.error is not None and ended.error.code == "job_timeout"
    assert "0.05 s" in ended.error.message
    assert failures(registry, "job_timeout") == 1


def test_a_cancel_that_comes_as_the_body_ends_is_not_lost() -> None:
    """A hand-back or shutdown cancels the run; Python 3.11's wait_for returned the body's result
    instead when the body ended in the same turn of the loop."""
    j, registry = job(A), CollectorRegistry()

    async def scenario() -> None:
        started, finishing = asyncio.Event(), asyncio.get_running_loop().create_future()

        async def body() -> JobOutcome:
            started.set()
            result: JobOutcome = await finishing
            return result

        run = asyncio.ensure_future(lifecycle(registry).run(j, RecordingReporter(j), body))
        await started.wait()
        finishing.set_result(outcome(j))
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run

    asyncio.run(scenario())
