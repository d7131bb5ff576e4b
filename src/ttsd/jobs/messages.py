"""What crosses an engine slot's boundary, typed: the slot core emits these, the embedded engine
process sends them over its pipe, and the distributed worker's slot thread hands them to its event
loop. Each message names its kind, so a reader logs or counts what it did not expect instead of
guessing from a tuple's length."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import numpy as np

from ..audio import Pcm16
from .model import SentenceBatch


class Kind(StrEnum):
    READY = "ready"
    FATAL = "fatal"
    SPOKEN = "spoken"
    DONE = "done"
    FAILED = "failed"
    CANCEL = "cancel"
    STOP = "stop"


# -- from a slot -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The engine process loaded and warmed its engines."""

    pid: int
    kind: ClassVar[Kind] = Kind.READY


@dataclass(frozen=True, slots=True)
class Fatal:
    """The engine process cannot load its engines: respawning it would fail the same way."""

    code: str
    message: str
    kind: ClassVar[Kind] = Kind.FATAL


@dataclass(frozen=True, slots=True)
class Spoken:
    """One sentence as it will be cached: faded int16 samples (bytes cross a pipe as they are)."""

    request_id: str
    index: int  # the sentence's place in its text
    sample_rate: int
    pcm: bytes
    seconds: float  # engine time speaking it
    kind: ClassVar[Kind] = Kind.SPOKEN

    @property
    def samples(self) -> Pcm16:
        return np.frombuffer(self.pcm, dtype=np.int16)


@dataclass(frozen=True, slots=True)
class BatchDone:
    request_id: str
    slot_seconds: float  # the slot's own account of the time it gave the batch
    kind: ClassVar[Kind] = Kind.DONE


@dataclass(frozen=True, slots=True)
class BatchFailed:
    """The batch ended early: the engine failed (``code`` of a ``JobError``) or it was cancelled."""

    request_id: str
    code: str
    message: str
    kind: ClassVar[Kind] = Kind.FAILED


SlotEvent = Spoken | BatchDone | BatchFailed
FromSlot = Ready | Fatal | SlotEvent


# -- to a slot ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop this batch at the next sentence or chunk (or never start it)."""

    request_id: str
    kind: ClassVar[Kind] = Kind.CANCEL


@dataclass(frozen=True, slots=True)
class Stop:
    """Finish nothing more and exit."""

    kind: ClassVar[Kind] = Kind.STOP


ToSlot = SentenceBatch | Cancel | Stop
