"""A worker node's lease keeper: every job it receives is leased, renewed while Celery or its
runtime holds it, and given up when they let go of it unfinished."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio

from ttsd.config import Settings
from ttsd.jobs.distributed.keeper import LeaseKeeper
from ttsd.jobs.distributed.protocol import lease_token, publication
from ttsd.jobs.model import Job
from ttsd.state.base import Stage
from ttsd.state.redis.keys import RedisKeys
from ttsd.state.redis.leases import JobLeases

from ..job_fakes import job
from .conftest import LEASE, deadline, redis_clock_passes, redis_ms

# -- the lease keeper -------------------------------------------------------------------------------


@dataclass
class Request:
    """What the keeper reads of a Celery request."""

    id: str
    args: list[Any]


@dataclass
class Node:
    keeper: LeaseKeeper
    reserved: list[Request]
    running: set[tuple[str, str]]
    leases: JobLeases
    keys: RedisKeys
    client: redis.Redis

    def deliver(self, j: Job) -> tuple[Request, str]:
        payload = publication(j.to_dict())
        return Request(j.task_id, [payload]), lease_token("node-a", payload)

    def holder(self, task_id: str) -> bytes | None:
        value: Any = self.client.get(self.keys.lease(task_id))
        return None if value is None else bytes(value)


@pytest.fixture
def node(settings: Settings, client: redis.Redis) -> Node:
    reserved: list[Request] = []
    running: set[tuple[str, str]] = set()
    keys = RedisKeys(settings.redis_prefix)
    keeper = LeaseKeeper(settings, "node-a", reserved=lambda: reserved, running=lambda: running)
    return Node(keeper, reserved, running, JobLeases(client, keys, settings.job_lease, ttl=600), keys, client)


def test_a_received_job_is_leased_and_renewed_while_celery_holds_it(node: Node) -> None:
    j = job("Received, waiting for a free process.")
    request, token = node.deliver(j)
    node.reserved.append(request)
    node.keeper.received(request)
    assert node.holder(j.task_id) == token.encode()
    first = deadline(node.client, node.keys, j.task_id)
    assert first is not None and first > redis_ms(node.client)

    redis_clock_passes(node.client, first - LEASE * 1000)  # time moved on since the lease was taken
    node.keeper._renew()
    renewed = deadline(node.client, node.keys, j.task_id)
    assert renewed is not None and renewed > first
    assert node.holder(j.task_id) == token.encode()
    assert node.leases.sweep() == []


def test_a_delivery_begins_from_its_lease_its_status_and_its_listeners(node: Node) -> None:
    """What the runtime starts a delivery from: the keeper's lease (the same token is the same
    delivery), the status an earlier delivery left, and whether every listener left meanwhile."""
    j = job("Begun after a hand-over.")
    request, token = node.deliver(j)
    node.keeper.received(request)
    stored = j.queued().advance(Stage.SYNTHESIZING, 40)
    node.client.set(node.keys.task(j.task_id), stored.model_dump_json())
    deliveries, status, cancelled = node.leases.begin(j.task_id, token)
    assert deliveries == 1 and status == stored.model_dump_json().encode() and not cancelled
    node.client.set(node.keys.cancel(j.task_id), b"1")
    assert node.leases.begin(j.task_id, token)[2]
    # Another delivery finds the lease held, and takes nothing.
    assert node.leases.begin(j.task_id, "another-token")[0] is None
    assert node.holder(j.task_id) == token.encode()


def test_a_job_celery_let_go_of_unfinished_is_given_up(node: Node) -> None:
    j = job("Let go of, unfinished.")
    request, _ = node.deliver(j)
    node.reserved.append(request)
    node.keeper.received(request)
    node.reserved.clear()
    node.keeper._renew()
    assert deadline(node.client, node.keys, j.task_id) == 0  # handed on at the next sweep
    assert node.leases.sweep() == [(j.task_id, True)]


def test_a_finished_job_is_not_handed_on_when_celery_lets_go(node: Node) -> None:
    j = job("Done and released.")
    request, token = node.deliver(j)
    node.reserved.append(request)
    node.keeper.received(request)
    assert node.leases.release(j.task_id, token)  # the run finished it
    node.reserved.clear()
    node.keeper._renew()
    assert deadline(node.client, node.keys, j.task_id) is None
    assert node.leases.sweep() == []


def test_a_job_the_runtime_runs_after_celery_let_go_is_renewed_until_it_ends(node: Node) -> None:
    j = job("Handed to the runtime, its message acknowledged.")
    request, token = node.deliver(j)
    node.reserved.append(request)
    node.keeper.received(request)
    node.running.add((j.task_id, token))
    node.reserved.clear()
    first = deadline(node.client, node.keys, j.task_id)
    assert first is not None
    redis_clock_passes(node.client, first - LEASE * 1000)
    node.keeper._renew()
    renewed = deadline(node.client, node.keys, j.task_id)
    assert renewed is not None and renewed > first
    node.running.clear()  # the run gave up on Redis without releasing: handed on at once
    node.keeper._renew()
    assert deadline(node.client, node.keys, j.task_id) == 0
    assert node.leases.sweep() == [(j.task_id, True)]


def test_a_job_another_delivery_holds_is_neither_renewed_nor_given_up(node: Node) -> None:
    j = job("Redelivered while the first delivery still runs.")
    assert node.leases.acquire(j.task_id, "node-b/first") == 1
    theirs = deadline(node.client, node.keys, j.task_id)
    request, _ = node.deliver(j)
    node.reserved.append(request)
    node.keeper.received(request)
    node.keeper._renew()
    node.reserved.clear()
    node.keeper._renew()
    assert node.holder(j.task_id) == b"node-b/first"
    assert deadline(node.client, node.keys, j.task_id) == theirs
    assert node.leases.sweep() == []


def test_one_beat_renews_what_the_node_runs_and_gives_up_what_it_let_go_of(node: Node) -> None:
    """Many jobs at once, in the beat's one round trip: each renewed or given up as if alone."""
    jobs = [job(f"Held job number {i}.") for i in range(12)]
    tokens = {}
    for j in jobs:
        request, tokens[j.task_id] = node.deliver(j)
        node.reserved.append(request)
        node.keeper.received(request)
    running, finished, let_go = jobs[:4], jobs[4:8], jobs[8:]
    node.running.update((j.task_id, tokens[j.task_id]) for j in running)
    for j in finished:
        assert node.leases.release(j.task_id, tokens[j.task_id])
    node.reserved.clear()
    before = {j.task_id: deadline(node.client, node.keys, j.task_id) for j in running}
    redis_clock_passes(node.client, max(d for d in before.values() if d is not None) - LEASE * 1000)
    node.keeper._renew()
    for j in running:
        renewed = deadline(node.client, node.keys, j.task_id)
        assert renewed is not None and renewed > (before[j.task_id] or 0)
    assert all(deadline(node.client, node.keys, j.task_id) is None for j in finished)
    assert all(deadline(node.client, node.keys, j.task_id) == 0 for j in let_go)
    assert sorted(node.leases.sweep()) == sorted((j.task_id, True) for j in let_go)
    # What was let go or finished is no longer the node's to renew.
    assert set(node.keeper._held) == {(j.task_id, tokens[j.task_id]) for j in running}


def test_stopping_the_node_gives_up_every_job_it_holds(node: Node) -> None:
    jobs = [job("First held job."), job("Second held job.")]
    for j in jobs:
        request, _ = node.deliver(j)
        node.reserved.append(request)
        node.keeper.received(request)
    node.keeper.stop()
    assert sorted(node.leases.sweep()) == sorted((j.task_id, True) for j in jobs)
