"""Hand-made Braze records for unit tests (the fixture generator makes realistic ones)."""

from __future__ import annotations

from typing import Any

from currents_export.currents.schemas import event_type_fields

_SAMPLE_BY_TYPE: dict[str, Any] = {
    "string": "value",
    "int": 7,
    "long": 7,
    "float": 1.5,
    "double": 1.5,
    "boolean": True,
}


def minimal_record(event_type: str, **values: Any) -> dict[str, Any]:
    """A record with every field of ``event_type``: required ones filled, nullable ones null.

    Identity defaults: external id ``cust_00042``, Braze id, and no device; ``values``
    override anything (use None to clear).
    """
    record: dict[str, Any] = {}
    for field in event_type_fields(event_type):
        if field.nullable:
            record[field.name] = None
        elif field.item_type is not None:
            record[field.name] = []
        else:
            record[field.name] = _SAMPLE_BY_TYPE[field.avro_type]
    record["id"] = "6f1d9c3e-1b2a-4c5d-8e9f-0a1b2c3d4e5f"
    record["time"] = 1_768_471_200
    if "user_id" in record:
        record["user_id"] = "5f8e1c2b3a4d5e6f7a8b9c0d"
    if "external_user_id" in record:
        record["external_user_id"] = "cust_00042"
    if "properties" in record:
        record["properties"] = "{}"
    if "time_ms" in record:
        record["time_ms"] = None if field_is_nullable(event_type, "time_ms") else 1_768_471_200_123
    record.update(values)
    return record


def field_is_nullable(event_type: str, name: str) -> bool:
    return next(f.nullable for f in event_type_fields(event_type) if f.name == name)
