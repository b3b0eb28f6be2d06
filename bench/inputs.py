"""The benchmark's input files, generated with the project's fixture generator (untimed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.checks import require
from bench.settings import SEED
from currents_export.currents.fixtures import FixtureFile, generate_fixtures

CUSTOM_EVENT = "users.behaviors.CustomEvent"


@dataclass(frozen=True, slots=True)
class Workload:
    """A set of Currents files measured together."""

    label: str
    root: Path  # the directory holding exactly these files
    files: tuple[FixtureFile, ...]

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def paths(self) -> list[Path]:
        return [f.path for f in self.files]

    @property
    def event_types(self) -> int:
        return len({f.event_type for f in self.files})


def custom_events(root: Path, events: int) -> Workload:
    """Exactly one file of ``events`` custom events, without duplicates."""
    files = generate_fixtures(
        root,
        events_per_type=events,
        event_types=[CUSTOM_EVENT],
        seed=SEED,
        files_per_type=1,
        max_events_per_file=events,
        duplicate_rate=0.0,
    )
    require(len(files) == 1, f"expected one fixture file, got {len(files)}")
    require(files[0].records == events, f"expected {events} records, got {files[0].records}")
    return Workload(f"CustomEvent × {events:,}", root, tuple(files))


def all_types(root: Path, per_type: int) -> Workload:
    """One file per known event type, ``per_type`` records each, without duplicates."""
    files = generate_fixtures(
        root,
        events_per_type=per_type,
        seed=SEED,
        files_per_type=1,
        max_events_per_file=max(per_type, 1),
        duplicate_rate=0.0,
    )
    types = len({f.event_type for f in files})
    require(len(files) == types, f"expected one file per type, got {len(files)} for {types}")
    return Workload(f"all {types} types × {per_type:,}", root, tuple(files))
