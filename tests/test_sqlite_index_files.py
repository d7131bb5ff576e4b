"""The embedded index's file, in process: the migration of files made by earlier schemas, two
instances on one file (as two processes), reads on many threads, connections closed, and, untimed,
the query plans and work of an eviction at two table sizes."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from pathlib import Path

from ttsd.state.base import CacheEntry
from ttsd.state.sqlite import _EXPIRED, _VICTIMS, SqliteCacheIndex
from ttsd.store.base import PIECE, object_name

from .sqlite_rows import OLD_SCHEMA, entry, key, key_name, scanned, totals


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
