"""The synthetic Currents files: valid Avro, Braze layout, realistic values, reproducible."""

from __future__ import annotations

import io
import json
import random
import re
import struct
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fastavro
import pytest
from fastavro.validation import validate

from currents_export.currents.keys import parse_key
from currents_export.currents.reader import open_records
from currents_export.currents.schemas import event_type_fields, known_event_types, writer_schema
from currents_export.kit.fixtures import (
    FixtureFile,
    Identity,
    generate_fixtures,
    identity_pool,
    make_record,
    write_avro,
)

EVENTS = 20
DUP_RATE = 0.2  # high enough that 10-record files get duplicates
START = datetime(2026, 1, 15, 10, tzinfo=UTC)
CUSTOM = "users.behaviors.CustomEvent"
PURCHASE = "users.behaviors.Purchase"

KEY_PATTERN = re.compile(
    r"currents/dataexport\.prod-01\.S3\.integration\.(?P<id>[0-9a-f]{24})/"
    r"event_type=(?P<type>[^/]+)/date=\d{4}-\d{2}-\d{2}-\d{2}/\d+/[a-z]/"
    r"dataexport\.prod-01\.S3\.integration\.(?P=id)\+\d+\+\d{10}\.avro"
)


def read(path: Path) -> tuple[fastavro.reader, list[dict[str, Any]]]:
    with path.open("rb") as fileobj:
        reader = fastavro.reader(fileobj)
        return reader, list(reader)


def records_by_file(files: list[FixtureFile]) -> list[tuple[FixtureFile, list[dict[str, Any]]]]:
    return [(f, read(f.path)[1]) for f in files]


def tree_bytes(files: list[FixtureFile]) -> dict[str, bytes]:
    return {f.key: f.path.read_bytes() for f in files}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> list[FixtureFile]:
    out = tmp_path_factory.mktemp("currents")
    return generate_fixtures(out, events_per_type=EVENTS, duplicate_rate=DUP_RATE)


@pytest.fixture(scope="module")
def decoded(run: list[FixtureFile]) -> list[tuple[FixtureFile, list[dict[str, Any]]]]:
    return records_by_file(run)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[FixtureFile, list[dict]]]:
    """More CustomEvent/Purchase records, default duplicate rate, four files per type."""
    out = tmp_path_factory.mktemp("big")
    files = generate_fixtures(
        out, events_per_type=1000, event_types=[CUSTOM, PURCHASE], files_per_type=4, seed=7
    )
    return records_by_file(files)


# --------------------------------------------------------------------------- files and schemas


def test_every_type_written_with_declared_counts(
    run: list[FixtureFile], decoded: list[tuple[FixtureFile, list[dict]]]
) -> None:
    per_type: dict[str, list[FixtureFile]] = defaultdict(list)
    for f in run:
        per_type[f.event_type].append(f)
    assert sorted(per_type) == known_event_types()
    assert len(per_type) == 94
    for files in per_type.values():
        assert len(files) == 2
        assert sum(f.records for f in files) == EVENTS
    for f, records in decoded:
        assert f.path.is_absolute() and f.path.is_file()
        assert len(records) == f.records > 0


def test_schema_name_and_every_record_valid(
    decoded: list[tuple[FixtureFile, list[dict]]],
) -> None:
    for f, records in decoded:
        reader, _ = read(f.path)
        assert reader.writer_schema["name"] == f"dataexport.S3.inner.{f.event_type}"
        assert reader.metadata["avro.codec"] == "null"
        schema = writer_schema(f.event_type)
        for record in records:
            assert validate(record, schema)
            assert list(record) == [spec.name for spec in event_type_fields(f.event_type)]


def test_keys_follow_braze_layout(run: list[FixtureFile]) -> None:
    integrations = set()
    offsets: dict[str, list[int]] = defaultdict(list)
    for f in run:
        match = KEY_PATTERN.fullmatch(f.key)
        assert match, f.key
        assert match["type"] == f.event_type
        assert f.path.as_posix().endswith("/" + f.key)
        parsed = parse_key(f.key)
        assert parsed.event_type == f.event_type
        assert parsed.cluster == "prod-01" and parsed.connection == "S3"
        assert parsed.partition is not None and parsed.offset is not None
        integrations.add(parsed.integration_id)
        offsets[f.event_type].append(parsed.offset)
    assert len(integrations) == 1  # one integration per run
    for values in offsets.values():
        assert values == sorted(values) and len(set(values)) == len(values)


def test_queue_hours_and_event_times(decoded: list[tuple[FixtureFile, list[dict]]]) -> None:
    index: Counter[str] = Counter()
    lags = []
    for f, records in decoded:
        hour = parse_key(f.key).queue_hour
        assert hour == START + timedelta(hours=index[f.event_type])
        index[f.event_type] += 1
        end = int(hour.timestamp()) + 3600
        for record in records:
            assert record["time"] < end
            assert record["time"] > int(START.timestamp()) - 2 * 86400
            if record.get("time_ms") is not None:
                assert record["time_ms"] // 1000 == record["time"]
            lags.append(end - record["time"])
    assert max(lags) > 3600  # some events are queued hours after they happened


def test_max_events_per_file_adds_files(tmp_path: Path) -> None:
    files = generate_fixtures(
        tmp_path, events_per_type=50, event_types=[CUSTOM], max_events_per_file=20
    )
    assert [f.records for f in files] == [17, 17, 16]
    hours = [parse_key(f.key).queue_hour for f in files]
    assert hours == [START + timedelta(hours=i) for i in range(3)]


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_other_seed_differs(run: list[FixtureFile], tmp_path: Path) -> None:
    again = generate_fixtures(tmp_path / "a", events_per_type=EVENTS, duplicate_rate=DUP_RATE)
    assert [(f.key, f.records, f.duplicates) for f in again] == [
        (f.key, f.records, f.duplicates) for f in run
    ]
    assert tree_bytes(again) == tree_bytes(run)

    other = generate_fixtures(
        tmp_path / "b", events_per_type=EVENTS, duplicate_rate=DUP_RATE, seed=1
    )
    assert {f.key for f in other}.isdisjoint({f.key for f in run})
    assert set(tree_bytes(other).values()).isdisjoint(tree_bytes(run).values())


def test_subset_of_types_reproduces_their_files(run: list[FixtureFile], tmp_path: Path) -> None:
    chosen = ["users.messages.email.Click", CUSTOM, "agentconsole.ToolInvocation"]
    subset = generate_fixtures(
        tmp_path, events_per_type=EVENTS, event_types=chosen, duplicate_rate=DUP_RATE
    )
    full = tree_bytes([f for f in run if f.event_type in chosen])
    assert tree_bytes(subset) == full
    assert len(full) == 6


def test_write_avro_counts_a_generator_and_is_reproducible() -> None:
    identity = Identity("cust_000042", None, "0123456789abcdef01234567")
    outputs = []
    for _ in range(2):
        rng = random.Random("w")
        records = (make_record(CUSTOM, rng, identity=identity, time_s=1_768_000_000 + i)
                   for i in range(5))
        buffer = io.BytesIO()
        assert write_avro(buffer, CUSTOM, records) == 5
        outputs.append(buffer.getvalue())
    assert outputs[0] == outputs[1]
    assert len(list(fastavro.reader(io.BytesIO(outputs[0])))) == 5


# --------------------------------------------------------------------------- identity, duplicates


def test_identity_mix(decoded: list[tuple[FixtureFile, list[dict]]]) -> None:
    kinds: Counter[str] = Counter()
    for _, records in decoded:
        for r in records:
            if r.get("external_user_id"):
                kinds["external"] += 1
                assert len(r["external_user_id"]) >= 5
            elif r.get("device_id"):
                kinds["device_only"] += 1
            else:
                kinds["none"] += 1
    assert kinds["external"] > kinds["device_only"] > 0
    assert kinds["none"] > 0


def test_identity_rates_in_device_types(big: list[tuple[FixtureFile, list[dict]]]) -> None:
    kinds: Counter[str] = Counter()
    for _, records in big:
        for r in records:
            kinds["ext" if r["external_user_id"] else "dev" if r["device_id"] else "none"] += 1
    total = sum(kinds.values())
    assert 0.10 < kinds["dev"] / total < 0.20  # ~15 % anonymous
    assert 0.01 < kinds["none"] / total < 0.06  # ~3 % without identity


def test_identity_pool_shapes() -> None:
    pool = identity_pool(0)
    externals = [i.external_user_id for i in pool if i.external_user_id]
    assert len(externals) == len(set(externals)) >= 300
    assert any(re.fullmatch(r"cust_\d{6}", e) for e in externals)
    assert any("@example." in e for e in externals)
    assert any(re.fullmatch(r"[0-9a-f-]{36}", e) for e in externals)
    devices = [i.device_id for i in pool if i.device_id]
    assert any(d.isupper() for d in devices) and any(d.islower() for d in devices)
    assert all(re.fullmatch(r"[0-9a-f]{24}", i.braze_id) for i in pool)
    assert identity_pool(0) == pool and identity_pool(1) != pool


def test_ids_unique_except_declared_duplicates(
    decoded: list[tuple[FixtureFile, list[dict]]],
) -> None:
    seen: dict[str, tuple[str, dict]] = {}
    total_duplicates = 0
    first_file: set[str] = set()
    for f, records in decoded:
        duplicates = 0
        for r in records:
            assert uuid.UUID(r["id"]).version == 4
            if r["id"] in seen:
                earlier_type, earlier = seen[r["id"]]
                assert earlier_type == f.event_type and earlier == r
                duplicates += 1
            else:
                seen[r["id"]] = (f.event_type, r)
        assert duplicates == f.duplicates
        if f.event_type not in first_file:
            first_file.add(f.event_type)
            assert f.duplicates == 0
        total_duplicates += duplicates
    assert total_duplicates > 50  # ~20 % of 940 records in later files


def test_default_duplicate_rate(big: list[tuple[FixtureFile, list[dict]]]) -> None:
    later = [f for f, _ in big if parse_key(f.key).queue_hour != START]
    share = sum(f.duplicates for f in later) / sum(f.records for f in later)
    assert 0.01 <= share <= 0.035
    assert all(f.duplicates == 0 for f, _ in big if parse_key(f.key).queue_hour == START)


# --------------------------------------------------------------------------- codecs and errors


def test_deflate_round_trip(tmp_path: Path) -> None:
    kwargs: dict[str, Any] = {"events_per_type": EVENTS, "event_types": [CUSTOM, PURCHASE]}
    deflated = generate_fixtures(tmp_path / "d", codec="deflate", **kwargs)
    plain = generate_fixtures(tmp_path / "n", **kwargs)
    for d, n in zip(deflated, plain, strict=True):
        reader, records = read(d.path)
        assert reader.metadata["avro.codec"] == "deflate"
        assert records == read(n.path)[1]
        assert d.path.read_bytes() != n.path.read_bytes()


def test_bad_codec_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'snappy'.*null, deflate"):
        generate_fixtures(tmp_path, codec="snappy")
    with pytest.raises(ValueError, match="zstandard"):
        write_avro(io.BytesIO(), CUSTOM, [], codec="zstandard")
    assert not any(tmp_path.iterdir())


def test_unknown_type_raises_with_hint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'users\.behaviors\.Nope'.*known_event_types\(\)"):
        generate_fixtures(tmp_path, event_types=[CUSTOM, "users.behaviors.Nope"])
    with pytest.raises(ValueError, match="known_event_types"):
        make_record("nope", random.Random(0), identity=identity_pool(0)[0], time_s=0)
    assert not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- values


def _has_nested(value: Any) -> bool:
    return isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values())


def test_custom_event_properties(big: list[tuple[FixtureFile, list[dict]]]) -> None:
    texts = [r["properties"] for f, records in big if f.event_type == CUSTOM for r in records]
    parsed, invalid = [], 0
    for text in texts:
        try:
            parsed.append(json.loads(text))
        except ValueError:
            invalid += 1
    assert 0 < invalid < len(texts) * 0.03
    assert any(p == {} for p in parsed)
    assert all(isinstance(p, dict) for p in parsed)
    assert any(_has_nested(p) for p in parsed)
    non_ascii = [t for t in texts if any(ord(ch) > 127 for ch in t)]
    assert len(non_ascii) > len(texts) / 2
    assert all("\\u" not in t for t in non_ascii)  # written raw, not escaped
    names = {r["name"] for f, records in big if f.event_type == CUSTOM for r in records}
    assert "Ajouté au panier" in names and any(" " in n for n in names)


def test_purchase_prices_are_float32(big: list[tuple[FixtureFile, list[dict]]]) -> None:
    purchases = [r for f, records in big if f.event_type == PURCHASE for r in records]
    inexact = 0
    for r in purchases:
        price = r["price"]
        cents = round(price, 2)
        assert struct.unpack("<f", struct.pack("<f", cents))[0] == price
        inexact += price != cents
        assert re.fullmatch(r"[A-Z]{3}", r["currency"])
    assert inexact > len(purchases) / 2
    assert any(r["price"] == pytest.approx(9.99) and r["price"] != 9.99 for r in purchases)


FIELD_CHECKS: dict[str, re.Pattern[str]] = {
    "email_address": re.compile(r"[a-z0-9.\-_]+@example\.(com|org)"),
    "to_phone_number": re.compile(r"\+1555\d{7}|\+447700900\d{3}"),
    "user_phone_number": re.compile(r"\+1555\d{7}|\+447700900\d{3}"),
    "platform": re.compile(r"ios|android|web|kindle|tvos|roku"),
    "ad_id_type": re.compile(r"ios_idfa|google_ad_id|windows_ad_id|roku_ad_id"),
    "sending_ip": re.compile(r"(192\.0\.2|198\.51\.100|203\.0\.113)\.\d{1,3}"),
    "url": re.compile(r"https://([a-z]+\.)?example\.com/\S*"),
    "user_id": re.compile(r"[0-9a-f]{24}"),
    "currency": re.compile(r"USD|EUR|GBP|JPY|CAD|BRL|CHF"),
    "subscription_status": re.compile(r"Subscribed|Unsubscribed|Opted In"),
}


def test_field_values_look_real(decoded: list[tuple[FixtureFile, list[dict]]]) -> None:
    checked: Counter[str] = Counter()
    nulls: Counter[str] = Counter()
    for _, records in decoded:
        for r in records:
            for name, pattern in FIELD_CHECKS.items():
                if r.get(name) is not None:
                    assert pattern.fullmatch(r[name]), (name, r[name])
                    checked[name] += 1
            if "random_bucket_number" in r:
                assert 0 <= r["random_bucket_number"] <= 9999
            if "timezone" in r:
                nulls["timezone" if r["timezone"] is None else "timezone set"] += 1
            if r.get("message_extras") is not None:
                assert isinstance(json.loads(r["message_extras"]), dict)
    assert set(checked) == set(FIELD_CHECKS)
    assert nulls["timezone"] > 0 and nulls["timezone set"] > nulls["timezone"]


def test_make_record_follows_identity() -> None:
    rng = random.Random(3)
    anonymous = Identity(None, "0F8FAD5B-D9CB-469F-A165-70867728950E", "5a1b2c3d4e5f60718293a4b5")
    nobody = Identity(None, None, "5a1b2c3d4e5f60718293a4b6")
    session = make_record("users.behaviors.app.SessionStart", rng, identity=anonymous, time_s=9)
    assert session["external_user_id"] is None
    assert session["device_id"] == anonymous.device_id
    assert session["user_id"] == anonymous.braze_id
    assert session["platform"] in ("ios", "tvos")  # upper-case device ids are Apple's
    email = make_record("users.messages.email.Send", rng, identity=anonymous, time_s=9)
    assert "device_id" not in email and email["external_user_id"] is None
    inbound = make_record("users.messages.sms.InboundReceive", rng, identity=nobody, time_s=9)
    assert inbound["user_id"] is None and inbound["external_user_id"] is None
    profile = make_record("users.profile.Update", rng, identity=nobody, time_s=1_768_000_000)
    assert profile["time"] == 1_768_000_000 and profile["time_ms"] // 1000 == profile["time"]


def test_project_reader_reads_fixture_files(run: list[FixtureFile]) -> None:
    purchase = next(f for f in run if f.event_type == PURCHASE)
    with purchase.path.open("rb") as fileobj:
        stream = open_records(fileobj, purchase.key, parse_key(purchase.key).event_type)
        records = list(stream.records)
    assert stream.event_type == PURCHASE and not stream.type_mismatch
    assert stream.codec == "null" and "price" in stream.float_fields
    assert len(records) == purchase.records
