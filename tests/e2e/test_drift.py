"""Schema drift end to end: Avro files whose writer schema changed some fields' types.

Braze evolves Currents schemas: a field may arrive as a long where a string was, a map where
a JSON string was, an array where a scalar was, a string where a number was. Such files
must neither stop the run nor lose records silently: values that obviously mean the same
thing are converted and delivered, the rest are dead-lettered with a reason, every record
is accounted for, and a rerun sends nothing.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import fastavro
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.currents.schemas import writer_schema
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.mapping import braze_event_type
from tests.support.emulator import requests_made, stored_events

API_KEY = "test-key-0123456789"
MAPPING_ERROR = "mapping_error"  # currents_export.errors.MAPPING_ERROR
Record = dict[str, Any]


def replay(emulator: Emulator, work: Path, *paths: Path) -> tuple[Result, dict[str, Any]]:
    """``currents-export replay`` against the emulator, with its --summary-json."""
    summary_path = work / "summary.json"
    summary_path.unlink(missing_ok=True)
    result = CliRunner().invoke(main, [
        "replay", *map(str, paths), "--api-key", API_KEY, "--amplitude-url", emulator.url,
        "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dead-letter"),
        "--summary-json", str(summary_path), "--retry-horizon", "0",
    ], catch_exceptions=False)
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    return result, summary


def assert_balanced(summary: dict[str, Any]) -> None:
    assert summary["records"] == (
        summary["delivered"] + sum(summary["skipped"].values())
        + sum(summary["dead_lettered"].values()) + summary["duplicates"]
    )
    assert summary["balanced"] is True


def read_all(files: list[FixtureFile]) -> list[tuple[str, Record]]:
    out: list[tuple[str, Record]] = []
    for fixture in files:
        with fixture.path.open("rb") as fo:
            out.extend((fixture.event_type, cast(Record, record))
                       for record in fastavro.reader(fo))
    return out


def dead_letter_lines(directory: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]


def nullable(avro_type: Any) -> dict[str, Any]:
    return {"type": ["null", avro_type], "default": None}


STRING_MAP = {"type": "map", "values": "string"}
STRING_ARRAY = {"type": "array", "items": "string"}


@dataclass(frozen=True)
class Drift:
    """One drifted event type: the changed fields' Avro types, and how a record of the
    documented schema becomes a record of the drifted one."""

    event_type: str
    fields: dict[str, dict[str, Any]]  # field → {"type": …, maybe "default": …}
    convert: Callable[[int, Record], Record]


def _numeric_user(index: int, record: Record) -> int | None:
    """A numeric external id (7 digits: over the minimum id length) for a known user."""
    return 7_000_000 + index if record.get("external_user_id") else None


def _properties_map(raw: str) -> dict[str, str]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"raw": raw}
    if not isinstance(parsed, dict):
        return {}
    return {key: value if isinstance(value, str) else orjson.dumps(value).decode()
            for key, value in parsed.items()}


def _custom_event(index: int, record: Record) -> Record:
    return {**record, "external_user_id": _numeric_user(index, record),
            "properties": _properties_map(record["properties"]), "time": str(record["time"])}


def _purchase(index: int, record: Record) -> Record:
    return {**record, "external_user_id": _numeric_user(index, record),
            "price": f"{record['price']:.2f}",
            "platform": [record["platform"]] if record.get("platform") else None}


def _email_click(index: int, record: Record) -> Record:
    agent = record.get("user_agent")
    return {**record, "external_user_id": _numeric_user(index, record),
            "user_agent": agent.encode() if agent else None, "time": record["time"] + 0.5}


def _session_start(index: int, record: Record) -> Record:
    # Every fifth record has a time that is not a number: refused (no_time), not guessed.
    return {**record, "time": "n/a" if index % 5 == 0 else f" {record['time']} "}


def _sms_send(index: int, record: Record) -> Record:
    # An array where the external id was: cannot be an Amplitude user_id.
    user = record.get("external_user_id")
    return {**record, "external_user_id": [user] if user else None}


DRIFTS = [
    Drift("users.behaviors.CustomEvent",
          {"external_user_id": nullable("long"), "properties": {"type": STRING_MAP},
           "time": {"type": "string"}}, _custom_event),
    Drift("users.behaviors.Purchase",
          {"external_user_id": nullable("long"), "price": {"type": "string"},
           "platform": nullable(STRING_ARRAY)}, _purchase),
    Drift("users.messages.email.Click",
          {"external_user_id": nullable("long"), "user_agent": nullable("bytes"),
           "time": {"type": "double"}}, _email_click),
    Drift("users.behaviors.app.SessionStart", {"time": {"type": "string"}}, _session_start),
    Drift("users.messages.sms.Send", {"external_user_id": nullable(STRING_ARRAY)}, _sms_send),
]


def drifted_schema(drift: Drift) -> dict[str, Any]:
    """A copy of the real writer schema with some fields' types changed."""
    schema = copy.deepcopy(writer_schema(drift.event_type))
    for spec in schema["fields"]:
        if spec["name"] in drift.fields:
            spec.pop("default", None)
            spec.update(drift.fields[spec["name"]])
    return schema


def write_drifted(bucket: Path, scratch: Path) -> dict[str, tuple[str, Record]]:
    """One drifted file per type, first in path order; returns id → (type, drifted record)."""
    written: dict[str, tuple[str, Record]] = {}
    for drift in DRIFTS:
        [source] = generate_fixtures(scratch, events_per_type=40, seed=31, files_per_type=1,
                                     duplicate_rate=0, event_types=[drift.event_type])
        originals = [record for _, record in read_all([source])]
        records = [drift.convert(index, record) for index, record in enumerate(originals)]
        path = (bucket / "a-drifted" / f"event_type={drift.event_type}" / "date=2026-01-15-09"
                / "drifted+0+0000000001.avro")
        path.parent.mkdir(parents=True)
        with path.open("wb") as fo:
            fastavro.writer(fo, drifted_schema(drift), records)
        written.update((record["id"], (drift.event_type, record)) for record in records)
    return written


@dataclass
class Expected:
    delivered: dict[str, tuple[str, Record]]
    dead_lettered: Counter[str]
    skipped: Counter[str]


def expected_outcomes(drifted: dict[str, tuple[str, Record]]) -> Expected:
    """What should become of each drifted record."""
    out = Expected({}, Counter(), Counter())
    for event_id, (event_type, record) in drifted.items():
        user, device = record.get("external_user_id"), record.get("device_id")
        if isinstance(user, list):
            out.dead_lettered[MAPPING_ERROR] += 1
        elif record["time"] == "n/a":
            out.dead_lettered["no_time"] += 1
        elif user is None and not device:
            out.skipped["no_identity"] += 1
        else:
            out.delivered[event_id] = (event_type, record)
    return out


def check_converted(event: dict[str, Any], event_type: str, record: Record) -> None:
    """A delivered drifted record arrived with its values converted."""
    user = record.get("external_user_id")
    if user is None:
        assert "user_id" not in event
    else:
        assert event["user_id"] == str(user)  # a long arrives as a string user_id
    assert isinstance(event["time"], int)
    time = record["time"]
    assert event["time"] == (round(time * 1000) if isinstance(time, float)
                             else int(time) * 1000)
    props = event["event_properties"]
    if event_type == "users.behaviors.CustomEvent":
        assert event["event_type"] == braze_event_type(event_type, record["name"])
        for key, value in record["properties"].items():
            assert props[f"[Custom event property] {key}"] == value
        assert "properties" not in props
    elif event_type == "users.behaviors.Purchase":
        assert event["price"] == pytest.approx(float(record["price"]))
        assert event["revenue"] == event["price"] and event["quantity"] == 1
        if record["platform"] is not None:
            assert props["platform"] == record["platform"]  # the array, as it is
    elif event_type == "users.messages.email.Click" and record["user_agent"] is not None:
        assert props["user_agent"] == record["user_agent"].hex()  # bytes as hex


def test_drifted_files_are_converted_or_dead_lettered_and_the_run_goes_on(
    emulator: Emulator, tmp_path: Path
) -> None:
    bucket = tmp_path / "bucket"
    drifted = write_drifted(bucket, tmp_path / "scratch")
    good_files = generate_fixtures(bucket / "b-good", events_per_type=40, seed=32,
                                   event_types=["users.behaviors.CustomEvent",
                                                "users.messages.email.Open"])
    paths = sorted(bucket.rglob("*.avro"))
    assert all("a-drifted" in p.as_posix() for p in paths[: len(DRIFTS)])

    result, summary = replay(emulator, tmp_path, bucket)

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert summary["objects_done"] == len(paths) and summary["objects_failed"] == 0
    assert_balanced(summary)

    expected = expected_outcomes(drifted)
    good_records = read_all(good_files)
    good_first_seen: dict[str, Record] = {}
    for _, record in good_records:
        good_first_seen.setdefault(record["id"], record)
    good_identified = {i for i, r in good_first_seen.items()
                       if r.get("external_user_id") or r.get("device_id")}
    good_unidentified = len(good_first_seen) - len(good_identified)

    stored = stored_events(emulator)
    by_insert_id = Counter(event["insert_id"] for event in stored)
    assert max(by_insert_id.values()) == 1
    assert set(by_insert_id) == good_identified | set(expected.delivered)
    for event in stored:
        if event["insert_id"] in expected.delivered:
            check_converted(event, *expected.delivered[event["insert_id"]])

    assert summary["records"] == len(drifted) + len(good_records)
    assert summary["delivered"] == len(stored)
    assert summary["dead_lettered"] == dict(expected.dead_lettered)
    assert expected.dead_lettered[MAPPING_ERROR] > 0 and expected.dead_lettered["no_time"] > 0
    assert summary["skipped"] == {
        "no_identity": expected.skipped["no_identity"] + good_unidentified}
    assert summary["duplicates"] == len(good_records) - len(good_first_seen)

    lines = dead_letter_lines(tmp_path / "dead-letter")
    assert Counter(line["reason"] for line in lines) == expected.dead_lettered
    for line in lines:
        assert line["record"]["id"] in drifted
        if line["reason"] == MAPPING_ERROR:
            assert line["event_type"] == "users.messages.sms.Send"
            assert line["detail"].startswith("external_user_id is a list (")
        else:
            assert "time is a str ('n/a')" in line["detail"]

    requests = requests_made(emulator)
    again, summary = replay(emulator, tmp_path, bucket)
    assert again.exit_code == 0, again.output
    assert summary["objects_already_done"] == len(paths)
    assert summary["records"] == 0 and summary["requests"] == 0
    assert requests_made(emulator) == requests


def test_a_dead_lettered_record_with_bytes_fields_is_written_readably(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Avro ``bytes`` in a record that ends in the dead letter (the record is kept as
    decoded): the dead letter must still be written, and the run must go on."""
    [source] = generate_fixtures(tmp_path / "scratch", events_per_type=10, seed=33,
                                 files_per_type=1, duplicate_rate=0,
                                 event_types=["users.messages.sms.Send"])
    drift = Drift("users.messages.sms.Send",
                  {"external_user_id": nullable(STRING_ARRAY), "timezone": nullable("bytes")},
                  lambda i, r: {**_sms_send(i, r), "timezone": b"\xfe\xff"})
    records = [drift.convert(i, r) for i, (_, r) in enumerate(read_all([source]))]
    path = tmp_path / "bucket" / "drifted+0+0000000001.avro"
    path.parent.mkdir()
    with path.open("wb") as fo:
        fastavro.writer(fo, drifted_schema(drift), records)

    result, summary = replay(emulator, tmp_path, path)

    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert_balanced(summary)
    refused = sum(1 for r in records if r["external_user_id"])
    assert summary["dead_lettered"] == {MAPPING_ERROR: refused} and refused > 0
    lines = dead_letter_lines(tmp_path / "dead-letter")
    assert len(lines) == refused
    assert all(line["record"]["timezone"] == "feff" for line in lines)  # bytes as hex
