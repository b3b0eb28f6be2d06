"""The Braze side: object keys, record streams and schemas."""

from currents_export.currents.keys import CurrentsKey, parse_key
from currents_export.currents.reader import RecordStream, open_records
from currents_export.currents.schemas import FieldSpec, event_type_fields, known_event_types

__all__ = [
    "CurrentsKey",
    "FieldSpec",
    "RecordStream",
    "event_type_fields",
    "known_event_types",
    "open_records",
    "parse_key",
]
