"""Everything one benchmark run measured, the ratios derived from it, and their targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.decode import DecodeRun
from bench.emulator_only import EmulatorRun
from bench.replay import ReplayRun
from bench.sdk import SdkRun


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for a ratio: at least (``>=``) or at most (``<=``) ``bound``."""

    op: str
    bound: float

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {self.bound:g}"


REPLAY_VS_DECODE = Target(">=", 0.6)
REPLAY_VS_SDK = Target(">=", 8.0)
MEMORY_GROWTH = Target("<=", 1.3)
# Issue 13, with the emulator's latency: replay / decode-only per real-shape workload.
HOUR_VS_DECODE = Target(">=", 0.5)
SMALL_FILES_VS_DECODE = Target(">=", 0.3)
SHAPE_VS_SDK = Target(">=", 8.0)  # the realistic hour; the small files have no target


def _fastest(runs: tuple[ReplayRun, ...]) -> ReplayRun | None:
    return max(runs, key=lambda run: run.events_per_s) if runs else None


@dataclass(frozen=True, slots=True)
class ShapeResult:
    """A real-shape workload with emulator latency: decode, replay with ``--workers 1`` and
    ``--workers 2`` (or, when replay has no ``--workers``, as it is: ``workers1`` only),
    and the SDK, on the same files in the same run."""

    label: str
    shape: str
    files: int
    records: int
    event_types: int
    latency_ms: int
    decode: DecodeRun
    workers1: tuple[ReplayRun, ...]
    workers2: tuple[ReplayRun, ...]  # empty when replay has no --workers
    sdks: tuple[SdkRun, ...]
    decode_target: Target
    sdk_target: Target | None

    @property
    def replay1(self) -> ReplayRun:
        return max(self.workers1, key=lambda run: run.events_per_s)

    @property
    def replay2(self) -> ReplayRun | None:
        return _fastest(self.workers2)

    @property
    def sdk(self) -> SdkRun:
        return max(self.sdks, key=lambda run: run.events_per_s)

    def vs_decode(self, run: ReplayRun) -> float:
        return run.events_per_s / self.decode.events_per_s

    def vs_sdk(self, run: ReplayRun) -> float:
        return run.events_per_s / self.sdk.events_per_s

    @property
    def replays(self) -> tuple[ReplayRun, ...]:
        return self.workers1 + self.workers2

    def to_json(self) -> dict[str, Any]:
        replay2 = self.replay2
        return {
            "label": self.label,
            "shape": self.shape,
            "files": self.files,
            "records": self.records,
            "event_types": self.event_types,
            "latency_ms": self.latency_ms,
            "decode_events_per_s": self.decode.events_per_s,
            "decode_best_s": self.decode.best_s,
            "workers1": [run.to_json() for run in self.workers1],
            "workers2": [run.to_json() for run in self.workers2],
            "sdk_runs": [run.to_json() for run in self.sdks],
            "ratios": {
                "workers1_vs_decode": self.vs_decode(self.replay1),
                "workers2_vs_decode": None if replay2 is None else self.vs_decode(replay2),
                "workers1_vs_sdk": self.vs_sdk(self.replay1),
                "workers2_vs_sdk": None if replay2 is None else self.vs_sdk(replay2),
            },
            "peak_rss_mb": {
                "workers1": max(run.peak_rss_mb for run in self.workers1),
                "workers2": max((run.peak_rss_mb for run in self.workers2), default=None),
                "sdk": max(run.peak_rss_mb for run in self.sdks),
            },
        }


@dataclass(frozen=True, slots=True)
class WorkloadResult:
    """Decode and replay of one workload (replays: every repeat; the best is reported)."""

    label: str
    records: int
    event_types: int
    decode: DecodeRun
    replays: tuple[ReplayRun, ...]

    @property
    def replay(self) -> ReplayRun:
        """The fastest replay."""
        return max(self.replays, key=lambda run: run.events_per_s)

    @property
    def replay_vs_decode(self) -> float:
        return self.replay.events_per_s / self.decode.events_per_s

    @property
    def peak_rss_mb(self) -> float:
        """The highest peak RSS over the repeats."""
        return max(run.peak_rss_mb for run in self.replays)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "records": self.records,
            "event_types": self.event_types,
            "decode_events_per_s": self.decode.events_per_s,
            "decode_best_s": self.decode.best_s,
            "replays": [run.to_json() for run in self.replays],
            "replay_events_per_s": self.replay.events_per_s,
            "replay_vs_decode": self.replay_vs_decode,
            "peak_rss_mb": self.peak_rss_mb,
        }


@dataclass(frozen=True, slots=True)
class Results:
    command: str
    machine: dict[str, str]
    emulator_config: dict[str, Any]
    repeats: int
    large: WorkloadResult  # custom events, the large size
    small_replays: tuple[ReplayRun, ...]  # custom events, the small size (memory)
    small_events: int
    sdks: tuple[SdkRun, ...]  # the SDK over the large file, every repeat
    emulator_alone: EmulatorRun
    mix: WorkloadResult  # every event type
    shapes: tuple[ShapeResult, ...]  # the real-shape workloads, with emulator latency
    replay_has_workers: bool  # whether replay took --workers in this run

    @property
    def sdk(self) -> SdkRun:
        """The fastest SDK run."""
        return max(self.sdks, key=lambda run: run.events_per_s)

    @property
    def replay_vs_sdk(self) -> float:
        return self.large.replay.events_per_s / self.sdk.events_per_s

    @property
    def small_peak_rss_mb(self) -> float:
        return max(run.peak_rss_mb for run in self.small_replays)

    @property
    def memory_growth(self) -> float:
        return self.large.peak_rss_mb / self.small_peak_rss_mb

    @property
    def replays(self) -> tuple[ReplayRun, ...]:
        """Every replay of the run."""
        shaped = tuple(run for shape in self.shapes for run in shape.replays)
        return self.large.replays + self.small_replays + self.mix.replays + shaped

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "machine": self.machine,
            "emulator_config": self.emulator_config,
            "repeats": self.repeats,
            "large": self.large.to_json(),
            "mix": self.mix.to_json(),
            "small_replays": [run.to_json() for run in self.small_replays],
            "replays": [run.to_json() for run in self.replays],
            "sdk": self.sdk.to_json(),
            "sdk_runs": [run.to_json() for run in self.sdks],
            "emulator_alone": self.emulator_alone.to_json(),
            "shapes": [shape.to_json() for shape in self.shapes],
            "replay_has_workers": self.replay_has_workers,
            "memory": {
                "small_events": self.small_events,
                "small_mb": self.small_peak_rss_mb,
                "large_events": self.large.records,
                "large_mb": self.large.peak_rss_mb,
                "ratio": self.memory_growth,
            },
            "ratios": {
                "replay_vs_decode": self.large.replay_vs_decode,
                "replay_vs_sdk": self.replay_vs_sdk,
                "mix_replay_vs_decode": self.mix.replay_vs_decode,
            },
        }
