"""Shared state: the cache index (what audio exists) and the task board (what jobs are doing).

Embedded mode keeps the index in SQLite (it survives restarts) and the board in memory;
distributed mode keeps both in Redis. Engine processes never touch either: they only synthesize.
The job body is a coroutine, on the API's event loop (embedded) or on a Celery worker process's
own loop (distributed); it calls the index and board from its post-processing thread pool, hence
the synchronous methods, and the API calls them too (``aget`` on its event loop).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from pydantic import BaseModel

from ..store.base import PIECE


@dataclass(frozen=True)
class CacheEntry:
    key: str
    fmt: str  # an audio format name, or "master"
    object_name: str
    size: int
    etag: str
    content_type: str
    sample_rate: int
    duration: float
    created_at: float
    expires_at: float
    # Where its bytes start in the object: the pieces one batch made share one object, each entry
    # a range of it (``jobs.pieces``), and the object goes when its last entry does.
    start: int = 0

    @property
    def span(self) -> tuple[int, int] | None:
        """The range of the object to read: a piece's own; None for the whole object."""
        return (self.start, self.size) if self.fmt == PIECE else None


def charges(entries: list[CacheEntry]) -> list[int]:
    """The bytes each entry adds to the byte budget, which counts every object once, while any
    entry names it. Entries for ranges of an object that one of them holds whole (a text's wav
    file, its sentences inside it) add nothing beside that one; ranges with no such entry (a
    batch's pieces) add their own sizes, which sum to the object's."""
    ends: dict[str, int] = {}
    for e in entries:
        ends[e.object_name] = max(ends.get(e.object_name, 0), e.start + e.size)

    def holds_whole(e: CacheEntry) -> bool:
        return e.start == 0 and e.size == ends[e.object_name]

    whole = {e.object_name for e in entries if holds_whole(e)}
    return [e.size if holds_whole(e) or e.object_name not in whole else 0 for e in entries]


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int  # of the objects entries name, each once
    # Of which sentence pieces (the second cache level); those inside a text's file count with it
    # while the text is cached, and on their own once it is gone.
    pieces: int = 0
    piece_bytes: int = 0


class CacheIndex(ABC):
    @abstractmethod
    def get(self, key: str, fmt: str) -> CacheEntry | None:
        """A live (unexpired) entry, marking it recently used."""

    async def aget(self, key: str, fmt: str) -> CacheEntry | None:
        """``get`` for the API's event loop; an index behind a network round trip overrides it."""
        return self.get(key, fmt)

    def get_many(self, keys: list[str], fmt: str) -> list[CacheEntry | None]:
        """``get`` of each key; an index behind a network round trip makes it one."""
        return [self.get(key, fmt) for key in keys]

    @abstractmethod
    def put(self, entry: CacheEntry) -> None: ...

    @abstractmethod
    def put_many(self, entries: list[CacheEntry]) -> None:
        """``put`` of each entry (those of one object: a batch's pieces, or a text's file and
        the sentences inside it), in one round trip or transaction where the index can; the
        object's bytes enter the budget once (``charges``)."""

    @abstractmethod
    def delete(self, key: str, fmt: str) -> list[str]:
        """Drop the entry; returns its object's name if no other entry names that object (for
        the caller to delete), else nothing."""

    @abstractmethod
    def evict(self, max_bytes: int) -> list[str]:
        """Drop expired entries, then least recently used ones until the total fits ``max_bytes``;
        returns the names of the objects no entry names any more, for the caller to delete. An
        object's bytes leave the total with the last entry that names it."""

    @abstractmethod
    def stats(self, *, levels: bool = False) -> CacheStats:
        """Entries and bytes; with ``levels``, also how many of them are sentence pieces (may
        scan the whole index)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Stage(StrEnum):
    QUEUED = "queued"
    SYNTHESIZING = "synthesizing"
    ENCODING = "encoding"
    STORING = "storing"
    DONE = "done"
    FAILED = "failed"


STAGE_STATUS = {
    Stage.QUEUED: Status.QUEUED,
    Stage.SYNTHESIZING: Status.RUNNING,
    Stage.ENCODING: Status.RUNNING,
    Stage.STORING: Status.RUNNING,
    Stage.DONE: Status.DONE,
    Stage.FAILED: Status.FAILED,
}


class TaskError(BaseModel):
    code: str
    message: str


class Mark(BaseModel):
    """An SSML ``<mark>``: where in the audio it fell."""

    name: str
    seconds: float


class TaskStatus(BaseModel):
    task_id: str
    status: Status
    stage: Stage
    progress: int = 0
    key: str
    format: str
    audio_id: str | None = None
    error: TaskError | None = None
    # Once the job has looked for its sentences in the piece cache: how many the text has, and
    # how many were found there.
    sentences: int | None = None
    sentences_reused: int | None = None
    # The SSML document's marks, once done.
    marks: list[Mark] | None = None
    created_at: float
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.status in (Status.DONE, Status.FAILED)

    def advance(self, stage: Stage, progress: int, **changes: Any) -> TaskStatus:
        return self.model_copy(
            update={
                "stage": stage,
                "status": STAGE_STATUS[stage],
                "progress": max(0, min(100, progress)),
                "updated_at": time.time(),
                **changes,
            }
        )


class IdempotencyKeys(ABC):
    """Client-chosen ``Idempotency-Key`` header values, each bound to the request it first came with."""

    @abstractmethod
    async def bind(self, key: str, fingerprint: str, ttl: float) -> str:
        """Bind ``key`` to ``fingerprint`` unless already bound; returns the fingerprint it is bound to."""


class RateDecision(NamedTuple):
    allowed: bool
    remaining: int
    retry_after: float  # seconds until the next request would be allowed (0 when allowed)


class RateLimiter(ABC):
    """Token buckets by caller: ``rate`` tokens a second, at most ``burst`` saved up."""

    @abstractmethod
    async def take(self, caller: str, rate: float, burst: int) -> RateDecision: ...


class TaskBoard(ABC):
    """Task status by id, kept for ``task_ttl`` seconds after the last update (errors included)."""

    @abstractmethod
    def get(self, task_id: str) -> TaskStatus | None: ...

    async def aget(self, task_id: str) -> TaskStatus | None:
        """``get`` for the API's event loop; a board behind a network round trip overrides it."""
        return self.get(task_id)

    @abstractmethod
    def put(self, status: TaskStatus) -> None: ...
