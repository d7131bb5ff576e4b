"""A distributed job's progress to the task board, its master's sentences to a Redis stream the
listening API reads; both fenced by the delivery's lease token."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ...audio import Pcm16
from ...errors import BackendUnavailable, JobCancelled, TtsdError
from ...state.base import Stage, TaskStatus
from ...state.redis.leases import JobLeases, LeaseLost, Published
from .protocol import PCM_STREAM_TTL, StreamEntry

log = logging.getLogger("ttsd.worker")

# A job's status is written at most this often until it ends: each write is a fenced Redis round
# trip, and a fast engine's job goes through its stages (a sentence, encoding, storing) in a few
# milliseconds. What changed meanwhile is written this long after the last write at the latest.
_WRITE_EVERY = 0.2
# While nobody listens to a job's audio, whether anyone has begun to is asked at most this often
# (and always at the stream's end). Asking at every sentence was a thread hop and a fenced round
# trip per sentence, 12 % of a worker's CPU on eSpeak's texts (3 ms a sentence), for a listener
# who joins in flight and hears what was held back this much later.
_ASK_EVERY = 0.1


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
        self._lock = threading.Lock()  # writes in order: the latest status is the last written
        self._stored = self._begun = status
        # The delivery has just taken its lease: what it reports first (its sentence count, then
        # its stages) goes with its first audio entry, or its end, whichever comes first.
        self._written = time.monotonic()
        self._later: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._held: list[StreamEntry] = []  # the stream's entries nobody has listened to yet
        self._listening = False  # as of the last entry: else only whether anyone does is asked
        self._asked = -_ASK_EVERY  # when it was last asked and answered (monotonic seconds)
        self.streamed = False  # whether a listener may have heard any of this delivery
        self.on_stage: Callable[[Stage], None] | None = None  # told of each stage as it is reported

    async def stage(self, stage: Stage, progress: int, **changes: Any) -> None:
        if self.on_stage is not None:
            self.on_stage(stage)
        if stage is not self.status.stage:
            log.info(
                "job stage",
                extra={"task_id": self.status.task_id, "key": self.status.key, "stage": stage.value},
            )
        self.status = self.status.advance(stage, progress, **changes)
        wait = self._written + _WRITE_EVERY - time.monotonic()
        if self.status.finished or wait <= 0:
            await asyncio.to_thread(self._write)
        elif self._later is None:
            self._later = asyncio.get_running_loop().call_later(wait, self._flush)

    def _write(self) -> None:
        with self._lock:
            status = self.status
            if status is not self._stored:
                self._leases.put_status(self._token, status, self._task_ttl)
                self._stored = status
            self._written = time.monotonic()

    def _flush(self) -> None:
        """What changed since the last write, written in the background: a lost lease or Redis
        away is the next write's to raise (the job's end always writes)."""
        self._later = None

        def write() -> None:
            with contextlib.suppress(LeaseLost, BackendUnavailable):
                self._write()

        task = asyncio.ensure_future(asyncio.to_thread(write))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    def _publish(self, entry: StreamEntry) -> None:
        """An entry of the live stream, with the status when it changed since it was written (in
        one round trip): what a listener hears, the task's status already accounts for. While
        nobody listens the audio stays here, and only whether anyone does is asked; a listener
        who joins gets everything held back, then the rest as it comes."""
        with self._lock:
            status = self.status
            # The first (its counts, its stage), then at most every interval, as ``stage`` writes.
            due = self._stored is self._begun or time.monotonic() - self._written >= _WRITE_EVERY
            pending = (status, self._task_ttl) if status is not self._stored and due else None
            task_id, held = status.task_id, [*self._held, entry]  # kept only once the call went through
            sent = [e.fields() for e in held] if self._listening else []
            left, outcome = self._leases.publish(
                task_id, self._token, sent, PCM_STREAM_TTL, last=entry.end, held=not self._listening,
                status=pending,
            )  # fmt: skip
            if pending is not None:
                self._stored, self._written = status, time.monotonic()
            if outcome is Published.BACKFILL:
                entries = [e.fields() for e in held]
                left, outcome = self._leases.publish(
                    task_id, self._token, entries, PCM_STREAM_TTL, last=entry.end
                )
            self._listening = outcome is Published.WRITTEN
            self.streamed = self.streamed or self._listening
            # Sent, or the stream is over (a listener joining later reads the stored file): none held.
            self._held = [] if self._listening or entry.end or entry.error is not None else held
        if left:
            raise JobCancelled("every listener of this stream left")

    async def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        entry = StreamEntry(self._attempt, pcm=np.ascontiguousarray(pcm).data.cast("B"), rate=sample_rate)
        now = time.monotonic()
        if not self._listening and now - self._asked < _ASK_EVERY:
            with self._lock:
                self._held.append(entry)
            return
        await asyncio.to_thread(self._publish, entry)
        self._asked = now  # a call Redis never took asked nothing: the next entry asks again

    async def audio_end(self) -> None:
        await asyncio.to_thread(self._publish, StreamEntry(self._attempt, end=True))

    async def failed(self, error: TtsdError) -> None:
        with contextlib.suppress(JobCancelled):
            entry = StreamEntry(self._attempt, error=(error.code, error.message))
            await asyncio.to_thread(self._publish, entry)
