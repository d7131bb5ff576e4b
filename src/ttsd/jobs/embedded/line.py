"""A first-come, first-served line for something that frees up (an engine process with room)."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Line:
    def __init__(self) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def wake(self, *, everyone: bool = False) -> None:
        """Something freed up: the first in line looks (``everyone``: all do, to fail)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                if not everyone:
                    return

    async def take(self, free: Callable[[], T | None], check: Callable[[], None]) -> T:
        """What ``free`` finds, in the order callers came; ``check`` raises when none will come."""
        first = True
        while True:
            check()
            found = free()
            if found is not None and (not first or not self._waiters):
                if self._waiters and free() is not None:
                    self.wake()  # room left for the next in line
                return found
            waiter = asyncio.get_running_loop().create_future()
            if first:
                self._waiters.append(waiter)
            else:  # woken, and the room was gone: first in line again
                self._waiters.appendleft(waiter)
            first = False
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done():
                    self.wake()  # pass the wake-up this waiter took on
                else:
                    self._waiters.remove(waiter)
                raise
