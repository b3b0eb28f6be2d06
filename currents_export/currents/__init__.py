"""The Braze side: object keys, record streams and schemas."""

from currents_export.currents.keys import CurrentsKey, NotACurrentsKey, parse_key
from currents_export.currents.reader import RecordStream, UnreadableObject, open_records
from currents_export.currents.schemas import FieldSpec, event_type_fields, known_event_types

__all__ = [
    "CurrentsKey",
    "FieldSpec",
    "NotACurrentsKey",
    "RecordStream",
    "UnreadableObject",
    "event_type_fields",
    "known_event_types",
    "open_records",
    "parse_key",
]
