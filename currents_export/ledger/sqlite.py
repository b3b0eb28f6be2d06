"""The default ledger: one SQLite file, one row per object."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    object_id   TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('in_progress', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    figures     TEXT,
    error       TEXT,
    started_at  REAL,
    updated_at  REAL NOT NULL
)
"""


class SqliteLedger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    def is_done(self, object_id: str) -> bool:
        row = self._db.execute(
            "SELECT status FROM objects WHERE object_id = ?", (object_id,)
        ).fetchone()
        return row is not None and row[0] == "done"

    def begin(self, object_id: str) -> None:
        now = time.time()
        self._db.execute(
            """INSERT INTO objects (object_id, status, attempts, started_at, updated_at)
               VALUES (?, 'in_progress', 1, ?, ?)
               ON CONFLICT (object_id) DO UPDATE SET status = 'in_progress',
                   attempts = attempts + 1, error = NULL, started_at = ?, updated_at = ?""",
            (object_id, now, now, now, now),
        )

    def complete(self, object_id: str, figures: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE objects SET status = 'done', figures = ?, updated_at = ? WHERE object_id = ?",
            (orjson.dumps(figures).decode(), time.time(), object_id),
        )

    def fail(self, object_id: str, error: str) -> None:
        self._db.execute(
            "UPDATE objects SET status = 'failed', error = ?, updated_at = ? WHERE object_id = ?",
            (error, time.time(), object_id),
        )

    def status(self, object_id: str) -> dict[str, Any] | None:
        """The row for ``object_id`` (for inspection and tests)."""
        cursor = self._db.execute("SELECT * FROM objects WHERE object_id = ?", (object_id,))
        row = cursor.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cursor.description], row, strict=True))

    def close(self) -> None:
        self._db.close()
