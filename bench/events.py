"""Decode and map records the way the project does, through its public mapping API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from currents_export.mapping import Mapped, MappingOptions, Outcome, mapped_records


def outcomes(path: Path, event_type: str) -> Iterator[Outcome]:
    """What the mapping makes of each record of one file (default options), read and
    mapped by ``mapped_records`` as the replay reads and maps it."""
    with path.open("rb") as f:
        for _index, _record, outcome in mapped_records(f, str(path), MappingOptions(),
                                                       event_type):
            yield outcome


def mapped_events(path: Path, event_type: str) -> Iterator[dict[str, Any]]:
    """The Amplitude events of one file (records the mapping skips are left out)."""
    for outcome in outcomes(path, event_type):
        if isinstance(outcome, Mapped):
            yield outcome.event
