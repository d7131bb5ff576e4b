"""The queue interface the service talks to; embedded mode implements it with a process pool."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from ..state.base import TaskStatus
from .model import Job


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
    async def submit(self, job: Job) -> Submission:
        """Queue a job, or join the identical one in flight; raises Overloaded when full."""

    @abstractmethod
    async def wait(self, task_id: str) -> TaskStatus | None:
        """The task's final status, once it has one (None if the task is unknown)."""
