"""A distributed job's progress to the task board, its master's sentences to a Redis stream the
listening API reads; both fenced by the delivery's lease token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from ...audio import Pcm16
from ...errors import JobCancelled, TtsdError
from ...state.base import Stage, TaskStatus
from ...state.redis.leases import JobLeases
from .protocol import PCM_STREAM_TTL, StreamEntry

log = logging.getLogger("ttsd.worker")

# Progress within a stage is written at most this often: each write is a fenced Redis round trip,
# and a sentence of a fast engine takes a few milliseconds.
_PROGRESS_EVERY = 0.2


class RedisReporter:
    """Once the job has been handed to another worker, every write raises ``LeaseLost`` and changes
    nothing. The writes are synchronous Redis round trips; the job body awaits them off the
    worker's event loop (``to_thread``), which the job's flights and claims share."""

    def __init__(
        self, leases: JobLeases, token: str, status: TaskStatus, attempt: int, task_ttl: int
    ) -> None:
        self._leases = leases
        self._token = token
        self.status = status
        self._attempt = attempt
        self._task_ttl = task_ttl
        self._written = 0.0
        self.on_stage: Callable[[Stage], None] | None = None  # told of each stage as it is reported

    def put_stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        status = self.status.advance(stage, progress, **changes)
        now = time.monotonic()
        if stage is self.status.stage and not changes and now - self._written < _PROGRESS_EVERY:
            self.status = status  # progress within a stage: written with the next write
            return
        self._leases.put_status(self._token, status, self._task_ttl)
        self._written = now
        if stage is not self.status.stage:
            log.info("job stage", extra={"task_id": status.task_id, "key": status.key, "stage": stage.value})
        self.status = status

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        if self.on_stage is not None:
            self.on_stage(stage)
        await asyncio.to_thread(self.put_stage, stage, progress, **changes)

    def _publish(self, entry: StreamEntry) -> None:
        fields = entry.fields()
        if self._leases.publish(self.status.task_id, self._token, fields, PCM_STREAM_TTL, last=entry.end):
            raise JobCancelled("every listener of this stream left")

    async def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        await asyncio.to_thread(
            self._publish, StreamEntry(self._attempt, pcm=pcm.tobytes(), rate=sample_rate)
        )

    async def audio_end(self) -> None:
        await asyncio.to_thread(self._publish, StreamEntry(self._attempt, end=True))

    async def failed(self, error: TtsdError) -> None:
        with contextlib.suppress(JobCancelled):
            entry = StreamEntry(self._attempt, error=(error.code, error.message))
            await asyncio.to_thread(self._publish, entry)
