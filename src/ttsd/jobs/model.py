"""What travels to a worker (a Job) and back (a JobOutcome, progress reports)."""

from __future__ import annotations

import functools
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from ..audio import Pcm16
from ..keys import SynthesisSpec
from ..state.base import CacheEntry, Stage, Status, TaskStatus


@dataclass(frozen=True)
class Job:
    task_id: str
    spec: SynthesisSpec
    fmt: str

    @functools.cached_property
    def key(self) -> str:
        return self.spec.key

    def queued(self) -> TaskStatus:
        """This job's status as it enters the queue."""
        now = time.time()
        return TaskStatus(
            task_id=self.task_id,
            status=Status.QUEUED,
            stage=Stage.QUEUED,
            key=self.key,
            format=self.fmt,
            created_at=now,
            updated_at=now,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the Celery message."""
        return {"task_id": self.task_id, "fmt": self.fmt, "spec": asdict(self.spec)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(task_id=data["task_id"], fmt=data["fmt"], spec=SynthesisSpec(**data["spec"]))


@dataclass(frozen=True)
class Piece:
    """A sentence of a master as it is made: int16 mono samples at the engine's rate."""

    pcm: Pcm16
    sample_rate: int


@dataclass(frozen=True)
class JobOutcome:
    entry: CacheEntry
    synthesized: bool  # False when the master came from the cache and only an encode ran
    audio_seconds: float
    synthesis_seconds: float
    # Wall time on the engine slot, queueing excluded (set by the runner): what a slot costs.
    service_seconds: float = 0.0
    # Objects the job evicted to keep the byte budget: the API forgets them at once.
    evicted: tuple[str, ...] = ()


class Reporter(Protocol):
    """Where the job body reports progress; the pool forwards it to the task board."""

    def stage(self, stage: Stage, progress: int) -> None: ...

    def audio(self, pcm: Pcm16, sample_rate: int) -> None:
        """One assembled piece, in order, as soon as it is made. Raises JobCancelled when every
        listener of a streamed job has gone, so the engine stops between sentences."""

    def audio_end(self) -> None:
        """The master is complete (called only when this job synthesized it)."""
