"""Decode and map records the way the project does, through its public mapping API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import fastavro

from currents_export.currents.reader import float_fields
from currents_export.mapping import EventMapper, Mapped, MappingOptions, mapper_for


def mapper_for_reader(reader: Any, event_type: str) -> EventMapper:
    """The project's mapper for one file (default options, floats from its writer schema)."""
    return mapper_for(event_type, MappingOptions(), float_fields(reader.writer_schema))


def mapped_events(path: Path, event_type: str) -> Iterator[dict[str, Any]]:
    """The Amplitude events of one file (records the mapping skips are left out)."""
    with path.open("rb") as f:
        reader = fastavro.reader(f)
        mapper = mapper_for_reader(reader, event_type)
        for record in reader:
            result = mapper.map(cast(dict[str, Any], record))
            if isinstance(result, Mapped):
                yield result.event
