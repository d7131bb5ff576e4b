"""An API process's sweeper: jobs whose lease lapsed, given up, given back or never taken are
published again, once."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry

from ttsd.config import Settings
from ttsd.jobs.distributed.protocol import broker_queue_key
from ttsd.jobs.distributed.sweeper import Sweeper
from ttsd.jobs.model import Job
from ttsd.state.base import Stage
from ttsd.state.redis.board import RedisTaskBoard
from ttsd.state.redis.client import connect
from ttsd.state.redis.keys import RedisKeys
from ttsd.state.redis.leases import JobLeases, LeaseLost
from ttsd.state.redis.stats import RedisJobStats

from ..job_fakes import ENGINE, job
from ..servers import Clock
from .conftest import LEASE, REQUEUE_AFTER, deadline, redis_clock_passes, redis_ms

# -- the sweeper ------------------------------------------------------------------------------------


@dataclass
class Api:
    """One API process's side of recovery: its sweeper, with what it published and counted."""

    settings: Settings
    client: redis.Redis
    keys: RedisKeys
    board: RedisTaskBoard
    leases: JobLeases
    clock: Clock
    registry: CollectorRegistry
    sweeper: Sweeper
    published: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def submit(self, j: Job, at: float) -> None:
        """What ``CeleryQueue.submit`` leaves behind for a job published at ``at``."""
        self.board.put(j.queued())
        self.client.set(self.keys.job(j.task_id), json.dumps(j.to_dict()))
        self.client.zadd(self.keys.pending, {j.task_id: at})

    def sweep(self) -> int:
        # One API process sweeps pending jobs per second, under a lock that outlives a test's
        # instant: each sweep here stands for the next second's.
        self.client.delete(self.keys.sweeper)
        return self.sweeper.sweep()

    def requeued(self, reason: str) -> float:
        return self.registry.get_sample_value("ttsd_jobs_requeued_total", {"reason": reason}) or 0.0

    def pending(self, task_id: str) -> float | None:
        score: Any = self.client.zscore(self.keys.pending, task_id)
        return None if score is None else float(score)


@pytest.fixture
def api(settings: Settings, client: redis.Redis) -> Api:
    keys = RedisKeys(settings.redis_prefix)
    board = RedisTaskBoard(client, keys, ttl=3600)
    leases = JobLeases(client, keys, settings.job_lease, ttl=600)
    registry = CollectorRegistry()
    stats = RedisJobStats(client, keys)
    registry.register(stats)  # as every API process exports it
    clock = Clock(time.time())
    published: list[tuple[str, dict[str, Any]]] = []

    def publish(task_id: str, payload: dict[str, Any]) -> None:
        published.append((task_id, payload))

    sweeper = Sweeper(settings, client, keys, board, leases, publish, stats.requeued, clock=clock.time)
    return Api(settings, client, keys, board, leases, clock, registry, sweeper, published)


def test_a_job_whose_lease_lapsed_is_published_again_once(api: Api) -> None:
    j = job("A frozen worker's job.")
    api.submit(j, at=api.clock.now)
    worker = JobLeases(api.client, api.keys, lease_seconds=0.001, ttl=600)
    assert worker.acquire(j.task_id, "node-a/1") == 1
    assert api.pending(j.task_id) is None  # taken: no longer pending
    lapses_at = deadline(api.client, api.keys, j.task_id)
    assert lapses_at is not None
    redis_clock_passes(api.client, lapses_at)

    assert api.sweep() == 1
    assert api.published == [(j.task_id, j.to_dict())]
    assert api.requeued("lease_lapsed") == 1 and api.requeued("given_up") == 0
    # Counted in Redis: another API process (or this one restarted) reports it too.
    elsewhere = CollectorRegistry()
    elsewhere.register(RedisJobStats(connect(api.settings), api.keys))
    assert elsewhere.get_sample_value("ttsd_jobs_requeued_total", {"reason": "lease_lapsed"}) == 1
    # Pending again until a worker takes the new message; the old delivery is fenced out.
    assert api.pending(j.task_id) == api.clock.now
    assert deadline(api.client, api.keys, j.task_id) is None
    with pytest.raises(LeaseLost):
        worker.put_status("node-a/1", j.queued(), 60)
    assert api.sweep() == 0 and len(api.published) == 1


def test_a_job_given_up_is_published_as_given_up_and_a_live_lease_is_left_alone(api: Api) -> None:
    lost, busy = job("A job whose process died."), job("A job still being spoken.")
    for j in (lost, busy):
        api.submit(j, at=api.clock.now)
        assert api.leases.acquire(j.task_id, f"node-a/{j.task_id}") == 1
    api.leases.lapse(lost.task_id, f"node-a/{lost.task_id}")

    assert api.sweep() == 1
    assert api.published == [(lost.task_id, lost.to_dict())]
    assert api.requeued("given_up") == 1 and api.requeued("lease_lapsed") == 0
    live = deadline(api.client, api.keys, busy.task_id)
    assert live is not None and live > redis_ms(api.client)


def test_a_job_given_back_is_pending_again_and_its_delivery_does_not_count(api: Api) -> None:
    """A busy worker gives back a job that never started there: its lease goes (fencing the old
    delivery out), the job is pending until a worker takes it, and the next delivery counts as the
    same one, so hand-backs never add up to a job failed for a worker that kept dying."""
    j = job("Waiting on a busy worker.")
    api.submit(j, at=api.clock.now)
    assert api.leases.acquire(j.task_id, "node-a/1") == 1
    assert not api.leases.hand_back(j.task_id, "node-b/1")  # only the lease's holder gives it back
    assert api.leases.hand_back(j.task_id, "node-a/1")
    assert api.pending(j.task_id) is not None and deadline(api.client, api.keys, j.task_id) is None
    with pytest.raises(LeaseLost):
        api.leases.put_status("node-a/1", j.queued(), 60)
    assert api.leases.acquire(j.task_id, "node-b/2") == 1
    assert api.pending(j.task_id) is None
    assert api.sweep() == 0  # nothing lapsed: the new holder's lease is live


@pytest.mark.parametrize("why", ["finished", "payload expired"])
def test_a_pending_entry_of_a_finished_or_forgotten_job_is_dropped_unpublished(api: Api, why: str) -> None:
    j = job("A job that already ended.")
    api.submit(j, at=api.clock.now - REQUEUE_AFTER - 10)  # long past every deadline
    if why == "finished":
        api.board.put(j.queued().advance(Stage.DONE, 100, audio_id=f"{j.key}.pcm"))
    else:
        api.client.delete(api.keys.job(j.task_id))

    assert api.sweep() == 0
    assert api.published == [] and api.pending(j.task_id) is None
    assert api.requeued("never_taken") == 0


def test_a_job_popped_but_never_taken_is_published_again_after_the_grace(api: Api) -> None:
    popped, queued = job("Popped by a worker that died."), job("Still waiting in the queue.")
    published_at = api.clock.now - LEASE - 1  # old enough to be looked at, far from requeue_after
    api.submit(popped, at=published_at)
    api.submit(queued, at=published_at)
    messages = broker_queue_key(api.settings, ENGINE)
    api.client.rpush(messages, "not a message", json.dumps({"headers": {"id": queued.task_id}}))

    assert api.sweep() == 0  # seen missing from the queue: a worker may be about to take it
    api.clock.now += 1.0
    assert api.sweep() == 0
    api.clock.now += 1.0
    assert api.sweep() == 1
    assert api.published == [(popped.task_id, popped.to_dict())]
    assert api.requeued("popped_not_taken") == 1
    assert api.pending(popped.task_id) == api.clock.now
    api.clock.now += 1.0
    assert api.sweep() == 0  # once: its new publication is fresh
    assert api.pending(queued.task_id) == published_at


def test_a_job_not_taken_for_requeue_after_is_published_again(api: Api) -> None:
    j = job("Nobody took this one.")
    api.submit(j, at=api.clock.now)
    api.client.rpush(broker_queue_key(api.settings, ENGINE), json.dumps({"headers": {"id": j.task_id}}))
    api.clock.now += REQUEUE_AFTER - 1
    assert api.sweep() == 0
    api.clock.now += 2
    assert api.sweep() == 1
    assert api.requeued("never_taken") == 1 and api.requeued("popped_not_taken") == 0


def test_only_one_api_process_sweeps_pending_jobs_each_second(api: Api) -> None:
    j = job("Two API processes see this.")
    api.submit(j, at=api.clock.now - REQUEUE_AFTER - 1)
    assert api.sweeper.sweep() == 1
    api.client.zadd(api.keys.pending, {j.task_id: api.clock.now - REQUEUE_AFTER - 1})
    assert api.sweeper.sweep() == 0  # the lock is held for this second
    assert len(api.published) == 1
