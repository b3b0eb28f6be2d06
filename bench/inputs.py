"""The benchmark's input files, generated with the project's fixture generator (untimed)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from bench.checks import require
from bench.settings import SEED
from currents_export.currents.fixtures import FixtureFile, generate_fixtures
from currents_export.currents.schemas import known_event_types

CUSTOM_EVENT = "users.behaviors.CustomEvent"

# The realistic hour's busy types and how many full files each writes in the hour.
BUSY_TYPES: dict[str, int] = {
    CUSTOM_EVENT: 3,
    "users.behaviors.app.SessionStart": 2,
    "users.messages.email.Send": 2,
    "users.messages.email.Delivery": 2,
    "users.messages.pushnotification.Send": 1,
}
STEADY_SHARE = 1 / 3  # of the quiet types, those with a file in every window
MAX_SPARSE_WINDOWS = 6  # the other quiet types have a file in 1..6 of the windows


@dataclass(frozen=True, slots=True)
class Workload:
    """A set of Currents files measured together."""

    label: str
    root: Path  # the directory holding exactly these files
    files: tuple[FixtureFile, ...]
    shape: str = ""  # how the files were chosen, for the report

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


def _one_file(root: Path, event_type: str, events: int, seed: int) -> FixtureFile:
    """One file of ``events`` records of ``event_type`` (seeds differ per window: unique ids)."""
    files = generate_fixtures(
        root,
        events_per_type=events,
        event_types=[event_type],
        seed=seed,
        files_per_type=1,
        max_events_per_file=events,
        duplicate_rate=0.0,
    )
    require(len(files) == 1 and files[0].records == events, f"bad fixture for {event_type}")
    return files[0]


def _distinct(files: list[FixtureFile], what: str) -> None:
    require(len({f.path for f in files}) == len(files), f"{what}: two files share a key")


def realistic_hour(
    root: Path, *, windows: int, busy_events: int, quiet_min: int, quiet_max: int
) -> Workload:
    """An hour of all types in Currents-sized files (Braze closes a file per type every
    5 minutes or at 15,000 events).

    Busy types (:data:`BUSY_TYPES`) write full ``busy_events`` files, spread over the
    windows. Each quiet type writes one file per window it is active in: a third of them
    (seeded choice) in every window, the others in 1..6 windows; a file holds
    ``quiet_min``..``quiet_max`` records, log-uniformly (most are small). A type's ``i``-th
    file in window ``w`` uses seed ``SEED + 100 i + w``, so no id repeats across files.
    """
    rng = random.Random(f"{SEED}:realistic-hour")
    types = known_event_types()
    quiet = [t for t in types if t not in BUSY_TYPES]
    steady = set(rng.sample(quiet, round(len(quiet) * STEADY_SHARE)))
    plan: list[tuple[int, int, str, int]] = []  # (window, ordinal in the type, type, records)
    for event_type, count in BUSY_TYPES.items():
        plan += [(i * windows // count, i, event_type, busy_events) for i in range(count)]
    for event_type in quiet:
        active = windows if event_type in steady else rng.randint(
            1, min(MAX_SPARSE_WINDOWS, windows)
        )
        for window in sorted(rng.sample(range(windows), active)):
            size = round(quiet_min * (quiet_max / quiet_min) ** rng.random())
            plan.append((window, 0, event_type, max(quiet_min, min(quiet_max, size))))
    files = [_one_file(root, t, n, SEED + 100 * i + w) for w, i, t, n in sorted(plan)]
    _distinct(files, "realistic hour")
    workload = Workload("realistic hour", root, tuple(files))
    require(workload.event_types == len(types), "the realistic hour misses an event type")
    busy = sum(BUSY_TYPES.values())
    busy_list = ", ".join(f"{t.split('.', 2)[2]} × {c}" for t, c in BUSY_TYPES.items())
    sizes = [f.records for f in files if f.event_type not in BUSY_TYPES]
    shape = (
        f"{len(types)} types, {windows} five-minute window{'s' if windows != 1 else ''}: "
        f"{len(BUSY_TYPES)} busy types in {busy} files of {busy_events:,} events "
        f"({busy_list}); "
        f"{len(quiet)} quiet types in {len(sizes):,} files of {min(sizes)}–{max(sizes)} events "
        f"(median {sorted(sizes)[len(sizes) // 2]}; {len(steady)} types in every window)"
    )
    return Workload(workload.label, root, workload.files, shape)


def small_files(root: Path, *, files: int, events: int) -> Workload:
    """``files`` files of ``events`` records each, the types taken in turn (all 94 when
    there are enough files); file ``i`` is in window ``i // 94`` (seed ``SEED + window``)."""
    types = known_event_types()
    written = [
        _one_file(root, types[i % len(types)], events, SEED + 1_000 + i // len(types))
        for i in range(files)
    ]
    _distinct(written, "small files")
    kinds = len({f.event_type for f in written})
    shape = (
        f"{files:,} files of {events:,} events, {kinds} types in turn "
        f"(in {math.ceil(files / len(types))} window{'s' if files > len(types) else ''})"
    )
    return Workload("small files only", root, tuple(written), shape)
