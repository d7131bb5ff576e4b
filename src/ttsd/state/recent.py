"""The API's memory of cache entries it has just read from the index.

Repeats are most of the traffic, and the same texts are asked for thousands of times a second:
asking SQLite or Redis each time costs more than the rest of a hit. An entry read from the index is
remembered and served from memory. Once it was read more than ``revalidate`` seconds ago it is
stale: still served, while a background refresh reads it again, together with the other stale
entries, in one index round trip (which also renews their place in the index's LRU order). A
request never waits for that refresh, unless the entry was read more than twice ``revalidate``
seconds ago (the refresh fell behind, or the index is away): then it is not served from memory
(``serve`` says None) and the request reads the index itself, as before. Expiry is exact (entries
carry their ``expires_at``). Misses are never remembered (a refresh that finds nothing forgets the
entry), so a file a worker has just made is found at once.

Evictions are told: in embedded mode the engine process returns what its job evicted with the
job's outcome; in distributed mode the eviction script publishes what it dropped and every API
process listens (and forgets everything when it was not listening). A drop or a clear wins over a
refresh that was under way: its answer is not remembered. Only a deletion nobody announces
(``ttsd cache purge`` run beside a live embedded API) is noticed late: by the first hit after
``revalidate`` seconds (TTSD_RECENT_REVALIDATE) since the entry was last read, which serves it once
more and refreshes it, so the next hit misses; and never later than twice ``revalidate`` seconds
after that read.

While the index cannot be reached (Redis away), what was remembered still answers (``last_known``):
nothing can be evicted while the index is away, and the memory is cleared when the API listens for
evictions again.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from ..errors import BackendUnavailable
from .base import CacheEntry

log = logging.getLogger("ttsd.recent")

Slot = tuple[str, str]
# Reads the entries of many (key, format) slots in one index round trip, None for those not there.
ReadMany = Callable[[Sequence[Slot]], Awaitable[Sequence[CacheEntry | None]]]


class RecentEntries:
    def __init__(
        self,
        *,
        revalidate: float = 1.0,
        capacity: int = 10_000,
        read_many: ReadMany | None = None,
        batch: int = 128,
        gather: float = 0.05,
    ) -> None:
        self._revalidate = revalidate
        self._capacity = capacity
        self._entries: OrderedDict[Slot, CacheEntry] = OrderedDict()
        # When each entry was last read from the index. Apart from the entries: a refresh that finds
        # an entry unchanged only rewrites a float, so the memory the collector scans stays still.
        self._read_at: dict[Slot, float] = {}
        # Stale slots waiting for the refresh, with the entry found stale (the refresh only replaces
        # that one: a slot dropped, cleared or read anew meanwhile is left as it is).
        self._stale: dict[Slot, CacheEntry] = {}
        self._read_many = read_many
        self._batch = batch
        # How long the refresh waits for more entries to go stale before reading: entries go stale
        # one hit at a time, and one read (a thread hop or a pipeline) for each costs more than
        # the read itself. A stale entry may be served for ``revalidate`` more seconds anyway.
        # It also paces the refresh at ``batch / gather`` entries a second (2,560 by default): what
        # was read at once (a warm-up) goes stale at once, and is better read again over seconds
        # than in one burst beside the requests; in steady state each entry needs a read at most
        # every ``revalidate`` seconds (32,768 entries over 30 s: about 1,100 a second).
        self._gather = gather
        self._refreshing: asyncio.Task[None] | None = None
        # After a failed refresh (index away) none starts again before this time: half ``revalidate``
        # later, so one transient failure still leaves time to refresh before the requests must read.
        self._retry_at = 0.0

    def get(self, key: str, fmt: str) -> CacheEntry | None:
        """The entry when it was read less than ``revalidate`` seconds ago (and is unexpired)."""
        slot = (key, fmt)
        now = time.time()
        entry = self._live(slot, now)
        return entry if entry is not None and now - self._read_at[slot] < self._revalidate else None

    def serve(self, key: str, fmt: str) -> CacheEntry | None:
        """The entry to answer with now: fresh, or stale and being refreshed in the background
        (only from the event loop, which runs the refresh). None when the caller must read it."""
        slot = (key, fmt)
        now = time.time()
        entry = self._live(slot, now)
        if entry is None:
            return None
        age = now - self._read_at[slot]
        if age < self._revalidate:
            return entry
        if age >= 2 * self._revalidate or self._read_many is None:
            return None
        if slot not in self._stale:
            self._stale[slot] = entry
        if self._refreshing is None and now >= self._retry_at:
            self._refreshing = asyncio.get_running_loop().create_task(self.refresh())
        return entry

    def _live(self, slot: Slot, now: float) -> CacheEntry | None:
        entry = self._entries.get(slot)
        if entry is not None and now >= entry.expires_at:
            self.drop(*slot)
            return None
        return entry

    def last_known(self, key: str, fmt: str) -> CacheEntry | None:
        """The entry as last read, however long ago (unexpired): for when the index is away."""
        entry = self._entries.get((key, fmt))
        if entry is None or time.time() >= entry.expires_at:
            return None
        return entry

    def put(self, entry: CacheEntry, *, read_at: float | None = None) -> None:
        """Remember an entry read from the index (``read_at``: when the read began; by default now)."""
        slot = (entry.key, entry.fmt)
        known = self._entries.get(slot)
        if known != entry:  # an unchanged entry keeps its object
            self._entries[slot] = entry
        self._entries.move_to_end(slot)
        self._read_at[slot] = time.time() if read_at is None else read_at
        self._stale.pop(slot, None)
        if len(self._entries) > self._capacity:
            oldest, _ = self._entries.popitem(last=False)
            del self._read_at[oldest]
            self._stale.pop(oldest, None)

    def drop(self, key: str, fmt: str) -> None:
        slot = (key, fmt)
        if self._entries.pop(slot, None) is not None:
            del self._read_at[slot]
        self._stale.pop(slot, None)

    def clear(self) -> None:
        self._entries.clear()
        self._read_at.clear()
        self._stale.clear()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def refreshing(self) -> int:
        """Stale entries waiting for the background refresh."""
        return len(self._stale)

    async def refresh(self) -> None:
        """Read the stale entries again, a batch per index round trip, until none is left."""
        try:
            while self._stale and self._read_many is not None:
                await asyncio.sleep(self._gather)
                taken = list(itertools.islice(self._stale.items(), self._batch))
                for slot, _ in taken:
                    del self._stale[slot]
                read_at = time.time()
                try:
                    found = await self._read_many([slot for slot, _ in taken])
                except Exception as exc:  # noqa: BLE001 (nobody awaits this task to be told)
                    # The index away, most likely: requests read it themselves (or what was
                    # remembered) once their entries are too old, and meet the error there.
                    away = isinstance(exc, BackendUnavailable)
                    log.log(logging.DEBUG if away else logging.WARNING, "background refresh failed: %r", exc)
                    self._retry_at = time.time() + self._revalidate / 2
                    return
                for (slot, stale), entry in zip(taken, found, strict=True):
                    if self._entries.get(slot) is not stale or self._read_at[slot] >= read_at:
                        continue  # dropped, cleared or read anew while the refresh was under way
                    if entry is None:
                        self.drop(*slot)
                    else:
                        self.put(entry, read_at=read_at)
        finally:
            self._refreshing = None
