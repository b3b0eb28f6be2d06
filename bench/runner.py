"""One benchmark run: inputs, the emulator process, then every measurement in turn."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench import inputs
from bench.decode import measure_decode
from bench.emulator import EmulatorProcess
from bench.emulator_only import measure_emulator
from bench.inputs import Workload
from bench.machine import machine_info
from bench.replay import ReplayRun, run_replay
from bench.results import Results, WorkloadResult
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


def run(settings: Settings, command: str) -> Results:
    """Measure everything; raises ``CheckFailed`` when a result is wrong."""
    with tempfile.TemporaryDirectory(prefix="currents-bench-") as tmp:
        root = Path(tmp)
        say(f"generating inputs in {root} (not timed)")
        large = inputs.custom_events(root / "large", settings.events)
        small = inputs.custom_events(root / "small", settings.small_events)
        mix = inputs.all_types(root / "mix", settings.mix_per_type)
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
            small_replays = replays(small, "replay-small")
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
        return Results(
            command=command,
            machine=machine_info(),
            emulator_config=emulator_config,
            repeats=settings.repeats,
            large=large_result,
            small_replays=small_replays,
            small_events=small.records,
            sdks=sdks,
            emulator_alone=emulator_alone,
            mix=mix_result,
        )
