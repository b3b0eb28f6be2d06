"""The contract both ledgers (SQLite and DynamoDB) keep: identities, legacy rows, permanent
failures and the listing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from currents_export.errors import DiedReading
from currents_export.ledger import Ledger, ObjectState, Resume

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


def read_deaths_contract(owners: Callable[[], Ledger]) -> None:
    """What both ledgers do when the process dies while decoding an object: ``owners()``
    gives the ledger of a new owner each time, able to take over the leases of the ones
    before (they died)."""
    poison, resumed, cleanly = "s3://b/poison.avro", "s3://b/resumed.avro", "s3://b/ok.avro"
    for _ in range(2):  # dies while decoding from record 0, twice
        first = owners()
        first.begin(poison)
        first.reading(poison, 0)
    for _ in range(2):  # dies while decoding, but after checkpoints past its mark: no count
        owner = owners()
        owner.begin(resumed)
        owner.reading(resumed, 0)
        owner.save_progress(resumed, 100, {"records": 100})
    for _ in range(4):  # reading ends cleanly each time (an interrupted run): no count
        owner = owners()
        owner.begin(cleanly)
        owner.reading(cleanly, 0)
        owner.reading(cleanly, None)

    third = owners()
    third.begin(poison)  # the third claim: two deaths so far
    third.reading(poison, 0)
    with pytest.raises(DiedReading, match="ended 3 times while decoding it, never past record 0"):
        owners().begin(poison)
    state = third.state(poison)
    assert state is not None and state.status == "failed" and state.permanent
    assert "--retry-failed" in (state.error or "")
    # --retry-failed (a restart) tries it again from nothing.
    assert owners().begin(poison, restart=True) is None

    assert owners().begin(resumed) is not None  # not failed: it got past its mark
    assert owners().begin(cleanly) is None
