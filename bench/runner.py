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
from bench.rate import (
    CasePlan,
    RateCase,
    RateResult,
    check_delivered,
    plan_cases,
    replays_together,
    statuses,
)
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
    Unlimited,
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


def measure_rate(
    plans: list[CasePlan], left_out: list[str], emulator: EmulatorProcess, runs_dir: Path,
    settings: Settings,
) -> RateResult:
    """(f) Every planned case of the rate-limited workload in turn, each replay (or
    replays started together) into a freshly reset emulator with the case's limits and
    ``settings.latency_ms``; the emulator is reset afterwards."""
    cases = tuple(measure_rate_case(plan, emulator, runs_dir, settings) for plan in plans)
    emulator.reset()
    return RateResult(cases, tuple(left_out), settings.latency_ms, settings.smoke)


def measure_rate_case(
    plan: CasePlan, emulator: EmulatorProcess, runs_dir: Path, settings: Settings
) -> RateCase:
    """One case: its start-up (when its bound has one: the same setup, tiny files), then
    the case itself, checked (every event delivered)."""
    latency = settings.latency_ms
    name = f"(f) rate {plan.number}. {plan.name}"
    startup_s = None
    if plan.startup:
        say(f"{name}: start-up, {len(plan.startup)} × {plan.startup[0].label}")
        emulator.reset(latency, plan.emulator_limits)
        runs = replays_together(plan.startup, plan.options, emulator,
                                runs_dir / f"rate-{plan.number}-startup", settings.timeout_s)
        check_delivered(runs, plan.startup, emulator.stats(), f"{name}, start-up")
        startup_s = max(run.wall_s for run in runs)
    say(f"{name}: {len(plan.workloads)} × {plan.workloads[0].label}, {latency} ms latency")
    emulator.reset(latency, plan.emulator_limits)
    runs = replays_together(plan.workloads, plan.options, emulator,
                            runs_dir / f"rate-{plan.number}", settings.timeout_s)
    stats = emulator.stats()
    check_delivered(runs, plan.workloads, stats, name)
    case = RateCase(
        number=plan.number,
        name=plan.name,
        limit=plan.limit,
        budget=plan.budget,
        shape=plan.workloads[0].shape,
        emulator_limits=plan.emulator_limits,
        options=plan.options,
        latency_ms=latency,
        ideal_events=plan.ideal_events,
        ideal_rate=plan.ideal_rate,
        runs=runs,
        startup_s=startup_s,
        allowance_s=plan.allowance_s,
        allowance=plan.allowance,
        max_refused=plan.max_refused,
        stored=int(stats["events_stored"]),
        emulator_requests=int(stats["requests"]),
        statuses=statuses(stats),
    )
    measured = ", ".join(f"{run.wall_s:.1f} s" for run in runs)
    verdict = "within" if case.passed else "MISSED"
    say(f"{name}: {measured} (ideal {case.ideal_s:.1f} s), {verdict} its bound "
        f"(≤ {case.bound_s:.1f} s"
        + ("" if case.max_refused is None else
           f", refused {case.refused_share:.1%} ≤ {case.max_refused:.0%}")
        + f"); emulator: {case.statuses}")
    return case


UnlimitedInputs = tuple[Workload, Workload, Workload, Workload, Workload, Workload, Workload]


def unlimited_inputs(root: Path, settings: Settings) -> UnlimitedInputs:
    """The files of the workloads without limits: large, mix, ten files, the realistic hour,
    small files, the two memory sizes."""
    return (
        inputs.custom_events(root / "large", settings.events),
        inputs.all_types(root / "mix", settings.mix_per_type),
        inputs.custom_events(
            root / "ten-files", settings.ten_file_events, files=settings.ten_files
        ),
        inputs.realistic_hour(
            root / "hour",
            windows=settings.hour_windows,
            busy_events=settings.hour_busy_events,
            quiet_min=settings.hour_quiet_min,
            quiet_max=settings.hour_quiet_max,
        ),
        inputs.small_files(
            root / "small-files", files=settings.small_files, events=settings.small_file_events
        ),
        inputs.queue_hours(
            root / "hours-small", events=settings.memory_events, hours=settings.memory_hours
        ),
        inputs.queue_hours(
            root / "hours-large", events=settings.memory_large_events,
            hours=settings.memory_hours,
        ),
    )


def measure_unlimited(root: Path, settings: Settings, emulator: EmulatorProcess,
                      made: UnlimitedInputs) -> Unlimited:
    """Every workload without Amplitude's limits, on the inputs made beforehand."""
    large, mix, ten_files, hour, small_files, memory_small, memory_large = made
    hours = settings.memory_hours

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
        measure_shape(hour, emulator, root / "runs", settings, HOUR_VS_DECODE, SHAPE_VS_SDK),
        measure_shape(
            small_files, emulator, root / "runs", settings, SMALL_FILES_VS_DECODE, None
        ),
    )
    memory = MemoryResult(
        small=measure_memory(memory_small, hours, emulator, root / "runs", settings),
        large=measure_memory(memory_large, hours, emulator, root / "runs", settings),
    )
    return Unlimited(
        large=large_result,
        sdks=sdks,
        emulator_alone=emulator_alone,
        mix=mix_result,
        ten_files=ten_files_result,
        shapes=shapes,
        memory=memory,
        replay_has_workers=replay_has_workers(),
    )


def run(settings: Settings, command: str) -> Results:
    """Measure everything (``settings.only``: one of the two sets of workloads); raises
    ``CheckFailed`` when a result is wrong."""
    with tempfile.TemporaryDirectory(prefix="currents-bench-") as tmp:
        root = Path(tmp)
        say(f"generating inputs in {root} (not timed)")
        made = unlimited_inputs(root, settings) if settings.only != "rate" else None
        planned = plan_cases(root, settings) if settings.only != "unlimited" else None
        say("starting the emulator")
        with EmulatorProcess(root / "emulator.log") as emulator:
            emulator_config = emulator.config()
            unlimited = None if made is None else measure_unlimited(
                root, settings, emulator, made
            )
            rate = None if planned is None else measure_rate(
                *planned, emulator, root / "runs", settings
            )
        return Results(
            command=command,
            machine=machine_info(),
            emulator_config=emulator_config,
            repeats=settings.repeats,
            unlimited=unlimited,
            rate=rate,
        )
