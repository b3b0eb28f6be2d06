"""The default ledger: one SQLite file, one row per object."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson

from currents_export.ledger.base import Resume

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    object_id   TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('in_progress', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_index  INTEGER NOT NULL DEFAULT 0,
    figures     TEXT,
    error       TEXT,
    started_at  REAL,
    updated_at  REAL NOT NULL
)
"""


class SqliteLedger:
    """Every write is its own durable transaction (WAL, synchronous=FULL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    def is_done(self, object_id: str) -> bool:
        row = self._one("SELECT status FROM objects WHERE object_id = ?", object_id)
        return row is not None and row[0] == "done"

    def begin(self, object_id: str, *, restart: bool = False) -> Resume | None:
        row = self._one("SELECT status, next_index, figures FROM objects WHERE object_id = ?",
                        object_id)
        now = time.time()
        resume = None
        if row is not None and not restart and row[0] != "done" and row[1] > 0 and row[2]:
            resume = Resume(next_index=row[1], figures=orjson.loads(row[2]))
        keep_index = resume.next_index if resume else 0
        keep_figures = orjson.dumps(resume.figures).decode() if resume else None
        self._execute(
            """INSERT INTO objects (object_id, status, attempts, next_index, figures,
                                    started_at, updated_at)
               VALUES (?, 'in_progress', 1, ?, ?, ?, ?)
               ON CONFLICT (object_id) DO UPDATE SET status = 'in_progress',
                   attempts = attempts + 1, next_index = excluded.next_index,
                   figures = excluded.figures, error = NULL,
                   started_at = excluded.started_at, updated_at = excluded.updated_at""",
            (object_id, keep_index, keep_figures, now, now),
        )
        return resume

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        self._execute(
            """UPDATE objects SET next_index = ?, figures = ?, updated_at = ?
               WHERE object_id = ? AND status = 'in_progress'""",
            (next_index, orjson.dumps(figures).decode(), time.time(), object_id),
        )

    def complete(self, object_id: str, figures: dict[str, Any]) -> None:
        self._execute(
            "UPDATE objects SET status = 'done', figures = ?, updated_at = ? WHERE object_id = ?",
            (orjson.dumps(figures).decode(), time.time(), object_id),
        )

    def fail(self, object_id: str, error: str) -> None:
        self._execute(
            "UPDATE objects SET status = 'failed', error = ?, updated_at = ? WHERE object_id = ?",
            (error, time.time(), object_id),
        )

    def status(self, object_id: str) -> dict[str, Any] | None:
        """The row for ``object_id`` (for inspection and tests)."""
        with self._lock:
            cursor = self._db.execute("SELECT * FROM objects WHERE object_id = ?", (object_id,))
            row = cursor.fetchone()
            names = [c[0] for c in cursor.description]
        return None if row is None else dict(zip(names, row, strict=True))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, *params: object) -> tuple[Any, ...] | None:
        with self._lock:
            return self._db.execute(sql, params).fetchone()

    def _execute(self, sql: str, params: tuple[object, ...]) -> None:
        with self._lock:
            self._db.execute(sql, params)
