"""What one benchmark run measures: sizes, repeats and where the report goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_OUTPUT = PACKAGE_DIR / "results.md"

API_KEY = "bench-api-key-0001"  # any key: the emulator accepts every key by default
SEED = 20_260_115
# What --only picks: "unlimited", every workload without Amplitude's limits (the throughput,
# several files, real shapes, memory, the emulator alone); "rate", the rate-limited one.
WORKLOADS = ("unlimited", "rate")


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes of the inputs and how often each measurement is repeated (best run kept)."""

    events: int = 100_000
    # Flat memory (issue 13): replays of events spread over queue hours, at two sizes.
    memory_events: int = 200_000
    memory_large_events: int = 1_000_000
    memory_hours: int = 20
    mix_per_type: int = 1_000
    repeats: int = 3
    # The real-shape workloads, replayed against an emulator answering after latency_ms.
    latency_ms: int = 100
    latency_repeats: int = 1  # runs per measurement of the real-shape workloads
    hour_windows: int = 12  # five-minute windows in the realistic hour
    hour_busy_events: int = 15_000  # events in a busy type's (full) file
    hour_quiet_min: int = 5  # a quiet type's file: this many events at least
    hour_quiet_max: int = 300  # and at most
    small_files: int = 400  # the small-files-only workload: this many files
    small_file_events: int = 250  # of this many events
    # Issue 13: ten custom-event files replayed with --workers 2 against decode-only, no latency.
    ten_files: int = 10  # this many files
    ten_file_events: int = 10_000  # of this many events
    # Issue 22, the rate-limited workload (bench/rate.py), with the emulator's latency_ms:
    rate_events: int = 12_000  # each run's events in the project-limit cases (1-3)
    rate_files: int = 12  # in this many files
    rate_hot_events: int = 48_000  # the hot-user case (4): all its events
    rate_hot_user_events: int = 40_000  # of which the hot user's
    # Case 2 (no budget: the rate found after a 429) waits out the tool's 60 s pause, which
    # cannot be shortened from the command line: the smoke preset leaves it out.
    rate_found: bool = True
    only: str | None = None  # None: every workload; "rate" or "unlimited": those alone
    output: Path = DEFAULT_OUTPUT
    json_output: Path | None = None
    smoke: bool = False
    timeout_s: float = 900.0  # a child process running longer than this is killed


FULL = Settings()
SMOKE = Settings(
    events=400,
    memory_events=200,
    memory_large_events=1_000,
    memory_hours=2,
    mix_per_type=3,
    repeats=1,
    latency_ms=5,
    hour_windows=1,
    hour_busy_events=20,
    hour_quiet_min=1,
    hour_quiet_max=3,
    small_files=6,
    small_file_events=5,
    ten_files=3,
    ten_file_events=50,
    rate_events=60,
    rate_files=1,  # one process per replay: replay starts a worker per file (up to CPUs)
    rate_hot_events=100,
    rate_hot_user_events=80,
    rate_found=False,
    smoke=True,
    timeout_s=60.0,
)
