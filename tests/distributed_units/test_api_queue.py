"""The API's side of a distributed job (``CeleryQueue``): what a fresh submission leaves for workers
and sweepers and the round trips it waits on, and a listener of a job's live stream."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio
import redis.connection

from ttsd.config import Settings
from ttsd.jobs.distributed.broker import make_celery, publish
from ttsd.jobs.distributed.protocol import StreamEntry, broker_queue_key
from ttsd.jobs.distributed.queue import CeleryQueue
from ttsd.jobs.model import Job
from ttsd.metrics import Metrics
from ttsd.state.base import Stage, TaskStatus
from ttsd.state.recent import RecentEntries
from ttsd.state.redis.board import RedisTaskBoard
from ttsd.state.redis.keys import RedisKeys
from ttsd.state.redis.registry import WorkerRegistry

from ..job_fakes import ENGINE, job


@pytest.mark.parametrize("stream", [False, True])
def test_a_fresh_job_starts_in_one_round_trip_after_its_mark_and_admission(
    settings: Settings, client: redis.Redis, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """The API's event loop waits on each round trip of a submission: after the single-flight
    mark and the admission's reads, the rest (an earlier run's leftovers gone, the listener or
    pin, the status, the payload and its place among the pending) goes in one transaction."""
    keys = RedisKeys(settings.redis_prefix)
    WorkerRegistry(client, keys).beat(WorkerRegistry.member(ENGINE, "node:1"), 1)
    j = job(f"A fresh text, {uuid.uuid4().hex}.")
    client.set(keys.cancel(j.task_id), 1)  # what a cancelled earlier run left
    client.xadd(keys.pcm(j.task_id), {"attempt": 1, "end": 1})
    queue = CeleryQueue(settings, client, RedisTaskBoard(client, keys, ttl=3600), Metrics(), RecentEntries())
    published: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(queue, "_publish", lambda task_id, payload: published.append((task_id, payload)))
    sends: list[int] = []
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        send(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    submission = asyncio.run(queue.submit(j, stream=stream))
    monkeypatch.undo()

    # The mark, the live workers (read at most once a second), the admission's reads, the start.
    assert len(sends) == 4
    assert not submission.merged and submission.status.stage is Stage.QUEUED
    assert published == [(j.task_id, j.to_dict())]
    assert client.exists(keys.inflight(j.task_id))
    board = RedisTaskBoard(client, keys, ttl=3600).get(j.task_id)
    assert board is not None and board.stage is Stage.QUEUED
    assert json.loads(client.get(keys.job(j.task_id)) or b"") == j.to_dict()
    assert client.zscore(keys.pending, j.task_id) is not None
    assert not client.exists(keys.cancel(j.task_id)) and not client.exists(keys.pcm(j.task_id))
    listeners, pinned = client.get(keys.listeners(j.task_id)), client.exists(keys.pinned(j.task_id))
    assert (listeners, pinned) == ((b"1", 0) if stream else (None, 1))


def test_a_published_job_carries_its_text_in_its_body_only(settings: Settings, client: redis.Redis) -> None:
    """Celery shows a message's headers in its logs, ``celery inspect`` and Flower: a caller's text
    must not be copied there, only into the body the worker reads."""
    j = job(f"My card number is 4111 1111 1111 1111, {uuid.uuid4().hex}.")
    app = make_celery(settings)
    try:
        publish(app, j.task_id, ENGINE, j.to_dict())
    finally:
        app.close()
    (raw,) = client.lrange(broker_queue_key(settings, ENGINE), 0, -1)
    message = json.loads(raw)
    assert "4111" not in json.dumps(message["headers"]), message["headers"]
    assert message["headers"]["argsrepr"] == f"({ENGINE} job {j.task_id})"
    (payload,), _, _ = json.loads(base64.b64decode(message["body"]))
    assert Job.from_dict(payload).spec.text == j.spec.text


def test_a_listener_hears_the_last_sentences_a_job_writes_just_before_it_is_seen_finished(
    settings: Settings, client: redis.Redis
) -> None:
    """The last sentences, the stream's end and the final status can all come between a listener's
    empty read (nothing for half a second: the engine speaking a long sentence) and its status
    read. Seeing the job finished, the listener must read the stream once more, not stop short."""

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
