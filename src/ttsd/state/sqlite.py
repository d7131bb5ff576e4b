"""Cache index in SQLite under ``TTSD_DATA_DIR``: shared by the API process and its engine
processes (WAL, busy timeout), and it survives restarts."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from ..store.base import PIECE
from .base import CacheEntry, CacheIndex, CacheStats

_SCHEMA = """
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
_COLUMNS = "key, fmt, object_name, size, etag, content_type, sample_rate, duration, created_at, expires_at"
# A hit rewrites its access time at most this often: recency to the minute is plenty for LRU and
# saves a write per hit.
_TOUCH_INTERVAL = 60.0


class SqliteCacheIndex(CacheIndex):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def get(self, key: str, fmt: str) -> CacheEntry | None:
        now = time.time()
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS}, accessed_at FROM entries WHERE key = ? AND fmt = ? AND expires_at > ?",
                (key, fmt, now),
            ).fetchone()
            if row is None:
                return None
            if row[-1] < now - _TOUCH_INTERVAL:
                self._db.execute(
                    "UPDATE entries SET accessed_at = ? WHERE key = ? AND fmt = ?", (now, key, fmt)
                )
        return CacheEntry(*row[:-1])

    def put(self, entry: CacheEntry) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO entries ({_COLUMNS}, accessed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    entry.key,
                    entry.fmt,
                    entry.object_name,
                    entry.size,
                    entry.etag,
                    entry.content_type,
                    entry.sample_rate,
                    entry.duration,
                    entry.created_at,
                    entry.expires_at,
                    time.time(),
                ),
            )

    def delete(self, key: str, fmt: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM entries WHERE key = ? AND fmt = ?", (key, fmt))

    def evict(self, max_bytes: int) -> list[str]:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = [
                    CacheEntry(*row)
                    for row in self._db.execute(
                        f"SELECT {_COLUMNS} FROM entries WHERE expires_at <= ?", (now,)
                    )
                ]
                self._db.execute("DELETE FROM entries WHERE expires_at <= ?", (now,))
                (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
                if total > max_bytes:
                    for row in self._db.execute(
                        f"SELECT {_COLUMNS} FROM entries ORDER BY accessed_at, created_at"
                    ).fetchall():
                        if total <= max_bytes:
                            break
                        entry = CacheEntry(*row)
                        self._db.execute(
                            "DELETE FROM entries WHERE key = ? AND fmt = ?", (entry.key, entry.fmt)
                        )
                        total -= entry.size
                        dropped.append(entry)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [entry.object_name for entry in dropped]

    def stats(self, *, levels: bool = False) -> CacheStats:
        if not levels:
            with self._lock:
                count, size = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries"
                ).fetchone()
            return CacheStats(int(count), int(size))
        with self._lock:
            count, size, pieces, piece_bytes = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(fmt = ?), 0),"
                " COALESCE(SUM(CASE WHEN fmt = ? THEN size ELSE 0 END), 0) FROM entries",
                (PIECE, PIECE),
            ).fetchone()
        return CacheStats(int(count), int(size), int(pieces), int(piece_bytes))

    def close(self) -> None:
        with self._lock:
            self._db.close()
