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
    json_safe,
    mapper_for,
)
from currents_export.mapping.names import braze_event_type, plain_event_type

__all__ = [
    "NO_IDENTITY",
    "PROPERTIES_NOT_JSON",
    "EventMapper",
    "MapResult",
    "Mapped",
    "MappingOptions",
    "Rejected",
    "Skipped",
    "braze_event_type",
    "float32",
    "json_safe",
    "mapper_for",
    "plain_event_type",
]
