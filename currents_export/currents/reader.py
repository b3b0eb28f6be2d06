"""Stream Braze records out of an Avro container file with its own writer schema."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import fastavro

from currents_export.currents.schemas import event_type_from_schema_name

log = logging.getLogger(__name__)


class UnreadableObject(Exception):
    """An object that is not a readable Currents Avro file (or broke while being read)."""


@dataclass(slots=True)
class RecordStream:
    """The records of one file, read lazily, and what its header says."""

    event_type: str
    writer_schema: dict[str, Any]
    codec: str
    float_fields: frozenset[str]
    records: Iterator[dict[str, Any]]
    schema_event_type: str | None
    key_event_type: str | None

    @property
    def type_mismatch(self) -> bool:
        return bool(
            self.schema_event_type
            and self.key_event_type
            and self.schema_event_type != self.key_event_type
        )


def _is_float(avro_type: Any) -> bool:
    if avro_type == "float":
        return True
    if isinstance(avro_type, list):
        return any(_is_float(branch) for branch in avro_type)
    return isinstance(avro_type, dict) and avro_type.get("type") == "float"


def float_fields(schema: dict[str, Any]) -> frozenset[str]:
    """Fields stored as single-precision floats (they decode as 3.140000104904175)."""
    return frozenset(f["name"] for f in schema.get("fields", []) if _is_float(f["type"]))


def open_records(
    fileobj: IO[bytes], name: str, key_event_type: str | None = None
) -> RecordStream:
    """Read the header of ``fileobj`` and return a lazy stream of its records.

    The reader only reads forward (no seeks), so ``fileobj`` may be a network stream. The
    event type comes from the schema's record name (``dataexport.S3.inner.<type>``) and is
    cross-checked with ``key_event_type`` (from ``event_type=`` in the key); on a mismatch
    the schema wins and a warning is logged. ``name`` is only used in error messages.
    """
    try:
        avro_reader = fastavro.reader(fileobj)
    except OSError:
        raise
    except Exception as exc:  # fastavro raises ValueError, EOFError, … for bad headers
        raise UnreadableObject(f"{name}: not an Avro container file ({exc})") from exc

    schema = avro_reader.writer_schema
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise UnreadableObject(f"{name}: writer schema is not an Avro record")
    schema_event_type = event_type_from_schema_name(str(schema.get("name", "")))
    event_type = schema_event_type or key_event_type
    if event_type is None:
        raise UnreadableObject(
            f"{name}: cannot tell the event type: schema name {schema.get('name')!r} is not "
            "dataexport.<connection>.inner.<type> and the key has no event_type= segment"
        )
    stream = RecordStream(
        event_type=event_type,
        writer_schema=schema,
        codec=str(avro_reader.codec),
        float_fields=float_fields(schema),
        records=_guarded(avro_reader, name),
        schema_event_type=schema_event_type,
        key_event_type=key_event_type,
    )
    if stream.type_mismatch:
        log.warning(
            "%s: key says event_type=%s but the schema says %s; using the schema's",
            name, key_event_type, schema_event_type,
        )
    return stream


def _guarded(avro_reader: Iterator[Any], name: str) -> Iterator[dict[str, Any]]:
    index = 0
    try:
        for record in avro_reader:
            yield record
            index += 1
    except OSError:
        raise  # the source broke (a network stream): worth retrying, not a bad file
    except Exception as exc:
        raise UnreadableObject(
            f"{name}: unreadable after record {index} ({type(exc).__name__}: {exc})"
        ) from exc
