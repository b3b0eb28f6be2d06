"""Deletions follow the user, through the command line against the emulator: Braze
``users.UserDeleteRequest`` records become Amplitude User Privacy API deletions of exactly
the user ids each Braze id was sent with, and nothing of a deleted user is sent again."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.currents.schemas import writer_schema
from currents_export.kit.emulator import Emulator
from tests.support.records import minimal_record

API_KEY = "test-key-0123456789"
SECRET_KEY = "secret-KEY-MARKER-42"
SALT = "deletions-salt-0123456789abcdef"
CUSTOM, DELETE = "users.behaviors.CustomEvent", "users.UserDeleteRequest"
PREFIX = "currents/dataexport.prod-01.S3.integration.0123456789abcdef01234567"


def submitted_requests(emulator: Emulator) -> list[dict[str, Any]]:
    """The deletion requests made (POSTs), without the listings that check the API first."""
    return [r for r in emulator.deletion_requests() if r["method"] == "POST"]


def braze(n: int) -> str:
    return f"{n:024x}"


def write_file(root: Path, event_type: str, hour: str, name: str,
               records: list[dict[str, Any]]) -> Path:
    folder = root / PREFIX / f"event_type={event_type}" / f"date=2026-11-30-{hour}" / "1" / "a"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.avro"
    with path.open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(writer_schema(event_type)), records)
    return path


def event(n: int, braze_id: str, *, external: str | None, device: str | None = None,
          time: int = 1_764_496_800) -> dict[str, Any]:
    return minimal_record(CUSTOM, id=f"evt-{n:06d}", user_id=braze_id,
                          external_user_id=external, device_id=device, time=time,
                          name="opened_app")


def delete_request(n: int, braze_id: str) -> dict[str, Any]:
    return minimal_record(DELETE, id=f"del-{n:06d}", user_id=braze_id, time=1_764_500_400)


@pytest.fixture
def work(tmp_path: Path) -> dict[str, Path]:
    config = tmp_path / "currents-export.toml"
    config.write_text('[mapping.pii]\nexternal_user_id = "hash"\n\n[deletions]\n'
                      'requester = "privacy-team"\n')
    return {"root": tmp_path, "config": config, "bucket": tmp_path / "bucket"}


def cli(work: dict[str, Path], emulator: Emulator, *args: str) -> Result:
    env = {"CURRENTS_EXPORT_CONFIG": str(work["config"]), "CURRENTS_EXPORT_PII_SALT": SALT,
           "AMPLITUDE_API_KEY": API_KEY, "AMPLITUDE_SECRET_KEY": SECRET_KEY,
           "CURRENTS_EXPORT_AMPLITUDE_URL": emulator.url,
           "CURRENTS_EXPORT_PRIVACY_URL": emulator.url,
           "CURRENTS_EXPORT_STATE": str(work["root"] / "state.sqlite"),
           "CURRENTS_EXPORT_DEAD_LETTER": str(work["root"] / "dead-letter"),
           "CURRENTS_EXPORT_SUMMARY_JSON": str(work["root"] / "summary.json"),
           "CURRENTS_EXPORT_RETRY_HORIZON": "0"}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def summary(work: dict[str, Path]) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((work["root"] / "summary.json").read_bytes())
    return data


def test_deletions_end_to_end_through_the_command_line(
    emulator: Emulator, work: dict[str, Path]
) -> None:
    bucket = work["bucket"]
    alice, bob, carol, dave, erin, frank = (braze(n) for n in range(1, 7))
    crowd = [braze(1000 + n) for n in range(150)]  # deleted too: more than 100 user ids
    first = [event(1, alice, external="alice_0001"), event(2, bob, external="bob_000002"),
             event(3, carol, external="carol_0003"), event(4, carol, external="carol_renamed"),
             event(5, dave, external=None, device="device-dave-0004"),
             event(6, frank, external="frank_0006"),
             *(event(100 + n, who, external=f"crowd_{n:05d}") for n, who in enumerate(crowd))]
    hour_one = write_file(bucket, CUSTOM, "10", "events", first)
    requests = [delete_request(n, who) for n, who in
                enumerate([alice, bob, carol, dave, erin, *crowd])]
    hour_two = write_file(bucket, DELETE, "11", "deletes", requests)

    # The events are sent (one run), then the delete requests arrive (a later run).
    assert cli(work, emulator, "replay", str(hour_one)).exit_code == 0
    result = cli(work, emulator, "replay", str(bucket))
    assert result.exit_code == 0, result.output
    ran = summary(work)
    assert ran["deletions"] == {"requested": 155, "repeated": 0, "skipped_deleted_user": 0}
    assert ran["skipped"] == {"deletion_request": 155} and ran["balanced"]
    assert "155 delete requests recorded" in result.output
    stored = emulator.events()
    deleted_brazes = {alice, bob, carol, *crowd}
    expected = {e["user_id"] for e in stored
                if e["event_properties"]["braze_id"] in deleted_brazes}
    assert len(expected) == 154  # carol had two external ids
    assert not {"alice_0001", "bob_000002"} & expected  # sent hashed, deleted hashed

    waiting = cli(work, emulator, "deletions", "submit")  # the default grace: one hour
    assert waiting.exit_code == 0, waiting.output
    assert summary(work)["deletions"]["waiting"] == 155 and not submitted_requests(emulator)

    dry = cli(work, emulator, "deletions", "submit", "--grace-period", "0", "--dry-run")
    assert dry.exit_code == 0, dry.output
    would = summary(work)["deletions"]
    assert (would["submitted"], would["user_ids"], would["requests"]) == (153, 154, 2)
    assert {i for item in would["would_delete"] for i in item["user_ids"]} == expected
    assert not submitted_requests(emulator)  # a dry run submits nothing

    done = cli(work, emulator, "deletions", "submit", "--grace-period", "0")
    assert done.exit_code == 0, done.output
    report = summary(work)["deletions"]
    assert (report["submitted"], report["user_ids"], report["requests"]) == (153, 154, 2)
    assert report["unresolved"] == {"device_only": 1, "never_seen": 1}
    assert "device-only or anonymous" in done.output and "never seen" in done.output
    sent = submitted_requests(emulator)
    assert [r["status"] for r in sent] == [200, 200]  # within the rate limit: no 429
    assert all(r["ids"] <= 100 for r in sent)
    assert sent[1]["at"] - sent[0]["at"] >= 1.0
    jobs = emulator.deletion_jobs()
    scheduled = {entry["user_id"] for job in jobs for entry in job["amplitude_ids"]}
    assert scheduled == expected
    assert {entry["requester"] for job in jobs for entry in job["amplitude_ids"]} == \
        {"privacy-team"}
    assert SECRET_KEY not in done.output

    # A repeated delete request adds nothing, and a second submit sends nothing.
    write_file(bucket, DELETE, "12", "again", [delete_request(900, alice)])
    again = cli(work, emulator, "replay", str(bucket))
    assert again.exit_code == 0, again.output
    assert summary(work)["deletions"]["repeated"] == 1
    resubmit = cli(work, emulator, "deletions", "submit", "--grace-period", "0")
    assert resubmit.exit_code == 0 and len(submitted_requests(emulator)) == 2
    assert summary(work)["deletions"]["submitted"] == 0

    # Later events, and a replay of the earlier files, send nothing for deleted users.
    before = len(emulator.events())
    write_file(bucket, CUSTOM, "13", "later", [
        event(7, alice, external="alice_0001", time=1_764_504_000),
        event(8, frank, external="frank_0006", time=1_764_504_000)])
    later = cli(work, emulator, "replay", str(bucket))
    assert later.exit_code == 0, later.output
    assert summary(work)["deletions"]["skipped_deleted_user"] == 1
    new = emulator.events()[before:]
    assert [e["event_properties"]["braze_id"] for e in new] == [frank]
    forced = cli(work, emulator, "replay", str(hour_one), str(hour_two), "--force")
    assert forced.exit_code == 0, forced.output
    replayed = summary(work)
    assert replayed["skipped"]["deleted_user"] == len(first) - 1  # all but frank's
    assert replayed["delivered"] == 1 and replayed["balanced"]

    # Seeing a deleted user's ids again reopens the deletion, but only ids never sent are
    # sent: here none, so no request (no admin e-mail) and it is submitted again.
    reopened = orjson.loads(cli(work, emulator, "deletions", "status", "--json").output)
    assert reopened["pending"] == 153
    settled = cli(work, emulator, "deletions", "submit", "--grace-period", "0")
    assert settled.exit_code == 0 and len(submitted_requests(emulator)) == 2
    status = cli(work, emulator, "deletions", "status", "--json")
    assert status.exit_code == 0, status.output
    known = orjson.loads(status.output)
    assert (known["deletions"], known["submitted"], known["unresolved"]) == \
        (155, 153, {"device_only": 1, "never_seen": 1})
    assert len(known["items"]) == 2 and known["job_days"]
    text = cli(work, emulator, "deletions", "status")
    assert "153 submitted" in text.output and "unresolved device_only: 1" in text.output


def test_nothing_changes_when_deletions_are_off(emulator: Emulator, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    write_file(bucket, CUSTOM, "10", "events", [event(1, braze(1), external="alice_0001")])
    write_file(bucket, DELETE, "11", "deletes", [delete_request(1, braze(1))])
    config = tmp_path / "off.toml"
    config.write_text("[deletions]\nenabled = false\n")
    work = {"root": tmp_path, "config": config, "bucket": bucket}
    result = cli(work, emulator, "replay", str(bucket))
    assert result.exit_code == 0, result.output
    ran = summary(work)
    assert "deletions" not in ran and ran["skipped"] == {"no_identity": 1}
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "identities" not in tables and "deletions" not in tables
    off = cli(work, emulator, "deletions", "status")
    assert off.exit_code == 2 and "deletions are off" in off.output


def test_a_wrong_secret_key_is_a_configuration_error_that_names_no_key(
    emulator: Emulator, work: dict[str, Path]
) -> None:
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"secret_keys": {API_KEY: "the-right-secret"}}).raise_for_status()
    bucket = work["bucket"]
    write_file(bucket, CUSTOM, "10", "events", [event(1, braze(1), external="alice_0001")])
    write_file(bucket, DELETE, "11", "deletes", [delete_request(1, braze(1))])
    assert cli(work, emulator, "replay", str(bucket)).exit_code == 0
    refused = cli(work, emulator, "deletions", "submit", "--grace-period", "0")
    assert refused.exit_code == 2
    assert "refused the API key and secret key" in refused.output
    assert SECRET_KEY not in refused.output and "the-right-secret" not in refused.output
    status = orjson.loads(cli(work, emulator, "deletions", "status", "--json").output)
    assert status["pending"] == 1 and status["submitted"] == 0
