import sqlite3
from pathlib import Path

import pytest

from currents_export.ledger import (
    Ledger,
    LedgerConfigError,
    ObjectState,
    Resume,
    SqliteLedger,
    open_ledger,
)


def test_an_object_is_done_only_after_complete_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.sqlite"
    ledger = SqliteLedger(path)
    ledger.begin("s3://b/k1")
    assert not ledger.is_done("s3://b/k1")
    ledger.complete("s3://b/k1", {"records": 3})
    ledger.begin("s3://b/k2")
    ledger.fail("s3://b/k2", "boom")
    ledger.close()

    reopened = SqliteLedger(path)
    assert reopened.is_done("s3://b/k1")
    assert not reopened.is_done("s3://b/k2")
    assert not reopened.is_done("never-seen")
    row = reopened.status("s3://b/k2")
    assert row is not None and row["status"] == "failed" and row["error"] == "boom"
    reopened.begin("s3://b/k2")
    row = reopened.status("s3://b/k2")
    assert row is not None and row["attempts"] == 2 and row["status"] == "in_progress"


@pytest.mark.parametrize("uri", ["dynamodb://", "dynamodb://a/b", "redis://x"])
def test_unsupported_state_uris_are_configuration_errors(uri: str) -> None:
    with pytest.raises(LedgerConfigError, match="--state"):
        open_ledger(uri)


# ---- identities, legacy rows, permanent failures, the listing -------------------------------
# ``ledger_contract`` runs against both ledgers (test_ledger_dynamodb.py imports it).

IDENTITY = "currents:event_type=users.behaviors.CustomEvent/date=2026-01-01-00/1/a/f+0+1.avro"
LEGACY = "s3://old-bucket/currents/" + IDENTITY.removeprefix("currents:")
DONE_IDENTITY = "currents:event_type=users.messages.email.Send/date=2026-01-01-00/1/a/g+0+1.avro"
DONE_LEGACY = "/data/event_type=users.messages.email.Send/date=2026-01-01-00/1/a/g+0+1.avro"
BROKEN = "sha256:" + "ab" * 32


def ledger_contract(ledger: Ledger) -> None:
    """What both ledgers do with identities, legacy ids, permanent failures and objects()."""
    # An old run, keyed by URI/path: one object done, one stopped half-way after a failure.
    ledger.begin(DONE_LEGACY)
    ledger.complete(DONE_LEGACY, {"records": 3})
    ledger.begin(LEGACY)
    ledger.save_progress(LEGACY, 500, {"records": 500})
    ledger.fail(LEGACY, "Amplitude unreachable")

    # Old rows keep answering for the objects they name.
    assert not ledger.is_done(DONE_IDENTITY)
    assert ledger.is_done(DONE_IDENTITY, legacy_id=DONE_LEGACY)
    found = ledger.state(DONE_IDENTITY, legacy_id=DONE_LEGACY)
    assert found is not None and found.object_id == DONE_LEGACY and found.status == "done"
    assert ledger.state(DONE_IDENTITY) is None
    assert not ledger.is_done(IDENTITY, legacy_id=LEGACY)

    # The unfinished one resumes from its old checkpoint, now under its identity.
    resume = ledger.begin(IDENTITY, location="/copies/f+0+1.avro", legacy_id=LEGACY)
    assert resume == Resume(next_index=500, figures={"records": 500})
    assert ledger.state(LEGACY) is None
    moved = ledger.state(IDENTITY, legacy_id=LEGACY)
    assert moved is not None and moved.object_id == IDENTITY
    assert (moved.status, moved.attempts, moved.next_index) == ("in_progress", 2, 500)
    assert moved.location == "/copies/f+0+1.avro" and moved.error is None
    assert not moved.permanent and moved.finished_at is None and moved.started_at is not None
    ledger.save_progress(IDENTITY, 900, {"records": 900})
    ledger.complete(IDENTITY, {"records": 900})
    finished = ledger.state(IDENTITY, legacy_id=LEGACY)
    assert finished is not None and finished.done and finished.next_index == 900
    assert finished.finished_at is not None and finished.finished_at >= moved.updated_at
    assert ledger.is_done(IDENTITY, legacy_id=LEGACY)

    # Forcing a legacy-done object starts it afresh under its identity; the old row stays.
    assert ledger.begin(DONE_IDENTITY, location="/again", legacy_id=DONE_LEGACY,
                        restart=True) is None
    fresh = ledger.state(DONE_IDENTITY, legacy_id=DONE_LEGACY)
    assert fresh is not None and fresh.object_id == DONE_IDENTITY
    assert (fresh.status, fresh.attempts, fresh.next_index) == ("in_progress", 1, 0)
    assert ledger.is_done(DONE_LEGACY)

    # A permanent failure says so; a later attempt (--retry-failed) clears it.
    ledger.begin(BROKEN, location="s3://bucket/not-currents.avro")
    ledger.fail(BROKEN, "not an Avro file", permanent=True)
    broken = ledger.state(BROKEN)
    assert broken is not None and (broken.status, broken.permanent) == ("failed", True)
    assert broken.error == "not an Avro file" and broken.location == "s3://bucket/not-currents.avro"
    assert broken.finished_at is not None and broken.attempts == 1
    assert not ledger.is_done(BROKEN)
    ledger.begin(BROKEN)  # no location given: the last one is kept
    retried = ledger.state(BROKEN)
    assert retried is not None and (retried.status, retried.permanent) == ("in_progress", False)
    assert retried.error is None and retried.finished_at is None and retried.attempts == 2
    assert retried.location == "s3://bucket/not-currents.avro"
    ledger.fail(BROKEN, "timeout")
    again = ledger.state(BROKEN)
    assert again is not None and not again.permanent and again.error == "timeout"

    # Every row, once: the moved legacy row is not listed.
    listed = {state.object_id: state for state in ledger.objects()}
    assert set(listed) == {DONE_LEGACY, IDENTITY, DONE_IDENTITY, BROKEN}
    assert listed[IDENTITY] == ledger.state(IDENTITY)
    assert all(isinstance(state, ObjectState) for state in listed.values())


def test_sqlite_ledger_contract(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    ledger_contract(ledger)
    ledger.close()
    reopened = SqliteLedger(tmp_path / "state.sqlite")
    assert reopened.is_done(IDENTITY) and len(list(reopened.objects())) == 4


def test_sqlite_a_legacy_done_row_without_restart_starts_afresh_under_the_identity(
    tmp_path: Path,
) -> None:
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    ledger.begin(DONE_LEGACY)
    ledger.complete(DONE_LEGACY, {})
    assert ledger.begin(DONE_IDENTITY, legacy_id=DONE_LEGACY) is None
    assert ledger.is_done(DONE_LEGACY)
    state = ledger.state(DONE_IDENTITY)
    assert state is not None and state.status == "in_progress" and state.attempts == 1


_OLD_SCHEMA = """
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


def test_a_ledger_file_with_the_old_schema_is_migrated_and_its_rows_still_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute(_OLD_SCHEMA)
    old.executemany(
        "INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(DONE_LEGACY, "done", 1, 0, '{"records": 3}', None, 100.0, 200.0),
         (LEGACY, "in_progress", 1, 40, '{"records": 40}', None, 300.0, 400.0),
         ("/data/x.avro", "failed", 2, 0, None, "boom", 500.0, 600.0)],
    )
    old.commit()
    old.close()

    ledger = SqliteLedger(path)
    assert ledger.is_done(DONE_LEGACY) and ledger.is_done(DONE_IDENTITY, legacy_id=DONE_LEGACY)
    assert ledger.state(DONE_LEGACY) == ObjectState(
        object_id=DONE_LEGACY, status="done", permanent=False, error=None, location=None,
        attempts=1, next_index=0, started_at=100.0, updated_at=200.0, finished_at=None,
    )
    failed = ledger.state("/data/x.avro")
    assert failed is not None and failed.error == "boom" and not failed.permanent
    resume = ledger.begin(IDENTITY, location="/new/f.avro", legacy_id=LEGACY)
    assert resume == Resume(next_index=40, figures={"records": 40})
    ledger.fail(IDENTITY, "unreadable", permanent=True)
    ledger.close()

    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(objects)")}
    assert {"permanent", "location", "finished_at"} <= columns
    again = SqliteLedger(path)  # a second opening finds nothing to add
    state = again.state(IDENTITY)
    assert state is not None and state.permanent and state.location == "/new/f.avro"
    assert [s.object_id for s in again.objects()] == sorted(
        [DONE_LEGACY, "/data/x.avro", IDENTITY])
