"""Distributed mode's recovery pieces in process, against a real Redis of this module's own: the
API's sweeper, the worker node's lease keeper, the cross-process sentence claims and the live
stream's entries. No broker, no workers: a test plays their part by writing what they would."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio
from prometheus_client import CollectorRegistry

from ttsd.config import Settings
from ttsd.errors import BackendUnavailable, JobCancelled
from ttsd.jobs.distributed import reporter as reporter_module
from ttsd.jobs.distributed.keeper import LeaseKeeper
from ttsd.jobs.distributed.protocol import (
    PCM_STREAM_TTL,
    StreamEntry,
    broker_queue_key,
    lease_token,
    publication,
)
from ttsd.jobs.distributed.reporter import RedisReporter
from ttsd.jobs.distributed.sweeper import Sweeper
from ttsd.jobs.model import EWMA_WEIGHT, Job, MovingAverage
from ttsd.state.base import Stage, TaskError, TaskStatus
from ttsd.state.redis.board import RedisTaskBoard
from ttsd.state.redis.claims import RedisClaims
from ttsd.state.redis.client import connect
from ttsd.state.redis.keys import RedisKeys
from ttsd.state.redis.leases import JobLeases, LeaseLost
from ttsd.state.redis.registry import WorkerRegistry
from ttsd.state.redis.stats import RedisJobStats

from .conftest import Clock, Redis, free_port, wait_for
from .job_fakes import ENGINE, job

LEASE = 2.0  # the shortest TTSD_JOB_LEASE allowed
REQUEUE_AFTER = 60.0


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server: Redis, tmp_path: Path) -> Settings:
    # A prefix per test: tests share the server, never a key.
    return Settings(
        data_dir=tmp_path,
        queue="celery",
        redis_url=redis_server.url,
        redis_prefix=f"t{uuid.uuid4().hex[:12]}",
        job_lease=LEASE,
        requeue_after=REQUEUE_AFTER,
        engines=(ENGINE,),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    c = connect(settings)
    yield c
    c.close()


def redis_ms(client: redis.Redis) -> int:
    """Redis's clock, by which lease deadlines are kept."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def deadline(client: redis.Redis, keys: RedisKeys, task_id: str) -> float | None:
    score: Any = client.zscore(keys.leases, task_id)
    return None if score is None else float(score)


def redis_clock_passes(client: redis.Redis, ms: float) -> None:
    wait_for(lambda: redis_ms(client) > ms, timeout=5, interval=0.001, message=f"Redis's clock to pass {ms}")


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


# -- the worker registry ----------------------------------------------------------------------------


def test_an_idle_slot_elsewhere_counts_only_beyond_the_jobs_waiting_in_the_broker(
    client: redis.Redis, settings: Settings
) -> None:
    """A busy node leaves its next job to an idle one of its pool; but jobs already waiting in the
    broker go to that idle slot anyway, so with as many waiting the busy node takes more."""
    keys = RedisKeys(settings.redis_prefix)
    registry = WorkerRegistry(client, keys)
    for node in ("espeak|a", "espeak|b", "piper|c"):
        registry.beat(node, 1)
    registry.set_busy("espeak|a", 1, 1)
    queue = broker_queue_key(settings, "espeak")
    assert registry.idle_elsewhere("espeak|a", 60, [queue]) == 1  # b idle (c is another pool)
    client.lpush(queue, "a job")
    assert registry.idle_elsewhere("espeak|a", 60, [queue]) == 0
    assert registry.idle_elsewhere("espeak|a", 60) == 1
    registry.set_busy("espeak|b", 1, 1)
    client.delete(queue)
    assert registry.idle_elsewhere("espeak|a", 60, [queue]) == 0


def test_a_step_of_the_wall_clock_does_not_make_live_workers_look_dead(
    client: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Heartbeats are wall-clock stamps: set forward past their staleness (as a resumed virtual
    machine's clock is), they are forgiven until every worker has beaten since; a worker that
    stopped beating is still dropped."""
    clock = Clock.replacing_time(monkeypatch, WorkerRegistry)
    keys = RedisKeys(settings.redis_prefix)
    api, a, b = (WorkerRegistry(client, keys) for _ in range(3))
    a.beat("piper|a", 1)
    b.beat("piper|b", 1)
    assert api.alive_by_pool() == {"piper": 2}
    clock.now += 8
    clock.step(WorkerRegistry.STALE_SECONDS * 2)
    a.beat("piper|a", 1)  # the first worker to beat after the step prunes nobody
    assert api.alive_by_pool() == {"piper": 2}
    clock.now += WorkerRegistry.HEARTBEAT_SECONDS  # a beats on; b never beats again
    a.beat("piper|a", 1)
    assert api.alive_by_pool() == {"piper": 2}  # b's last beat is 18 s old, less than the staleness
    clock.now += WorkerRegistry.STALE_SECONDS - 8
    a.beat("piper|a", 1)
    assert api.alive_by_pool() == {"piper": 1}
    assert client.zrange(keys.workers, 0, -1) == [b"piper|a#0"]


# -- sentence claims --------------------------------------------------------------------------------


def test_sentence_claims_across_workers(settings: Settings) -> None:
    keys = RedisKeys(settings.redis_prefix)

    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            a, b = RedisClaims(r, keys, "worker-a"), RedisClaims(r, keys, "worker-b")
            assert await a.claim(["k1", "k2"], "job-1") == [True, True]
            assert await b.claim(["k1", "k3"], "job-2") == [False, True]
            assert await b.held("k1") and not await b.held("k4")
            ttl: Any = await r.pttl(keys.piece_claim("k1"))
            assert 0 < ttl <= 6000  # a lease: a dead holder lets go by itself
            # The next delivery of job-1, on another worker, takes its earlier run's claim at once.
            assert await b.claim(["k2"], "job-1") == [True]
            await a.release(["k1", "k2"])
            assert not await a.held("k1")
            assert await a.held("k2")  # an earlier holder's release does not drop the new one's
            await b.release(["k2", "k3", "never-claimed"])
            assert not any([await b.held("k2"), await b.held("k3")])
            assert await a.claim(["k2"], "job-3") == [True]
            await a.release(["k2"])
        finally:
            await r.aclose()

    asyncio.run(scenario())


def test_sentence_claims_with_redis_away_are_a_backend_error(settings: Settings) -> None:
    keys = RedisKeys(settings.redis_prefix)

    async def scenario() -> None:
        r = redis.asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
        try:
            claims = RedisClaims(r, keys, "worker-a")
            with pytest.raises(BackendUnavailable):
                await claims.claim(["k1"], "job-1")
            with pytest.raises(BackendUnavailable):
                await claims.held("k1")
        finally:
            await r.aclose()

    asyncio.run(scenario())


# -- the live stream's entries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        StreamEntry(2, pcm=bytes(range(256)) + b"\x00\x00", rate=24000),
        StreamEntry(1, end=True),
        StreamEntry(3, error=("cancelled", "every listener left — all of them")),
    ],
    ids=["audio", "end", "error"],
)
def test_a_stream_entry_survives_a_redis_stream(
    client: redis.Redis, settings: Settings, entry: StreamEntry
) -> None:
    stream = RedisKeys(settings.redis_prefix).pcm("task")
    client.xadd(stream, entry.fields())  # type: ignore[arg-type]
    found: Any = client.xrange(stream)
    ((_, fields),) = found
    assert StreamEntry.parse(fields) == entry


def test_a_jobs_counts_reach_redis_together_in_one_round_trip(
    settings: Settings, client: redis.Redis
) -> None:
    keys = RedisKeys(settings.redis_prefix)
    stats = RedisJobStats(client, keys)
    client.config_resetstat()
    with stats.together():
        stats.synthesized(ENGINE, "v", 2.5)
        stats.sentences(reused=1, made=2, merged=0)
        stats.encoded("mp3")
        assert not client.exists(keys.stats)  # gathered, not yet written
    fields = {k.decode(): float(v) for k, v in client.hgetall(keys.stats).items()}
    assert fields == {
        f"ttsd_syntheses|{ENGINE}|v": 1,
        f"ttsd_audio_seconds|{ENGINE}|v": 2.5,
        "ttsd_sentence_requests|hit": 1,
        "ttsd_sentence_requests|miss": 2,
        "ttsd_encodes|mp3": 1,
    }
    stats.encoded("mp3")  # outside: written at once
    assert float(client.hget(keys.stats, "ttsd_encodes|mp3") or 0) == 2
    calls = client.info("commandstats")["cmdstat_hincrbyfloat"]["calls"]
    assert calls == 6


def test_workers_move_one_shared_average_of_slot_time(settings: Settings, client: redis.Redis) -> None:
    """The slot time per job that every API's admission divides the queue by: each worker's batch
    moves it as embedded mode's own average moves, with its counters in the same round trip."""
    keys = RedisKeys(settings.redis_prefix)
    a, b = RedisJobStats(client, keys), RedisJobStats(connect(settings), keys)
    with a.together():
        a.engine_time(ENGINE, "v", 2.0, 1.5)
        a.slot_time(ENGINE, 2.0, EWMA_WEIGHT)
        assert not client.exists(keys.job_seconds(ENGINE))  # gathered, not yet written
    b.slot_time(ENGINE, 1.0, EWMA_WEIGHT)
    embedded = MovingAverage()
    embedded.observe(2.0)
    embedded.observe(1.0)
    assert float(client.get(keys.job_seconds(ENGINE)) or 0) == pytest.approx(embedded.seconds)
    assert 0 < client.ttl(keys.job_seconds(ENGINE)) <= 86400
    assert float(client.hget(keys.stats, f"ttsd_slot_busy_seconds|{ENGINE}|v") or 0) == 2.0


@pytest.mark.parametrize(
    "joins", [None, 0, 1, 2], ids=["nobody", "from-the-start", "in-flight", "at-the-end"]
)
def test_audio_nobody_listens_to_is_held_back_and_a_listener_who_joins_gets_it_all_in_order(
    settings: Settings, client: redis.Redis, joins: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job submitted without a streaming listener (``POST /v1/synthesize``) writes no audio to
    Redis. A listener that joins in flight gets what was held back, then the rest, in order; a
    stream nobody listened to leaves nothing behind at its end. (Asked at every sentence here: how
    often it is asked is the next test's.)"""
    monkeypatch.setattr(reporter_module, "_ASK_EVERY", 0.0)
    keys = RedisKeys(settings.redis_prefix)
    leases = JobLeases(client, keys, settings.job_lease, ttl=600)
    j = job("Sentences nobody may hear.")
    assert leases.acquire(j.task_id, "node-a/1") == 1
    reporter = RedisReporter(leases, "node-a/1", j.queued(), 1, 600)
    sentences = [np.full(100_000, i, dtype=np.int16) for i in range(2)]
    received = client.info("stats")["total_net_input_bytes"]
    for i, pcm in enumerate(sentences):
        if joins == i:
            client.incr(keys.listeners(j.task_id))
        asyncio.run(reporter.audio(pcm, 16000))
        written = 0 if joins is None or joins > i else i + 1
        assert client.xlen(keys.pcm(j.task_id)) == written
    if joins == 2:
        client.incr(keys.listeners(j.task_id))
    asyncio.run(reporter.audio_end())
    if joins is None:
        assert not client.exists(keys.pcm(j.task_id))
        # Not even sent: only whether anyone listens was asked.
        assert client.info("stats")["total_net_input_bytes"] - received < 20_000
    else:
        entries = [StreamEntry.parse(f) for _, f in client.xrange(keys.pcm(j.task_id))]  # type: ignore[union-attr]
        assert [e.pcm for e in entries] == [p.tobytes() for p in sentences] + [b""]
        assert entries[-1].end and {e.attempt for e in entries} == {1}
        assert 0 < client.ttl(keys.pcm(j.task_id)) <= PCM_STREAM_TTL
    with pytest.raises(LeaseLost):  # fenced like every other write
        asyncio.run(RedisReporter(leases, "node-b/1", j.queued(), 2, 600).audio_end())


def test_while_nobody_listens_whether_anyone_does_is_asked_at_most_every_tenth_of_a_second(
    settings: Settings, client: redis.Redis
) -> None:
    """Asking is a thread hop and a fenced round trip: a fast engine's sentences come every few
    milliseconds, and those nobody hears are held without one. A listener who joins hears what was
    held back at the next sentence past the interval (or at the end), then each as it comes."""
    keys = RedisKeys(settings.redis_prefix)
    asked: list[bool] = []  # each round trip: whether it only asked (nobody listened yet)

    class Counted(JobLeases):
        def publish(self, *args: Any, **kwargs: Any) -> Any:
            asked.append(bool(kwargs.get("held")))
            return super().publish(*args, **kwargs)

    leases = Counted(client, keys, settings.job_lease, ttl=600)
    j = job("Sentences a listener joins.")
    assert leases.acquire(j.task_id, "node-a/1") == 1
    reporter = RedisReporter(leases, "node-a/1", j.queued(), 1, 600)
    pcm = [np.full(1000, i, dtype=np.int16) for i in range(8)]

    async def speak() -> None:
        for p in pcm[:4]:  # in one burst, nobody listening: only the first asks
            await reporter.audio(p, 16000)
        assert asked == [True]
        client.incr(keys.listeners(j.task_id))
        await reporter.audio(pcm[4], 16000)  # still within the interval: held, no round trip
        assert asked == [True] and client.xlen(keys.pcm(j.task_id)) == 0
        await asyncio.sleep(reporter_module._ASK_EVERY)
        await reporter.audio(pcm[5], 16000)  # asks again, and backfills everything held
        assert client.xlen(keys.pcm(j.task_id)) == 6
        for i in (6, 7):  # listened to: each written as it comes
            await reporter.audio(pcm[i], 16000)
            assert client.xlen(keys.pcm(j.task_id)) == i + 1
        await reporter.audio_end()

    asyncio.run(speak())
    entries = [StreamEntry.parse(f) for _, f in client.xrange(keys.pcm(j.task_id))]  # type: ignore[union-attr]
    assert [e.pcm for e in entries] == [p.tobytes() for p in pcm] + [b""]
    assert len(asked) == 6  # the first ask, the backfill's two calls, two entries, the end


def test_an_entry_redis_never_took_is_not_held_back(settings: Settings, client: redis.Redis) -> None:
    """A publish that failed (Redis away) leaves nothing held: the job is tried again from its
    first sentence, so a listener who joins later must not hear the failed entry as well."""
    keys = RedisKeys(settings.redis_prefix)

    class Flaky(JobLeases):
        away = True

        def publish(self, *args: Any, **kwargs: Any) -> Any:
            if self.away:
                self.away = False
                raise BackendUnavailable("Redis is unreachable")
            return super().publish(*args, **kwargs)

    leases = Flaky(client, keys, settings.job_lease, ttl=600)
    j = job("A sentence Redis missed.")
    assert leases.acquire(j.task_id, "node-a/1") == 1
    reporter = RedisReporter(leases, "node-a/1", j.queued(), 1, 600)
    with pytest.raises(BackendUnavailable):
        asyncio.run(reporter.audio(np.full(100, 1, dtype=np.int16), 16000))
    client.incr(keys.listeners(j.task_id))
    asyncio.run(reporter.audio(np.full(100, 2, dtype=np.int16), 16000))
    entries = [StreamEntry.parse(f) for _, f in client.xrange(keys.pcm(j.task_id))]  # type: ignore[union-attr]
    assert [e.pcm for e in entries] == [np.full(100, 2, dtype=np.int16).tobytes()]


def test_a_job_whose_listeners_all_left_is_cancelled_at_its_next_sentence(
    settings: Settings, client: redis.Redis
) -> None:
    keys = RedisKeys(settings.redis_prefix)
    leases = JobLeases(client, keys, settings.job_lease, ttl=600)
    j = job("Sentences a caller hung up on.")
    assert leases.acquire(j.task_id, "node-a/1") == 1
    reporter = RedisReporter(leases, "node-a/1", j.queued(), 1, 600)
    client.set(keys.cancel(j.task_id), 1)  # what the last listener out leaves
    with pytest.raises(JobCancelled):
        asyncio.run(reporter.audio(np.zeros(100, dtype=np.int16), 16000))
    assert not client.exists(keys.pcm(j.task_id))


def test_a_fast_jobs_status_is_written_once_and_a_slow_stage_within_a_fifth_of_a_second(
    settings: Settings, client: redis.Redis
) -> None:
    """Each status write is a fenced round trip: a job that goes through its stages in
    milliseconds writes only its end on its own, and what changed rides with its audio; a stage it
    stays in is written in the background, at most 0.2 s after it began."""
    keys = RedisKeys(settings.redis_prefix)
    writes: list[TaskStatus] = []

    class Counted(JobLeases):
        def put_status(self, token: str, status: TaskStatus, ttl: int) -> None:
            super().put_status(token, status, ttl)
            writes.append(status)

    leases = Counted(client, keys, settings.job_lease, ttl=600)

    def stored(task_id: str) -> TaskStatus:
        return TaskStatus.model_validate_json(client.get(keys.task(task_id)) or b"{}")

    async def fast(j: Job) -> None:
        reporter = RedisReporter(leases, "node-a/1", j.queued(), 1, 600)
        await reporter.stage(Stage.QUEUED, 0, sentences=2, sentences_reused=1)
        await reporter.stage(Stage.SYNTHESIZING, 0)
        # The cached first sentence goes on the wire: the status that accounts for it goes with it.
        await reporter.audio(np.zeros(160, np.int16), 16000)
        assert stored(j.task_id).sentences_reused == 1 and stored(j.task_id).stage is Stage.SYNTHESIZING
        for stage, progress in ((Stage.SYNTHESIZING, 80), (Stage.ENCODING, 85), (Stage.STORING, 95)):
            await reporter.stage(stage, progress)
        await reporter.stage(Stage.DONE, 100, audio_id=f"{j.key}.wav")

    async def slow(j: Job) -> None:
        reporter = RedisReporter(leases, "node-a/1", j.queued(), 1, 600)
        await reporter.stage(Stage.QUEUED, 0, sentences=3, sentences_reused=1)
        await reporter.stage(Stage.SYNTHESIZING, 33)
        await asyncio.sleep(0.4)  # past the interval: written meanwhile, without another call
        assert len(writes) == 1 and stored(j.task_id).stage is Stage.SYNTHESIZING
        assert stored(j.task_id).sentences_reused == 1
        await reporter.stage(Stage.FAILED, 33, error=TaskError(code="cancelled", message="left"))

    quick = job("Spoken in a few milliseconds.")
    leases.acquire(quick.task_id, "node-a/1")
    asyncio.run(fast(quick))
    assert [w.stage for w in writes] == [Stage.DONE] and stored(quick.task_id).sentences == 2
    writes.clear()
    lingering = job("A sentence a slow engine takes its time over.")
    leases.acquire(lingering.task_id, "node-a/1")
    asyncio.run(slow(lingering))
    assert [w.stage for w in writes] == [Stage.SYNTHESIZING, Stage.FAILED]
    assert stored(lingering.task_id).status == "failed"


def test_a_listener_hears_the_last_sentences_a_job_writes_just_before_it_is_seen_finished(
    settings: Settings, client: redis.Redis
) -> None:
    """The last sentences, the stream's end and the final status can all come between a listener's
    empty read (nothing for half a second: the engine speaking a long sentence) and its status
    read. Seeing the job finished, the listener must read the stream once more, not stop short."""
    from ttsd.jobs.distributed.queue import CeleryQueue
    from ttsd.metrics import Metrics
    from ttsd.state.recent import RecentEntries

    keys = RedisKeys(settings.redis_prefix)
    j = job("A short opening. Then a sentence the engine takes long to speak.")
    first, last = np.full(100, 1, dtype=np.int16), np.full(100, 2, dtype=np.int16)

    class FinishingJustBefore(RedisTaskBoard):
        """The worker ends the job between the listener's empty read and this status read."""

        def get(self, task_id: str) -> TaskStatus | None:
            if task_id == j.task_id and not client.exists(keys.job(task_id) + ":ended"):
                client.set(keys.job(task_id) + ":ended", 1)
                for entry in (StreamEntry(1, pcm=last.tobytes(), rate=16000), StreamEntry(1, end=True)):
                    client.xadd(keys.pcm(task_id), entry.fields())  # type: ignore[arg-type]
                super().put(j.queued().advance(Stage.DONE, 100))
            return super().get(task_id)

    board = FinishingJustBefore(client, keys, ttl=3600)
    board.put(j.queued())
    client.xadd(keys.pcm(j.task_id), StreamEntry(1, pcm=first.tobytes(), rate=16000).fields())  # type: ignore[arg-type]
    queue = CeleryQueue(settings, client, board, Metrics(), RecentEntries())

    async def listen() -> list[np.ndarray]:
        return [piece.pcm async for piece in queue.audio(j.task_id)]

    heard = asyncio.run(listen())
    assert [p.tolist() for p in heard] == [first.tolist(), last.tolist()]


def test_a_listener_cancelled_while_redis_connects_stops_there(
    settings: Settings, client: redis.Redis
) -> None:
    """A listener is cancelled when its caller hangs up. Python 3.11's ``asyncio.wait_for``, which
    redis-py's asyncio client runs as it opens a connection, drops a cancel that comes as the call
    it waits on completes: the listener would read on, the job speaking for nobody till its end.
    Each listener here opens a new connection, and the cancel comes at a different point of it:
    none may hear the sentence written after its cancel."""
    from ttsd.jobs.distributed.queue import CeleryQueue
    from ttsd.metrics import Metrics
    from ttsd.state.recent import RecentEntries

    keys = RedisKeys(settings.redis_prefix)
    board = RedisTaskBoard(client, keys, ttl=3600)
    piece = StreamEntry(1, pcm=np.full(100, 1, dtype=np.int16).tobytes(), rate=16000)

    async def trial(steps: int) -> tuple[bool, int]:
        j = job(f"A caller hangs up at step {steps} of a connection, {uuid.uuid4().hex}.")
        board.put(j.queued())
        queue = CeleryQueue(settings, client, board, Metrics(), RecentEntries())  # no connection yet
        heard: list[Any] = []

        async def listen() -> None:
            async for p in queue.audio(j.task_id):
                heard.append(p)

        listening = asyncio.ensure_future(listen())
        for _ in range(steps):
            await asyncio.sleep(0)
        listening.cancel()
        client.xadd(keys.pcm(j.task_id), piece.fields())  # type: ignore[arg-type]
        client.xadd(keys.pcm(j.task_id), StreamEntry(1, end=True).fields())  # type: ignore[arg-type]
        await asyncio.wait((listening,), timeout=5)
        return listening.cancelled(), len(heard)

    async def every_step() -> list[tuple[bool, int]]:
        return [await trial(steps) for steps in range(40)]

    outcomes = asyncio.run(every_step())
    assert outcomes == [(True, 0)] * 40, outcomes
