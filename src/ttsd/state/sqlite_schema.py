"""The SQLite cache index's schema, and the triggers that keep its totals: entries, pieces, and
the byte budget, which counts each object once, while any entry names it (``charges``)."""

from __future__ import annotations

import sqlite3

from ..store.base import PIECE

# Bumped when _SCHEMA changes; a file below it is migrated on open (the statements are idempotent,
# so two processes opening an old file at once are harmless).
VERSION = 3


def charge(row: str) -> str:
    """The bytes an entry adds to the total (``charges``; NULL in a row from before version 3)."""
    return f"COALESCE({row}.charge, {row}.size)"


def _named(row: str) -> str:
    return f"EXISTS (SELECT 1 FROM entries WHERE object_name = {row}.object_name)"


def _come(row: str) -> str:
    """The totals row's change for one entry (``NEW``) coming."""
    piece = f"{row}.fmt = '{PIECE}'"
    return (
        f"UPDATE totals SET entries = entries + 1, bytes = bytes + {charge(row)},"
        f" pieces = pieces + ({piece}), piece_bytes = piece_bytes + {charge(row)} * ({piece});"
    )


def _go(row: str) -> str:
    """One entry (``OLD``) going: its object's bytes leave the total with the last entry naming it;
    until then they wait in ``orphans``."""
    piece = f"{row}.fmt = '{PIECE}'"
    left = f"(SELECT bytes FROM orphans WHERE object_name = {row}.object_name)"
    return (
        f"UPDATE totals SET entries = entries - 1, pieces = pieces - ({piece}),"
        f" piece_bytes = piece_bytes - {charge(row)} * ({piece}),"
        f" bytes = bytes - CASE WHEN {_named(row)} THEN 0 ELSE {charge(row)} + COALESCE({left}, 0) END;"
        f" INSERT INTO orphans SELECT {row}.object_name, {charge(row)} WHERE {_named(row)}"
        " ON CONFLICT (object_name) DO UPDATE SET bytes = bytes + excluded.bytes;"
        f" DELETE FROM orphans WHERE object_name = {row}.object_name AND NOT {_named(row)};"
    )


def _swap() -> str:
    """An entry (``OLD``) rewritten in place (``NEW``), in the same object."""
    was, now = f"OLD.fmt = '{PIECE}'", f"NEW.fmt = '{PIECE}'"
    return (
        f"UPDATE totals SET bytes = bytes - {charge('OLD')} + {charge('NEW')},"
        f" pieces = pieces - ({was}) + ({now}),"
        f" piece_bytes = piece_bytes - {charge('OLD')} * ({was}) + {charge('NEW')} * ({now});"
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
        charge INTEGER,
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
    # Bytes of entries gone from objects that other entries still name.
    "CREATE TABLE IF NOT EXISTS orphans (object_name TEXT PRIMARY KEY, bytes INTEGER NOT NULL) WITHOUT ROWID",
)
# After the columns they read (``_migrate``).
_TRIGGERS = (
    # Version 2's triggers counted every entry's bytes, the ranges inside a file beside the file.
    "DROP TRIGGER IF EXISTS totals_insert",
    "DROP TRIGGER IF EXISTS totals_delete",
    "DROP TRIGGER IF EXISTS totals_update",
    f"CREATE TRIGGER IF NOT EXISTS budget_insert AFTER INSERT ON entries BEGIN {_come('NEW')} END",
    f"CREATE TRIGGER IF NOT EXISTS budget_delete AFTER DELETE ON entries BEGIN {_go('OLD')} END",
    # An upsert: in place when its object stays; else it leaves the old object as a delete would.
    "CREATE TRIGGER IF NOT EXISTS budget_update AFTER UPDATE OF object_name, size, charge, fmt ON entries"
    f" WHEN OLD.object_name = NEW.object_name BEGIN {_swap()} END",
    "CREATE TRIGGER IF NOT EXISTS budget_move AFTER UPDATE OF object_name ON entries"
    f" WHEN OLD.object_name != NEW.object_name BEGIN {_go('OLD')} {_come('NEW')} END",
)
# One scan, once per file: from then on the triggers keep the row.
_FILL = (
    f"INSERT INTO totals SELECT 0, COUNT(*), COALESCE(SUM({charge('entries')}), 0)"
    " + (SELECT COALESCE(SUM(bytes), 0) FROM orphans), COALESCE(SUM(fmt = ?1), 0),"
    f" COALESCE(SUM({charge('entries')} * (fmt = ?1)), 0) FROM entries"
)


def migrate(db: sqlite3.Connection) -> None:
    """Bring a file to ``VERSION`` (in a write transaction)."""
    for statement in _SCHEMA:
        db.execute(statement)
    columns = {row[1] for row in db.execute("PRAGMA table_info(entries)")}
    if "start" not in columns:  # version 1
        db.execute("ALTER TABLE entries ADD COLUMN start INTEGER NOT NULL DEFAULT 0")
    if "charge" not in columns:  # version 2: NULL, its size, as version 2 counted it
        db.execute("ALTER TABLE entries ADD COLUMN charge INTEGER")
    for statement in _TRIGGERS:
        db.execute(statement)
    if db.execute("SELECT 1 FROM totals").fetchone() is None:
        db.execute(_FILL, (PIECE,))
    db.execute(f"PRAGMA user_version = {VERSION}")
