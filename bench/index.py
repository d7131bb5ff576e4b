"""``bench.index``: the embedded cache index at its byte budget, before and after eviction kept O(log n).

On the class itself, in a temporary directory, at 1,000 / 10,000 / 40,000 / 160,000 entries of
10 kB each, the budget exactly full: each store puts a new entry and evicts (one entry goes), as the
job body does. Timed: the eviction (mean, P99); ``get`` of a present entry alone (P50, P99); and
``get`` while another thread stores and evicts back to back, as the API's event loop looks up while
the post-processing threads store. "before" is the first implementation's SQL (one connection
behind one lock, a SUM and a full sorted read per eviction) on a file of its own schema, kept here
as the reference; "after" is ``ttsd.state.sqlite.SqliteCacheIndex``.

Results go to ``bench/results/index.{md,json}`` (and the README's block, where it has one).
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ttsd.state.base import CacheEntry
from ttsd.state.sqlite import SqliteCacheIndex
from ttsd.store.base import object_name

from .common import commit, machine, publish
from .index_report import render

SIZES = (1_000, 10_000, 40_000, 160_000)
ENTRY_BYTES = 10_000
STORES = 300
# The "before" eviction takes most of a second at 160,000 entries: its stores stop at this many
# seconds (with at least MIN_STORES), the count is in the table.
STORE_SECONDS = 6.0
MIN_STORES = 10
GETS = 2_000
BUSY_SECONDS = 1.5
COLUMNS = "key, fmt, object_name, size, etag, content_type, sample_rate, duration, created_at, expires_at"
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT NOT NULL, fmt TEXT NOT NULL, object_name TEXT NOT NULL, size INTEGER NOT NULL,
    etag TEXT NOT NULL, content_type TEXT NOT NULL, sample_rate INTEGER NOT NULL,
    duration REAL NOT NULL, created_at REAL NOT NULL, expires_at REAL NOT NULL,
    accessed_at REAL NOT NULL, PRIMARY KEY (key, fmt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_accessed ON entries (accessed_at);
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires_at);
"""


class Index(Protocol):
    def get(self, key: str, fmt: str) -> CacheEntry | None: ...
    def put(self, entry: CacheEntry) -> None: ...
    def evict(self, max_bytes: int) -> list[str]: ...
    def close(self) -> None: ...


class OldIndex:
    """The first implementation's get, put and evict, verbatim but for names: the reference."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(OLD_SCHEMA)

    def get(self, key: str, fmt: str) -> CacheEntry | None:
        now = time.time()
        with self._lock:
            row = self._db.execute(
                f"SELECT {COLUMNS}, accessed_at FROM entries WHERE key = ? AND fmt = ? AND expires_at > ?",
                (key, fmt, now),
            ).fetchone()
            if row is None:
                return None
            if row[-1] < now - 60.0:
                self._db.execute(
                    "UPDATE entries SET accessed_at = ? WHERE key = ? AND fmt = ?", (now, key, fmt)
                )
        return CacheEntry(*row[:-1])

    def put(self, entry: CacheEntry) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO entries ({COLUMNS}, accessed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (*_fields(entry), time.time()),
            )

    def evict(self, max_bytes: int) -> list[str]:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = [
                    CacheEntry(*row)
                    for row in self._db.execute(
                        f"SELECT {COLUMNS} FROM entries WHERE expires_at <= ?", (now,)
                    )
                ]
                self._db.execute("DELETE FROM entries WHERE expires_at <= ?", (now,))
                (total,) = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()
                if total > max_bytes:
                    for row in self._db.execute(
                        f"SELECT {COLUMNS} FROM entries ORDER BY accessed_at, created_at"
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

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _fields(entry: CacheEntry) -> tuple[Any, ...]:
    return tuple(getattr(entry, name) for name in COLUMNS.split(", "))


def _entry(i: int) -> CacheEntry:
    key = f"{i:064x}"
    now = time.time()
    return CacheEntry(
        key, "wav", object_name(key, "wav"), ENTRY_BYTES, "e", "audio/wav", 22050, 1.0, now, now + 86400
    )


def _fill(path: Path, start: int, stop: int) -> None:
    """Entries ``start`` to ``stop`` written straight into the file, last read an hour ago and
    older than every store to come (so they are the ones evicted, oldest first)."""
    long_ago = time.time() - 3600
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA recursive_triggers=ON")
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        f"INSERT INTO entries ({COLUMNS}, accessed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        ((*_fields(_entry(i)), long_ago + i * 1e-3) for i in range(start, stop)),
    )
    db.execute("COMMIT")
    db.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _stores(index: Index, budget: int, serial: list[int]) -> list[float]:
    """Store-then-evict at the budget; each eviction's seconds."""
    costs: list[float] = []
    deadline = time.monotonic() + STORE_SECONDS
    while len(costs) < STORES and (len(costs) < MIN_STORES or time.monotonic() < deadline):
        index.put(_entry(serial[0]))
        serial[0] += 1
        started = time.perf_counter()
        dropped = index.evict(budget)
        costs.append(time.perf_counter() - started)
        assert len(dropped) == 1, dropped
    return costs


def _gets(index: Index, keys: list[str]) -> list[float]:
    costs: list[float] = []
    for key in keys:
        started = time.perf_counter()
        found = index.get(key, "wav")
        costs.append(time.perf_counter() - started)
        assert found is not None
    return costs


def _busy_gets(index: Index, budget: int, serial: list[int]) -> list[float]:
    """Gets, a millisecond apart, of entries just stored while another thread stores and evicts
    back to back for BUSY_SECONDS."""
    stop = threading.Event()
    stored: list[str] = []

    def writer() -> None:
        while not stop.is_set():
            entry = _entry(serial[0])
            serial[0] += 1
            index.put(entry)
            stored.append(entry.key)
            index.evict(budget)

    thread = threading.Thread(target=writer)
    thread.start()
    rng = random.Random(11)
    costs: list[float] = []
    deadline = time.monotonic() + BUSY_SECONDS
    try:
        while time.monotonic() < deadline:
            # The newest stores: far from the eviction front, so present (at least 1,000 entries).
            recent = stored[-200:]
            if recent:
                costs += _gets(index, [rng.choice(recent)])
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join()
    return costs


def _present(path: Path, count: int) -> list[str]:
    db = sqlite3.connect(path)
    keys = [k for (k,) in db.execute("SELECT key FROM entries ORDER BY random() LIMIT ?", (count,))]
    db.close()
    return keys


def _measure(name: str, index: Index, path: Path) -> list[dict[str, Any]]:
    rows = []
    filled, serial = [0], [10**9]  # fill keys from 0, stored ones from 10**9: apart
    for n in SIZES:
        db = sqlite3.connect(path)
        (count,) = db.execute("SELECT COUNT(*) FROM entries").fetchone()
        db.close()
        _fill(path, filled[0], filled[0] + n - count)
        filled[0] += n - count
        budget = n * ENTRY_BYTES
        evicts = _stores(index, budget, serial)
        gets = _gets(index, _present(path, GETS))
        busy = _busy_gets(index, budget, serial)
        rows.append(
            {
                "index": name,
                "entries": n,
                "stores": len(evicts),
                "evict_mean_ms": sum(evicts) / len(evicts) * 1e3,
                "evict_p99_ms": percentile(evicts, 0.99) * 1e3,
                "get_p50_us": percentile(gets, 0.5) * 1e6,
                "get_p99_us": percentile(gets, 0.99) * 1e6,
                "busy_gets": len(busy),
                "busy_get_p50_us": percentile(busy, 0.5) * 1e6,
                "busy_get_p99_us": percentile(busy, 0.99) * 1e6,
                "busy_get_max_us": max(busy) * 1e6,
            }
        )
    return rows


def run() -> dict[str, Any]:
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ttsd-bench-index-") as tmp:
        for name, make in (("before", OldIndex), ("after", SqliteCacheIndex)):
            path = Path(tmp) / f"{name}.sqlite3"
            index: Index = make(path)
            try:
                rows += _measure(name, index, path)
            finally:
                index.close()
    result = {
        "machine": machine(),
        "commit": commit(),
        "seconds": time.monotonic() - started,
        "entry_bytes": ENTRY_BYTES,
        "rows": rows,
    }
    publish("index", result, render(result))
    return result


if __name__ == "__main__":
    run()
