"""The DynamoDB ledger against moto's server: lifecycle, leases, fencing, TTL, the CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import boto3
import orjson
import pytest
from click.testing import CliRunner

from currents_export.amplitude.emulator import Emulator
from currents_export.cli import main
from currents_export.currents.fixtures import generate_fixtures
from currents_export.ledger import (
    DynamoDbLedger,
    LeaseHeld,
    LeaseLost,
    LedgerConfigError,
    open_ledger,
)

TABLE = "ledger"
OBJECT = "s3://acme/currents/event_type=users.behaviors.Purchase/x+0+1.avro"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(aws: str) -> str:
    DynamoDbLedger.create_table(boto3.client("dynamodb", endpoint_url=aws), TABLE)
    return aws


def ledger(endpoint: str, owner: str, clock: Clock) -> DynamoDbLedger:
    return DynamoDbLedger(TABLE, endpoint_url=endpoint, owner=owner, clock=clock, lease_s=60)


def test_lifecycle_resume_and_reopen(table: str) -> None:
    clock = Clock()
    first = ledger(table, "worker-a", clock)
    assert first.begin(OBJECT) is None
    assert not first.is_done(OBJECT)
    first.save_progress(OBJECT, 500, {"records": 500, "delivered": 490, "duplicates": 10})
    first.fail(OBJECT, "Amplitude unreachable")
    row = first.status(OBJECT)
    assert row is not None and row["state"] == "FAILED" and row["error"] == "Amplitude unreachable"
    assert "expires_at" in row

    second = ledger(table, "worker-b", clock)  # a failed object is free to claim at once
    resume = second.begin(OBJECT)
    assert resume is not None and resume.next_index == 500
    assert resume.figures["delivered"] == 490
    row = second.status(OBJECT)
    assert row is not None and row["attempts"] == 2 and "expires_at" not in row
    second.complete(OBJECT, {"records": 900})
    assert ledger(table, "worker-c", clock).is_done(OBJECT)
    row = second.status(OBJECT)
    assert row is not None and row["state"] == "DONE"
    assert orjson.loads(row["figures"]) == {"records": 900}
    assert 399 * 86_400 < row["expires_at"] - clock.now <= 400 * 86_400


def test_a_live_lease_keeps_others_out_until_it_expires(table: str) -> None:
    clock = Clock()
    holder, other = ledger(table, "worker-a", clock), ledger(table, "worker-b", clock)
    holder.begin(OBJECT)
    holder.save_progress(OBJECT, 100, {"records": 100})
    with pytest.raises(LeaseHeld, match="processed elsewhere"):
        other.begin(OBJECT)
    clock.now += 61  # the holder died: its lease runs out
    resume = other.begin(OBJECT)
    assert resume is not None and resume.next_index == 100
    # Fencing: the old holder may not write any more.
    with pytest.raises(LeaseLost):
        holder.save_progress(OBJECT, 200, {"records": 200})
    with pytest.raises(LeaseLost):
        holder.complete(OBJECT, {})
    other.complete(OBJECT, {"records": 300})
    assert other.is_done(OBJECT)


def test_restart_reclaims_a_done_object_from_the_start(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    worker.begin(OBJECT)
    worker.save_progress(OBJECT, 50, {"records": 50})
    worker.complete(OBJECT, {"records": 80})
    assert worker.begin(OBJECT, restart=True) is None
    row = worker.status(OBJECT)
    assert row is not None and row["state"] == "IN_PROGRESS" and "next_index" not in row


def test_concurrent_checkpoints_never_move_backwards(table: str) -> None:
    clock = Clock()
    worker = ledger(table, "worker-a", clock)
    worker.begin(OBJECT)
    values = list(range(0, 400, 7))

    def save(chunk: list[int]) -> None:
        for value in chunk:
            worker.save_progress(OBJECT, value, {"records": value})

    threads = [threading.Thread(target=save, args=(values[n::4][::-1 if n % 2 else 1],))
               for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    row = worker.status(OBJECT)
    assert row is not None and row["next_index"] == max(values)


def test_configuration_errors(aws: str) -> None:
    with pytest.raises(LedgerConfigError, match="dynamodb://TABLE"):
        open_ledger("dynamodb://")
    missing = DynamoDbLedger("no-such-table", endpoint_url=aws)
    with pytest.raises(LedgerConfigError, match="no-such-table"):
        missing.is_done(OBJECT)


def test_replay_with_a_dynamodb_ledger(
    table: str, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", table)
    files = generate_fixtures(tmp_path / "bucket", events_per_type=20, seed=51,
                              event_types=["users.messages.email.Send"])

    def run() -> dict:
        result = CliRunner().invoke(main, [
            "replay", str(tmp_path / "bucket"), "--state", f"dynamodb://{TABLE}",
            "--amplitude-url", emulator.url, "--api-key", "k12345",
            "--dead-letter", str(tmp_path / "dl"), "--summary-json", str(tmp_path / "s.json"),
        ], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return orjson.loads((tmp_path / "s.json").read_bytes())

    assert run()["objects_done"] == len(files)
    requests = len(emulator.requests_log())
    again = run()
    assert again["objects_already_done"] == len(files) and again["requests"] == 0
    assert len(emulator.requests_log()) == requests


def test_an_object_leased_elsewhere_is_reported_as_failed_not_processed(
    table: str, emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", table)
    [fixture] = generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=52,
                                  files_per_type=1, event_types=["users.messages.email.Send"])
    elsewhere = DynamoDbLedger(TABLE, endpoint_url=table, owner="other-worker")
    elsewhere.begin(str(fixture.path.resolve()))
    result = CliRunner().invoke(main, [
        "replay", str(tmp_path / "bucket"), "--state", f"dynamodb://{TABLE}",
        "--amplitude-url", emulator.url, "--api-key", "k12345",
        "--dead-letter", str(tmp_path / "dl"), "--summary-json", str(tmp_path / "s.json"),
    ], catch_exceptions=False)
    assert result.exit_code == 1
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["objects_failed"] == 1 and "processed elsewhere" in summary["failures"][0][
        "error"]
    assert emulator.requests_log() == []
