"""The default ledger: one SQLite file, one row per object, readable by its owner only.

Migration (once per file, ``PRAGMA user_version`` 0 → 1, one transaction): rows keyed by an
old path or ``s3://`` URI in the Currents layout are re-keyed to ``currents:<identity>``,
the old id kept in ``location`` if empty. When two rows meet under one identity, a done row
beats an unfinished one (dropped and logged); else the row already there stays and the old
one keeps its id (still found as a ``legacy_id``). Other rows are left as they are.

The destination the objects were delivered to (``ledger.base.Destination``) is one row of
the table ``destination``, created empty in files from before it existed: the first run
that sends binds it (``recorded`` at once when the file holds progress already). Each
connection's first completion, or checkpoint with events delivered, sets ``recorded``; a
connection that bound the file and closes with nothing recorded removes the row again (its
run failed at once: a wrong key, a host that does not answer).

Leases, as in the DynamoDB ledger (see ``ledger.base.Ledger``), let several processes share
the file. The owner is ``host:pid:start:random`` (``start`` tells a recycled pid apart); a
lease whose owner is a dead process of this host is free at once (a SIGKILLed run holds
nothing), as is a row older than leases. Each process has its own connection; WAL and a
busy timeout let them take turns.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from currents_export.currents.keys import currents_identity
from currents_export.errors import AlreadyDone, DiedReading, LeaseHeld, LeaseLost
from currents_export.ledger.base import (
    DONE,
    IN_PROGRESS,
    MAX_READ_DEATHS,
    Destination,
    ObjectState,
    Resume,
    died_reading,
    read_deaths,
    records_delivery,
)
from currents_export.support.privatefiles import (
    create_private_file,
    make_private,
    make_private_dirs,
    tighten,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    object_id   TEXT PRIMARY KEY,
    status      TEXT NOT NULL CHECK (status IN ('in_progress', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_index  INTEGER NOT NULL DEFAULT 0,
    figures     TEXT,
    error       TEXT,
    started_at  REAL,
    updated_at  REAL NOT NULL,
    permanent   INTEGER NOT NULL DEFAULT 0,
    location    TEXT,
    finished_at REAL
)
"""
# One row at most (id 1): where the objects were delivered (host, API key fingerprint).
_DESTINATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS destination (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    host            TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    bound_at        REAL NOT NULL,
    previous        TEXT,
    recorded        INTEGER NOT NULL DEFAULT 0
)
"""
# Columns added since the first schema, added to older files when they are opened.
_ADDED_COLUMNS = {
    "permanent": "permanent INTEGER NOT NULL DEFAULT 0",
    "location": "location TEXT",
    "finished_at": "finished_at REAL",
    "lease_owner": "lease_owner TEXT",  # who holds the object while it is in progress
    "lease_until": "lease_until REAL",  # until when (time.time()); renewed by checkpoints
    "reading_from": "reading_from INTEGER NOT NULL DEFAULT -1",  # see Ledger.reading
    "read_deaths": "read_deaths INTEGER NOT NULL DEFAULT 0",
}
LEASE_S = 960.0  # as the DynamoDB ledger's
_STATE_COLUMNS = ("object_id, status, permanent, error, location, attempts, next_index, "
                  "started_at, updated_at, finished_at")
_IDENTITY_PREFIXES = ("currents:", "sha256:", "s3etag:")  # ids that are identities already
_VERSION_IDENTITY_KEYS = 1  # user_version once path-keyed rows were re-keyed by identity


class SqliteLedger:
    """Every write is its own durable transaction (WAL, synchronous=FULL)."""

    def __init__(
        self,
        path: str | Path,
        *,
        owner: str | None = None,
        lease_s: float = LEASE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.owner = owner or process_owner()
        self.lease_s = lease_s
        self._clock = clock
        self._recorded = False  # this connection marked the destination recorded
        self._bound: Destination | None = None  # the binding this connection made
        # Owner only: folders we create 0700, the file and its -wal/-shm 0600 (SQLite gives
        # those the database file's mode); whatever the umask.
        make_private_dirs(self.path.parent)
        created = create_private_file(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._transaction():
            self._db.execute(_SCHEMA)
            self._db.execute(_DESTINATION_SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(objects)")}
            for name, definition in _ADDED_COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE objects ADD COLUMN {definition}")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version < _VERSION_IDENTITY_KEYS:
                self._rekey_by_identity()
                self._db.execute(f"PRAGMA user_version = {_VERSION_IDENTITY_KEYS}")
        # SQLite keeps -wal/-shm beside the file a symlinked --state points to.
        real = os.path.realpath(self.path)
        if created:  # the first transaction made them; SQLite copies the file's mode anyway
            for suffix in ("-wal", "-shm"):
                make_private(f"{real}{suffix}")
        else:  # a ledger from an earlier version may be readable by others: ours, tighten
            for name in (real, f"{real}-wal", f"{real}-shm"):
                tighten(name)

    def __repr__(self) -> str:
        return f"SqliteLedger({str(self.path)!r})"

    def state(self, object_id: str, *, legacy_id: str | None = None) -> ObjectState | None:
        with self._lock:
            return self._state(object_id, legacy_id)

    def is_done(self, object_id: str, *, legacy_id: str | None = None) -> bool:
        found = self.state(object_id, legacy_id=legacy_id)
        return found is not None and found.done

    def begin(
        self,
        object_id: str,
        *,
        location: str | None = None,
        legacy_id: str | None = None,
        restart: bool = False,
    ) -> Resume | None:
        """Claim the object and return where a previous attempt stopped (None: from the
        start). Raises AlreadyDone when it is done (unless ``restart``), LeaseHeld when
        another owner's lease on it is live."""
        with self._lock, self._transaction():
            if legacy_id is not None and legacy_id != object_id:
                self._adopt(object_id, legacy_id)
            row = self._db.execute(
                """SELECT status, next_index, figures, lease_owner, lease_until, reading_from,
                          read_deaths
                   FROM objects WHERE object_id = ?""",
                (object_id,),
            ).fetchone()
            now = self._clock()
            resume = None
            deaths = 0
            if row is not None:
                status, next_index, figures, owner, until, marked, deaths = row
                if status == DONE and not restart:
                    raise AlreadyDone(object_id)
                if status == IN_PROGRESS and self._held_by_another(owner, until, now):
                    raise LeaseHeld(object_id, owner, float(until))
                deaths = 0 if restart else read_deaths(marked, deaths, next_index)
                if deaths >= MAX_READ_DEATHS:
                    error = died_reading(object_id, deaths, marked)
                    self._db.execute(
                        """UPDATE objects SET status = 'failed', error = ?, permanent = 1,
                               updated_at = ?, finished_at = ?, lease_until = NULL,
                               reading_from = -1, read_deaths = ?
                           WHERE object_id = ?""", (error, now, now, deaths, object_id))
                if not restart and status != DONE and next_index > 0 and figures:
                    resume = Resume(next_index=next_index, figures=orjson.loads(figures))
            if deaths < MAX_READ_DEATHS:
                self._claim(object_id, resume, location, now, deaths)
        if deaths >= MAX_READ_DEATHS:
            raise DiedReading(died_reading(object_id, deaths, -1 if row is None else row[5]))
        return resume

    def _claim(self, object_id: str, resume: Resume | None, location: str | None,
               now: float, deaths: int) -> None:
        """Take the lease (in ``begin``'s transaction), keeping ``resume``'s checkpoint, and
        mark the object read from there (the reader starts at once; ``reading``)."""
        keep_index = resume.next_index if resume else 0
        keep_figures = orjson.dumps(resume.figures).decode() if resume else None
        self._db.execute(
            """INSERT INTO objects (object_id, status, attempts, next_index, figures,
                                    started_at, updated_at, location, lease_owner,
                                    lease_until, read_deaths, reading_from)
               VALUES (?, 'in_progress', 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (object_id) DO UPDATE SET status = 'in_progress',
                   attempts = attempts + 1, next_index = excluded.next_index,
                   figures = excluded.figures, error = NULL, permanent = 0,
                   finished_at = NULL, started_at = excluded.started_at,
                   updated_at = excluded.updated_at,
                   location = COALESCE(excluded.location, location),
                   lease_owner = excluded.lease_owner, lease_until = excluded.lease_until,
                   reading_from = excluded.next_index, read_deaths = excluded.read_deaths""",
            (object_id, keep_index, keep_figures, now, now, location, self.owner,
             now + self.lease_s, deaths, keep_index),
        )

    def reading(self, object_id: str, index: int | None) -> None:
        with self._lock:
            if index is None:  # its reading ended: the deaths before it no longer count
                self._db.execute("UPDATE objects SET reading_from = -1, read_deaths = 0 "
                                 "WHERE object_id = ? AND lease_owner = ?",
                                 (object_id, self.owner))
            else:
                self._db.execute("UPDATE objects SET reading_from = ? "
                                 "WHERE object_id = ? AND lease_owner = ?",
                                 (index, object_id, self.owner))

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        """Save a checkpoint and extend the lease (LeaseLost once another owner has it; a
        late checkpoint of an object already finished is a no-op)."""
        now = self._clock()
        self._fenced(
            object_id,
            """UPDATE objects SET next_index = ?, figures = ?, updated_at = ?, lease_until = ?
               WHERE object_id = ? AND status = 'in_progress'""",
            (next_index, orjson.dumps(figures).decode(), now, now + self.lease_s, object_id),
            progress=records_delivery(figures),
        )

    def complete(self, object_id: str, figures: dict[str, Any]) -> None:
        """Mark done and release the lease (LeaseLost once another owner has it)."""
        now = self._clock()
        self._fenced(
            object_id,
            """UPDATE objects SET status = 'done', figures = ?, error = NULL, permanent = 0,
                   updated_at = ?, finished_at = ?, lease_until = NULL, reading_from = -1,
                   read_deaths = 0
               WHERE object_id = ?""",
            (orjson.dumps(figures).decode(), now, now, object_id),
            progress=True,
        )

    def fail(self, object_id: str, error: str, *, permanent: bool = False) -> None:
        """Mark failed and release the lease at once, so that a retry can claim it."""
        now = self._clock()
        self._fenced(
            object_id,
            """UPDATE objects SET status = 'failed', error = ?, permanent = ?, updated_at = ?,
                   finished_at = ?, lease_until = NULL, reading_from = -1, read_deaths = 0
               WHERE object_id = ?""",
            (error, int(permanent), now, now, object_id),
        )

    def release(self, object_id: str, owner: str) -> bool:
        """Free the lease ``owner`` holds on the object, when ``owner`` is known to be dead
        (a worker process that died), so that another owner can claim it at once; True
        when it held it. Progress saved so far stays."""
        with self._lock:
            cursor = self._db.execute(
                """UPDATE objects SET lease_until = NULL
                   WHERE object_id = ? AND lease_owner = ? AND status = 'in_progress'""",
                (object_id, owner),
            )
            return cursor.rowcount > 0

    def objects(self) -> Iterator[ObjectState]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_STATE_COLUMNS} FROM objects ORDER BY object_id"
            ).fetchall()
        return iter([_object_state(row) for row in rows])

    def destination(self) -> Destination | None:
        with self._lock:
            return self._destination()

    def bind_destination(
        self, destination: Destination, *, replacing: Destination | None
    ) -> Destination | None:
        """Compare and set, in one transaction (see ``ledger.base.Ledger``)."""
        with self._lock, self._transaction():
            current = self._destination()
            if current != replacing:
                return current
            now = self._clock()
            # A file from before destinations were recorded may hold progress already.
            recorded = current.recorded if current is not None else self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE status = 'done' OR next_index > 0)"
            ).fetchone()[0]
            self._db.execute(
                """INSERT INTO destination (id, host, key_fingerprint, bound_at, previous,
                                            recorded)
                   VALUES (1, ?, ?, ?, ?, ?)
                   ON CONFLICT (id) DO UPDATE SET host = excluded.host,
                       key_fingerprint = excluded.key_fingerprint,
                       bound_at = excluded.bound_at, previous = excluded.previous""",
                (destination.host, destination.key_fingerprint, now,
                 None if current is None else str(current), int(recorded)),
            )
            self._bound = self._destination()
            return self._bound

    def _destination(self) -> Destination | None:
        row = self._db.execute("SELECT host, key_fingerprint, bound_at, previous, recorded "
                               "FROM destination WHERE id = 1").fetchone()
        if row is None:
            return None
        host, fingerprint, bound_at, previous, recorded = row
        return Destination(host=host, key_fingerprint=fingerprint, bound_at=bound_at,
                           previous=previous, recorded=bool(recorded))

    def status(self, object_id: str) -> dict[str, Any] | None:
        """The row for ``object_id`` (for inspection and tests)."""
        with self._lock:
            cursor = self._db.execute("SELECT * FROM objects WHERE object_id = ?", (object_id,))
            row = cursor.fetchone()
            names = [c[0] for c in cursor.description]
        return None if row is None else dict(zip(names, row, strict=True))

    def close(self) -> None:
        with self._lock:
            try:
                self._release_binding()
            finally:
                self._db.close()

    def _release_binding(self) -> None:
        """Remove the binding this connection made if nothing was recorded under it."""
        bound = self._bound
        if bound is None:
            return
        self._bound = None
        try:
            with self._transaction():
                removed = self._db.execute(
                    """DELETE FROM destination WHERE id = 1 AND recorded = 0 AND host = ?
                           AND key_fingerprint = ? AND bound_at = ?""",
                    (bound.host, bound.key_fingerprint, bound.bound_at)).rowcount
        except sqlite3.Error:
            log.debug("ledger %s: the binding stays", self.path, exc_info=True)
            return
        if removed:
            log.info("ledger %s: nothing was recorded for %s; the ledger is not bound",
                     self.path, bound)

    def _state(self, object_id: str, legacy_id: str | None) -> ObjectState | None:
        for candidate in (object_id, legacy_id):
            if candidate is None:
                continue
            row = self._db.execute(
                f"SELECT {_STATE_COLUMNS} FROM objects WHERE object_id = ?",
                (candidate,),
            ).fetchone()
            if row is not None:
                return _object_state(row)
        return None

    def _adopt(self, object_id: str, legacy_id: str) -> None:
        """When only ``legacy_id`` has a row and it is unfinished, move it to ``object_id``
        (a done legacy row stays: it still answers for objects not processed since)."""
        if self._db.execute("SELECT 1 FROM objects WHERE object_id = ?",
                            (object_id,)).fetchone() is not None:
            return
        self._db.execute(
            "UPDATE objects SET object_id = ? WHERE object_id = ? AND status <> 'done'",
            (object_id, legacy_id),
        )

    def _rekey_by_identity(self) -> None:
        """Re-key path- and URI-keyed rows by identity (see the module docstring); runs in
        the opening transaction."""
        rows = self._db.execute(
            "SELECT object_id, status FROM objects WHERE object_id LIKE '%event_type=%' "
            "ORDER BY object_id"
        ).fetchall()
        moved = 0
        for old_id, status in rows:
            if old_id.startswith(_IDENTITY_PREFIXES):
                continue
            identity = currents_identity(old_id)
            if identity is None:
                continue
            new_id = f"currents:{identity}"
            existing = self._db.execute("SELECT status FROM objects WHERE object_id = ?",
                                        (new_id,)).fetchone()
            if existing is not None:
                if status != DONE or existing[0] == DONE:
                    log.info("ledger %s: %s is already recorded (%s); the row of %s (%s) "
                             "stays under its old id", self.path, new_id, existing[0], old_id,
                             status)
                    continue
                log.info("ledger %s: %s was %s; %s (done) takes its place",
                         self.path, new_id, existing[0], old_id)
                self._db.execute("DELETE FROM objects WHERE object_id = ?", (new_id,))
            self._db.execute(
                """UPDATE objects SET object_id = ?,
                       location = COALESCE(NULLIF(location, ''), ?)
                   WHERE object_id = ?""",
                (new_id, old_id, old_id),
            )
            moved += 1
        if moved:
            log.info("ledger %s: %d rows keyed by path or URI are now keyed by identity",
                     self.path, moved)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _held_by_another(self, owner: str | None, until: float | None, now: float) -> bool:
        """Whether a live lease of another owner holds an in-progress row."""
        if owner is None or owner == self.owner or until is None or until <= now:
            return False
        return not _owner_is_gone(owner)

    def _fenced(
        self, object_id: str, sql: str, params: tuple[object, ...], *, progress: bool = False
    ) -> None:
        """One write to a row this owner holds (or no owner holds: rows from before
        leases); LeaseLost when another owner holds it. No row: nothing happens.
        ``progress``: it records progress (the destination is then ``recorded``)."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT lease_owner FROM objects WHERE object_id = ?",
                                   (object_id,)).fetchone()
            if row is None:
                return
            if row[0] is not None and row[0] != self.owner:
                raise LeaseLost(object_id)
            self._db.execute(sql, params)
            if progress and not self._recorded:
                self._db.execute("UPDATE destination SET recorded = 1 WHERE recorded = 0")
                self._recorded = True


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error): reads and writes as one step."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._db.execute("ROLLBACK" if kind is not None else "COMMIT")


def process_owner() -> str:
    """This process as a lease owner: ``host:pid:start:random``."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_stat(pid)[1]}:{uuid.uuid4().hex[:8]}"


def _proc_stat(pid: int) -> tuple[str, str]:
    """Process ``pid``'s state letter and when it started (clock ticks since boot), from
    /proc; ("?", "-") when they cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
        return fields[0].decode(), fields[19].decode()  # fields 3 and 22 of proc(5)
    except (OSError, IndexError):
        return "?", "-"


def _owner_is_gone(owner: str) -> bool:
    """True when ``owner`` names a process of this host that no longer runs (a zombie, or
    a pid now used by a process started at another time, counts as gone). Owners of other
    hosts, or named otherwise, are never known to be gone: their lease must expire."""
    host, _, rest = owner.partition(":")
    pid_text, _, rest = rest.partition(":")
    started, _, _ = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        pass
    state, now_started = _proc_stat(pid)
    if state in ("Z", "X"):
        return True
    return started != "-" and now_started not in (started, "-")


def _object_state(row: tuple[Any, ...]) -> ObjectState:
    (object_id, status, permanent, error, location, attempts, next_index, started_at,
     updated_at, finished_at) = row
    return ObjectState(
        object_id=object_id, status=status, permanent=bool(permanent), error=error,
        location=location, attempts=int(attempts), next_index=int(next_index),
        started_at=started_at, updated_at=float(updated_at), finished_at=finished_at,
    )
