"""Distributed mode's recovery pieces in process, against a real Redis of this package's own: the
API's submission and sweeper, the worker node's lease keeper, the cross-process sentence claims, the
figures workers share and the live stream. No broker, no workers: a test plays their part by writing
what they would. Here: the Redis, the settings (a key prefix per test) and Redis's clock."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

from ttsd.config import Settings
from ttsd.state.redis.client import connect
from ttsd.state.redis.keys import RedisKeys

from ..job_fakes import ENGINE
from ..servers import wait_for
from ..stack import Redis

LEASE = 2.0  # the shortest TTSD_JOB_LEASE allowed
REQUEUE_AFTER = 60.0


@pytest.fixture(scope="package")
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
