import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from currents_export.currents.keys import currents_identity
from currents_export.errors import AlreadyDone, LeaseHeld, LeaseLost, LedgerConfigError
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import (
    ObjectState,
    Resume,
    SqliteLedger,
    open_ledger,
)
from currents_export.sources.local import find_local_objects
from tests.support.emulator import upload_requests
from tests.support.ledgers import (
    BROKEN,
    DONE_IDENTITY,
    DONE_LEGACY,
    IDENTITY,
    LEGACY,
    ledger_contract,
    read_deaths_contract,
)
from tests.support.runs import replay


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
# ``ledger_contract`` (tests/support/ledgers.py) runs against both ledgers.

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
    # Rows in the Currents layout are now keyed by identity (the old id kept as location).
    assert ledger.state(DONE_LEGACY) is None and ledger.state(LEGACY) is None
    assert ledger.is_done(DONE_IDENTITY)
    assert ledger.state(DONE_IDENTITY) == ObjectState(
        object_id=DONE_IDENTITY, status="done", permanent=False, error=None,
        location=DONE_LEGACY, attempts=1, next_index=0, started_at=100.0, updated_at=200.0,
        finished_at=None,
    )
    failed = ledger.state("/data/x.avro")  # not in the layout: left as it was
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
        ["/data/x.avro", DONE_IDENTITY, IDENTITY])


def old_ledger(path: Path, rows: list[tuple[object, ...]]) -> None:
    """A ledger file as versions before identity keys wrote it."""
    old = sqlite3.connect(path)
    old.execute(_OLD_SCHEMA)
    old.executemany("INSERT INTO objects VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    old.commit()
    old.close()


def test_an_old_path_keyed_done_row_answers_for_the_file_copied_elsewhere(
    tmp_path: Path,
) -> None:
    key = "event_type=users.messages.email.Open/date=2026-01-01-00/1/a/x+0+0000000007.avro"
    path = tmp_path / "state.sqlite"
    old_ledger(path, [(f"/old/place/{key}", "done", 1, 0, '{"records": 3}', None, 1.0, 2.0)])
    copy = tmp_path / "new" / "place" / key
    copy.parent.mkdir(parents=True)
    copy.write_bytes(b"Obj\x01")
    [source] = find_local_objects([tmp_path / "new" / "place"])
    assert source.uri != f"/old/place/{key}"

    ledger = SqliteLedger(path)
    found = ledger.state(source.identity)  # no legacy_id: the row itself was re-keyed
    assert found is not None and found.done and found.object_id == f"currents:{key}"
    assert found.location == f"/old/place/{key}"
    assert ledger.is_done(source.identity, legacy_id=source.uri)
    ledger.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1


def test_re_keying_keeps_the_more_advanced_row_and_runs_once(tmp_path: Path) -> None:
    done_key = "event_type=users.messages.sms.Send/date=2026-01-01-00/1/a/d+0+1.avro"
    open_key = "event_type=users.messages.sms.Send/date=2026-01-01-00/1/a/o+0+2.avro"
    path = tmp_path / "state.sqlite"
    old_ledger(path, [
        # one file seen at two places: done at one, failed at the other
        (f"/a/{done_key}", "failed", 2, 10, None, "boom", 1.0, 2.0),
        (f"/b/{done_key}", "done", 1, 0, "{}", None, 3.0, 4.0),
        # already under its identity (in progress); an old failed row for the same file
        (f"currents:{open_key}", "in_progress", 1, 5, '{"records": 5}', None, 5.0, 6.0),
        (f"s3://bucket/x/{open_key}", "failed", 1, 0, None, "timeout", 7.0, 8.0),
        ("sha256:" + "cd" * 32, "done", 1, 0, "{}", None, 9.0, 10.0),
    ])
    ledger = SqliteLedger(path)
    done = ledger.state(f"currents:{done_key}")
    assert done is not None and done.done and done.location == f"/b/{done_key}"
    # /a (failed) was re-keyed first, then /b (done) took its place: done beats failed
    assert ledger.state(f"/a/{done_key}") is None
    kept = ledger.state(f"currents:{open_key}")
    assert kept is not None and (kept.status, kept.next_index) == ("in_progress", 5)
    assert ledger.state(f"s3://bucket/x/{open_key}") is not None  # not more advanced: stays
    assert ledger.state("sha256:" + "cd" * 32) is not None
    assert len(list(ledger.objects())) == 5 - 1
    ledger.close()

    # Once only: a path-keyed row written afterwards (by an older version) is left alone.
    later = f"/c/{open_key.replace('o+0+2', 'n+0+3')}"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO objects (object_id, status, updated_at) VALUES (?, 'done', 1)",
                   (later,))
    reopened = SqliteLedger(path)
    assert reopened.state(later) is not None


def test_replay_from_a_new_place_skips_what_an_old_ledger_did_elsewhere(
    emulator: Emulator, tmp_path: Path
) -> None:
    [fixture] = generate_fixtures(tmp_path / "new" / "place", events_per_type=10, seed=13,
                                  files_per_type=1, event_types=["users.messages.email.Open"])
    identity = currents_identity(fixture.key)
    assert identity is not None
    old_ledger(tmp_path / "state.sqlite",
               [(f"/old/place/{identity}", "done", 1, 0, '{"records": 10}', None, 1.0, 2.0)])
    result, summary = replay(emulator, tmp_path, tmp_path / "new" / "place")
    assert result.exit_code == 0, result.output
    assert summary["objects_already_done"] == 1 and summary["objects_done"] == 0
    assert summary["requests"] == 0 and upload_requests(emulator) == []


# ---- leases: several processes on one SQLite file ---------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_sqlite_a_live_lease_holds_the_object_until_it_expires_and_fences_the_old_owner(
    tmp_path: Path,
) -> None:
    clock = Clock()
    path = tmp_path / "state.sqlite"
    holder = SqliteLedger(path, owner="worker-a", lease_s=100, clock=clock)
    other = SqliteLedger(path, owner="worker-b", lease_s=100, clock=clock)
    holder.begin(IDENTITY, location="/data/f.avro")
    clock.now += 10
    holder.save_progress(IDENTITY, 500, {"records": 500})  # extends the lease to +110
    clock.now += 99
    with pytest.raises(LeaseHeld, match="processed elsewhere") as held:
        other.begin(IDENTITY)
    assert (held.value.owner, held.value.until) == ("worker-a", 1_800_000_110.0)
    row = other.status(IDENTITY)
    assert row is not None and row["attempts"] == 1 and row["lease_owner"] == "worker-a"

    clock.now += 2  # the lease ran out: the other owner resumes from the checkpoint
    assert other.begin(IDENTITY) == Resume(next_index=500, figures={"records": 500})
    row = other.status(IDENTITY)
    assert row is not None and row["lease_owner"] == "worker-b" and row["attempts"] == 2

    # Fencing: the old owner may not write any more, whatever it tries.
    with pytest.raises(LeaseLost, match="another worker took this object over"):
        holder.save_progress(IDENTITY, 900, {"records": 900})
    with pytest.raises(LeaseLost):
        holder.complete(IDENTITY, {"records": 1000})
    with pytest.raises(LeaseLost):
        holder.fail(IDENTITY, "too late")
    state = other.state(IDENTITY)
    assert state is not None and (state.status, state.next_index) == ("in_progress", 500)
    other.complete(IDENTITY, {"records": 1000})
    with pytest.raises(AlreadyDone):  # done: only --force (restart) begins it again
        holder.begin(IDENTITY)
    assert holder.begin(IDENTITY, restart=True) is None
    holder.close()
    other.close()


def test_sqlite_a_released_lease_or_a_dead_owner_frees_the_object_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite"
    worker = SqliteLedger(path)  # this process: its lease is live
    parent, next_worker = SqliteLedger(path), SqliteLedger(path)
    assert worker.owner.split(":")[1] == str(os.getpid())
    worker.begin(IDENTITY)
    worker.save_progress(IDENTITY, 300, {"records": 300})
    with pytest.raises(LeaseHeld):
        next_worker.begin(IDENTITY)
    # The parent saw the worker die: it frees that owner's lease (and no other's).
    assert not parent.release(IDENTITY, "someone-else")
    assert parent.release(IDENTITY, worker.owner)
    assert next_worker.begin(IDENTITY) == Resume(next_index=300, figures={"records": 300})
    with pytest.raises(LeaseLost):
        worker.save_progress(IDENTITY, 400, {"records": 400})

    # A lease whose owner is a process of this host that has ended is free at once.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    gone = f"{socket.gethostname()}:{int(ended.stdout)}:-:deadbeef"
    dead = SqliteLedger(path, owner=gone)
    dead.begin(DONE_IDENTITY)
    dead.save_progress(DONE_IDENTITY, 7, {"records": 7})
    assert next_worker.begin(DONE_IDENTITY) == Resume(next_index=7, figures={"records": 7})
    # ... but not when the owner runs on another host: its lease must expire.
    far = SqliteLedger(path, owner=f"elsewhere:{int(ended.stdout)}:-:cafe")
    far.begin(BROKEN)
    with pytest.raises(LeaseHeld):
        next_worker.begin(BROKEN)
    # A failure releases the lease: a retry claims it at once.
    far.fail(BROKEN, "timeout")
    assert next_worker.begin(BROKEN) is None
    for ledger in (worker, parent, next_worker, dead, far):
        ledger.close()


def test_sqlite_leases_are_added_to_an_old_file_whose_rows_stay_free(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old_ledger(path, [(IDENTITY, "in_progress", 1, 40, '{"records": 40}', None, 1.0, 2.0)])
    ledger = SqliteLedger(path)
    columns = {row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(objects)")}
    assert {"lease_owner", "lease_until"} <= columns
    ledger.save_progress(IDENTITY, 50, {"records": 50})  # a row without an owner: writable
    assert ledger.begin(IDENTITY) == Resume(next_index=50, figures={"records": 50})
    row = ledger.status(IDENTITY)
    assert row is not None and row["lease_owner"] == ledger.owner and row["attempts"] == 2
    ledger.close()


def test_sqlite_an_object_that_kills_the_process_while_decoding_fails_for_good(
    tmp_path: Path,
) -> None:
    opened: list[SqliteLedger] = []

    def next_owner() -> SqliteLedger:  # each a lease later than the last: the last one died
        at = 1_800_000_000.0 + 2_000 * len(opened)
        owner = SqliteLedger(tmp_path / "state.sqlite", owner=f"gone-{len(opened)}",
                             clock=lambda: at)
        opened.append(owner)
        return owner

    read_deaths_contract(next_owner)
    for owner in opened:
        owner.close()
