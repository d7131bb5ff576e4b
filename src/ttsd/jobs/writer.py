"""The sentences a batch makes, stored as they come, in groups.

Every object costs a request to object storage and an index round trip, whatever its size, so a
piece waits up to ``STORE_EVERY`` for others, and all that arrived meanwhile go out together as
one object (``pieces.keep_pieces``): a fast engine's batch (eSpeak: a few milliseconds a sentence;
a GPU engine that batches) is one object. A slow engine's sentences (Piper: a few hundred
milliseconds each) are further apart than that, so each is stored alone, at most ``STORE_EVERY``
after it was spoken, and a job in another process waiting on its claim does not wait for the rest
of the batch.

What is still waiting when the batch ends can go with the text instead (``close(hold=True)``): a
wav or pcm file holds its sentences' samples unchanged, so they are indexed as ranges of it
(``pieces.keep_text``) and the miss stores one object, not two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from .. import audio
from .host import JobHost
from .made import Made
from .pieces import keep_pieces

log = logging.getLogger("ttsd.jobs")

# How long a piece waits for others to share its object.
STORE_EVERY = 0.25


class PieceWriter:
    """One batch's pieces on their way to the cache. ``remote``: the cross-process claims the job
    holds; a piece's claim is released once the piece is indexed (a process that waited on it then
    finds it), and taken off the list."""

    def __init__(self, host: JobHost, made: Made, remote: list[str]) -> None:
        self._host = host
        self._made = made
        self._remote = remote
        self._pending: list[tuple[str, audio.Pcm16]] = []
        self._stores: list[asyncio.Future[Any]] = []
        self._due: asyncio.TimerHandle | None = None

    def add(self, key: str, pcm: audio.Pcm16) -> None:
        self._pending.append((key, pcm))
        if self._due is None:
            self._due = asyncio.get_running_loop().call_later(STORE_EVERY, self._flush)

    def _flush(self) -> None:
        """Store what has arrived since the last store, beside the batch."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
        if self._pending:
            group, self._pending = self._pending, []
            self._stores.append(asyncio.ensure_future(self._store(group)))

    async def close(self, *, hold: bool = False) -> None:
        """Store the rest and wait for every store. A finished sentence is complete, valid audio:
        it is kept even when the text fails; one that could not be stored is kept for the next
        try (``Made.unstored``). ``hold``: what is still waiting is left to be stored with the
        text (``Made.unstored``), its claims held till then (``Made.held``)."""
        if hold and self._pending:
            if self._due is not None:
                self._due.cancel()
                self._due = None
            group, self._pending = self._pending, []
            self._made.unstored.update(group)
            for key, _ in group:
                mine = key in self._remote
                if mine:
                    self._remote.remove(key)
                self._made.held[key] = mine
        self._flush()
        if self._stores:
            await asyncio.gather(*self._stores, return_exceptions=True)

    async def _store(self, group: list[tuple[str, audio.Pcm16]]) -> None:
        host, made = self._host, self._made
        try:
            await host.run(keep_pieces, host.store, host.index, group, made.rate, host.cache_ttl, host.memory)
        except Exception:
            log.warning("could not cache a batch's sentences", extra={"sentences": len(group)}, exc_info=True)
            made.unstored.update(group)
        host.flights.landed(key for key, _ in group)
        held = [key for key, _ in group if key in self._remote]
        if host.claims is not None and held:
            for key in held:
                self._remote.remove(key)
            with contextlib.suppress(Exception):
                await host.claims.release(held)


async def let_go(host: JobHost, made: Made) -> None:
    """Let go of the flights and claims of the sentences that were to go with the text
    (``close(hold=True)``): stored by now, or given up."""
    held, made.held = made.held, {}
    host.flights.landed(held)
    mine = [key for key, claimed in held.items() if claimed]
    if host.claims is not None and mine:
        with contextlib.suppress(Exception):
            await host.claims.release(mine)


async def keep_apart(host: JobHost, made: Made) -> None:
    """The text will not be stored now: the sentences held for it are stored as one object of
    their own (best effort; what fails stays in ``Made.unstored``), and their claims released."""
    try:
        if made.unstored:
            fresh = list(made.unstored.items())
            await host.run(keep_pieces, host.store, host.index, fresh, made.rate, host.cache_ttl, host.memory)
            made.unstored.clear()
    except Exception:
        log.warning("could not cache a failed text's sentences", exc_info=True)
    finally:
        await let_go(host, made)
