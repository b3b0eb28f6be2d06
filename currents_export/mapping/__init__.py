"""Braze record → Amplitude event: profiles, per-type names and the mapping rules."""

from currents_export.mapping.mapper import (
    NO_IDENTITY,
    PROPERTIES_NOT_JSON,
    EventMapper,
    Mapped,
    MappingOptions,
    MapResult,
    Rejected,
    Skipped,
    float32,
    mapper_for,
)
from currents_export.mapping.names import braze_event_type, plain_event_type
from currents_export.mapping.stream import (
    DUPLICATE,
    Duplicate,
    MappedRecords,
    Outcome,
    mapped_records,
)

__all__ = [
    "DUPLICATE",
    "NO_IDENTITY",
    "PROPERTIES_NOT_JSON",
    "Duplicate",
    "EventMapper",
    "MapResult",
    "Mapped",
    "MappedRecords",
    "MappingOptions",
    "Outcome",
    "Rejected",
    "Skipped",
    "braze_event_type",
    "float32",
    "mapped_records",
    "mapper_for",
    "plain_event_type",
]
