"""A job's reporter on a worker: its live stream's entries, the audio it holds back while
nobody listens, a cancel when every listener left, and how often it writes the job's status."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio

from ttsd.config import Settings
from ttsd.errors import BackendUnavailable, JobCancelled
from ttsd.jobs.distributed import reporter as reporter_module
from ttsd.jobs.distributed.protocol import PCM_STREAM_TTL, StreamEntry
from ttsd.jobs.distributed.reporter import RedisReporter
from ttsd.jobs.model import Job
from ttsd.state.base import Stage, TaskError, TaskStatus
from ttsd.state.redis.keys import RedisKeys
from ttsd.state.redis.leases import JobLeases, LeaseLost

from ..job_fakes import job

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
