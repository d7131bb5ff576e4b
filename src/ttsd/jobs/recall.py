"""The pieces a process read or made lately, kept in memory up to a byte budget."""

from __future__ import annotations

import threading
from collections import OrderedDict

from ..state.base import CacheEntry


class PieceMemory:
    """A template's common sentences ("Thank you for calling.") are in most texts: they are read
    from memory rather than from object storage, once per process, and still are while storage is
    away. Keyed by the object and its digest in the index, so a piece made again under the same key
    is never answered with an older copy. Least recently used first out; thread-safe (the
    post-processing stage reads and writes it)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry: CacheEntry) -> bytes | None:
        with self._lock:
            data = self._entries.get((entry.object_name, entry.etag))
            if data is not None:
                self._entries.move_to_end((entry.object_name, entry.etag))
            return data

    def put(self, entry: CacheEntry, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        name = (entry.object_name, entry.etag)
        with self._lock:
            old = self._entries.pop(name, None)
            self.bytes += len(data) - (len(old) if old is not None else 0)
            self._entries[name] = data
            while self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)
