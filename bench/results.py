"""Everything one benchmark run measured, the ratios derived from it, their targets, and
what the numbers were measured on (CPU, cores, Python and package versions)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.decode import DecodeRun
from bench.emulator import EmulatorRun
from bench.rate import RateResult
from bench.replay import ReplayRun
from bench.sdk import SdkRun

_OPS = {">=": "≥", "<=": "≤", "<": "<"}


@dataclass(frozen=True, slots=True)
class Target:
    """A goal for a value: at least (``>=``), at most (``<=``) or under (``<``) ``bound``."""

    op: str
    bound: float
    unit: str = ""  # printed after the bound, e.g. " MiB"

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown target operator {self.op!r}")

    def met(self, value: float) -> bool:
        if self.op == ">=":
            return value >= self.bound
        return value <= self.bound if self.op == "<=" else value < self.bound

    def __str__(self) -> str:
        return f"{_OPS[self.op]} {self.bound:g}{self.unit}"


REPLAY_VS_DECODE = Target(">=", 0.6)
REPLAY_VS_SDK = Target(">=", 8.0)
# Issue 13: the replay's peak RSS over 1,000,000 events in 20 queue hours within 1.25 x that
# over 200,000, and under 200 MiB at default settings (peak_rss_mb is KiB / 1024: MiB).
MEMORY_GROWTH = Target("<=", 1.25)
MEMORY_CEILING = Target("<", 200.0, " MiB")
# Issue 13, with the emulator's latency: replay / decode-only per real-shape workload.
HOUR_VS_DECODE = Target(">=", 0.5)
SMALL_FILES_VS_DECODE = Target(">=", 0.3)
SHAPE_VS_SDK = Target(">=", 8.0)  # the realistic hour; the small files have no target
# Issue 13: ten 10,000-event files, replay --workers 2 / single-process decode-only, no latency.
TEN_FILES_VS_DECODE = Target(">=", 0.8)


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
class FilesResult:
    """Several custom-event files, the emulator answering at once: decode-only in this one
    process over all the files, and replay with ``--workers 1`` and ``--workers 2`` (or, when
    replay has no ``--workers``, as it is: ``workers1`` only), every repeat."""

    label: str
    shape: str
    files: int
    records: int
    decode: DecodeRun
    workers1: tuple[ReplayRun, ...]
    workers2: tuple[ReplayRun, ...]  # empty when replay has no --workers

    @property
    def replay1(self) -> ReplayRun:
        return max(self.workers1, key=lambda run: run.events_per_s)

    @property
    def replay2(self) -> ReplayRun | None:
        return _fastest(self.workers2)

    def vs_decode(self, run: ReplayRun) -> float:
        return run.events_per_s / self.decode.events_per_s

    @property
    def replays(self) -> tuple[ReplayRun, ...]:
        return self.workers1 + self.workers2

    def to_json(self) -> dict[str, Any]:
        replay2 = self.replay2
        workers2_vs_decode = None if replay2 is None else self.vs_decode(replay2)
        return {
            "label": self.label,
            "shape": self.shape,
            "files": self.files,
            "records": self.records,
            "decode_events_per_s": self.decode.events_per_s,
            "decode_best_s": self.decode.best_s,
            "workers1": [run.to_json() for run in self.workers1],
            "workers2": [run.to_json() for run in self.workers2],
            "workers1_events_per_s": self.replay1.events_per_s,
            "workers2_events_per_s": None if replay2 is None else replay2.events_per_s,
            "ratios": {
                "workers1_vs_decode": self.vs_decode(self.replay1),
                "workers2_vs_decode": workers2_vs_decode,
            },
            "target": f"workers2_vs_decode {TEN_FILES_VS_DECODE}",
            "target_met": (
                None if workers2_vs_decode is None
                else TEN_FILES_VS_DECODE.met(workers2_vs_decode)
            ),
            "peak_rss_mb": {
                "workers1": max(run.peak_rss_mb for run in self.workers1),
                "workers2": max((run.peak_rss_mb for run in self.workers2), default=None),
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
class MemoryRuns:
    """The memory replays of one size: events spread over queue hours, every repeat."""

    label: str
    records: int
    files: int
    hours: int
    shape: str
    replays: tuple[ReplayRun, ...]

    @property
    def peak_rss_mb(self) -> float:
        """The highest peak RSS over the repeats (MiB)."""
        return max(run.peak_rss_mb for run in self.replays)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "records": self.records,
            "files": self.files,
            "hours": self.hours,
            "shape": self.shape,
            "replays": [run.to_json() for run in self.replays],
            "peak_rss_mb": self.peak_rss_mb,
            "under_ceiling": MEMORY_CEILING.met(self.peak_rss_mb),
        }


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """Flat memory: the same shape of queue hours at two sizes, replayed with no latency."""

    small: MemoryRuns
    large: MemoryRuns

    @property
    def growth(self) -> float:
        """Peak RSS of the larger replay / that of the smaller."""
        return self.large.peak_rss_mb / self.small.peak_rss_mb

    @property
    def replays(self) -> tuple[ReplayRun, ...]:
        return self.small.replays + self.large.replays

    def to_json(self) -> dict[str, Any]:
        return {
            "small": self.small.to_json(),
            "large": self.large.to_json(),
            "small_events": self.small.records,
            "small_mb": self.small.peak_rss_mb,
            "large_events": self.large.records,
            "large_mb": self.large.peak_rss_mb,
            "ratio": self.growth,
            "ratio_target": str(MEMORY_GROWTH),
            "ratio_met": MEMORY_GROWTH.met(self.growth),
            "ceiling_target": str(MEMORY_CEILING),
            "ceiling_met": all(
                MEMORY_CEILING.met(runs.peak_rss_mb) for runs in (self.small, self.large)
            ),
        }


@dataclass(frozen=True, slots=True)
class Unlimited:
    """The workloads without Amplitude's limits: throughput, several files, real shapes,
    memory and the emulator alone."""

    large: WorkloadResult  # custom events, the large size
    sdks: tuple[SdkRun, ...]  # the SDK over the large file, every repeat
    emulator_alone: EmulatorRun
    mix: WorkloadResult  # every event type
    ten_files: FilesResult  # custom events in several files, --workers 1 and 2, no latency
    shapes: tuple[ShapeResult, ...]  # the real-shape workloads, with emulator latency
    memory: MemoryResult  # events over queue hours at two sizes, no latency
    replay_has_workers: bool  # whether replay took --workers in this run

    @property
    def sdk(self) -> SdkRun:
        """The fastest SDK run."""
        return max(self.sdks, key=lambda run: run.events_per_s)

    @property
    def replay_vs_sdk(self) -> float:
        return self.large.replay.events_per_s / self.sdk.events_per_s

    @property
    def replays(self) -> tuple[ReplayRun, ...]:
        """Every replay of these workloads."""
        shaped = tuple(run for shape in self.shapes for run in shape.replays)
        return (
            self.large.replays + self.mix.replays + self.ten_files.replays + shaped
            + self.memory.replays
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "large": self.large.to_json(),
            "mix": self.mix.to_json(),
            "ten_files": self.ten_files.to_json(),
            "replays": [run.to_json() for run in self.replays],
            "sdk": self.sdk.to_json(),
            "sdk_runs": [run.to_json() for run in self.sdks],
            "emulator_alone": self.emulator_alone.to_json(),
            "shapes": [shape.to_json() for shape in self.shapes],
            "replay_has_workers": self.replay_has_workers,
            "memory": self.memory.to_json(),
            "ratios": {
                "replay_vs_decode": self.large.replay_vs_decode,
                "replay_vs_sdk": self.replay_vs_sdk,
                "mix_replay_vs_decode": self.mix.replay_vs_decode,
                "ten_files_workers1_vs_decode": self.ten_files.vs_decode(self.ten_files.replay1),
                "ten_files_workers2_vs_decode": (
                    None if self.ten_files.replay2 is None
                    else self.ten_files.vs_decode(self.ten_files.replay2)
                ),
            },
        }


@dataclass(frozen=True, slots=True)
class Results:
    """One run: what it ran on, and the workloads it measured (``--only``: one of them)."""

    command: str
    machine: dict[str, str]
    emulator_config: dict[str, Any]
    repeats: int
    unlimited: Unlimited | None  # None: --only rate
    rate: RateResult | None  # None: --only unlimited

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "machine": self.machine,
            "emulator_config": self.emulator_config,
            "repeats": self.repeats,
            **({} if self.unlimited is None else self.unlimited.to_json()),
            "rate": None if self.rate is None else self.rate.to_json(),
        }


# ---- the machine ----------------------------------------------------------------------------

PACKAGES = ("fastavro", "orjson", "httpx", "amplitude-analytics", "currents-export")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def core_count() -> str:
    """Logical CPUs, and how many this process may use when that differs."""
    total = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = total
    return str(total) if usable == total else f"{total} ({usable} usable)"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict[str, str]:
    """The report's header facts, in display order."""
    return {
        "CPU": cpu_model(),
        "cores": core_count(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": platform.platform(),
        **package_versions(),
    }
