"""Cache index in SQLite under ``TTSD_DATA_DIR`` (embedded mode), and it survives restarts.

Lookups (the API's, on its event loop, and the job body's post-processing threads') each borrow a
read-only connection of their own: in WAL mode a reader sees the last commit and never waits for a
writer, so a lookup never queues behind an eviction. Writes (the post-processing threads' entries and
evictions, the CLI's purges) share one connection behind a lock. Engine processes never open it.
The byte total lives in the file, kept by triggers, so other processes on the same directory
(``ttsd warm``, ``ttsd cache``) keep it right as well; eviction reads it instead of summing, and
walks an index in LRU order instead of sorting, so dropping k entries costs O(k log n)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..store.base import PIECE
from .base import CacheEntry, CacheIndex, CacheStats

_T = TypeVar("_T")

# Bumped when _SCHEMA changes; a file below it is migrated on open (the statements are idempotent,
# so two processes opening an old file at once are harmless).
_VERSION = 2


def _count(row: str, sign: str) -> str:
    """The totals row's change for one entry (``NEW`` or ``OLD``) coming (+) or going (-)."""
    piece = f"{row}.fmt = '{PIECE}'"
    return (
        f"UPDATE totals SET entries = entries {sign} 1, bytes = bytes {sign} {row}.size,"
        f" pieces = pieces {sign} ({piece}), piece_bytes = piece_bytes {sign} {row}.size * ({piece});"
    )


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
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
        start INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (key, fmt)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires_at)",
    # Eviction's exact order, so its victims come off the front of the index with no sort.
    "CREATE INDEX IF NOT EXISTS entries_lru ON entries (accessed_at, created_at)",
    # The first schema's, now a prefix of entries_lru: one index fewer to update on every write.
    "DROP INDEX IF EXISTS entries_accessed",
    # Whether any entry still names an object (a batch's pieces share one), as entries go.
    "CREATE INDEX IF NOT EXISTS entries_object ON entries (object_name)",
    """CREATE TABLE IF NOT EXISTS totals (
        id INTEGER PRIMARY KEY CHECK (id = 0),
        entries INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        pieces INTEGER NOT NULL,
        piece_bytes INTEGER NOT NULL
    )""",
    f"CREATE TRIGGER IF NOT EXISTS totals_insert AFTER INSERT ON entries BEGIN {_count('NEW', '+')} END",
    f"CREATE TRIGGER IF NOT EXISTS totals_delete AFTER DELETE ON entries BEGIN {_count('OLD', '-')} END",
    "CREATE TRIGGER IF NOT EXISTS totals_update AFTER UPDATE OF size, fmt ON entries"
    f" BEGIN {_count('OLD', '-')} {_count('NEW', '+')} END",
)
# One scan, once per file: from then on the triggers keep the row.
_FILL = (
    "INSERT INTO totals SELECT 0, COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(fmt = ?1), 0),"
    " COALESCE(SUM(size * (fmt = ?1)), 0) FROM entries"
)
_COLUMNS = (
    "key, fmt, object_name, size, etag, content_type, sample_rate, duration, created_at, expires_at, start"
)
_GET = f"SELECT {_COLUMNS}, accessed_at FROM entries WHERE key = ? AND fmt = ? AND expires_at > ?"
# An upsert, not INSERT OR REPLACE: a replaced entry's bytes then leave the total through the update
# trigger whatever a connection's recursive_triggers says.
_PUT = (
    f"INSERT INTO entries ({_COLUMNS}, accessed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (key, fmt)"
    " DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in [*_COLUMNS.split(", ")[2:], "accessed_at"])
)
_DELETE = "DELETE FROM entries WHERE key = ? AND fmt = ?"
_NAMED = "SELECT 1 FROM entries WHERE object_name = ? LIMIT 1"
# Only forward: a touch recorded before a newer put must not make the entry look older.
_TOUCH = "UPDATE entries SET accessed_at = ?1 WHERE key = ?2 AND fmt = ?3 AND accessed_at < ?1"
_TOTALS = "SELECT entries, bytes, pieces, piece_bytes FROM totals"
# Entries dropped per write transaction: the writer lock (and the file's) is held for about a
# millisecond at a time however much one eviction drops, so a put or delete waits at most that long.
_BATCH = 32
_EXPIRED = f"SELECT key, fmt, object_name FROM entries WHERE expires_at <= ? LIMIT {_BATCH}"
_VICTIMS = f"SELECT key, fmt, object_name, size FROM entries ORDER BY accessed_at, created_at LIMIT {_BATCH}"
# A hit rewrites its access time at most this often: recency to the minute is plenty for LRU and
# saves a write per hit.
_TOUCH_INTERVAL = 60.0


class SqliteCacheIndex(CacheIndex):
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._lock = threading.Lock()  # the writer connection's
        # Held only for in-memory bookkeeping, never across a query: the event loop takes it.
        self._mutex = threading.Lock()
        self._touches: dict[tuple[str, str], float] = {}
        self._idle: list[sqlite3.Connection] = []
        self._readers: list[sqlite3.Connection] = []
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=NORMAL")
        # The log is outside the cache's byte budget: once checkpointed, cut it back to 1 MiB
        # instead of keeping its high-water mark (about 4 MB) on disk until shutdown.
        self._writer.execute(f"PRAGMA journal_size_limit={1 << 20}")
        # Puts are upserts and need none of it; but should an INSERT OR REPLACE ever run here, the
        # row it replaces fires the delete trigger (and leaves the total) only with this on.
        self._writer.execute("PRAGMA recursive_triggers=ON")
        if self._writer.execute("PRAGMA user_version").fetchone()[0] < _VERSION:
            self._transaction(self._migrate, flush=False)

    def _connect(self) -> sqlite3.Connection:
        # Not bound to a thread: a pooled reader serves whichever thread borrows it next, and close()
        # may come from any thread.
        return sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        for statement in _SCHEMA:
            db.execute(statement)
        if "start" not in {row[1] for row in db.execute("PRAGMA table_info(entries)")}:  # version 1
            db.execute("ALTER TABLE entries ADD COLUMN start INTEGER NOT NULL DEFAULT 0")
        if db.execute("SELECT 1 FROM totals").fetchone() is None:
            db.execute(_FILL, (PIECE,))
        db.execute(f"PRAGMA user_version = {_VERSION}")

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        """One row, on a pooled read-only connection; no lock (a list's pop and append are atomic)."""
        try:
            db = self._idle.pop()
        except IndexError:
            db = self._connect()
            db.execute("PRAGMA query_only=ON")  # the reader's path must never take the file's write lock
            with self._mutex:
                self._readers.append(db)
        try:
            return db.execute(sql, args).fetchone()
        finally:
            self._idle.append(db)

    def _transaction(self, work: Callable[[sqlite3.Connection], _T], *, flush: bool = True) -> _T:
        with self._lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                if flush:
                    self._flush(db)
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # some errors (a full disk) roll back by themselves
                    db.execute("ROLLBACK")
                raise
        return result

    def _flush(self, db: sqlite3.Connection) -> None:
        """The hits' pending touches, written before anything that depends on the LRU order. Lost if
        the transaction fails: they are only recency hints."""
        with self._mutex:
            touches, self._touches = self._touches, {}
        if touches:
            db.executemany(_TOUCH, [(at, key, fmt) for (key, fmt), at in touches.items()])

    def get(self, key: str, fmt: str) -> CacheEntry | None:
        now = time.time()
        row = self._read(_GET, (key, fmt, now))
        if row is None:
            return None
        if row[-1] < now - _TOUCH_INTERVAL:
            # Recorded, not written: the writer's next put or evict carries it.
            with self._mutex:
                self._touches[(key, fmt)] = now
        return CacheEntry(*row[:-1])

    def put(self, entry: CacheEntry) -> None:
        self.put_many([entry])

    def put_many(self, entries: list[CacheEntry]) -> None:
        now = time.time()
        rows = [
            (
                e.key, e.fmt, e.object_name, e.size, e.etag, e.content_type, e.sample_rate, e.duration,
                e.created_at, e.expires_at, e.start, now,
            )
            for e in entries
        ]  # fmt: skip
        self._transaction(lambda db: db.executemany(_PUT, rows))

    def delete(self, key: str, fmt: str) -> list[str]:
        # No flush: the API may call this on its event loop, so it does the least it can.
        def drop(db: sqlite3.Connection) -> list[str]:
            row = db.execute(
                "SELECT object_name FROM entries WHERE key = ? AND fmt = ?", (key, fmt)
            ).fetchone()
            db.execute(_DELETE, (key, fmt))
            return [] if row is None else _unnamed(db, [row[0]])

        return self._transaction(drop, flush=False)

    def evict(self, max_bytes: int) -> list[str]:
        now = time.time()
        dropped: list[str] = []
        more = True
        while more:
            names, more = self._transaction(lambda db: self._evict_batch(db, now, max_bytes))
            dropped += names
        return dropped

    @staticmethod
    def _evict_batch(db: sqlite3.Connection, now: float, max_bytes: int) -> tuple[list[str], bool]:
        """Up to a batch of expired entries, then of least recently used ones while over budget;
        the names of the objects left unnamed, and whether another batch may be needed."""
        rows: list[tuple[str, str, str]] = db.execute(_EXPIRED, (now,)).fetchall()
        db.executemany(_DELETE, [(key, fmt) for key, fmt, _ in rows])
        dropped = [name for *_, name in rows]
        if len(rows) == _BATCH:
            return _unnamed(db, dropped), True
        (total,) = db.execute("SELECT bytes FROM totals").fetchone()
        if total <= max_bytes:
            return _unnamed(db, dropped), False
        victims: list[tuple[str, str]] = []
        for key, fmt, name, size in db.execute(_VICTIMS).fetchall():
            if total <= max_bytes:
                break
            victims.append((key, fmt))
            dropped.append(name)
            total -= size
        db.executemany(_DELETE, victims)
        return _unnamed(db, dropped), bool(victims) and total > max_bytes

    def stats(self, *, levels: bool = False) -> CacheStats:
        # The triggers keep the levels too, so both forms are one row.
        count, size, pieces, piece_bytes = self._read(_TOTALS)
        if not levels:
            return CacheStats(int(count), int(size))
        return CacheStats(int(count), int(size), int(pieces), int(piece_bytes))

    def close(self) -> None:
        try:
            if self._touches:
                self._transaction(lambda db: None)
        finally:
            with self._lock:
                self._writer.close()
            with self._mutex:
                readers, self._readers = self._readers, []
                self._idle.clear()
            for db in readers:
                db.close()


def _unnamed(db: sqlite3.Connection, names: list[str]) -> list[str]:
    """Of the objects of entries just deleted, those no entry names any more (each once)."""
    return [name for name in dict.fromkeys(names) if db.execute(_NAMED, (name,)).fetchone() is None]
