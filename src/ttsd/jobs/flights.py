"""Single flight per sentence: a piece another job is making right now is awaited, not made
again; in this process through ``Flights``, across processes through ``Claims`` (Redis in
distributed mode)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from .. import audio


class Claims(Protocol):
    """Single flight per sentence across processes (Redis in distributed mode)."""

    async def claim(self, keys: list[str], job: str) -> list[bool]:
        """Claim each piece for this run of ``job``; False where another job holds it (an earlier
        delivery of the same job, whose worker was lost, does not count)."""

    async def release(self, keys: list[str]) -> None: ...

    async def held(self, key: str) -> bool:
        """Whether some process still holds the claim on ``key``."""


class Flights:
    """Pieces being made in this process, so a second job that needs one waits for it."""

    def __init__(self) -> None:
        self._made: dict[str, asyncio.Future[audio.Pcm16]] = {}

    def claim(self, key: str) -> asyncio.Future[audio.Pcm16] | None:
        """None when the caller now makes ``key``; else the future of whoever already does."""
        flight = self._made.get(key)
        if flight is not None:
            return flight
        self._made[key] = asyncio.get_running_loop().create_future()
        return None

    def resolve(self, key: str, pcm: audio.Pcm16) -> None:
        """Made: its waiters have it now, and so does a job that asks before it is in the cache
        (until ``landed``), which would otherwise find neither and make it again."""
        flight = self._made.get(key)
        if flight is not None and not flight.done():
            flight.set_result(pcm)

    def landed(self, keys: Iterable[str]) -> None:
        """Stored, or given up on storing: from now on the cache answers for these pieces. A
        flight not made yet (another job's, claimed since) stays."""
        for key in keys:
            flight = self._made.get(key)
            if flight is not None and flight.done():
                del self._made[key]

    def abandon(self, key: str) -> None:
        """The maker gave up: waiters make it themselves."""
        flight = self._made.pop(key, None)
        if flight is not None and not flight.done():
            flight.set_exception(Abandoned())
            flight.exception()  # retrieved: no waiter is required to exist

    def __len__(self) -> int:
        return len(self._made)


class Abandoned(Exception):
    pass


async def await_flight(flight: asyncio.Future[audio.Pcm16]) -> audio.Pcm16 | None:
    """The piece another job in this process made, or None when it gave up (make it yourself)."""
    try:
        return await asyncio.shield(flight)
    except Abandoned:
        return None


async def await_remote(
    claims: Claims, key: str, load: Callable[[], Awaitable[audio.Pcm16 | None]]
) -> audio.Pcm16 | None:
    """Another process is making this piece: wait until its claim goes, then read what it left
    (None when it left nothing: make it yourself)."""
    delay = 0.02
    while await claims.held(key):
        await asyncio.sleep(delay)
        delay = min(0.2, delay * 1.5)
    return await load()
