"""Typed view of the Currents catalogue and the Avro writer schemas built from it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from currents_export.currents.catalogue import EVENT_TYPE_FIELDS

SCHEMA_NAMESPACE_ROOT = "dataexport.S3.inner"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a Currents event type."""

    name: str
    avro_type: str  # "string", "int", …, or "array<string>" / "array<string?>"
    nullable: bool
    pii: bool

    @property
    def item_type(self) -> str | None:
        """The item type of an array field (without ``?``), else None."""
        if not self.avro_type.startswith("array<"):
            return None
        return self.avro_type[len("array<") : -1].rstrip("?")

    @property
    def items_nullable(self) -> bool:
        return self.avro_type.endswith("?>")

    def to_avro(self) -> dict[str, Any]:
        base: Any = self.avro_type
        if self.item_type is not None:
            items: Any = ["null", self.item_type] if self.items_nullable else self.item_type
            base = {"type": "array", "items": items}
        if self.nullable:
            return {"name": self.name, "type": ["null", base], "default": None}
        return {"name": self.name, "type": base}


def parse_field(spec: str) -> FieldSpec:
    """Parse one catalogue entry such as ``"external_user_id string? pii"``."""
    parts = spec.split()
    name, type_part, flags = parts[0], parts[1], parts[2:]
    nullable = type_part.endswith("?")  # "array<string?>" ends in ">", so stays required
    avro_type = type_part[:-1] if nullable else type_part
    return FieldSpec(name=name, avro_type=avro_type, nullable=nullable, pii="pii" in flags)


@cache
def event_type_fields(event_type: str) -> tuple[FieldSpec, ...]:
    """Fields of a known event type, in writer-schema order (KeyError when unknown)."""
    return tuple(parse_field(spec) for spec in EVENT_TYPE_FIELDS[event_type])


def known_event_types() -> list[str]:
    return sorted(EVENT_TYPE_FIELDS)


def pii_fields() -> frozenset[str]:
    """Every field name Braze marks as personal data in at least one event type."""
    return frozenset(
        field.name for event_type in EVENT_TYPE_FIELDS for field in event_type_fields(event_type)
        if field.pii
    )


def record_full_name(event_type: str) -> str:
    return f"{SCHEMA_NAMESPACE_ROOT}.{event_type}"


def writer_schema(event_type: str) -> dict[str, Any]:
    """The Avro record schema Braze writes for ``event_type`` (name, namespace, fields)."""
    namespace, _, name = record_full_name(event_type).rpartition(".")
    return {
        "type": "record",
        "name": name,
        "namespace": namespace,
        "fields": [field.to_avro() for field in event_type_fields(event_type)],
    }


def event_type_from_schema_name(full_name: str) -> str | None:
    """``dataexport.S3.inner.users.messages.email.Send`` → ``users.messages.email.Send``.

    Accepts any connection segment (``dataexport.<X>.inner.``); None when the name does not
    look like a Currents record name.
    """
    parts = full_name.split(".")
    if len(parts) < 4 or parts[0] != "dataexport" or parts[2] != "inner":
        return None
    return ".".join(parts[3:])
