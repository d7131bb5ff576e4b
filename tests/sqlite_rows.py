"""What the embedded index's tests share: entries, keys, the first schema, and the totals row read
back or worked out by scanning the tables."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ttsd.state.base import CacheEntry
from ttsd.state.sqlite import SqliteCacheIndex
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
