"""End to end: Currents files on disk → mapping → real HTTP → the emulator → ledger."""

from __future__ import annotations

import socket
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from currents_export.currents.schemas import known_event_types
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.mapping import braze_event_type
from tests.support.emulator import requests_made, stored_events, upload_requests
from tests.support.runs import API_KEY, assert_balanced, read_all, replay, run_cli

# ---- the main path ------------------------------------------------------------------------

def test_all_94_types_arrive_exactly_once_with_the_right_fields(
    emulator: Emulator, all_types_fixtures: tuple[Path, list[FixtureFile]], tmp_path: Path
) -> None:
    root, files = all_types_fixtures
    assert {f.event_type for f in files} == set(known_event_types())

    result, summary = replay(emulator, tmp_path, root)
    assert result.exit_code == 0, result.output

    records = read_all(files)
    first_seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for event_type, record in records:
        first_seen.setdefault(record["id"], (event_type, record))
    duplicates = len(records) - len(first_seen)
    identified = {
        event_id: (event_type, record)
        for event_id, (event_type, record) in first_seen.items()
        if record.get("external_user_id") or record.get("device_id")
    }
    no_identity = len(first_seen) - len(identified)
    assert duplicates > 0 and no_identity > 0  # the fixtures exercise both

    stored = stored_events(emulator)
    by_insert_id = Counter(event["insert_id"] for event in stored)
    assert set(by_insert_id) == set(identified)
    assert max(by_insert_id.values()) == 1
    for event in stored:
        event_type, record = identified[event["insert_id"]]
        if record.get("external_user_id"):
            assert event["user_id"] == record["external_user_id"]
        else:
            assert "user_id" not in event
        if record.get("device_id"):
            assert event["device_id"] == record["device_id"]
        expected_time = record.get("time_ms") or record["time"] * 1000
        assert event["time"] == expected_time
        assert event["event_type"] == braze_event_type(event_type, record.get("name"))

    assert summary["objects_done"] == len(files)
    assert summary["objects_failed"] == 0
    assert summary["records"] == len(records) == sum(f.records for f in files)
    assert summary["duplicates"] == duplicates == sum(f.duplicates for f in files)
    assert summary["delivered"] == len(identified)
    assert summary["skipped"] == {"no_identity": no_identity}
    assert summary["dead_lettered"] == {}
    assert set(summary["by_event_type"]) == set(known_event_types())
    assert_balanced(summary)
    assert "TOTAL" in result.stdout and "users.messages.email.Send" in result.stdout


def test_a_second_run_sends_nothing_and_force_redoes(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=30, seed=3,
                              event_types=["users.behaviors.CustomEvent",
                                           "users.messages.email.Open"])
    first, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert first.exit_code == 0
    stored_after_first = len(stored_events(emulator))
    requests_after_first = requests_made(emulator)
    assert summary["objects_done"] == len(files) and summary["delivered"] == stored_after_first

    second, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert second.exit_code == 0
    assert summary["objects_already_done"] == len(files)
    assert summary["objects_done"] == 0 and summary["records"] == 0
    assert summary["requests"] == 0
    assert requests_made(emulator) == requests_after_first

    forced, summary = replay(emulator, tmp_path, tmp_path / "bucket", extra=("--force",))
    assert forced.exit_code == 0
    assert summary["objects_done"] == len(files)
    assert requests_made(emulator) > requests_after_first
    # Amplitude (and so the emulator) drops the repeats by insert_id.
    assert len(stored_events(emulator)) == stored_after_first


def test_dry_run_sends_nothing_marks_nothing_and_writes_the_events(
    emulator: Emulator, tmp_path: Path
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=20, seed=1,
                      event_types=["users.behaviors.Purchase"])
    output = tmp_path / "events.jsonl"
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--dry-run", "--output", str(output)))
    assert result.exit_code == 0
    assert requests_made(emulator) == 0
    lines = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert summary["dry_run"] is True
    assert summary["skipped"]["dry_run"] == len(lines) > 0
    assert all(line["event_type"] == "[Appboy] Purchase" and "revenue" in line for line in lines)
    assert_balanced(summary)
    # Nothing was marked done: a real run afterwards does the work.
    real, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert real.exit_code == 0 and summary["delivered"] == len(lines)


def test_dry_run_ignores_the_ledger_and_says_what_it_would_deliver(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Objects a real run marked done are read and mapped again by --dry-run, which neither
    sends nor writes anything to the ledger; its summary says what it *would* deliver."""
    from currents_export.ledger import SqliteLedger

    generate_fixtures(tmp_path / "bucket", events_per_type=20, seed=5,
                      event_types=["users.messages.email.Send"])
    real, done = replay(emulator, tmp_path, tmp_path / "bucket")
    assert real.exit_code == 0 and done["objects_done"] > 0 and done["delivered"] > 0
    requests_after_real = requests_made(emulator)

    def ledger_rows() -> list[Any]:
        ledger = SqliteLedger(str(tmp_path / "state.sqlite"))
        try:
            return sorted((s.object_id, s.status, s.attempts, s.next_index, s.updated_at)
                          for s in ledger.objects())
        finally:
            ledger.close()

    rows = ledger_rows()
    dry, summary = replay(emulator, tmp_path, tmp_path / "bucket", extra=("--dry-run",))
    assert dry.exit_code == 0
    assert requests_made(emulator) == requests_after_real
    assert summary["dry_run"] is True
    assert summary["objects_already_done"] == 0
    # Nothing marked done: what a real run would mark is named "would".
    assert summary["objects_done"] == 0
    assert summary["objects_would_be_done"] == done["objects_done"]
    assert summary["would_deliver"] == done["delivered"]
    assert summary["records"] == done["records"]
    assert summary["skipped"]["dry_run"] == done["delivered"]
    assert summary["delivered"] == 0
    assert_balanced(summary)
    assert ledger_rows() == rows  # nothing written, not even an attempt
    assert f"would deliver {done['delivered']} events" in dry.output
    # The JSON contract: a dry run's summary has the same keys as a real run's.
    assert summary.keys() == done.keys()
    # A dry run on a ledger that knows nothing leaves it knowing nothing.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    dry, summary = replay(emulator, fresh, tmp_path / "bucket", extra=("--dry-run",))
    assert dry.exit_code == 0 and summary["skipped"]["dry_run"] == done["delivered"]
    ledger = SqliteLedger(str(fresh / "state.sqlite"))
    assert list(ledger.objects()) == []
    ledger.close()


def test_the_summary_text_of_a_dry_run_says_would_and_its_json_keys_do_not_change() -> None:
    from currents_export.counts import ObjectReport, RunSummary

    def summary(dry_run: bool) -> RunSummary:
        report = ObjectReport(object="/data/f.avro", event_type="users.behaviors.CustomEvent",
                              records=130, duplicates=2)
        if dry_run:
            report.skipped.update({"dry_run": 123, "no_identity": 5})
        else:
            report.delivered = 123
            report.skipped["no_identity"] = 5
        run = RunSummary(dry_run=dry_run)
        run.add(report)
        return run

    dry, real = summary(True), summary(False)
    text = dry.render()
    assert "would deliver 123 events" in text
    assert "objects: 1 read" in text and "1 done" not in text
    assert "nothing was sent" in text and "ledger was neither read nor written" in text
    assert "would" not in real.render() and "objects: 1 done" in real.render()
    assert dry.to_json().keys() == real.to_json().keys()
    assert dry.to_json()["skipped"] == {"dry_run": 123, "no_identity": 5}


def test_a_bad_file_is_reported_by_name_and_the_others_finish(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=20, seed=2,
                              event_types=["users.messages.sms.Send"])
    bad = files[0].path.with_name("corrupt+0+0000000001.avro")
    bad.write_bytes(b"Obj\x01 definitely not a real container")
    truncated = files[1].path.with_name("truncated+0+0000000002.avro")
    truncated.write_bytes(files[1].path.read_bytes()[:-30])

    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 1
    assert summary["objects_failed"] == 2 and summary["objects_done"] == len(files)
    failed = {Path(f["object"]).name: f for f in summary["failures"]}
    assert set(failed) == {bad.name, truncated.name}
    assert "not an Avro container file" in failed[bad.name]["error"]
    assert failed[bad.name]["retryable"] is False
    # Cut short (a copy still being written?): retryable, and the message says what to do.
    assert "ends early" in failed[truncated.name]["error"]
    assert "run again once it is complete" in failed[truncated.name]["error"]
    assert failed[truncated.name]["retryable"] is True
    assert str(bad) in result.output
    assert_balanced(summary)
    # Records read before the truncation point were delivered, not left pending.
    assert summary["pending_records"] == 0

    # The corrupt one failed permanently: later runs skip it (and say so) unless asked to
    # retry. The truncated one is retried every run (and fails again while still cut short).
    again, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert again.exit_code == 1
    assert summary["objects_already_done"] == len(files) and summary["objects_failed"] == 1
    assert [Path(f["object"]).name for f in summary["failures"]] == [truncated.name]
    assert summary["objects_skipped_failed"] == 1
    again, summary = replay(emulator, tmp_path, tmp_path / "bucket", extra=("--retry-failed",))
    assert again.exit_code == 1
    assert summary["objects_already_done"] == len(files) and summary["objects_failed"] == 2


def test_a_file_caught_mid_copy_is_retried_and_delivered_once_complete(
    emulator: Emulator, tmp_path: Path
) -> None:
    [fixture] = generate_fixtures(tmp_path / "bucket", events_per_type=300, seed=12,
                                  files_per_type=1, event_types=["users.messages.email.Open"])
    complete = fixture.path.read_bytes()
    fixture.path.write_bytes(complete[: len(complete) * 3 // 5])  # the copy is 60% through

    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 1, result.output
    [failure] = summary["failures"]
    assert failure["object"] == str(fixture.path) and failure["retryable"] is True
    assert "ends early" in failure["error"]
    assert "if it is still being copied, run again once it is complete" in failure["error"]
    assert summary["objects_failed"] == 1 and summary["objects_done"] == 0
    assert summary["objects_failed_permanently"] == 0

    fixture.path.write_bytes(complete)  # the copy finished
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0, result.output
    assert summary["objects_done"] == 1 and summary["objects_failed"] == 0
    identified = {record["id"] for _, record in read_all([fixture])
                  if record.get("external_user_id") or record.get("device_id")}
    stored = Counter(event["insert_id"] for event in stored_events(emulator))
    assert set(stored) == identified and max(stored.values()) == 1

    again, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert again.exit_code == 0 and summary["objects_already_done"] == 1


def test_invalid_api_key_stops_with_exit_2_and_marks_nothing_done(
    emulator: Emulator, tmp_path: Path
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=4,
                      event_types=["users.messages.email.Send"])
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"valid_api_keys": ["the-right-key"]}).raise_for_status()
    try:
        result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
        assert result.exit_code == 2
        # Said once, at the first answer (the probe before reading), not once per object.
        assert result.output.count("rejected the API key") == 1
        assert API_KEY not in result.output
        # The summary is still written: nothing done, the reason named; nothing created.
        assert summary["objects_done"] == 0 and summary["delivered"] == 0
        assert "rejected the API key" in summary["configuration_error"]
        assert API_KEY not in str(summary)
        assert not (tmp_path / "state.sqlite").exists()
        assert stored_events(emulator) == []
        ok, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--api-key", "the-right-key"))
        assert ok.exit_code == 0 and summary["objects_done"] == 2
    finally:
        httpx.patch(f"{emulator.url}/_emulator/config", json={"valid_api_keys": None})


def test_events_amplitude_refuses_are_dead_lettered_with_the_reason(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=80, seed=5,
                              event_types=["users.behaviors.app.SessionStart"])
    records = read_all(files)
    devices = Counter(r["device_id"] for _, r in records if r.get("device_id"))
    silenced = devices.most_common(1)[0][0]
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"silenced_device_ids": [silenced]}).raise_for_status()
    try:
        result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    finally:
        httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": []})
    assert result.exit_code == 0, result.output
    refused = summary["dead_lettered"].get("amplitude_silenced_device", 0)
    assert refused > 0
    assert_balanced(summary)
    assert all(e.get("device_id") != silenced for e in stored_events(emulator))
    assert len(stored_events(emulator)) == summary["delivered"]

    # One closed file per flush (each object that had refused events), never a .part.
    assert not list((tmp_path / "dead-letter").glob("*.part"))
    lines = [orjson.loads(line) for path in sorted((tmp_path / "dead-letter").glob("*.jsonl"))
             for line in path.read_bytes().splitlines()]
    assert len(lines) == refused
    # The line holds the event as sent and where its record is (records in flight are not
    # kept in memory): the record at that place is the one the event was made from.
    by_path = {str(f.path): f for f in files}
    for line in lines:
        assert line["reason"] == "amplitude_silenced_device"
        assert line["event"]["device_id"] == silenced
        assert line["record"] is None
        assert line["event_type"] == "users.behaviors.app.SessionStart"
        source = read_all([by_path[line["object"]]])
        assert source[line["record_index"]][1]["id"] == line["event"]["insert_id"]


def test_requests_over_the_byte_limit_are_split(emulator: Emulator, tmp_path: Path) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=200, seed=6, files_per_type=1,
                      event_types=["users.behaviors.CustomEvent"])
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"batch": {"max_body_bytes": 20_000}}).raise_for_status()
    try:
        result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    finally:
        httpx.patch(f"{emulator.url}/_emulator/config",
                    json={"batch": {"max_body_bytes": 20_971_520}})
    assert result.exit_code == 0, result.output
    log = upload_requests(emulator)
    assert any(entry["status"] == 413 for entry in log)
    assert summary["delivered"] == len(stored_events(emulator)) > 0
    assert summary["requests"] == len(log) > 2
    assert_balanced(summary)


def test_unreachable_amplitude_is_exit_2_before_anything_is_read(
    emulator: Emulator, tmp_path: Path
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=8,
                      event_types=["users.messages.pushnotification.Send"])
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"
    result = run_cli(
        "replay", str(tmp_path / "bucket"), "--api-key", API_KEY, "--amplitude-url", dead_url,
        "--state", str(tmp_path / "state.sqlite"), "--dead-letter", str(tmp_path / "dl"),
        "--retry-horizon", "900", "--summary-json", str(tmp_path / "s.json"),
    )
    # Not a wait for the 900 s horizon: nothing was delivered yet, so a refused connection
    # is a wrong URL or an outage, said once; nothing read, nothing created but the summary.
    assert result.exit_code == 2
    assert result.output.count("cannot reach Amplitude") == 1
    assert "connection refused" in result.output
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["records"] == 0 and summary["objects_done"] == 0
    assert "cannot reach Amplitude" in summary["configuration_error"]
    assert not (tmp_path / "state.sqlite").exists() and not (tmp_path / "dl").exists()
    ok, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                         extra=("--dead-letter", str(tmp_path / "dl")))
    assert ok.exit_code == 0 and summary["objects_done"] == 2 and summary["delivered"] > 0


def test_http_api_v2_and_plain_profile(emulator: Emulator, tmp_path: Path) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=30, seed=9,
                      event_types=["users.behaviors.CustomEvent"])
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--api", "http", "--profile", "plain"))
    assert result.exit_code == 0
    log = httpx.get(f"{emulator.url}/_emulator/requests").json()["requests"]
    assert {entry["route"] for entry in log} == {"/2/httpapi"}
    events = stored_events(emulator)
    assert len(events) == summary["delivered"] > 0
    assert not any(e["event_type"].startswith("[Appboy]") for e in events)


# ---- options, configuration and errors ----------------------------------------------------

def test_options_come_from_a_config_file_and_the_environment(
    emulator: Emulator, tmp_path: Path
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=10,
                      event_types=["users.messages.email.Open"])
    config = tmp_path / "currents-export.toml"
    config.write_text(
        f'amplitude_url = "{emulator.url}"\nstate = "{tmp_path / "state.sqlite"}"\n'
        f'dead-letter = "{tmp_path / "dl"}"\nprofile = "plain"\n'
    )
    result = run_cli("replay", str(tmp_path / "bucket"), "--config", str(config),
                     env={"AMPLITUDE_API_KEY": API_KEY})
    assert result.exit_code == 0, result.output
    events = stored_events(emulator)
    assert events and {e["event_type"] for e in events} == {"users.messages.email.Open"}
    assert (tmp_path / "state.sqlite").exists()


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ('amplitude_urll = "http://x"\n', "unknown key 'amplitude_urll'"),
        ("profile = \n", "not valid TOML"),
        ('profile = "fancy"\n', "fancy"),
    ],
)
def test_bad_configuration_exits_2_naming_the_problem(
    tmp_path: Path, config_text: str, message: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(config_text)
    (tmp_path / "x.avro").write_bytes(b"")
    result = run_cli("replay", str(tmp_path / "x.avro"), "--config", str(config),
                     "--api-key", API_KEY)
    assert result.exit_code == 2
    assert message in result.output


def test_usage_errors_exit_2_with_what_to_do(tmp_path: Path) -> None:
    missing = run_cli("replay", str(tmp_path / "nope"), "--api-key", API_KEY)
    assert missing.exit_code == 2 and "no such file or directory" in missing.output
    (tmp_path / "a.avro").write_bytes(b"")
    no_key = run_cli("replay", str(tmp_path / "a.avro"), env={"AMPLITUDE_API_KEY": ""})
    assert no_key.exit_code == 2 and "AMPLITUDE_API_KEY" in no_key.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = run_cli("replay", str(empty), "--api-key", API_KEY)
    assert nothing.exit_code == 2 and "no .avro files" in nothing.output
    dynamo = run_cli("replay", str(tmp_path / "a.avro"), "--api-key", API_KEY,
                     "--state", "redis://t")
    assert dynamo.exit_code == 2 and "--state redis://t" in dynamo.output


def test_the_api_key_never_appears_in_output_or_logs(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=10, seed=11,
                      event_types=["users.messages.email.Open"])
    result, _ = replay(emulator, tmp_path, tmp_path / "bucket", extra=("-vv",))
    assert result.exit_code == 0
    assert API_KEY not in result.output
    assert API_KEY not in caplog.text
    log = httpx.get(f"{emulator.url}/_emulator/requests").text
    assert API_KEY not in log
