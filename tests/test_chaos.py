"""The chaos suite: each fault of issue 13 injected into one distributed deployment with the default
settings, under a steady load of hits and misses (``tests/chaos.py``). Nothing accepted may be lost,
every error must be a clear, retryable one, and no finished task may change afterwards.

The faults run in order on the same deployment (each test is one fault), about four minutes in all.
``python -m bench chaos`` runs the same harness and writes the table to ``bench/results/chaos.md``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest

from .chaos import FaultResult, cluster, run_fault
from .chaos_faults import api_sigkill, engine_kill, redis_stop, s3_stop, worker_sigkill, worker_sigstop
from .chaos_load import Cluster
from .conftest import ARTIFACTS

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("chaos")) as running:
        yield running


def assert_nothing_lost(result: FaultResult) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    with (ARTIFACTS / "chaos.jsonl").open("a") as log:  # the figures, for a failed run's reader
        log.write(json.dumps(dataclasses.asdict(result)) + "\n")
    assert result.accepted > 0, result
    assert result.lost == 0, result
    assert result.unclear == 0, result
    assert result.regressions == 0, result
    assert result.backlog_seconds is not None, result


def assert_handed_on_within_15s(result: FaultResult) -> None:
    """A lost worker's job: queued again once its lease lapsed (10 s, plus a sweep), made by the
    other worker, nothing failed and every hit answered meanwhile."""
    assert_nothing_lost(result)
    assert result.jobs_failed == {}, result
    assert result.hits_answered == result.hits, result
    assert result.requeued >= 1 and result.requeued_after_seconds is not None, result
    assert result.requeued_after_seconds < 15, result
    # Handed on at 11 s; then the other worker makes it behind the rest of the backlog, at the pace
    # of a 2-core machine running the rest of the suite beside (26 s seen there; 8-11 s alone, in
    # `python -m bench chaos`, which is where this is measured).
    assert result.in_flight_seconds is not None and result.in_flight_seconds < 35, result


def test_worker_sigkill(deployment: Cluster) -> None:
    assert_handed_on_within_15s(run_fault(deployment, worker_sigkill()))


def test_worker_sigstop_then_sigcont(deployment: Cluster) -> None:
    # Handed on while the worker was still frozen, not after it woke at 30 s; once awake it
    # changed nothing (no finished task changed: assert_nothing_lost). (`bench chaos` freezes it
    # for 60 s.)
    assert_handed_on_within_15s(run_fault(deployment, worker_sigstop(30.0)))


def test_engine_process_killed(deployment: Cluster) -> None:
    result = run_fault(deployment, engine_kill())
    assert_nothing_lost(result)
    assert result.jobs_failed == {}, result
    # The worker replaced the process and went on with the batch there: no job was handed on.
    assert result.requeued == 0, result
    assert result.in_flight_seconds is not None and result.in_flight_seconds < 20, result


def test_redis_stopped_10s(deployment: Cluster) -> None:
    result = run_fault(deployment, redis_stop(10.0))
    assert_nothing_lost(result)
    # Repeated texts are still answered from the API's memory; new ones get 503 + Retry-After.
    assert result.hits_answered >= 0.9 * result.hits, result
    assert result.refused > 0, result
    assert set(result.jobs_failed) <= {"backend_unavailable"}, result


def test_s3_stopped_20s(deployment: Cluster) -> None:
    result = run_fault(deployment, s3_stop(20.0))
    assert_nothing_lost(result)
    # Jobs ride out the outage (storage retries cover about 55 s) and hits need no S3 call.
    assert result.jobs_failed == {}, result
    assert result.hits_answered == result.hits, result


def test_one_of_two_api_processes_killed(deployment: Cluster) -> None:
    result = run_fault(deployment, api_sigkill())
    assert_nothing_lost(result)
    assert result.jobs_failed == {}, result
    assert result.rerouted > 0, result
