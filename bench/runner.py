"""One benchmark run: inputs, the emulator process, then every measurement in turn."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench import inputs
from bench.decode import measure_decode
from bench.emulator import EmulatorProcess, measure_emulator
from bench.inputs import Workload
from bench.replay import ReplayRun, replay_has_workers, run_replay
from bench.results import (
    HOUR_VS_DECODE,
    SHAPE_VS_SDK,
    SMALL_FILES_VS_DECODE,
    FilesResult,
    MemoryResult,
    MemoryRuns,
    Results,
    ShapeResult,
    Target,
    WorkloadResult,
    machine_info,
)
from bench.sdk import run_sdk
from bench.settings import Settings

T = TypeVar("T")


def say(message: str) -> None:
    """Progress, on stderr (stdout gets the report)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def repeated(name: str, repeats: int, measure: Callable[[int], T]) -> tuple[T, ...]:
    """``measure(i)`` for each repeat, with a progress line per run."""
    runs = []
    for index in range(repeats):
        say(f"{name} ({index + 1}/{repeats})")
        runs.append(measure(index))
    return tuple(runs)


def measure_shape(
    workload: Workload,
    emulator: EmulatorProcess,
    runs_dir: Path,
    settings: Settings,
    decode_target: Target,
    sdk_target: Target | None,
) -> ShapeResult:
    """Decode, replay (``--workers 1`` and ``2`` when replay has the option) and the SDK on
    one real-shape workload, the emulator answering after ``settings.latency_ms``."""
    latency, repeats = settings.latency_ms, settings.latency_repeats
    say(f"(a) decode {workload.label}")
    decode = measure_decode(workload, settings.repeats)
    with_workers = replay_has_workers()

    def replays(workers: int | None) -> tuple[ReplayRun, ...]:
        tag = f"{workload.label.replace(' ', '-')}-w{workers or 0}"
        flag = "" if workers is None else f" --workers {workers}"
        return repeated(
            f"(b) replay{flag} {workload.label}, {latency} ms latency",
            repeats,
            lambda i: run_replay(
                workload, emulator, runs_dir / f"{tag}-{i}", settings.timeout_s,
                workers=workers, latency_ms=latency,
            ),
        )

    workers1 = replays(1 if with_workers else None)
    workers2 = replays(2) if with_workers else ()
    sdks = repeated(
        f"(c) SDK {workload.label}, {latency} ms latency",
        repeats,
        lambda i: run_sdk(
            workload, emulator,
            runs_dir / f"sdk-{workload.label.replace(' ', '-')}-{i}", settings.timeout_s,
            latency_ms=latency,
        ),
    )
    return ShapeResult(
        label=workload.label,
        shape=workload.shape,
        files=len(workload.files),
        records=workload.records,
        event_types=workload.event_types,
        latency_ms=latency,
        decode=decode,
        workers1=workers1,
        workers2=workers2,
        sdks=sdks,
        decode_target=decode_target,
        sdk_target=sdk_target,
    )


def measure_files(
    workload: Workload, emulator: EmulatorProcess, runs_dir: Path, settings: Settings
) -> FilesResult:
    """Decode-only over all of ``workload``'s files in this process, then ``replay DIR``
    with ``--workers 1`` and ``--workers 2`` (replay as it is, once, when it has no
    ``--workers``), ``settings.repeats`` runs each, the emulator answering at once; every
    replay resets the emulator and is checked; the emulator is reset afterwards."""
    say(f"(a) decode {workload.label}")
    decode = measure_decode(workload, settings.repeats)
    with_workers = replay_has_workers()
    tag = workload.label.replace(" ", "-").replace(",", "")

    def replays(workers: int | None) -> tuple[ReplayRun, ...]:
        flag = "" if workers is None else f" --workers {workers}"
        return repeated(
            f"(b) replay{flag} {workload.label}",
            settings.repeats,
            lambda i: run_replay(
                workload, emulator, runs_dir / f"{tag}-w{workers or 0}-{i}", settings.timeout_s,
                workers=workers,
            ),
        )

    workers1 = replays(1 if with_workers else None)
    workers2 = replays(2) if with_workers else ()
    emulator.reset()
    return FilesResult(
        label=workload.label,
        shape=workload.shape,
        files=len(workload.files),
        records=workload.records,
        decode=decode,
        workers1=workers1,
        workers2=workers2,
    )


def measure_memory(
    workload: Workload, hours: int, emulator: EmulatorProcess, runs_dir: Path, settings: Settings
) -> MemoryRuns:
    """Replays of ``workload`` (``--workers 1`` when replay has the option, other options
    at their defaults) into an emulator answering at once, each checked like every replay;
    the emulator is reset afterwards so it does not keep the events until the next run."""
    workers = 1 if replay_has_workers() else None
    flag = "" if workers is None else f" --workers {workers}"
    tag = workload.label.replace(" ", "-").replace(",", "")
    runs = repeated(
        f"(d) memory: replay{flag} {workload.label}",
        settings.repeats,
        lambda i: run_replay(
            workload, emulator, runs_dir / f"memory-{tag}-{i}", settings.timeout_s,
            workers=workers,
        ),
    )
    emulator.reset()
    return MemoryRuns(
        label=workload.label,
        records=workload.records,
        files=len(workload.files),
        hours=hours,
        shape=workload.shape,
        replays=runs,
    )


def run(settings: Settings, command: str) -> Results:
    """Measure everything; raises ``CheckFailed`` when a result is wrong."""
    with tempfile.TemporaryDirectory(prefix="currents-bench-") as tmp:
        root = Path(tmp)
        say(f"generating inputs in {root} (not timed)")
        large = inputs.custom_events(root / "large", settings.events)
        mix = inputs.all_types(root / "mix", settings.mix_per_type)
        ten_files = inputs.custom_events(
            root / "ten-files", settings.ten_file_events, files=settings.ten_files
        )
        hour = inputs.realistic_hour(
            root / "hour",
            windows=settings.hour_windows,
            busy_events=settings.hour_busy_events,
            quiet_min=settings.hour_quiet_min,
            quiet_max=settings.hour_quiet_max,
        )
        small_files = inputs.small_files(
            root / "small-files", files=settings.small_files, events=settings.small_file_events
        )
        hours = settings.memory_hours
        memory_small = inputs.queue_hours(
            root / "hours-small", events=settings.memory_events, hours=hours
        )
        memory_large = inputs.queue_hours(
            root / "hours-large", events=settings.memory_large_events, hours=hours
        )
        say("starting the emulator")
        with EmulatorProcess(root / "emulator.log") as emulator:
            emulator_config = emulator.config()

            def replays(workload: Workload, tag: str) -> tuple[ReplayRun, ...]:
                return repeated(
                    f"(b) replay {workload.label}",
                    settings.repeats,
                    lambda i: run_replay(
                        workload, emulator, root / "runs" / f"{tag}-{i}", settings.timeout_s
                    ),
                )

            say(f"(a) decode {large.label}")
            large_decode = measure_decode(large, settings.repeats)
            large_result = WorkloadResult(
                large.label, large.records, large.event_types, large_decode,
                replays(large, "replay-large"),
            )
            sdks = repeated(
                f"(c) SDK {large.label}",
                settings.repeats,
                lambda i: run_sdk(large, emulator, root / "runs" / f"sdk-{i}", settings.timeout_s),
            )
            say(f"(e) emulator alone, {large.label}")
            emulator_alone = measure_emulator(large, emulator, settings.repeats)
            say(f"(a) decode {mix.label}")
            mix_decode = measure_decode(mix, settings.repeats)
            mix_result = WorkloadResult(
                mix.label, mix.records, mix.event_types, mix_decode, replays(mix, "replay-mix")
            )
            ten_files_result = measure_files(ten_files, emulator, root / "runs", settings)
            shapes = (
                measure_shape(
                    hour, emulator, root / "runs", settings, HOUR_VS_DECODE, SHAPE_VS_SDK
                ),
                measure_shape(
                    small_files, emulator, root / "runs", settings, SMALL_FILES_VS_DECODE, None
                ),
            )
            memory = MemoryResult(
                small=measure_memory(memory_small, hours, emulator, root / "runs", settings),
                large=measure_memory(memory_large, hours, emulator, root / "runs", settings),
            )
        return Results(
            command=command,
            machine=machine_info(),
            emulator_config=emulator_config,
            repeats=settings.repeats,
            large=large_result,
            sdks=sdks,
            emulator_alone=emulator_alone,
            mix=mix_result,
            ten_files=ten_files_result,
            shapes=shapes,
            memory=memory,
            replay_has_workers=replay_has_workers(),
        )
