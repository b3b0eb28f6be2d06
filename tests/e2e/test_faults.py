"""Faults contained at the right level, end to end through the CLI against the emulator:
unverified 200s, outages, interruptions, permanent failures, objects known by identity,
and every error path answered with a message and its exit status."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import orjson
import pytest

from currents_export.core.pipeline import MAX_OPEN_OBJECTS
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.ledger import SqliteLedger
from tests.support.emulator import requests_made, stored_events
from tests.support.runs import API_KEY, assert_balanced, replay, run_cli

CUSTOM = "users.behaviors.CustomEvent"


def fixtures(root: Path, *, types: tuple[str, ...] = (CUSTOM,), events: int = 200,
             files_per_type: int = 2, seed: int = 11) -> list[FixtureFile]:
    return generate_fixtures(root, events_per_type=events, event_types=list(types),
                             files_per_type=files_per_type, seed=seed)


def set_faults(emulator: Emulator, rules: list[dict[str, Any]], seed: int = 3) -> None:
    emulator.set_faults(rules, seed=seed)


def clear_faults(emulator: Emulator) -> None:
    emulator.clear_faults()


def insert_ids(emulator: Emulator) -> list[str]:
    return [e["insert_id"] for e in stored_events(emulator)]


# ---- acknowledgements verified -------------------------------------------------------------

def test_html_and_wrong_count_200s_at_a_realistic_rate_lose_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    fixtures(tmp_path / "bucket", types=(CUSTOM, "users.messages.email.Send"), events=600,
             files_per_type=3)
    set_faults(emulator, [
        {"action": "not_amplitude", "probability": 0.15},
        {"action": "wrong_count", "ingested_offset": 1, "probability": 0.1},
    ])
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--api", "http", "--retry-horizon", "120"))
    assert result.exit_code == 0, result.output
    assert_balanced(summary)
    stats = httpx.get(f"{emulator.url}/_emulator/stats").json()
    assert stats["faults_fired"] > 0  # the faults did fire
    assert summary["retries"] > 0
    stored = insert_ids(emulator)
    assert len(stored) == len(set(stored)) == summary["delivered"] > 0


def test_a_url_that_is_not_amplitude_delivers_nothing_and_says_so(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket")
    host = emulator.url.removeprefix("http://")
    # From the start: the probe before reading says so at once (exit 2), creating nothing.
    set_faults(emulator, [{"action": "not_amplitude"}])
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--retry-horizon", "900"))
    assert result.exit_code == 2
    assert result.output.count("does not answer as Amplitude") == 1 and host in result.output
    assert API_KEY not in result.output
    assert not (tmp_path / "state.sqlite").exists()
    # From the second request on (a proxy in the way mid-run): retried to the horizon, then
    # the run stops; the cause is said once, every object is left not finished (pending).
    set_faults(emulator, [{"action": "not_amplitude", "after": 1}])
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--retry-horizon", "2"))
    assert result.exit_code == 1
    assert summary["delivered"] == 0 and summary["objects_done"] == 0
    assert summary["objects_unfinished"] == len(files) and summary["objects_failed"] == 0
    assert summary["failures"] == []
    error = summary["stopped_by"]
    assert "does not look like Amplitude" in error and host in error
    assert result.output.count("does not look like Amplitude") == 1
    assert API_KEY not in result.output and API_KEY not in error
    assert stored_events(emulator) == []
    # Nothing was marked done: with the right endpoint the next run delivers everything.
    clear_faults(emulator)
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0 and summary["objects_done"] == len(files)
    assert len(insert_ids(emulator)) == summary["delivered"] > 0


# ---- outages and interruptions -------------------------------------------------------------

def test_an_outage_pauses_the_run_once_not_once_per_object(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket", events=300, files_per_type=100)
    assert len(files) == 100
    set_faults(emulator, [{"action": "status", "status": 503, "after": 1}])  # probe: ok
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--retry-horizon", "3", "--lanes", "4"))
    assert result.exit_code == 1
    # Not "failed": the outage ended the run; it is said once, with the count.
    assert summary["objects_unfinished"] == 100 and summary["objects_failed"] == 0
    # The objects read before the outage was known (at most MAX_OPEN_OBJECTS are open at
    # once) are left with it; the others were not even read.
    assert summary["objects_not_started"] >= 100 - MAX_OPEN_OBJECTS
    assert "unavailable since" in summary["stopped_by"] and summary["failures"] == []
    assert result.output.count("unavailable since") == 1
    assert "100 not finished" in result.output
    assert_balanced(summary)
    # One circuit probing at a backoff: a handful of requests for the whole run, where
    # retrying per object would have spent the horizon 100 times (hundreds of requests).
    assert requests_made(emulator) < 30
    clear_faults(emulator)
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0 and summary["objects_done"] == 100


def replay_process(emulator: Emulator, work: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "currents_export", "replay", str(work / "bucket"),
         "--api-key", API_KEY, "--amplitude-url", emulator.url,
         "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dead-letter"),
         "--summary-json", str(work / "summary.json"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def wait_for_faults(emulator: Emulator, count: int, process: subprocess.Popen[bytes]) -> None:
    """Until ``count`` requests met a fault (counted when it fires: a delayed request is
    then still in flight)."""
    for _ in range(600):  # bounded: at most about a minute
        fired = httpx.get(f"{emulator.url}/_emulator/stats").json()["faults_fired"]
        if fired >= count or process.poll() is not None:
            return
        time.sleep(0.1)


def test_sigint_during_an_outage_saves_progress_and_writes_the_summary(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket", events=400, files_per_type=20)
    set_faults(emulator, [{"action": "status", "status": 503, "after": 1}])  # probe: ok
    process = replay_process(emulator, tmp_path, "--retry-horizon", "900")
    wait_for_faults(emulator, 3, process)
    assert process.poll() is None  # still waiting on Amplitude, as a 900 s horizon allows
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)  # a hang guard, not a timing check
    assert process.returncode == 1
    assert b"Traceback" not in stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["interrupted"] is True
    # Not finished, not failed: the interrupt is said once, not once per object.
    assert summary["objects_unfinished"] == len(files) and summary["objects_done"] == 0
    assert summary["objects_failed"] == 0 and summary["failures"] == []
    assert "interrupted by SIGINT" in summary["stopped_by"]
    assert (stdout + stderr).count(b"interrupted by SIGINT") == 1
    assert b"ERROR" not in stderr
    assert_balanced(summary)
    # Progress is saved: the next run (Amplitude back) finishes everything exactly once.
    clear_faults(emulator)
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0 and summary["objects_done"] == len(files)
    stored = insert_ids(emulator)
    assert len(stored) == len(set(stored)) == summary["delivered"]


@pytest.fixture
def own_emulator() -> Iterator[Emulator]:
    """An emulator of the test's own: requests left sleeping in a "delay" fault are dropped
    when it stops, instead of being stored later in the shared one."""
    with Emulator() as server:
        yield server


def test_a_second_sigint_exits_at_once(own_emulator: Emulator, tmp_path: Path) -> None:
    emulator = own_emulator
    fixtures(tmp_path / "bucket", events=200, files_per_type=5)
    # Amplitude answers nothing for a long time: the first Ctrl-C gives the request in
    # flight a few seconds of grace; the second one, sent within them, exits at once.
    set_faults(emulator, [{"action": "delay", "delay_s": 30, "after": 1}])  # probe: ok
    process = replay_process(emulator, tmp_path, "--retry-horizon", "900", "--lanes", "1")
    wait_for_faults(emulator, 1, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert b"exiting now" in stderr and b"Traceback" not in stderr
    # Out at once, and still the summary (README: written in every case but a usage error).
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["interrupted"] is True and "interrupted twice" in summary["stopped_by"]
    assert summary["elapsed_s"] > 0 and summary["balanced"]
    assert summary["objects_unfinished"] >= 1 and summary["objects_done"] == 0
    assert b"not finished" in stdout


def test_sigint_while_a_request_hangs_still_stops_within_seconds(
    own_emulator: Emulator, tmp_path: Path
) -> None:
    """The reader waits for busy lanes, and lanes wait on a request that takes 30 s: a stop
    must not wait for it (its events stay pending)."""
    emulator = own_emulator
    fixtures(tmp_path / "bucket", events=20_000, files_per_type=1)
    set_faults(emulator, [{"action": "delay", "delay_s": 30, "after": 1}])  # probe: ok
    process = replay_process(emulator, tmp_path, "--retry-horizon", "900", "--lanes", "1",
                             "--api", "http")
    wait_for_faults(emulator, 1, process)
    process.send_signal(signal.SIGINT)
    # Well inside the 30 s the hanging request would take (a hang guard, not a benchmark).
    _, stderr = process.communicate(timeout=25)
    assert process.returncode == 1 and b"Traceback" not in stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["interrupted"] is True and summary["pending_records"] > 0
    assert_balanced(summary)


# ---- permanent failures --------------------------------------------------------------------

def test_an_unreadable_object_fails_permanently_once_and_later_runs_skip_it(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket")
    bad = files[0].path.with_name("broken+0+1.avro")
    bad.write_bytes(b"<html>this was never Avro</html>")
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 1
    assert summary["objects_failed"] == summary["objects_failed_permanently"] == 1
    assert summary["objects_done"] == len(files)
    assert "broken+0+1.avro" in result.output and "not an Avro container" in result.output
    lines = [orjson.loads(line) for path in (tmp_path / "dead-letter").glob("*.jsonl")
             for line in path.read_bytes().splitlines()]
    assert [(line["reason"], Path(line["object"]).name) for line in lines] == [
        ("object_failed", "broken+0+1.avro")]

    before = requests_made(emulator)
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0, result.output
    assert summary["objects_skipped_failed"] == 1 and summary["objects_failed"] == 0
    assert summary["objects_already_done"] == len(files)
    assert "--retry-failed" in result.output
    assert requests_made(emulator) == before

    status = run_cli("status", "--state", str(tmp_path / "state.sqlite"), "--json")
    data = orjson.loads(status.output)
    failed = [row for row in data["objects"] if row["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["permanent"] is True
    assert "not an Avro container" in failed[0]["error"]

    result, summary = replay(emulator, tmp_path, tmp_path / "bucket", extra=("--retry-failed",))
    assert result.exit_code == 1 and summary["objects_failed_permanently"] == 1


# ---- objects known by what they are ---------------------------------------------------------

def test_the_same_files_from_a_copied_folder_send_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket")
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0 and summary["objects_done"] == len(files)
    shutil.copytree(tmp_path / "bucket", tmp_path / "downloaded-again" / "elsewhere")
    before = requests_made(emulator)
    result, summary = replay(emulator, tmp_path, tmp_path / "downloaded-again")
    assert result.exit_code == 0
    assert summary["objects_already_done"] == len(files) and summary["objects_done"] == 0
    assert requests_made(emulator) == before


def test_a_backfill_from_s3_after_a_local_replay_sends_nothing(
    emulator: Emulator, aws: str, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket")
    result, _ = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket="acme-currents")
    for fixture in files:
        key = "braze/" + fixture.path.relative_to(tmp_path / "bucket").as_posix()
        s3.upload_file(str(fixture.path), "acme-currents", key)
    before = requests_made(emulator)
    result = run_cli(
        "backfill", "s3://acme-currents/braze", "--s3-endpoint-url", aws, "--no-progress",
        "--api-key", API_KEY, "--amplitude-url", emulator.url,
        "--state", str(tmp_path / "state.sqlite"), "--dead-letter", str(tmp_path / "dl"),
        "--summary-json", str(tmp_path / "backfill.json"),
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads((tmp_path / "backfill.json").read_bytes())
    assert summary["objects_already_done"] == len(files)
    assert requests_made(emulator) == before


def test_force_on_objects_older_than_amplitudes_dedup_window_warns(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = fixtures(tmp_path / "bucket", files_per_type=1)
    assert replay(emulator, tmp_path, tmp_path / "bucket")[0].exit_code == 0
    ten_days_ago = time.time() - 10 * 86_400
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        db.execute("UPDATE objects SET finished_at = ?, updated_at = ?",
                   (ten_days_ago, ten_days_ago))
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket", extra=("--force",))
    assert result.exit_code == 0 and summary["objects_done"] == len(files)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("10 days ago" in w and "counted twice" in w for w in warnings)


# ---- every failure is an answer ------------------------------------------------------------

def run_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "currents_export", *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def no_aws_credentials() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
                "AWS_CONFIG_FILE": "/nonexistent/config"})
    return env


def test_no_aws_credentials_is_an_answer() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "currents_export", "backfill", "s3://acme-currents/braze",
         "--api-key", API_KEY, "--no-progress"],
        capture_output=True, text=True, timeout=120, env=no_aws_credentials())
    assert done.returncode == 2
    assert "no AWS credentials" in done.stderr and "Traceback" not in done.stderr


def test_an_unreachable_s3_endpoint_is_an_answer(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_process("backfill", "s3://acme-currents/braze", "--api-key", API_KEY,
                       "--no-progress", "--s3-endpoint-url", f"http://127.0.0.1:{port}",
                       env={"AWS_MAX_ATTEMPTS": "2", "AWS_ACCESS_KEY_ID": "x",
                            "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-east-1"})
    assert done.returncode == 2
    assert f"127.0.0.1:{port}" in done.stderr and "--s3-endpoint-url" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_emulator_port_in_use_is_an_answer() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_process("emulator", "--port", str(port))
    assert done.returncode == 2
    assert f"--port {port}" in done.stderr and "in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_summary_path_in_a_missing_folder_is_refused_before_any_work(
    emulator: Emulator, tmp_path: Path
) -> None:
    fixtures(tmp_path / "bucket")
    result = run_cli("replay", str(tmp_path / "bucket"), "--api-key", API_KEY,
                     "--amplitude-url", emulator.url, "--state", str(tmp_path / "state.sqlite"),
                     "--summary-json", str(tmp_path / "missing" / "summary.json"))
    assert result.exit_code == 2
    assert "--summary-json" in result.output and "does not exist" in result.output
    assert requests_made(emulator) == 0
    assert not (tmp_path / "state.sqlite").exists()


def test_a_dead_letter_bucket_that_does_not_exist_is_an_answer(
    emulator: Emulator, aws: str, tmp_path: Path
) -> None:
    fixtures(tmp_path / "bucket")
    result = run_cli("replay", str(tmp_path / "bucket"), "--api-key", API_KEY,
                     "--amplitude-url", emulator.url, "--state", str(tmp_path / "state.sqlite"),
                     "--dead-letter", "s3://no-such-bucket/dead", "--s3-endpoint-url", aws)
    assert result.exit_code == 2
    assert "no-such-bucket" in result.output and "does not exist" in result.output
    assert requests_made(emulator) == 0


def test_a_ledger_table_that_does_not_exist_is_one_answer(
    emulator: Emulator, aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixtures(tmp_path / "bucket")
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws)
    result = run_cli("replay", str(tmp_path / "bucket"), "--api-key", API_KEY,
                     "--amplitude-url", emulator.url, "--state", "dynamodb://no-such-table",
                     "--dead-letter", str(tmp_path / "dl"))
    assert result.exit_code == 2
    # One message, not one per object.
    assert result.output.count("Error:") == 1 and "no-such-table" in result.output
    assert "does not exist" in result.output
    assert requests_made(emulator) == 0


def test_a_state_path_that_is_a_directory_is_an_answer(emulator: Emulator, tmp_path: Path) -> None:
    fixtures(tmp_path / "bucket")
    result = run_cli("replay", str(tmp_path / "bucket"), "--api-key", API_KEY,
                     "--amplitude-url", emulator.url, "--state", str(tmp_path))
    assert result.exit_code == 2
    assert "--state" in result.output and "is a directory" in result.output


def test_unexpected_errors_name_themselves_and_show_a_traceback_only_with_vv(
    emulator: Emulator, tmp_path: Path
) -> None:
    fixtures(tmp_path / "bucket")
    state = tmp_path / "state.sqlite"
    state.write_bytes(b"this is not a SQLite database, it only has its name")
    quiet = run_process("replay", str(tmp_path / "bucket"), "--api-key", API_KEY,
                        "--amplitude-url", emulator.url, "--state", str(state))
    assert quiet.returncode in (1, 2)
    assert "Error:" in quiet.stderr and "Traceback" not in quiet.stderr
    loud = run_process("replay", str(tmp_path / "bucket"), "--api-key", API_KEY,
                       "--amplitude-url", emulator.url, "--state", str(state), "-vv")
    assert loud.returncode == quiet.returncode
    assert "Traceback" in loud.stderr


def test_the_ledger_keeps_the_failure_reason(emulator: Emulator, tmp_path: Path) -> None:
    files = fixtures(tmp_path / "bucket", files_per_type=1)
    set_faults(emulator, [{"action": "status", "status": 503, "after": 1}])  # probe: ok
    # A horizon longer than a first backoff (at most 1 s): no request gives up on its own
    # before the lanes' failures open the circuit (with 1 s, one could, on a busy machine).
    result, _ = replay(emulator, tmp_path, tmp_path / "bucket", extra=("--retry-horizon", "3"))
    assert result.exit_code == 1
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    [state] = list(ledger.objects())
    ledger.close()
    assert state.status == "failed" and not state.permanent
    assert "unavailable since" in (state.error or "")
    assert state.location == str(files[0].path.resolve())


def test_an_object_of_overwhelmingly_unusable_records_stops_instead_of_flooding(
    emulator: Emulator, tmp_path: Path
) -> None:
    import fastavro

    [good] = fixtures(tmp_path / "bucket", events=1_500, files_per_type=1)
    with good.path.open("rb") as stream:
        reader = fastavro.reader(stream)
        schema, records = reader.writer_schema, list(reader)
    # Properties nested deeper than any JSON encoder accepts: every record fails to map.
    deep = '{"a":' * 300 + "1" + "}" * 300
    bad_path = good.path.with_name("unusable+0+1.avro")
    with bad_path.open("wb") as out:
        fastavro.writer(out, schema, [{**r, "properties": deep} for r in records])
    good.path.unlink()
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 1
    assert summary["objects_failed_permanently"] == 1
    [failure] = summary["failures"]
    assert "could not be mapped" in failure["error"] and "unusable+0+1.avro" in failure["error"]
    assert '{"a"' not in failure["error"]  # no record value in a message that reaches logs
    # It stopped after the first thousand, not after 1,500 dead-lettered records.
    assert summary["dead_lettered"]["mapping_error"] <= 1_000
    assert summary["pending_records"] + summary["records"] <= 1_000
    # Tried again on request, it starts over (not past the records it could not use).
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket", extra=("--retry-failed",))
    assert result.exit_code == 1 and summary["resumed_records"] == 0
    assert summary["objects_failed_permanently"] == 1


def test_the_message_of_an_unusable_object_quotes_no_record_value(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The refusals quote what they found ("a list (['jane@…'])"); the object's failure,
    which reaches logs, the ledger and the summary, names the field only."""
    import fastavro

    [good] = fixtures(tmp_path / "bucket", events=1_200, files_per_type=1)
    with good.path.open("rb") as stream:
        reader = fastavro.reader(stream)
        schema, records = dict(reader.writer_schema), list(reader)
    schema["fields"] = [
        {"name": f["name"], "type": ["null", {"type": "array", "items": "string"}],
         "default": None} if f["name"] == "external_user_id"
        else f for f in schema["fields"]]
    bad_path = good.path.with_name("drifted+0+1.avro")
    with bad_path.open("wb") as out:
        fastavro.writer(out, schema, [{**r, "external_user_id": ["jane.doe@example.com"]}
                                      for r in records])
    good.path.unlink()
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert summary["objects_failed_permanently"] == 1
    [failure] = summary["failures"]
    assert "could not be mapped" in failure["error"] and "external_user_id" in failure["error"]
    assert "jane.doe@example.com" not in failure["error"]
    assert "jane.doe@example.com" not in result.output
