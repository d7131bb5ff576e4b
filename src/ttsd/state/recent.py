"""The API's memory of cache entries it has just read from the index.

Repeats are most of the traffic, and the same few texts are asked for thousands of times a second:
asking SQLite or Redis each time costs more than the rest of a hit. An entry read from the index is
remembered and served from memory for ``revalidate`` seconds, then read again (which also renews
its place in the index's LRU order). Expiry is exact (entries carry their ``expires_at``). Misses
are never remembered, so a file a worker has just made is found at once.

Evictions are told: in embedded mode the engine process returns what its job evicted with the
job's outcome; in distributed mode the eviction script publishes what it dropped and every API
process listens (and forgets everything when it was not listening). Only a deletion nobody
announces (``ttsd cache purge`` run beside a live API) is noticed late, within ``revalidate``
seconds: no longer than a client that got its URL just before it keeps it.

While the index cannot be reached (Redis away), what was remembered still answers (``last_known``):
nothing can be evicted while the index is away, and the memory is cleared when the API listens for
evictions again.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from .base import CacheEntry


class RecentEntries:
    def __init__(self, *, revalidate: float = 1.0, capacity: int = 10_000) -> None:
        self._revalidate = revalidate
        self._capacity = capacity
        self._entries: OrderedDict[tuple[str, str], tuple[float, CacheEntry]] = OrderedDict()

    def get(self, key: str, fmt: str) -> CacheEntry | None:
        item = self._entries.get((key, fmt))
        if item is None:
            return None
        checked_at, entry = item
        now = time.time()
        if now >= entry.expires_at:
            del self._entries[(key, fmt)]
            return None
        return entry if now - checked_at < self._revalidate else None

    def last_known(self, key: str, fmt: str) -> CacheEntry | None:
        """The entry as last read, however long ago (unexpired): for when the index is away."""
        item = self._entries.get((key, fmt))
        if item is None or time.time() >= item[1].expires_at:
            return None
        return item[1]

    def put(self, entry: CacheEntry) -> None:
        slot = (entry.key, entry.fmt)
        self._entries[slot] = (time.time(), entry)
        self._entries.move_to_end(slot)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def drop(self, key: str, fmt: str) -> None:
        self._entries.pop((key, fmt), None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
