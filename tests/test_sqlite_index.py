"""The embedded index's running totals and LRU order, in process: the totals row against a SUM over
the table, eviction's order and stopping point, and touches written late. Files from earlier schemas,
several instances and connections, and the work of an eviction: ``test_sqlite_index_files``."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ttsd.state.base import CacheEntry
from ttsd.state.sqlite import SqliteCacheIndex
from ttsd.store.base import PIECE

from .sqlite_rows import entry, key, key_name, scanned, set_accessed, totals


def test_totals_follow_put_replace_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    index = SqliteCacheIndex(path)
    assert totals(index) == (0, 0, 0, 0)
    index.put(entry(key(1), size=100))
    index.put(entry(key(2), PIECE, size=40))
    index.put(entry(key(3), size=7))
    assert totals(index) == scanned(path) == (3, 147, 1, 40)
    index.put(entry(key(1), size=250))  # a replacement: its old size leaves the total
    index.put(entry(key(2), PIECE, size=10))
    assert totals(index) == scanned(path) == (3, 267, 1, 10)
    assert index.stats().bytes == 267 and index.stats().pieces == 0  # the cheap form leaves levels out
    index.delete(key(3), "wav")
    index.delete(key(3), "wav")  # already gone: nothing to subtract
    index.delete(key(2), PIECE)
    assert totals(index) == scanned(path) == (1, 250, 0, 0)
    found = index.get(key(1), "wav")
    assert found is not None and found.size == 250
    index.close()


def test_an_insert_or_replace_on_the_writer_counts_the_row_it_replaces(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    index = SqliteCacheIndex(path)
    index.put(entry(key(1), size=100))
    old = entry(key(1), size=30)
    columns = [*CacheEntry.__dataclass_fields__, "accessed_at"]
    index._writer.execute(
        f"INSERT OR REPLACE INTO entries ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        (*(getattr(old, f) for f in CacheEntry.__dataclass_fields__), time.time()),
    )
    assert totals(index) == scanned(path) == (1, 30, 0, 0)
    index.close()


def test_eviction_drops_least_recently_used_first_and_stops_at_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    index = SqliteCacheIndex(path)
    for i in range(100):
        index.put(entry(key(i), size=10))
        set_accessed(path, key(i), 1000.0 + i)  # 0 is the least recently used
    assert index.evict(max_bytes=1000) == []
    assert index.evict(max_bytes=955) == [key_name(i) for i in range(5)]
    assert totals(index) == scanned(path) == (95, 950, 0, 0)
    # More than one batch: every entry but the 10 most recently used, in order.
    assert index.evict(max_bytes=100) == [key_name(i) for i in range(5, 90)]
    assert totals(index) == scanned(path) == (10, 100, 0, 0)
    assert index.evict(max_bytes=-1) == [key_name(i) for i in range(90, 100)]
    assert totals(index) == scanned(path) == (0, 0, 0, 0)
    assert index.evict(max_bytes=-1) == []
    index.close()


def test_equal_access_times_fall_back_to_creation_order(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    index = SqliteCacheIndex(path)
    for i, created in enumerate([300.0, 100.0, 200.0]):
        index.put(entry(key(i), size=10, created=created, ttl=10**12))
        set_accessed(path, key(i), 5.0)
    assert index.evict(max_bytes=10) == [key_name(1), key_name(2)]
    index.close()


def test_expired_entries_are_dropped_whatever_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    index = SqliteCacheIndex(path)
    for i in range(70):  # more than a batch
        index.put(entry(key(i), size=10, ttl=-1 if i % 2 else 600))
    assert index.get(key(1), "wav") is None
    dropped = index.evict(max_bytes=10**9)
    assert sorted(dropped) == sorted(key_name(i) for i in range(1, 70, 2))
    assert totals(index) == scanned(path) == (35, 350, 0, 0)
    index.close()


def test_a_recently_read_entry_survives_eviction_over_an_untouched_older_one(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    index = SqliteCacheIndex(path)
    index.put(entry(key(1), size=10))
    index.put(entry(key(2), size=10))
    long_ago = time.time() - 3600
    set_accessed(path, key(1), long_ago)  # the oldest: the victim, were it not read
    set_accessed(path, key(2), long_ago + 1)
    assert index.get(key(1), "wav") is not None
    with sqlite3.connect(path) as db:  # the read itself wrote nothing
        (accessed,) = db.execute("SELECT accessed_at FROM entries WHERE key = ?", (key(1),)).fetchone()
    db.close()
    assert accessed == long_ago
    assert index.evict(max_bytes=10) == [key_name(2)]
    index.close()


def test_a_touch_is_written_by_the_next_put_and_on_close(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    index = SqliteCacheIndex(path)
    index.put(entry(key(1)))
    index.put(entry(key(2)))
    set_accessed(path, key(1), 1.0)
    set_accessed(path, key(2), 1.0)
    index.get(key(1), "wav")
    index.put(entry(key(3)))
    index.get(key(2), "wav")
    index.close()
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT key, accessed_at FROM entries").fetchall())
    db.close()
    assert rows[key(1)] > 1.0 and rows[key(2)] > 1.0
