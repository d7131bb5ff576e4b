"""A job's audio as it is made, for the listeners of embedded mode, and who wants the job."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ...errors import TtsdError
from ..model import Piece


@dataclass(eq=False)
class Feed:
    """The pieces of one job's master, kept while the job is in flight so a listener that joins
    late hears it from the start."""

    pieces: list[Piece] = field(default_factory=list)
    ended: bool = False
    error: TtsdError | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, piece: Piece | None) -> None:
        if piece is None:
            self.ended = True
        else:
            self.pieces.append(piece)
        self.changed.set()

    def close(self, error: TtsdError | None) -> None:
        if not self.ended:
            self.ended, self.error = True, error
        self.changed.set()


@dataclass
class Interest:
    """Streaming listeners cancel a job when the last one leaves, unless another request pinned it."""

    listeners: int = 0
    pinned: bool = False
    cancelled: bool = False
    # The job body while it waits for or holds engine slots: cancelled with the job (barge-in), so
    # its sentences still in line never reach a slot. Once its sentences are made it is left to
    # finish: a text whose audio exists is worth storing.
    work: asyncio.Future[Any] | None = None
