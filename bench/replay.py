"""(b) ``currents-export replay`` end to end, as a child process, checked against the emulator."""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from bench.checks import require
from bench.emulator import EmulatorProcess
from bench.inputs import Workload
from bench.process import child_env, cli_command, run_measured
from bench.settings import API_KEY


@dataclass(frozen=True, slots=True)
class ReplayRun:
    """One replay: the summary's figures, what the emulator stored, and the child's cost."""

    workload: str
    workers: int | None  # --workers given to replay; None: not given (replay has no such option)
    latency_ms: int  # the emulator's answer delay
    records: int
    delivered: int
    skipped: int
    dead_lettered: int
    duplicates: int
    requests: int
    retries: int
    elapsed_s: float  # the summary's elapsed time (interpreter start-up excluded)
    wall_s: float  # the whole child process
    peak_rss_mb: float
    stored: int  # events the emulator stored during this run
    statuses: str  # the emulator's answers during this run

    @property
    def events_per_s(self) -> float:
        return self.records / self.elapsed_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "events_per_s": self.events_per_s}


@cache
def replay_has_workers() -> bool:
    """Whether ``currents-export replay`` takes ``--workers`` (asked once, from its help)."""
    done = subprocess.run(
        [*cli_command(), "replay", "--help"],
        capture_output=True, text=True, timeout=120, env=child_env(), check=False,
    )
    require(done.returncode == 0, f"replay --help failed:\n{done.stderr[-2000:]}")
    return "--workers" in done.stdout


def replay_command(
    workload: Workload, url: str, run_dir: Path, *options: str
) -> tuple[list[str], Path]:
    """``currents-export replay`` of ``workload`` into the emulator at ``url``, its state,
    dead letter and summary in ``run_dir`` (created, must be new), with ``options`` added;
    and where its summary JSON will be."""
    run_dir.mkdir(parents=True)
    targets = [str(workload.paths[0])] if len(workload.files) == 1 else [str(workload.root)]
    summary_path = run_dir / "summary.json"
    command = [
        *cli_command(), "replay", *targets,
        "--api-key", API_KEY,
        "--amplitude-url", url,
        "--state", str(run_dir / "state.sqlite"),
        "--dead-letter", str(run_dir / "dead-letter"),
        "--summary-json", str(summary_path),
        *options,
    ]
    return command, summary_path


def run_replay(
    workload: Workload,
    emulator: EmulatorProcess,
    run_dir: Path,
    timeout_s: float,
    *,
    workers: int | None = None,
    latency_ms: int = 0,
) -> ReplayRun:
    """Replay ``workload`` into a freshly reset emulator (answering after ``latency_ms``),
    with ``--workers`` when given, and check every record is accounted for."""
    emulator.reset(latency_ms)
    command, summary_path = replay_command(
        workload, emulator.url, run_dir,
        *(() if workers is None else ("--workers", str(workers))),
    )
    child = run_measured(command, run_dir / "replay", timeout_s)
    what = f"replay of {workload.label}" + ("" if workers is None else f" --workers {workers}")
    require(not child.timed_out, f"{what} was killed after {timeout_s:.0f} s:\n{child.tail()}")
    require(child.exit_code == 0, f"{what} exited with {child.exit_code}:\n{child.tail()}")
    require(summary_path.is_file(), f"{what} wrote no summary JSON")
    summary = json.loads(summary_path.read_text())
    run = ReplayRun(
        workload=workload.label,
        workers=workers,
        latency_ms=latency_ms,
        records=summary["records"],
        delivered=summary["delivered"],
        skipped=sum(summary["skipped"].values()),
        dead_lettered=sum(summary["dead_lettered"].values()),
        duplicates=summary["duplicates"],
        requests=summary["requests"],
        retries=summary["retries"],
        elapsed_s=summary["elapsed_s"],
        wall_s=child.wall_s,
        peak_rss_mb=child.peak_rss_mb,
        stored=emulator.stored(),
        statuses=emulator.statuses(),
    )
    check_replay(run, summary, workload.records, what)
    return run


def check_replay(run: ReplayRun, summary: dict[str, Any], expected: int, what: str) -> None:
    """Fail loudly unless the run read every record and accounts for each exactly once."""
    require(summary["objects_failed"] == 0, f"{what}: failed objects {summary['failures']}")
    require(summary["pending_records"] == 0, f"{what}: {summary['pending_records']} pending")
    require(run.records == expected, f"{what}: {run.records} records, the files hold {expected}")
    accounted = run.delivered + run.skipped + run.dead_lettered + run.duplicates
    require(
        run.records == accounted and summary["balanced"],
        f"{what}: records {run.records} != delivered + skipped + dead-lettered + duplicates "
        f"({accounted})",
    )
    require(
        run.stored == run.delivered,
        f"{what}: the emulator stored {run.stored} events, the summary says {run.delivered}",
    )
    require(run.delivered > 0, f"{what}: nothing was delivered")
    require(run.elapsed_s > 0, f"{what}: the summary reports no elapsed time")
