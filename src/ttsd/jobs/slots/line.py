"""The line for something that frees up (an engine process with room): earliest deadline first.

A waiter's deadline is when its audio is needed. Requests over HTTP are needed as they arrive (their
deadline is their arrival), so among them the line is first come, first served. A live session's
next sentence is needed when the audio it already sent has played out, seconds from now: it lets a
new turn's first sentence go before it, which is what keeps more callers from hearing a gap.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Line:
    def __init__(self) -> None:
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def wake(self, *, everyone: bool = False) -> None:
        """Something freed up: the most urgent waiter looks (``everyone``: all do, to fail)."""
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    async def take(self, free: Callable[[], T | None], check: Callable[[], None], deadline: float) -> T:
        """What ``free`` finds, most urgent deadline first (ties in the order callers came);
        ``check`` raises when none will come."""
        place = (deadline, next(self._order))
        first = True
        while True:
            check()
            found = free()
            if found is not None and (not first or not self._waiters or place < self._waiters[0][:2]):
                if self._waiters and free() is not None:
                    self.wake()  # room left for the next in line
                return found
            # Woken but the room was gone: back in line at the same place, so still ahead of those
            # who came later with later deadlines.
            waiter = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiters, (*place, waiter))
            first = False
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done():
                    self.wake()  # pass the wake-up this waiter took on
                else:
                    self._waiters = [w for w in self._waiters if w[2] is not waiter]
                    heapq.heapify(self._waiters)
                raise
