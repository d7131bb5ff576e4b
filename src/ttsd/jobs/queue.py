"""The queue interface the service talks to; embedded mode implements it with a process pool."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..state.base import TaskStatus
from .model import Job, Piece


@dataclass(frozen=True)
class Submission:
    status: TaskStatus
    merged: bool  # True when an identical job was already in flight


class JobQueue(ABC):
    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Engines loaded and warmed: jobs will run."""

    @property
    @abstractmethod
    def not_ready_reason(self) -> str: ...

    @abstractmethod
    def engine_states(self) -> dict[str, str]:
        """Each engine's state: "ready" when it has a live slot, else why not."""

    @abstractmethod
    async def submit(self, job: Job, *, stream: bool = False) -> Submission:
        """Queue a job, or join the identical one in flight; raises Overloaded when full.

        ``stream=True`` registers a listener that must call ``release`` when it leaves: a job only
        streaming listeners want is cancelled when the last one goes. Any other submission pins the
        job, so it runs to the end."""

    @abstractmethod
    def audio(self, task_id: str) -> AsyncIterator[Piece]:
        """The pieces of the master this task synthesizes, from the first, as they are made; ends
        when the master is complete, at once if the task synthesizes nothing (its master was
        cached). Raises the job's error if it fails."""

    @abstractmethod
    async def release(self, task_id: str) -> None:
        """A streaming listener left."""

    @abstractmethod
    async def wait(self, task_id: str) -> TaskStatus | None:
        """The task's final status, once it has one (None if the task is unknown)."""
