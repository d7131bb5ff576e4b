"""The post-processing stage: it counts what it was given and has not finished, is behind at its
limit and says when it has room again, and tallies what each job cost it."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ttsd.jobs.post import PostStage


def test_the_stage_closes_at_its_limit_and_wakes_the_slots_when_it_has_room() -> None:
    async def scenario() -> None:
        stage = PostStage(workers=2, limit=3)
        woken: list[int] = []
        stage.on_room(lambda: woken.append(stage.pending))
        release = threading.Event()
        try:
            ops = [asyncio.ensure_future(stage.run(release.wait, 30)) for _ in range(5)]
            await asyncio.sleep(0)  # each op is counted when it starts waiting, not when it runs
            assert stage.pending == 5 and not stage.open
            assert stage.load().drain == 0.0  # nothing measured yet
            release.set()
            assert await asyncio.gather(*ops) == [True] * 5
            assert stage.pending == 0 and stage.open
            assert woken == [2]  # once, when it crossed below its limit
            assert stage.load().drain == 0.0
        finally:
            stage.shutdown(wait=True)

    asyncio.run(scenario())


def test_a_failing_operation_is_no_longer_pending() -> None:
    async def scenario() -> None:
        stage = PostStage(workers=1, limit=1)
        try:
            with pytest.raises(ZeroDivisionError):
                await stage.run(lambda: 1 / 0)
            assert stage.pending == 0 and stage.open
        finally:
            stage.shutdown(wait=True)

    asyncio.run(scenario())


def test_a_tally_sums_the_jobs_operations_including_its_tasks_and_feeds_the_average() -> None:
    async def scenario() -> None:
        stage = PostStage(workers=2, limit=8)
        blocker = threading.Event()

        def work(seconds: float) -> None:
            blocker.wait(seconds)  # never set: waits the full time on the stage's thread

        try:
            with stage.tally() as tally:
                await stage.run(work, 0.05)
                await asyncio.gather(asyncio.ensure_future(stage.run(work, 0.05)))
            await stage.run(work, 0.2)  # outside the tally: not the job's
            assert 0.1 <= tally.seconds < 0.2
            assert stage.job_time.seconds == tally.seconds
            assert stage.load().per_job == pytest.approx(tally.seconds / 2)
        finally:
            stage.shutdown(wait=True)

    asyncio.run(scenario())
