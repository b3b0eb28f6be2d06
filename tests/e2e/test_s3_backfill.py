"""Backfill from S3 (moto's server on loopback): filters, workers, dispatch, manifest,
S3 dead letter, inspect."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.currents.keys import parse_key
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from tests.support.emulator import stored_events
from tests.support.runs import API_KEY, assert_balanced, read_all

BUCKET = "acme-currents"
TYPES = ["users.behaviors.CustomEvent", "users.messages.email.Open", "users.behaviors.Purchase"]


@pytest.fixture
def bucket(aws: str, tmp_path: Path) -> Iterator[tuple[Any, list[FixtureFile]]]:
    """A bucket laid out as Braze lays it out: 3 types in 3 queue hours."""
    files = generate_fixtures(tmp_path / "fixtures", events_per_type=90, seed=31,
                              files_per_type=3, event_types=TYPES)
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket=BUCKET)
    for fixture in files:
        s3.put_object(Bucket=BUCKET, Key=fixture.key, Body=fixture.path.read_bytes())
    s3.put_object(Bucket=BUCKET, Key="currents/README.txt", Body=b"not a Currents file")
    yield s3, files


def backfill(aws: str, emulator: Emulator, work: Path, *args: str) -> tuple[Result, dict]:
    summary_path = work / "summary.json"
    summary_path.unlink(missing_ok=True)
    result = CliRunner().invoke(main, [
        "backfill", f"s3://{BUCKET}/currents", "--s3-endpoint-url", aws,
        "--api-key", API_KEY, "--amplitude-url", emulator.url,
        "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dl"),
        "--summary-json", str(summary_path), "--retry-horizon", "0", *args,
    ], catch_exceptions=False)
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    return result, summary


def expected_insert_ids(files: list[FixtureFile]) -> set[str]:
    first: dict[str, dict] = {}
    for _, record in read_all(files):
        first.setdefault(record["id"], record)
    return {i for i, r in first.items() if r.get("external_user_id") or r.get("device_id")}


def test_backfill_with_hour_and_type_filters_delivers_exactly_the_selection(
    aws: str, emulator: Emulator, bucket: tuple[Any, list[FixtureFile]], tmp_path: Path
) -> None:
    _, files = bucket
    hours = sorted({parse_key(f.key).queue_hour_label for f in files})
    selected = [f for f in files
                if f.event_type in TYPES[:2] and parse_key(f.key).queue_hour_label in hours[1:]]
    assert 0 < len(selected) < len(files)
    result, summary = backfill(aws, emulator, tmp_path, "--since", hours[1],
                               "--event-type", TYPES[0], "--event-type", TYPES[1], "--progress")
    assert result.exit_code == 0, result.output
    assert summary["objects_done"] == len(selected)
    assert {e["insert_id"] for e in stored_events(emulator)} == expected_insert_ids(selected)
    assert summary["records"] == sum(f.records for f in selected)
    assert_balanced(summary)
    # The progress display (not a terminal: its final line), on stderr; the listing ended,
    # so the total is known.
    final = result.stderr.splitlines()[-1]
    assert final.endswith("(final)") and "events/s" in final
    assert f"objects {len(selected)}/{len(selected)} (0 in flight)" in final
    assert f"delivered {summary['delivered']:,}" in final
    assert " | delivered " not in result.stdout  # the display went to stderr only

    # Resumable: a second, wider run only does the rest.
    again, summary = backfill(aws, emulator, tmp_path, "--workers", "3", "--progress")
    assert again.exit_code == 0, again.output
    final = again.stderr.splitlines()[-1]  # the display adds up the three workers
    assert (f"objects {len(files)}/{len(files)} (0 in flight, {len(selected)} already done)"
            in final)
    assert f"delivered {summary['delivered']:,}" in final
    assert summary["objects_already_done"] == len(selected)
    assert summary["objects_done"] == len(files) - len(selected)
    stored = [e["insert_id"] for e in stored_events(emulator)]
    assert sorted(stored) == sorted(expected_insert_ids(files))


def test_until_a_day_includes_its_last_hour(
    aws: str, emulator: Emulator, bucket: tuple[Any, list[FixtureFile]], tmp_path: Path
) -> None:
    _, files = bucket
    first_hour = min(parse_key(f.key).queue_hour for f in files)
    result, summary = backfill(aws, emulator, tmp_path, "--until",
                               first_hour.strftime("%Y-%m-%d-%H"))
    assert result.exit_code == 0
    assert summary["objects_done"] == sum(
        1 for f in files if parse_key(f.key).queue_hour == first_hour)
    day, _ = backfill(aws, emulator, tmp_path, "--until", first_hour.strftime("%Y-%m-%d"))
    assert day.exit_code == 0


def test_dispatch_enqueues_one_raw_key_per_object(
    aws: str, bucket: tuple[Any, list[FixtureFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, files = bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", aws)
    sqs = boto3.client("sqs", endpoint_url=aws)
    url = sqs.create_queue(QueueName="currents-inbox")["QueueUrl"]
    result = CliRunner().invoke(main, [
        "backfill", f"s3://{BUCKET}/currents", "--s3-endpoint-url", aws,
        "--dispatch", f"sqs://{url}", "--event-type", TYPES[2],
    ])
    assert result.exit_code == 0, result.output
    bodies = []
    while True:
        reply = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)
        if not reply.get("Messages"):
            break
        bodies += [orjson.loads(m["Body"]) for m in reply["Messages"]]
        sqs.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]}
            for n, m in enumerate(reply["Messages"])])
    assert sorted(b["key"] for b in bodies) == sorted(
        f.key for f in files if f.event_type == TYPES[2])
    assert all(b["bucket"] == BUCKET and "+" in b["key"] for b in bodies)


def test_manifest_lists_url_encoded_keys(
    aws: str, bucket: tuple[Any, list[FixtureFile]], tmp_path: Path
) -> None:
    _, files = bucket
    manifest = tmp_path / "manifest.csv"
    result = CliRunner().invoke(main, [
        "backfill", f"s3://{BUCKET}/currents", "--s3-endpoint-url", aws,
        "--manifest", str(manifest),
    ])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(manifest.open()))
    assert len(rows) == len(files)
    assert all(row[0] == BUCKET and "%2B" in row[1] for row in rows)
    assert sorted(unquote_plus(row[1]) for row in rows) == sorted(f.key for f in files)


def test_dead_letter_in_s3_and_inspect_of_an_s3_object(
    aws: str, emulator: Emulator, bucket: tuple[Any, list[FixtureFile]], tmp_path: Path
) -> None:
    s3, files = bucket
    devices = [r["device_id"] for _, r in read_all(files) if r.get("device_id")]
    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": devices[:5]})
    result, summary = backfill(aws, emulator, tmp_path, "--dead-letter",
                               f"s3://{BUCKET}/dead-letter/")
    assert result.exit_code == 0, result.output
    refused = summary["dead_lettered"]["amplitude_silenced_device"]
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="dead-letter/")["Contents"]
    lines = [orjson.loads(line) for item in listed
             for line in s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().splitlines()]
    assert len(lines) == refused > 0
    assert {line["event"]["device_id"] for line in lines} <= set(devices[:5])
    # Each object written is listed, and only those.
    assert sorted(summary["dead_letter_files"]) == sorted(
        f"s3://{BUCKET}/{item['Key']}" for item in listed)

    inspected = CliRunner().invoke(main, ["inspect", f"s3://{BUCKET}/{files[0].key}",
                                          "--s3-endpoint-url", aws])
    assert inspected.exit_code == 0, inspected.output
    assert orjson.loads(inspected.output)["records"] == files[0].records


def test_bad_uris_and_missing_buckets_are_clear_errors(aws: str, tmp_path: Path) -> None:
    wrong = CliRunner().invoke(main, ["backfill", "/local/path", "--api-key", API_KEY])
    assert wrong.exit_code == 2 and "s3://BUCKET/PREFIX" in wrong.output
    hour = CliRunner().invoke(main, ["backfill", "s3://b/p", "--since", "2026-13", "--api-key",
                                     API_KEY])
    assert hour.exit_code == 2 and "YYYY-MM-DD" in hour.output
    missing = CliRunner().invoke(main, [
        "backfill", "s3://no-such-bucket/currents", "--s3-endpoint-url", aws, "--api-key",
        API_KEY, "--state", str(tmp_path / "s.sqlite"), "--amplitude-url", "http://127.0.0.1:9",
    ])
    assert missing.exit_code == 2 and "no-such-bucket" in missing.output


def test_filters_that_match_no_object_exit_2_with_a_hint(aws: str, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=aws)
    s3.create_bucket(Bucket="empty-bucket")
    base = ["backfill", "s3://empty-bucket/currents", "--s3-endpoint-url", aws, "--api-key",
            API_KEY, "--state", str(tmp_path / "s.sqlite")]
    nothing = CliRunner().invoke(main, base)
    assert nothing.exit_code == 2 and "no Currents objects under" in nothing.output
    assert "the folder Braze writes into" in nothing.output
    filtered = CliRunner().invoke(main, [*base, "--since", "2026-01-01", "--event-type",
                                         "users.behaviors.Purchase"])
    assert filtered.exit_code == 2
    assert "--event-type users.behaviors.Purchase" in filtered.output
    assert "check the filters" in filtered.output
