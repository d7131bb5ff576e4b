"""What workers share through Redis for every API process: the registry of live and busy
slots, and the jobs' counters and slot-time average."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio

from ttsd.config import Settings
from ttsd.jobs.distributed.protocol import broker_queue_key
from ttsd.jobs.model import EWMA_WEIGHT, MovingAverage
from ttsd.state.redis.client import connect
from ttsd.state.redis.keys import RedisKeys
from ttsd.state.redis.registry import WorkerRegistry
from ttsd.state.redis.stats import RedisJobStats

from ..job_fakes import ENGINE
from ..servers import Clock

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
