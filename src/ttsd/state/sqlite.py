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

from .base import CacheEntry, CacheIndex, CacheStats, charges
from .sqlite_schema import VERSION, charge, migrate

_T = TypeVar("_T")

_COLUMNS = (
    "key, fmt, object_name, size, etag, content_type, sample_rate, duration, created_at, expires_at, start"
)
_GET = f"SELECT {_COLUMNS}, accessed_at FROM entries WHERE key = ? AND fmt = ? AND expires_at > ?"
# An upsert, not INSERT OR REPLACE: a replaced entry's bytes then leave the total through the update
# trigger whatever a connection's recursive_triggers says.
_PUT = (
    f"INSERT INTO entries ({_COLUMNS}, accessed_at, charge) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (key, fmt) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in [*_COLUMNS.split(", ")[2:], "accessed_at", "charge"])
)
_DELETE = "DELETE FROM entries WHERE key = ? AND fmt = ?"
_NAMED = "SELECT 1 FROM entries WHERE object_name = ? LIMIT 1"
# Only forward: a touch recorded before a newer put must not make the entry look older.
_TOUCH = "UPDATE entries SET accessed_at = ?1 WHERE key = ?2 AND fmt = ?3 AND accessed_at < ?1"
# The bytes waiting in ``orphans`` are objects only pieces still name (a text's file is named by no
# other text), so they count as the pieces'.
_TOTALS = (
    "SELECT entries, bytes, pieces, piece_bytes + (SELECT COALESCE(SUM(bytes), 0) FROM orphans) FROM totals"
)
# Entries dropped per write transaction: the writer lock (and the file's) is held for about a
# millisecond at a time however much one eviction drops, so a put or delete waits at most that long.
_BATCH = 32
_EXPIRED = f"SELECT key, fmt, object_name FROM entries WHERE expires_at <= ? LIMIT {_BATCH}"
_VICTIMS = (
    f"SELECT key, fmt, object_name, {charge('entries')} FROM entries"
    f" ORDER BY accessed_at, created_at LIMIT {_BATCH}"
)
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
        if self._writer.execute("PRAGMA user_version").fetchone()[0] < VERSION:
            self._transaction(migrate, flush=False)

    def _connect(self) -> sqlite3.Connection:
        # Not bound to a thread: a pooled reader serves whichever thread borrows it next, and close()
        # may come from any thread.
        return sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)

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
                e.created_at, e.expires_at, e.start, now, charge,
            )
            for e, charge in zip(entries, charges(entries), strict=True)
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
        # At most what the batch frees: an object's bytes leave only with its last entry.
        for key, fmt, name, counted in db.execute(_VICTIMS).fetchall():
            if total <= max_bytes:
                break
            victims.append((key, fmt))
            dropped.append(name)
            total -= counted
        db.executemany(_DELETE, victims)
        (total,) = db.execute("SELECT bytes FROM totals").fetchone()
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
