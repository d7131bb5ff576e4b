"""The API's side of a distributed job's start (``CeleryQueue.submit``), against a real Redis of this
module's own: what a fresh submission leaves for workers and sweepers, and the round trips the
API's event loop waits on to leave it."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.connection

from ttsd.config import Settings
from ttsd.jobs.distributed.queue import CeleryQueue
from ttsd.metrics import Metrics
from ttsd.state.base import Stage
from ttsd.state.recent import RecentEntries
from ttsd.state.redis.board import RedisTaskBoard
from ttsd.state.redis.client import connect
from ttsd.state.redis.keys import RedisKeys
from ttsd.state.redis.registry import WorkerRegistry

from .conftest import Redis
from .job_fakes import ENGINE, job


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server: Redis, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        queue="celery",
        redis_url=redis_server.url,
        redis_prefix=f"t{uuid.uuid4().hex[:12]}",
        engines=(ENGINE,),
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[redis.Redis]:
    c = connect(settings)
    yield c
    c.close()


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
