"""The benchmark's input files, generated with the project's fixture generator (untimed)."""

from __future__ import annotations

import math
import random
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import fastavro

from bench.checks import require
from bench.settings import SEED
from currents_export.currents.keys import object_key, parse_key
from currents_export.currents.schemas import known_event_types
from currents_export.kit.fixtures import FixtureFile, generate_fixtures, write_avro

CUSTOM_EVENT = "users.behaviors.CustomEvent"

# The realistic hour's busy types and how many full files each writes in the hour.
BUSY_TYPES: dict[str, int] = {
    CUSTOM_EVENT: 3,
    "users.behaviors.app.SessionStart": 2,
    "users.messages.email.Send": 2,
    "users.messages.email.Delivery": 2,
    "users.messages.pushnotification.Send": 1,
}
BRAZE_FILE_EVENTS = 15_000  # Braze closes a file at this many events (or after 5 minutes)
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


def custom_events(root: Path, events: int, files: int = 1) -> Workload:
    """Exactly ``files`` files of ``events`` custom events each, in successive queue hours,
    from one generation (one seed), without duplicates: no id repeats across the files."""
    written = generate_fixtures(
        root,
        events_per_type=events * files,
        event_types=[CUSTOM_EVENT],
        seed=SEED,
        files_per_type=files,
        max_events_per_file=events,
        duplicate_rate=0.0,
    )
    require(len(written) == files, f"expected {files} fixture files, got {len(written)}")
    for f in written:
        require(f.records == events, f"expected {events} records, got {f.records} in {f.key}")
    if files == 1:
        return Workload(f"CustomEvent × {events:,}", root, tuple(written))
    _distinct(written, "custom-event files")
    ids = {record["id"] for f in written for record in _read_records(f.path)}
    require(len(ids) == events * files, "custom-event files: two records share an id")
    shape = f"{files:,} files of {events:,} events, one per queue hour"
    return Workload(f"CustomEvent, {files:,} files × {events:,}", root, tuple(written), shape)


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


def _shares(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, exactly (largest remainders first)."""
    whole = sum(weights)
    counts = [total * weight // whole for weight in weights]
    by_remainder = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for index in by_remainder[: total - sum(counts)]:
        counts[index] += 1
    return counts


def _read_records(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        return [cast(dict[str, Any], record) for record in fastavro.reader(f)]


def _in_hour(records: Sequence[dict[str, Any]], hour: int) -> Iterator[dict[str, Any]]:
    """Copies of ``records`` for queue hour ``hour`` (0 = the generated one): the id's first
    8 hex digits become the hour's number, times move ``hour`` hours later."""
    tag, shift_s = f"{hour:08x}", 3600 * hour
    for record in records:
        moved = dict(record)
        moved["id"] = tag + record["id"][8:]
        if isinstance(record.get("time"), int):
            moved["time"] = record["time"] + shift_s
        if isinstance(record.get("time_ms"), int):
            moved["time_ms"] = record["time_ms"] + 1000 * shift_s
        yield moved


def queue_hours(
    root: Path, *, events: int, hours: int, file_events: int = BRAZE_FILE_EVENTS
) -> Workload:
    """``events`` events of the busy types (:data:`BUSY_TYPES`, in proportion to their file
    counts there) spread evenly over ``hours`` successive queue hours, in the Currents layout
    (``…/event_type=T/date=YYYY-MM-DD-HH/…``); a type's events of an hour are in as few
    files of at most ``file_events`` as hold them.

    Each type's largest hour is generated once (``generate_fixtures``, one seed for all
    types: one integration); every hour is written from those records with ``write_avro``,
    ids made distinct by the hour's number in their first 8 hex digits (the rest of each
    generated id is checked to be unique) and times moved by the hour.
    """
    require(hours >= 1 and events >= hours, f"{events:,} events cannot fill {hours} hours")
    types = list(BUSY_TYPES)
    per_hour = [_shares(n, list(BUSY_TYPES.values())) for n in _shares(events, [1] * hours)]
    written: list[FixtureFile] = []
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f"{root.name}-base-") as scratch:
        bases = []
        for index, event_type in enumerate(types):
            largest = max(counts[index] for counts in per_hour)
            base = _one_file(Path(scratch), event_type, largest, SEED + 10_000)
            bases.append((base, _read_records(base.path)))
        suffixes = {record["id"][8:] for _, records in bases for record in records}
        require(
            len(suffixes) == sum(len(records) for _, records in bases),
            "queue hours: two generated ids share their last 28 characters",
        )
        for index, (base, records) in enumerate(bases):
            key = parse_key(base.key)
            require(
                None not in (key.queue_hour, key.schema_id, key.partition, key.offset),
                f"queue hours: unexpected fixture key {base.key}",
            )
            assert key.queue_hour is not None and key.schema_id is not None
            assert key.partition is not None and key.offset is not None
            prefix = base.key.split("/", 1)[0]
            integration = f"dataexport.{key.cluster}.{key.connection}.integration." \
                f"{key.integration_id}"
            zone = base.key.split("/")[-2]
            offset = key.offset
            for hour, counts in enumerate(per_hour):
                count, start = counts[index], 0
                for size in _shares(count, [1] * math.ceil(count / file_events)):
                    name = object_key(
                        prefix, integration, base.event_type,
                        key.queue_hour + timedelta(hours=hour), key.schema_id, zone,
                        key.partition, offset,
                    )
                    require(
                        hour > 0 or start > 0 or name == base.key,
                        f"queue hours: rebuilt key {name} differs from {base.key}",
                    )
                    path = root / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with path.open("wb") as f:
                        n = write_avro(
                            f, base.event_type, _in_hour(records[start : start + size], hour)
                        )
                    require(n == size, f"queue hours: wrote {n} records, wanted {size}")
                    written.append(FixtureFile(path, name, base.event_type, size, 0))
                    start += size
                    offset += size
    _distinct(written, "queue hours")
    workload = Workload(f"{events:,} events over {hours} queue hours", root, tuple(written))
    require(workload.records == events, f"queue hours: {workload.records} records, not {events}")
    sizes = [f.records for f in written]
    mix = ", ".join(f"{t.split('.', 2)[2]} {w}" for t, w in BUSY_TYPES.items())
    shape = (
        f"{len(types)} types in proportions {mix}, {events / hours:,.0f} events an hour, "
        f"{len(written):,} files of {min(sizes):,}–{max(sizes):,} events "
        f"(at most {file_events:,})"
    )
    return Workload(workload.label, root, workload.files, shape)


RATE_USERS = 400  # the users of identified_events (besides the hot user)
HOT_USER = "bench-hot-user"


def _identity(rng: random.Random, user: str) -> dict[str, str]:
    """A Currents identity: an external id, one device (a UUID) and Braze's internal id."""
    return {
        "external_user_id": user,
        "device_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": f"{rng.getrandbits(96):024x}",
    }


def identified_events(
    root: Path, events: int, files: int, *, seed: int, label: str, hot: int = 0
) -> Workload:
    """``events`` custom events in ``files`` files (one per queue hour, one generation:
    ``seed``; different seeds, different ids), every record with an external user id and a
    device id, so that every record is delivered (none skipped for want of an identity):
    ``hot`` of them, spread evenly through the files, are one user's on one device, the
    others go to :data:`RATE_USERS` users in turn, each with one device of its own."""
    require(events >= files >= 1, f"{events:,} events cannot fill {files} files")
    require(0 <= hot <= events, f"{hot:,} of {events:,} events cannot be one user's")
    rng = random.Random(f"{seed}:identities")
    hot_identity = _identity(rng, HOT_USER)
    users = [_identity(rng, f"bench-user-{index:04d}") for index in range(RATE_USERS)]
    written: list[FixtureFile] = []
    index = cold = 0
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent, prefix=f"{root.name}-base-") as scratch:
        generated = generate_fixtures(
            Path(scratch),
            events_per_type=events,
            event_types=[CUSTOM_EVENT],
            seed=seed,
            files_per_type=files,
            max_events_per_file=math.ceil(events / files),
            duplicate_rate=0.0,
        )
        require(len(generated) == files, f"expected {files} files, got {len(generated)}")
        for base in generated:
            records = _read_records(base.path)
            for record in records:
                if (index + 1) * hot // events > index * hot // events:  # evenly spread
                    record.update(hot_identity)
                else:
                    record.update(users[cold % RATE_USERS])
                    cold += 1
                index += 1
            path = root / base.key
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                n = write_avro(f, base.event_type, records)
            require(n == base.records, f"{label}: wrote {n} records, wanted {base.records}")
            written.append(FixtureFile(path, base.key, base.event_type, n, 0))
    _distinct(written, label)
    require(cold == events - hot, f"{label}: {events - cold:,} hot events, wanted {hot:,}")
    sizes = [f.records for f in written]
    users_text = f"{min(RATE_USERS, events - hot):,} users with a device each"
    size_text = f"{min(sizes):,}" + ("" if min(sizes) == max(sizes) else f"–{max(sizes):,}")
    shape = (
        f"{files:,} file{'s' if files != 1 else ''} of {size_text} "
        f"custom events, one per queue hour; "
        + (f"{hot:,} events one user's on one device, the other {events - hot:,} "
           f"spread over {users_text}" if hot else f"spread over {users_text}")
    )
    workload = Workload(label, root, tuple(written), shape)
    require(workload.records == events, f"{label}: {workload.records} records, not {events}")
    return workload
