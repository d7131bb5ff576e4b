"""The embedded index's running totals, LRU order and scaling, in process: the totals row against
a SUM over the table, eviction's order and stopping point, the migration of a file made by the first
schema, two instances on one file (as two processes), and, untimed, the query plans and work of an
eviction at two table sizes."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
from pathlib import Path

from ttsd.state.base import CacheEntry
from ttsd.state.sqlite import _EXPIRED, _VICTIMS, SqliteCacheIndex
from ttsd.store.base import PIECE, object_name

# The first schema, as files made before the totals table have it.
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT NOT NULL,
    fmt TEXT NOT NULL,
    object_name TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    duration REAL NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    accessed_at REAL NOT NULL,
    PRIMARY KEY (key, fmt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_accessed ON entries (accessed_at);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires_at);
"""


def entry(key: str, fmt: str = "wav", size: int = 100, ttl: float = 600, created: float = 0) -> CacheEntry:
    now = created or time.time()
    return CacheEntry(key, fmt, object_name(key, fmt), size, "etag", "audio/wav", 22050, 1.0, now, now + ttl)


def key(i: int) -> str:
    return f"{i:064x}"


def key_name(i: int) -> str:
    return object_name(key(i), "wav")


def scanned(path: Path) -> tuple[int, int, int, int]:
    """What the totals row should say, by scanning the tables: each entry's charge (its size in a
    file from before charges), and the bytes of entries gone from objects others still name."""
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
        counted = "COALESCE(charge, size)" if "charge" in columns else "size"
        count, size, pieces, piece_bytes = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM({counted}), 0), COALESCE(SUM(fmt = ?), 0),"
            f" COALESCE(SUM(CASE WHEN fmt = ? THEN {counted} ELSE 0 END), 0) FROM entries",
            (PIECE, PIECE),
        ).fetchone()
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        if "orphans" in tables:
            size += db.execute("SELECT COALESCE(SUM(bytes), 0) FROM orphans").fetchone()[0]
    db.close()
    return int(count), int(size), int(pieces), int(piece_bytes)


def totals(index: SqliteCacheIndex) -> tuple[int, int, int, int]:
    stats = index.stats(levels=True)
    return stats.entries, stats.bytes, stats.pieces, stats.piece_bytes


def set_accessed(path: Path, key_: str, at: float) -> None:
    """An entry's access time, set from outside (as long ago as a test needs)."""
    with sqlite3.connect(path) as db:
        db.execute("UPDATE entries SET accessed_at = ? WHERE key = ?", (at, key_))
    db.close()


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


def test_a_file_with_the_first_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        for i in range(50):
            e = entry(key(i), PIECE if i % 5 == 0 else "wav", size=i + 1)
            first_fields = [f for f in CacheEntry.__dataclass_fields__ if f != "start"]
            db.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (*(getattr(e, f) for f in first_fields), 1000.0 + i),
            )
    db.close()
    expected = scanned(path)
    assert expected == (50, 1275, 10, sum(i + 1 for i in range(0, 50, 5)))
    index = SqliteCacheIndex(path)
    assert totals(index) == expected
    found = index.get(key(49), "wav")
    assert found is not None and (found.size, found.start) == (50, 0)  # an old entry: the whole object
    index.put(entry(key(100), size=1000))
    assert index.evict(max_bytes=expected[1] + 1000 - 3) == [object_name(key(0), PIECE), key_name(1)]
    assert totals(index) == scanned(path)
    index.close()
    again = SqliteCacheIndex(path)  # reopened: the totals are not filled a second time
    assert totals(again) == scanned(path)
    with sqlite3.connect(path) as db:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    db.close()
    assert "entries_lru" in names and "entries_accessed" not in names
    again.close()


def _v2_count(row: str, sign: str) -> str:
    piece = f"{row}.fmt = '{PIECE}'"
    return (
        f"UPDATE totals SET entries = entries {sign} 1, bytes = bytes {sign} {row}.size,"
        f" pieces = pieces {sign} ({piece}), piece_bytes = piece_bytes {sign} {row}.size * ({piece});"
    )


# Version 2: ranges, and totals kept by triggers that counted every entry's size.
V2_SCHEMA = f"""
ALTER TABLE entries ADD COLUMN start INTEGER NOT NULL DEFAULT 0;
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL, bytes INTEGER NOT NULL,
    pieces INTEGER NOT NULL, piece_bytes INTEGER NOT NULL
);
INSERT INTO totals VALUES (0, 0, 0, 0, 0);
CREATE TRIGGER totals_insert AFTER INSERT ON entries BEGIN {_v2_count("NEW", "+")} END;
CREATE TRIGGER totals_delete AFTER DELETE ON entries BEGIN {_v2_count("OLD", "-")} END;
CREATE TRIGGER totals_update AFTER UPDATE OF size, fmt ON entries
  BEGIN {_v2_count("OLD", "-")} {_v2_count("NEW", "+")} END;
PRAGMA user_version = 2;
"""


def test_a_file_from_version_2_keeps_its_totals_and_counts_new_objects_once(tmp_path: Path) -> None:
    """Version 2 counted a text's file and the sentences inside it apart. Its totals stay right for
    the entries it wrote (each leaves with its own size), and what comes after counts objects once."""
    path = tmp_path / "i.db"
    text = entry(key(1), size=1000)
    inside = dataclasses.replace(entry(key(2), PIECE, size=400), object_name=text.object_name, start=44)
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA + V2_SCHEMA)
        for e in (text, inside):
            db.execute(
                "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*(getattr(e, f) for f in CacheEntry.__dataclass_fields__ if f != "start"), 1.0, e.start),
            )
    db.close()
    assert scanned(path) == (2, 1400, 1, 400)
    index = SqliteCacheIndex(path)
    assert totals(index) == scanned(path) == (2, 1400, 1, 400)  # as it was counted
    with sqlite3.connect(path) as db:
        triggers = {name for (name,) in db.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'")}
    db.close()
    assert not {"totals_insert", "totals_delete", "totals_update"} & triggers
    assert index.evict(max_bytes=0) == [text.object_name]
    assert totals(index) == scanned(path) == (0, 0, 0, 0)
    newer = entry(key(3), size=1000)
    index.put_many([dataclasses.replace(inside, key=key(4), object_name=newer.object_name), newer])
    assert totals(index) == scanned(path) == (2, 1000, 1, 0)
    index.close()


def test_two_instances_on_one_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "i.db"
    first = SqliteCacheIndex(path)
    second = SqliteCacheIndex(path)  # as `ttsd warm` in another process would
    first.put(entry(key(1), size=100))
    second.put(entry(key(2), size=50))
    assert second.get(key(1), "wav") is not None and first.get(key(2), "wav") is not None
    first.put(entry(key(2), size=20))
    second.delete(key(1), "wav")
    assert totals(first) == totals(second) == scanned(path) == (1, 20, 0, 0)
    for i in range(3, 40):
        (first if i % 2 else second).put(entry(key(i), size=10))
    dropped = second.evict(max_bytes=100)
    assert len(dropped) == 28
    assert totals(first) == totals(second) == scanned(path) == (10, 100, 0, 0)
    first.close()
    second.close()


def test_reads_on_many_threads_do_not_take_the_writer_lock(tmp_path: Path) -> None:
    index = SqliteCacheIndex(tmp_path / "i.db")
    index.put(entry(key(1)))
    found: list[bool] = []
    with index._lock:  # a writer mid-eviction holds it
        threads = [
            threading.Thread(target=lambda: found.append(index.get(key(1), "wav") is not None))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)  # a get waiting for the lock would still be waiting
        stats = index.stats(levels=True)
    assert found == [True] * 4 and stats.entries == 1
    index.close()


def _closed(db: sqlite3.Connection) -> bool:
    try:
        db.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def test_close_closes_every_connection_it_opened(tmp_path: Path) -> None:
    index = SqliteCacheIndex(tmp_path / "i.db")
    index.put(entry(key(1)))
    threads = [threading.Thread(target=index.get, args=(key(1), "wav")) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    opened = [*index._readers, index._writer]
    assert len(opened) >= 2
    index.close()
    assert all(_closed(db) for db in opened)


def test_eviction_queries_walk_indexes_without_a_sort(tmp_path: Path) -> None:
    index = SqliteCacheIndex(tmp_path / "i.db")
    for sql, args, index_name in [(_VICTIMS, (), "entries_lru"), (_EXPIRED, (0.0,), "entries_expires")]:
        plan = " | ".join(row[3] for row in index._writer.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        assert f"USING INDEX {index_name}" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    index.close()


def _evict_work(index: SqliteCacheIndex, n: int) -> tuple[list[str], int]:
    """Fill the index to ``n`` entries of 10 bytes, store one more, then evict to the budget;
    the statements the eviction ran, and how many SQLite virtual-machine steps they took."""
    db = index._writer  # filled directly, in one transaction: a put per entry would only be slower
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [(key(i), "wav", key_name(i), 10, "e", "wav", 1, 1.0, 1.0, 1e12, 1.0 + i, 0, 10) for i in range(n)],
    )
    db.execute("COMMIT")
    index.put(entry(key(n), size=10))
    statements: list[str] = []
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    db.set_trace_callback(statements.append)
    db.set_progress_handler(step, 1)
    dropped = index.evict(max_bytes=10 * n)
    db.set_progress_handler(None, 0)
    db.set_trace_callback(None)
    assert dropped == [key_name(0)]
    return statements, steps[0]


def test_eviction_work_does_not_grow_with_the_table(tmp_path: Path) -> None:
    small = SqliteCacheIndex(tmp_path / "small.db")
    large = SqliteCacheIndex(tmp_path / "large.db")
    small_statements, small_steps = _evict_work(small, 200)
    large_statements, large_steps = _evict_work(large, 20_000)
    for statement in large_statements:
        assert "SUM(" not in statement.upper() and "COUNT(" not in statement.upper(), statement
    assert len(large_statements) == len(small_statements)
    # A scan or a sort of 20,000 rows would take 100 times the steps of one of 200.
    assert large_steps <= 2 * small_steps + 5, (small_steps, large_steps)
    small.close()
    large.close()
