"""What the API and the workers of distributed mode agree on, in one module both import (as arq's
``constants``): the Celery task and queue names, a job's message and lease token, the Redis keys
that one run of a job keeps, and the fields of its live audio stream."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from ...config import Settings
from ...state.redis.keys import RedisKeys

TASK_NAME = "ttsd.synthesize"
# Deliveries of one job (the first, then redeliveries after its worker died) before it is failed for
# good, so a text that kills its engine cannot crash workers forever.
MAX_DELIVERIES = 4
# How long a job's live audio stream outlives its last entry.
PCM_STREAM_TTL = 300


def mark_ttl(settings: Settings) -> int:
    """How long a job's bookkeeping (single-flight mark, payload, lease token, delivery count) may
    live: every delivery it may get, each up to the job timeout, and some queueing."""
    return int(settings.job_timeout * (MAX_DELIVERIES + 1)) + 600


def queue_name(engine: str) -> str:
    """Each engine has its own queue: a backlog for one never delays another's jobs, and a worker
    consumes only the queues of the engines its pool hosts."""
    return f"ttsd.{engine}"


def broker_queue_key(settings: Settings, engine: str) -> str:
    """The Redis list holding an engine queue's pending messages (its length is the depth)."""
    return f"{settings.redis_prefix}:celery:{queue_name(engine)}"


def publication(payload: dict[str, Any]) -> dict[str, Any]:
    """The message for one publication of a job: a fresh id, so each delivery's lease token is
    its own and a worker holding an older one is fenced out."""
    return {**payload, "publication": secrets.token_hex(8)}


def lease_token(node: str, payload: dict[str, Any]) -> str:
    return f"{node}/{payload.get('publication', '-')}"


def leftovers(keys: RedisKeys, task_id: str) -> list[str]:
    """What an earlier run of a task (cancelled or failed) leaves that a new run must not inherit."""
    return [keys.pcm(task_id), keys.cancel(task_id), keys.listeners(task_id), keys.pinned(task_id)]


def bookkeeping(keys: RedisKeys, task_id: str) -> list[str]:
    """The keys one run of a job keeps while it is in flight, deleted when it ends (its status and
    live stream stay, with their own TTLs)."""
    return [
        keys.inflight(task_id),
        keys.deliveries(task_id),
        keys.listeners(task_id),
        keys.pinned(task_id),
        keys.cancel(task_id),
        keys.job(task_id),
    ]


@dataclass(frozen=True)
class StreamEntry:
    """One entry of a job's live audio stream: a sentence of its master, its end, or its error.
    ``attempt`` is the delivery that wrote it, so a listener that heard part of an earlier
    delivery skips what it heard."""

    attempt: int
    pcm: bytes | memoryview = b""  # a writer's view of its samples: most are held, never sent
    rate: int = 0
    end: bool = False
    error: tuple[str, str] | None = None  # (code, message)

    def fields(self) -> dict[str, bytes | memoryview | str | int]:
        fields: dict[str, bytes | memoryview | str | int] = {"attempt": self.attempt}
        if self.error is not None:
            fields.update(error=self.error[0], message=self.error[1])
        elif self.end:
            fields["end"] = 1
        else:
            fields.update(rate=self.rate, pcm=self.pcm)
        return fields

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> StreamEntry:
        attempt = int(fields.get(b"attempt", 0))
        if b"error" in fields:
            return cls(attempt, error=(fields[b"error"].decode(), fields[b"message"].decode()))
        if b"end" in fields:
            return cls(attempt, end=True)
        return cls(attempt, pcm=fields[b"pcm"], rate=int(fields[b"rate"]))
