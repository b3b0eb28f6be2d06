"""(c) The official SDK on the same file and emulator, run in a child process."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.checks import require
from bench.emulator import EmulatorProcess
from bench.inputs import Workload
from bench.process import run_measured
from bench.settings import API_KEY, REPO_ROOT


@dataclass(frozen=True, slots=True)
class SdkRun:
    workload: str
    latency_ms: int  # the emulator's answer delay
    records: int
    tracked: int  # events handed to client.track (records the mapping did not skip)
    stored: int  # events the emulator stored during this run
    statuses: str  # the emulator's answers during this run
    elapsed_s: float  # first decode → end of flush and shutdown
    wall_s: float
    peak_rss_mb: float

    @property
    def events_per_s(self) -> float:
        return self.records / self.elapsed_s

    @property
    def dropped(self) -> int:
        return self.tracked - self.stored

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.events_per_s, "dropped": self.dropped}


def run_sdk(
    workload: Workload,
    emulator: EmulatorProcess,
    run_dir: Path,
    timeout_s: float,
    *,
    latency_ms: int = 0,
) -> SdkRun:
    """Send the files of ``workload``, in order, with one SDK client to the emulator's HTTP
    API v2 (answering after ``latency_ms``)."""
    emulator.reset(latency_ms)
    run_dir.mkdir(parents=True)
    manifest = run_dir / "files.json"
    manifest.write_text(json.dumps([[str(f.path), f.event_type] for f in workload.files]))
    command = [
        sys.executable, "-m", "bench.sdk_client",
        str(manifest), f"{emulator.url}/2/httpapi", API_KEY,
    ]
    child = run_measured(command, run_dir / "sdk", timeout_s, cwd=REPO_ROOT)
    what = f"SDK run over {workload.label}"
    require(not child.timed_out, f"{what} was killed after {timeout_s:.0f} s:\n{child.tail()}")
    require(child.exit_code == 0, f"{what} exited with {child.exit_code}:\n{child.tail()}")
    lines = child.stdout_path.read_text().splitlines()
    require(bool(lines), f"{what} printed no result:\n{child.tail()}")
    report = json.loads(lines[-1])
    run = SdkRun(
        workload=workload.label,
        latency_ms=latency_ms,
        records=report["records"],
        tracked=report["tracked"],
        stored=emulator.stored(),
        statuses=emulator.statuses(),
        elapsed_s=report["elapsed_s"],
        wall_s=child.wall_s,
        peak_rss_mb=child.peak_rss_mb,
    )
    require(run.records == workload.records, f"{what}: read {run.records} records")
    return run
