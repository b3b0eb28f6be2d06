"""``python -m bench.stages [--events N] [--repeats R]``: where a replay's CPU goes, one
stage at a time, on one file of N custom events (default 100,000), and our own cost.

Measured in this process (``time.process_time``, best of R, µs of CPU per event): a bare
``fastavro.reader`` loop (the decode-only baseline), then the replay's own pieces added one
at a time — our checked reader, + mapping, + the duplicate window, + serialising each event.
Then the delivery alone: the file's events, serialised beforehand, handed to the lanes in
the reader's batches and sent over HTTP to the emulator (its own process, rate limits off),
all of this process's threads counted. The whole replay is ``currents-export replay`` of the
file into the emulator, measured by its process CPU (``os.wait4``: its workers included),
less that of a replay of a one-record file (start-up: imports, the check before reading,
the ledger), per event. **Our own cost** is the whole replay's less the decode-only loop's:
what the tool adds to fastavro. Writes a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import fastavro

from bench.emulator import EmulatorProcess
from bench.inputs import Workload
from bench.process import run_measured
from bench.replay import replay_command
from bench.settings import API_KEY
from currents_export.amplitude.api import API_PATHS, REQUEST_LIMITS
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import AmplitudeClient
from currents_export.core.lanes import DEFAULT_LANES, Lanes
from currents_export.core.reader import READER_BATCH
from currents_export.core.seen import SeenIds
from currents_export.currents.reader import open_records
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.mapping import Mapped, MappingOptions, mapped_records
from currents_export.support.jsonbytes import kept_json

CUSTOM = "users.behaviors.CustomEvent"


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    us_per_event: float


def best_cpu_us(repeats: int, events: int, work: Callable[[], int]) -> float:
    """The least process CPU of ``repeats`` runs of ``work``, in µs per event (``work``
    returns how many records it went through: they must be ``events``)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        seen = work()
        spent = time.process_time() - started
        if seen != events:
            raise SystemExit(f"a stage went through {seen} records, not {events}")
        best = min(best, spent)
    return best / events * 1e6


def in_process_stages(path: Path, events: int, repeats: int) -> list[Stage]:
    """The decode-only loop, then our pieces added one at a time."""
    options = MappingOptions()

    def decode() -> int:
        with path.open("rb") as stream:
            return sum(1 for _ in fastavro.reader(stream))

    def checked() -> int:
        with path.open("rb") as stream:
            return sum(1 for _ in open_records(stream, str(path), CUSTOM).records)

    def mapping(duplicates: bool, serialise: bool) -> Callable[[], int]:
        def run() -> int:
            seen = SeenIds()
            repeated = (lambda record: not seen.first_time(record["id"])) if duplicates \
                else None
            count = 0
            with path.open("rb") as stream:
                for _index, _record, result in mapped_records(
                        stream, str(path), options, CUSTOM, repeated=repeated):
                    count += 1
                    if serialise and isinstance(result, Mapped):
                        kept_json(result.event)
            return count
        return run

    return [
        Stage("bare `fastavro.reader` loop (the decode-only baseline)",
              best_cpu_us(repeats, events, decode)),
        Stage("our checked reader", best_cpu_us(repeats, events, checked)),
        Stage("+ mapping", best_cpu_us(repeats, events, mapping(False, False))),
        Stage("+ duplicate window", best_cpu_us(repeats, events, mapping(True, False))),
        Stage("+ serialising (`kept_json`)", best_cpu_us(repeats, events, mapping(True, True))),
    ]


class _Counting:
    """A lanes sink that counts what was delivered (anything else ends the benchmark)."""

    def __init__(self) -> None:
        self.count = 0

    def delivered(self, refs: list[int], repeats_dropped: int = 0) -> None:
        self.count += len(refs)

    def rejected(self, refused: list[tuple[int, str, str]]) -> None:
        raise SystemExit(f"the emulator refused {len(refused)} events: {refused[0][1:]}")

    def abandoned(self, refs: list[int], error: BaseException) -> None:
        raise SystemExit(f"sending failed: {error}")

    def skipped(self, refs: list[int], reason: str) -> None:
        raise SystemExit("the lanes skipped events")


def delivery_us(path: Path, events: int, repeats: int, emulator: EmulatorProcess) -> float:
    """Lanes + HTTP: the file's events, serialised beforehand, through the lanes (in the
    reader's batches) into the emulator; this process's CPU per event sent, best of
    ``repeats``."""
    serialised: list[tuple[bytes, int, tuple[str, ...]]] = []
    with path.open("rb") as stream:
        for index, _record, result in mapped_records(stream, str(path), MappingOptions(),
                                                     CUSTOM):
            if isinstance(result, Mapped):
                event = result.event
                ids = tuple(i for i in (event.get("user_id"), event.get("device_id")) if i)
                serialised.append((kept_json(event), index, ids))
    runs = iter([[PendingEvent(payload, index, ids) for payload, index, ids in serialised]
                 for _ in range(repeats)])  # made before the clock starts

    def deliver() -> int:
        pending = next(runs)
        emulator.reset()
        sink = _Counting()
        client = AmplitudeClient(emulator.url + API_PATHS["http"], API_KEY)
        lanes: Lanes[int] = Lanes(client, REQUEST_LIMITS["http"], lanes=DEFAULT_LANES,
                                  sink=sink, horizon_s=60)
        try:
            for start in range(0, len(pending), READER_BATCH):
                lanes.submit_many(pending[start:start + READER_BATCH])
            lanes.drain()
        finally:
            lanes.close()
            client.close()
        return sink.count

    return best_cpu_us(repeats, len(serialised), deliver)


def replay_cpu_s(file: FixtureFile, emulator: EmulatorProcess, run_dir: Path) -> float:
    """Process CPU (all its processes) of a ``replay`` of one file into the emulator."""
    emulator.reset()
    workload = Workload(label=run_dir.name, root=file.path.parent, files=(file,))
    command, _summary = replay_command(workload, emulator.url, run_dir, "--workers", "1",
                                       "--no-progress")
    child = run_measured(command, run_dir / "replay", timeout_s=600)
    if child.exit_code != 0:
        raise SystemExit(f"the replay failed:\n{child.tail()}")
    return child.cpu_s


def whole_replay_us(file: FixtureFile, tiny: FixtureFile, events: int, repeats: int,
                    emulator: EmulatorProcess, root: Path) -> tuple[float, float]:
    """The replay's CPU per event beyond its start-up, and the start-up's CPU in s."""
    start_up = min(replay_cpu_s(tiny, emulator, root / f"tiny-{i}") for i in range(repeats))
    whole = min(replay_cpu_s(file, emulator, root / f"file-{i}") for i in range(repeats))
    return (whole - start_up) / events * 1e6, start_up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="currents-stages-") as tmp:
        root = Path(tmp)
        [file] = generate_fixtures(root / "large", events_per_type=args.events, seed=11,
                                   files_per_type=1, max_events_per_file=args.events,
                                   event_types=[CUSTOM], duplicate_rate=0.0)
        [tiny] = generate_fixtures(root / "tiny", events_per_type=1, seed=12,
                                   files_per_type=1, event_types=[CUSTOM])
        stages = in_process_stages(file.path, file.records, args.repeats)
        (root / "runs").mkdir()
        with EmulatorProcess(root / "runs" / "emulator.log") as emulator:
            stages.append(Stage(
                "lanes + HTTP alone: the events, serialised beforehand, through the lanes "
                "into the emulator", delivery_us(file.path, file.records, args.repeats,
                                                 emulator)))
            replay_us, start_up_s = whole_replay_us(file, tiny, file.records, args.repeats,
                                                    emulator, root / "runs")
    decode = stages[0].us_per_event
    lines = ["| stage | µs / event |", "|---|--:|"]
    lines += [f"| {stage.name} | {stage.us_per_event:.1f} |" for stage in stages]
    lines.append(f"| whole `replay --workers 1` into the emulator, per event beyond its "
                 f"start-up ({start_up_s:.2f} s of CPU) | {replay_us:.1f} |")
    lines.append(f"| **our own cost** (whole replay − decode-only) | "
                 f"**{replay_us - decode:.1f}** |")
    print(f"{file.records:,} custom events, best of {args.repeats}, process CPU\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
