"""What one benchmark run measures: sizes, repeats and where the report goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
DEFAULT_OUTPUT = PACKAGE_DIR / "results.md"

API_KEY = "bench-api-key-0001"  # any key: the emulator accepts every key by default
SEED = 20_260_115


@dataclass(frozen=True, slots=True)
class Settings:
    """Sizes of the inputs and how often each measurement is repeated (best run kept)."""

    events: int = 100_000
    small_events: int = 20_000
    mix_per_type: int = 1_000
    repeats: int = 3
    output: Path = DEFAULT_OUTPUT
    json_output: Path | None = None
    smoke: bool = False
    timeout_s: float = 300.0  # a child process running longer than this is killed


FULL = Settings()
SMOKE = Settings(
    events=400, small_events=200, mix_per_type=3, repeats=1, smoke=True, timeout_s=60.0
)
