"""The mapping generated once per record layout (``mapping.compiled``)."""

from __future__ import annotations

import io
import math
from typing import Any

import fastavro
import orjson
import pytest

from currents_export.currents.schemas import writer_schema
from currents_export.mapping import Mapped, MappingOptions, float32, mapped_records, mapper_for
from currents_export.mapping import mapper as mapper_module
from currents_export.mapping.compiled import value_classes
from currents_export.mapping.mapper import PropertiesPolicy, TypeRule
from tests.support.records import minimal_record

CUSTOM = "users.behaviors.CustomEvent"
CLICK = "users.messages.email.Click"


def event_of(result: object) -> dict[str, Any]:
    assert isinstance(result, Mapped), result
    return result.event


def custom_record(**values: Any) -> dict[str, Any]:
    given = {"name": "Signup", "properties": '{"plan": "gold"}', "platform": "ios",
             "timezone": "Europe/Paris", **values}
    return minimal_record(CUSTOM, **given)


def test_value_classes_come_from_single_primitive_types_only() -> None:
    schema = {"type": "record", "name": "r", "fields": [
        {"name": "a", "type": "string"},
        {"name": "b", "type": ["null", "long"]},
        {"name": "c", "type": ["null", "string", "long"]},  # a union of two: no class
        {"name": "d", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "e", "type": "float"},
        {"name": "f", "type": ["null", {"type": "array", "items": "string"}]},
        {"name": "g", "type": ["null", "boolean"]},
    ]}
    assert value_classes(schema) == {"a": str, "b": int, "e": float, "g": bool}
    assert value_classes(None) == {}


def test_the_mapping_is_generated_once_per_file_not_per_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generated: list[tuple[Any, ...]] = []
    real = mapper_module.compile_layout

    def counting(mapper: Any, layout: tuple[Any, ...], classes: Any) -> Any:
        generated.append(layout)
        return real(mapper, layout, classes)

    monkeypatch.setattr(mapper_module, "compile_layout", counting)
    out = io.BytesIO()
    schema = writer_schema(CUSTOM)
    records = [custom_record(id=f"id-{i}") for i in range(50)]
    fastavro.writer(out, fastavro.parse_schema(schema), records)
    out.seek(0)

    stream = mapped_records(out, "mem", MappingOptions(), CUSTOM)
    outcomes = [outcome for _index, _record, outcome in stream]

    assert len(outcomes) == 50 and all(isinstance(o, Mapped) for o in outcomes)
    assert generated == [tuple(f["name"] for f in schema["fields"])]
    assert stream.mapper.value_classes["platform"] is str  # the writer schema's hint


def test_records_with_other_keys_map_as_their_own_keys_say() -> None:
    schema = writer_schema(CUSTOM)
    mapper = mapper_for(CUSTOM, MappingOptions(), (), schema)
    record = custom_record()
    reordered = dict(reversed(list(record.items())))
    missing = {k: v for k, v in record.items() if k != "timezone"}
    extra = {**record, "added_by_braze": "new", 7: "a key that is not a string"}

    properties = event_of(mapper.map(record))["event_properties"]
    assert list(properties) == ["[Custom event property] plan", "timezone", "platform",
                                "braze_id"]
    # the record's order, as ever: the custom properties first, then the fields as given
    assert list(event_of(mapper.map(reordered))["event_properties"]) == [
        "[Custom event property] plan", "platform", "timezone", "braze_id"]
    assert "timezone" not in event_of(mapper.map(missing))["event_properties"]
    with_extra = event_of(mapper.map(extra))["event_properties"]
    assert with_extra["added_by_braze"] == "new" and with_extra[7] == "a key that is not a string"
    assert len(mapper._layouts) == 4
    # and the schema's layout still maps as the first time
    assert event_of(mapper.map(record))["event_properties"] == properties


def test_keys_that_are_not_identifiers_are_quoted_in_the_generated_code() -> None:
    odd = "it's a \"key\"\n\\ with {braces}"
    record = {**custom_record(), odd: "kept"}
    event = event_of(mapper_for(CUSTOM, MappingOptions()).map(record))
    assert event["event_properties"][odd] == "kept"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("text", "text"), (42, 42), (True, True), (2.5, 2.5), (b"\xca\xfe", "cafe"),
     (["a", b"\x01"], ["a", "01"]), (None, "absent")],
    ids=["str", "long", "bool", "double", "bytes", "list", "null"],
)
def test_every_value_is_still_tested_for_its_class_whatever_the_schema_says(
    value: object, expected: object
) -> None:
    """A union-typed field, or a dict built by hand with the schema's keys: each value gets
    the conversion its own class needs, not the one the schema's type would need."""
    schema = writer_schema(CUSTOM)
    mapper = mapper_for(CUSTOM, MappingOptions(), (), schema)
    assert mapper.value_classes["platform"] is str
    event = event_of(mapper.map(custom_record(platform=value)))
    assert event["event_properties"].get("platform", "absent") == expected
    orjson.dumps(event)


def test_single_precision_fields_are_rounded_only_when_they_hold_floats() -> None:
    purchase = "users.behaviors.Purchase"
    mapper = mapper_for(purchase, MappingOptions(), ("price", "latitude"), writer_schema(purchase))
    record = minimal_record(purchase, price=19.989999771118164, currency="EUR", product_id="p")
    assert event_of(mapper.map(record))["price"] == 19.99
    location = "users.behaviors.Location"
    floats = mapper_for(location, MappingOptions(), ("latitude",), writer_schema(location))
    for latitude, expected in ((48.856998443603516, 48.857), (1e300, 1e300), ("48.8", "48.8"),
                               (7, 7)):
        event = event_of(floats.map(minimal_record(location, latitude=latitude)))
        assert event["event_properties"]["latitude"] == expected


def test_the_scan_is_generated_only_where_the_policy_asks_for_it() -> None:
    record = minimal_record(CLICK, user_agent="Mozilla jane.doe@example.com",
                            email_address="jane.doe@example.com", url="https://x.io/?a=1")
    plain = mapper_for(CLICK, MappingOptions(), (), writer_schema(CLICK))
    assert event_of(plain.map(record))["event_properties"]["user_agent"] == (
        "Mozilla jane.doe@example.com")
    assert "_looks" not in next(iter(plain._layouts.values())).source

    scanning = mapper_for(CLICK, MappingOptions(
        properties=PropertiesPolicy(scan="drop"), pii={"email_address": "hash"},
        pii_salt=b"pepper"), (), writer_schema(CLICK))
    properties = event_of(scanning.map(record))["event_properties"]
    assert properties["user_agent"] == "Mozilla "  # the address removed
    assert properties["email_address"] == scanning.options.hash_value("jane.doe@example.com")
    source = next(iter(scanning._layouts.values())).source
    position = list(record).index
    # a field hashed or scanned on its own is not scanned again inline; a free one is
    assert f"_looks(v{position('email_address')})" not in source
    assert f"_looks(v{position('user_agent')})" not in source  # a user agent: on its own
    assert f"_looks(v{position('campaign_name')})" in source


def test_renames_drops_and_top_level_fields_still_apply() -> None:
    options = MappingOptions(device_fields="top_level", types={
        CUSTOM: TypeRule(rename={"plan": "tier", "timezone": "tz"}, drop=frozenset({"app_id"}))})
    event = event_of(mapper_for(CUSTOM, options, (), writer_schema(CUSTOM)).map(
        custom_record(app_id="app")))
    assert event["platform"] == "ios"
    assert event["event_properties"] == {
        "tier": "gold", "braze_id": "5f8e1c2b3a4d5e6f7a8b9c0d", "tz": "Europe/Paris"}


def test_float32_remembers_results_but_keeps_the_sign_of_zero() -> None:
    assert float32(3.140000104904175) == float32(3.140000104904175) == 3.14
    assert math.copysign(1, float32(0.0)) == 1
    assert math.copysign(1, float32(-0.0)) == -1
    assert math.copysign(1, float32(0.0)) == 1
