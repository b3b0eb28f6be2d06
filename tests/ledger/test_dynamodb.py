"""The DynamoDB ledger against moto's server: lifecycle, leases, fencing, TTL, the CLI."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
from click.testing import CliRunner

from currents_export.cli import main
from currents_export.errors import AlreadyDone, LeaseHeld, LeaseLost, LedgerConfigError
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import DynamoDbLedger, open_ledger
from currents_export.ledger.base import Destination
from currents_export.ledger.destination import key_fingerprint
from currents_export.ledger.dynamodb import DESTINATION_KEY
from currents_export.sources import find_local_objects
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

TABLE = "ledger"
OBJECT = "s3://acme/currents/event_type=users.behaviors.Purchase/x+0+1.avro"
LEASE_S = 60.0
DAY = 86_400


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(aws: str) -> str:
    """An empty ledger table; returns the endpoint URL."""
    DynamoDbLedger.create_table(boto3.client("dynamodb", endpoint_url=aws), TABLE)
    return aws


def ledger(endpoint: str, owner: str, clock: Clock, **options: Any) -> DynamoDbLedger:
    return DynamoDbLedger(TABLE, endpoint_url=endpoint, owner=owner, clock=clock,
                          lease_s=LEASE_S, **options)


def row(ledger: DynamoDbLedger, object_id: str = OBJECT) -> dict[str, Any]:
    item = ledger.status(object_id)
    assert item is not None
    return item


# ---- the protocol, as SqliteLedger ---------------------------------------------------------

def test_lifecycle_survives_reopening_and_a_failed_object_resumes(table: str) -> None:
    clock = Clock()
    first = ledger(table, "worker-a", clock)
    assert repr(first) == "DynamoDbLedger('ledger')"
    assert first.begin("s3://b/k1") is None
    assert not first.is_done("s3://b/k1")
    first.complete("s3://b/k1", {"records": 3})
    assert first.begin(OBJECT) is None
    first.save_progress(OBJECT, 500, {"records": 500, "delivered": 490, "duplicates": 10})
    first.fail(OBJECT, "Amplitude unreachable")
    first.close()

    client = boto3.client("dynamodb", endpoint_url=table)
    reopened = DynamoDbLedger(TABLE, client=client, owner="worker-b", clock=clock,
                              lease_s=LEASE_S)
    assert reopened.is_done("s3://b/k1")
    assert not reopened.is_done(OBJECT)
    assert not reopened.is_done("never-seen") and reopened.status("never-seen") is None
    failed = row(reopened)
    assert failed["state"] == "FAILED" and failed["error"] == "Amplitude unreachable"
    assert failed["lease_until"] == 0 and failed["attempts"] == 1
    done = row(reopened, "s3://b/k1")
    assert done["state"] == "DONE" and orjson.loads(done["figures"]) == {"records": 3}
    assert done["finished_at"] == clock.now and "lease_until" not in done

    clock.now += 1  # the failed attempt's lease is released: another worker may claim at once
    resume = reopened.begin(OBJECT)
    assert resume is not None and resume.next_index == 500
    assert resume.figures == {"records": 500, "delivered": 490, "duplicates": 10}
    claimed = row(reopened)
    assert claimed["state"] == "IN_PROGRESS" and claimed["attempts"] == 2
    assert claimed["lease_owner"] == "worker-b" and claimed["lease_until"] == clock.now + LEASE_S
    assert "error" not in claimed and "expires_at" not in claimed
    reopened.complete(OBJECT, {"records": 900})
    assert ledger(table, "worker-c", clock).is_done(OBJECT)


def test_an_interrupted_object_is_held_until_its_lease_expires_then_resumes(table: str) -> None:
    clock = Clock()
    holder, other = ledger(table, "worker-a", clock), ledger(table, "worker-b", clock)
    holder.begin(OBJECT)
    clock.now += 10
    holder.save_progress(OBJECT, 100, {"records": 100})  # extends the lease
    clock.now += LEASE_S - 1
    with pytest.raises(LeaseHeld, match=r"processed elsewhere.*retried") as held:
        other.begin(OBJECT)
    assert held.value.owner == "worker-a" and held.value.object_id == OBJECT
    assert held.value.until == 1_800_000_010.0 + LEASE_S
    copy = pickle.loads(pickle.dumps(held.value))
    assert str(copy) == str(held.value) and copy.until == held.value.until
    assert row(other)["attempts"] == 1  # a refused claim changes nothing

    clock.now += 2  # the holder died: its lease ran out
    resume = other.begin(OBJECT)
    assert resume is not None and resume.next_index == 100 and resume.figures == {"records": 100}
    assert row(other)["lease_owner"] == "worker-b" and row(other)["attempts"] == 2

    # Fencing: the old holder may not write any more, whatever it tries.
    with pytest.raises(LeaseLost, match="another worker took this object over"):
        holder.save_progress(OBJECT, 200, {"records": 200})
    with pytest.raises(LeaseLost):
        holder.complete(OBJECT, {"records": 300})
    with pytest.raises(LeaseLost):
        holder.fail(OBJECT, "too late")
    current = row(other)
    assert current["state"] == "IN_PROGRESS" and current["next_index"] == 100
    other.complete(OBJECT, {"records": 300})
    assert other.is_done(OBJECT)


def test_the_owner_may_reclaim_its_own_live_lease(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    worker.begin(OBJECT)
    worker.save_progress(OBJECT, 40, {"records": 40})
    resume = worker.begin(OBJECT)  # e.g. the same Lambda environment gets a redelivery
    assert resume is not None and resume.next_index == 40
    assert row(worker)["attempts"] == 2


def test_a_done_object_is_not_reclaimed_unless_restarted(table: str) -> None:
    clock = Clock()
    worker, other = ledger(table, "worker-a", clock), ledger(table, "worker-b", clock)
    worker.begin(OBJECT)
    worker.save_progress(OBJECT, 50, {"records": 50})
    worker.complete(OBJECT, {"records": 80})
    with pytest.raises(AlreadyDone, match="already completed"):
        other.begin(OBJECT)  # a race: is_done said no, then the other worker finished
    assert row(other)["state"] == "DONE" and row(other)["attempts"] == 1

    assert other.begin(OBJECT, restart=True) is None
    restarted = row(other)
    assert restarted["state"] == "IN_PROGRESS" and restarted["lease_owner"] == "worker-b"
    assert restarted["next_index"] == 0 and "figures" not in restarted
    assert "expires_at" not in restarted and "finished_at" not in restarted
    assert restarted["attempts"] == 2
    other.save_progress(OBJECT, 10, {"records": 10})  # the reset point lets progress restart
    assert row(other)["next_index"] == 10
    with pytest.raises(LeaseHeld):  # a restart still respects a live lease
        worker.begin(OBJECT, restart=True)


def test_concurrent_checkpoints_never_move_backwards(table: str) -> None:
    worker = ledger(table, "worker-a", Clock())
    worker.begin(OBJECT)
    values = list(range(1, 321))
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def save(chunk: list[int]) -> None:
        start.wait()
        try:
            for value in chunk:
                worker.save_progress(OBJECT, value, {"records": value})
        except BaseException as exc:  # reported below
            errors.append(exc)

    chunks = [values[n::8] if n % 2 else values[n::8][::-1] for n in range(8)]
    threads = [threading.Thread(target=save, args=(chunk,)) for chunk in chunks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final = row(worker)
    assert final["next_index"] == max(values)
    assert orjson.loads(final["figures"]) == {"records": max(values)}  # saved together
    worker.save_progress(OBJECT, 5, {"records": 5})  # a late, smaller checkpoint: ignored
    assert row(worker)["next_index"] == max(values)


def test_a_late_checkpoint_after_fail_keeps_the_lease_released(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    worker.begin(OBJECT)
    worker.save_progress(OBJECT, 100, {"records": 100})
    worker.fail(OBJECT, "x" * 5_000)
    worker.save_progress(OBJECT, 200, {"records": 200})  # a straggling thread: no-op
    failed = row(worker)
    assert failed["state"] == "FAILED" and failed["lease_until"] == 0
    assert failed["next_index"] == 100 and len(failed["error"]) == 1_000
    resume = ledger(table, "worker-b", clock).begin(OBJECT)
    assert resume is not None and resume.next_index == 100


def test_ttl_only_on_finished_rows(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    worker.begin(OBJECT)
    assert "expires_at" not in row(worker)
    worker.complete(OBJECT, {})
    assert row(worker)["expires_at"] == int(clock.now) + 400 * DAY
    worker.begin("s3://b/failed")
    worker.fail("s3://b/failed", "boom")
    assert row(worker, "s3://b/failed")["expires_at"] == int(clock.now) + 400 * DAY

    client = boto3.client("dynamodb", endpoint_url=table)
    ttl = client.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"

    forever = ledger(table, "worker-b", clock, ttl_days=None)
    forever.begin("s3://b/kept")
    forever.complete("s3://b/kept", {})
    kept = row(forever, "s3://b/kept")
    assert kept["state"] == "DONE" and "expires_at" not in kept


# ---- identities, legacy items, permanent failures, the listing ----------------------------

def test_dynamodb_ledger_contract(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    ledger_contract(worker)
    moved = row(worker, LEGACY)  # the old item is kept, sealed, out of sight
    assert moved["state"] == "MOVED" and moved["moved_to"] == IDENTITY
    assert moved["lease_until"] == 253_402_300_799 and "expires_at" in moved
    assert row(worker, IDENTITY)["previous_id"] == LEGACY
    broken = row(worker, BROKEN)
    assert broken["state"] == "FAILED" and broken["permanent"] is False


def test_a_legacy_item_under_a_live_lease_is_not_taken_until_the_lease_ends(table: str) -> None:
    clock = Clock()
    old_code, new_code = ledger(table, "old-worker", clock), ledger(table, "new-worker", clock)
    old_code.begin(LEGACY)
    old_code.save_progress(LEGACY, 70, {"records": 70})
    with pytest.raises(LeaseHeld) as held:
        new_code.begin(IDENTITY, location="s3://new/f.avro", legacy_id=LEGACY)
    assert held.value.owner == "old-worker" and held.value.object_id == IDENTITY
    assert new_code.status(IDENTITY) is None and row(new_code, LEGACY)["state"] == "IN_PROGRESS"

    clock.now += LEASE_S + 1  # the old worker died
    resume = new_code.begin(IDENTITY, location="s3://new/f.avro", legacy_id=LEGACY)
    assert resume is not None and resume.next_index == 70
    state = new_code.state(IDENTITY)
    assert state is not None and state.location == "s3://new/f.avro" and state.attempts == 2
    with pytest.raises(LeaseLost):  # the old worker, back, is fenced off
        old_code.save_progress(LEGACY, 80, {"records": 80})
    with pytest.raises(LeaseHeld):  # and may not claim the object under its URI again
        old_code.begin(LEGACY)
    assert not old_code.is_done(LEGACY) and old_code.state(LEGACY) is None
    new_code.complete(IDENTITY, {"records": 100})
    assert old_code.is_done(IDENTITY, legacy_id=LEGACY)


def test_a_move_interrupted_half_way_is_finished_by_the_next_worker(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    first, second = ledger(table, "worker-a", clock), ledger(table, "worker-b", clock)
    first.begin(LEGACY)
    first.save_progress(LEGACY, 30, {"records": 30})
    first.fail(LEGACY, "throttled")
    update = first._update

    def crash_on_create(object_id: str, *args: Any, **kwargs: Any) -> tuple[bool, dict]:
        if object_id == IDENTITY:
            raise RuntimeError("killed")
        return update(object_id, *args, **kwargs)

    monkeypatch.setattr(first, "_update", crash_on_create)
    with pytest.raises(RuntimeError):
        first.begin(IDENTITY, legacy_id=LEGACY)
    assert row(second, LEGACY)["state"] == "MOVED" and second.status(IDENTITY) is None
    with pytest.raises(LeaseHeld):  # the crashed worker's lease still holds
        second.begin(IDENTITY, legacy_id=LEGACY)
    clock.now += LEASE_S + 1
    resume = second.begin(IDENTITY, legacy_id=LEGACY)
    assert resume is not None and resume.next_index == 30
    created = row(second, IDENTITY)
    assert created["lease_owner"] == "worker-b" and created["attempts"] == 2


def test_a_legacy_done_item_makes_a_claim_already_done_unless_restarted(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    worker.begin(DONE_LEGACY)
    worker.complete(DONE_LEGACY, {})
    with pytest.raises(AlreadyDone):
        worker.begin(DONE_IDENTITY, legacy_id=DONE_LEGACY)
    assert worker.status(DONE_IDENTITY) is None
    assert worker.begin(DONE_IDENTITY, legacy_id=DONE_LEGACY, restart=True) is None
    assert row(worker, DONE_IDENTITY)["state"] == "IN_PROGRESS"
    assert row(worker, DONE_LEGACY)["state"] == "DONE"


def test_objects_scans_every_page(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    ids = [f"currents:event_type=t/f{n}.avro" for n in range(7)]
    for n, object_id in enumerate(ids):
        worker.begin(object_id, location=f"/in/f{n}.avro")
        if n % 2:
            worker.fail(object_id, f"error {n}", permanent=n == 3)
    listed = sorted(worker.objects(page_size=2), key=lambda state: state.object_id)
    assert [state.object_id for state in listed] == ids
    assert [state.status for state in listed] == ["in_progress", "failed"] * 3 + ["in_progress"]
    assert [state.permanent for state in listed] == [n == 3 for n in range(7)]
    assert listed[5].error == "error 5" and listed[5].location == "/in/f5.avro"
    assert listed[0].updated_at == clock.now and listed[0].started_at == clock.now


# ---- configuration -------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["dynamodb://", "dynamodb://a/b"])
def test_bad_dynamodb_uris_name_the_option(uri: str) -> None:
    with pytest.raises(LedgerConfigError, match=r"--state .*expected dynamodb://TABLE"):
        open_ledger(uri)


def test_a_missing_table_is_a_configuration_error_naming_it(aws: str) -> None:
    missing = open_ledger("dynamodb://no-such-table", endpoint_url=aws, region="us-east-1")
    assert isinstance(missing, DynamoDbLedger) and missing.table == "no-such-table"
    with pytest.raises(LedgerConfigError, match=r"'no-such-table' does not exist.*create it"):
        missing.is_done(OBJECT)
    with pytest.raises(LedgerConfigError, match="no-such-table"):
        missing.begin(OBJECT)


def test_the_endpoint_comes_from_the_environment(
    table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", table)
    from_env = open_ledger(f"dynamodb://{TABLE}")
    from_env.begin(OBJECT)
    assert ledger(table, "reader", Clock()).status(OBJECT) is not None


# ---- the CLI -------------------------------------------------------------------------------

def replay_with_dynamodb(endpoint: str, emulator: Emulator, work: Path) -> tuple[int, dict]:
    summary = work / "summary.json"
    summary.unlink(missing_ok=True)
    result = CliRunner().invoke(main, [
        "replay", str(work / "bucket"), "--state", f"dynamodb://{TABLE}",
        "--amplitude-url", emulator.url, "--api-key", "k12345",
        "--dead-letter", str(work / "dead-letter"), "--summary-json", str(summary),
    ], env={"AWS_ENDPOINT_URL": endpoint}, catch_exceptions=False)
    return result.exit_code, orjson.loads(summary.read_bytes())


def test_replay_with_a_dynamodb_ledger_does_each_file_once(
    table: str, emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=20, seed=51,
                              event_types=["users.messages.email.Send",
                                           "users.behaviors.CustomEvent"])
    code, summary = replay_with_dynamodb(table, emulator, tmp_path)
    assert code == 0 and summary["objects_done"] == len(files) > 1
    assert summary["delivered"] > 0
    state = ledger(table, "reader", Clock())
    assert all(state.is_done(o.identity) for o in find_local_objects(f.path for f in files))
    requests = len(upload_requests(emulator))
    assert requests > 0

    code, again = replay_with_dynamodb(table, emulator, tmp_path)
    assert code == 0
    assert again["objects_already_done"] == len(files)
    assert again["objects_done"] == 0 and again["requests"] == 0
    assert len(upload_requests(emulator)) == requests


def test_an_object_leased_elsewhere_is_reported_as_failed_not_processed(
    table: str, emulator: Emulator, tmp_path: Path
) -> None:
    [fixture] = generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=52,
                                  files_per_type=1, event_types=["users.messages.email.Send"])
    elsewhere = DynamoDbLedger(TABLE, endpoint_url=table, owner="other-worker")
    elsewhere.begin(str(fixture.path.resolve()))
    code, summary = replay_with_dynamodb(table, emulator, tmp_path)
    assert code == 1
    assert summary["objects_failed"] == 1
    assert "processed elsewhere" in summary["failures"][0]["error"]
    assert upload_requests(emulator) == []


def test_a_dead_worker_s_lease_released_by_the_parent_is_claimed_at_once(table: str) -> None:
    clock = Clock()
    dead, parent, other = (ledger(table, name, clock) for name in ("worker-a", "parent",
                                                                  "worker-b"))
    dead.begin(OBJECT)
    dead.save_progress(OBJECT, 100, {"records": 100})
    with pytest.raises(LeaseHeld):
        other.begin(OBJECT)
    assert not parent.release(OBJECT, "worker-c")  # only the named owner's lease
    assert parent.release(OBJECT, "worker-a")
    resume = other.begin(OBJECT)  # no waiting for the lease to run out
    assert resume is not None and resume.next_index == 100
    assert row(other)["lease_owner"] == "worker-b"
    with pytest.raises(LeaseLost):
        dead.complete(OBJECT, {"records": 100})
    assert not parent.release(OBJECT, "worker-a")  # it holds nothing any more


# ---- where the objects went: the destination item ----------------------------------------

X = Destination("https://api2.amplitude.com", "aaaaaaaaaaaa")
Y = Destination("https://api2.amplitude.com", "bbbbbbbbbbbb")


def test_two_first_runs_at_once_agree_on_one_binding(table: str) -> None:
    """Both runs find the table unbound, then both bind it, each to its own destination:
    the conditional write lets the first in, and tells the second the first's binding
    (its own destination is never written). Interleaved by hand, as two processes would."""
    first = DynamoDbLedger(TABLE, endpoint_url=table, owner="run-1")
    second = DynamoDbLedger(TABLE, endpoint_url=table, owner="run-2")
    assert first.destination() is None and second.destination() is None
    assert first.bind_destination(X, replacing=None) == X
    told = second.bind_destination(Y, replacing=None)
    assert told == X and told is not None and told.bound_at is not None
    assert second.destination() == X and first.destination() == X
    item = second.status(DESTINATION_KEY)
    assert item is not None and item["key_fingerprint"] == X.key_fingerprint


def test_the_binding_is_compare_and_set_and_not_an_object(table: str) -> None:
    clock = Clock()
    first = ledger(table, "run-1", clock)
    assert first.destination() is None
    assert first.bind_destination(X, replacing=None) == X
    assert first.bind_destination(Y, replacing=None) == X  # bound already
    assert first.bind_destination(Y, replacing=Y) == X  # not what it replaces
    first.begin(OBJECT)
    first.complete(OBJECT, {"records": 1, "delivered": 1})
    rebound = first.bind_destination(Y, replacing=X)
    assert rebound == Y and rebound is not None and rebound.previous == str(X)
    item = first.status(DESTINATION_KEY)
    assert item is not None and item["recorded"] is True and "expires_at" not in item
    assert [state.object_id for state in first.objects()] == [OBJECT]  # not listed
    first.close()
    assert ledger(table, "run-2", clock).destination() == Y  # recorded: it stays


def test_a_binding_with_nothing_recorded_is_released_when_its_ledger_closes(
    table: str,
) -> None:
    clock = Clock()
    failed_at_once = ledger(table, "run-1", clock)
    failed_at_once.bind_destination(X, replacing=None)
    failed_at_once.begin(OBJECT)
    failed_at_once.save_progress(OBJECT, 5, {"records": 5, "delivered": 0})  # skipped only
    failed_at_once.fail(OBJECT, "Amplitude rejected the API key")
    failed_at_once.close()
    next_run = ledger(table, "run-2", clock)
    assert next_run.destination() is None
    assert next_run.bind_destination(Y, replacing=None) == Y
    next_run.begin(OBJECT)
    next_run.save_progress(OBJECT, 10, {"records": 10, "delivered": 2})
    next_run.close()
    assert ledger(table, "run-3", clock).destination() == Y


@pytest.mark.parametrize(("definitions", "key", "has"), [
    ([("id", "S")], [("id", "HASH")], "partition key id (string)"),
    ([("pk", "S"), ("sk", "S")], [("pk", "HASH"), ("sk", "RANGE")],
     "partition key pk (string), sort key sk (string)"),
    ([("pk", "N")], [("pk", "HASH")], "partition key pk (number)"),
])
def test_a_table_keyed_otherwise_is_a_configuration_error_naming_the_key(
    aws: str, definitions: list[tuple[str, str]], key: list[tuple[str, str]], has: str
) -> None:
    boto3.client("dynamodb", endpoint_url=aws).create_table(
        TableName="not-a-ledger", BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in definitions],
        KeySchema=[{"AttributeName": n, "KeyType": t} for n, t in key])  # type: ignore[misc]
    wrong = DynamoDbLedger("not-a-ledger", endpoint_url=aws)
    expected = "partition key pk (string), no sort key"
    with pytest.raises(LedgerConfigError) as raised:
        wrong.begin(OBJECT)  # every object would fail on it: the run must stop instead
    message = str(raised.value)
    assert "dynamodb://not-a-ledger" in message and expected in message and has in message
    with pytest.raises(LedgerConfigError, match="not-a-ledger"):
        wrong.bind_destination(X, replacing=None)


def test_a_replay_into_a_table_keyed_otherwise_stops_with_exit_2(
    aws: str, emulator: Emulator, tmp_path: Path
) -> None:
    boto3.client("dynamodb", endpoint_url=aws).create_table(
        TableName=TABLE, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=53, files_per_type=1,
                      event_types=["users.messages.email.Send"])
    result = CliRunner().invoke(main, [
        "replay", str(tmp_path / "bucket"), "--state", f"dynamodb://{TABLE}",
        "--amplitude-url", emulator.url, "--api-key", "k12345",
        "--dead-letter", str(tmp_path / "dead-letter"),
    ], env={"AWS_ENDPOINT_URL": aws}, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert f"dynamodb://{TABLE}" in result.output
    assert "partition key pk (string), no sort key" in result.output
    assert "partition key id (string)" in result.output
    assert upload_requests(emulator) == []


def test_a_dynamodb_ledger_is_bound_by_its_first_run_and_refuses_another_key(
    table: str, emulator: Emulator, tmp_path: Path
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=54, files_per_type=1,
                      event_types=["users.messages.email.Send"])
    code, summary = replay_with_dynamodb(table, emulator, tmp_path)
    assert code == 0 and summary["objects_done"] == 1
    bound = ledger(table, "reader", Clock()).destination()
    assert bound == Destination(emulator.url, key_fingerprint("k12345"))
    assert bound is not None and bound.recorded
    requests = len(upload_requests(emulator))
    result = CliRunner().invoke(main, [
        "replay", str(tmp_path / "bucket"), "--state", f"dynamodb://{TABLE}",
        "--amplitude-url", emulator.url, "--api-key", "another-key-67890",
        "--dead-letter", str(tmp_path / "dead-letter"),
    ], env={"AWS_ENDPOINT_URL": table}, catch_exceptions=False)
    assert result.exit_code == 2
    assert str(bound) in result.output
    assert key_fingerprint("another-key-67890") in result.output
    assert "another-key-67890" not in result.output and "k12345" not in result.output
    assert len(upload_requests(emulator)) == requests
    assert ledger(table, "reader", Clock()).destination() == bound


def test_dynamodb_an_object_that_kills_the_process_while_decoding_fails_for_good(
    table: str,
) -> None:
    clock = Clock()
    made = 0

    def next_owner() -> DynamoDbLedger:  # each a lease later than the last: the last one died
        nonlocal made
        made += 1
        clock.now += LEASE_S + 1
        return ledger(table, f"invocation-{made}", clock)

    read_deaths_contract(next_owner)
