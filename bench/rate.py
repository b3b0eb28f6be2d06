"""(f) The rate-limited workload (issue 22): ``currents-export replay`` against Amplitude's
limits as the emulator enforces them (a project's events/s and requests/s, a user's or
device's events/s), each case timed against its ideal: its events / the limit or budget.

1. A Starter-plan project (1,000 events/s, 100 requests/s), replay with a budget of
   950 events/s and 95 requests/s: within 1.5 x ideal + start-up, at most 5 % refused.
2. The same project, no budget (the tool finds the rate after the first 429, pausing
   Amplitude's 60 s): every event delivered within 1.5 x ideal + two of those pauses.
3. Three replays started together on one project of 1,500 events/s, each with a budget of
   475 events/s: each within 1.5 x its ideal + start-up, at most 5 % refused overall.
4. A hot user: per-id limits on (1,000 events/s per user or device over 30 s, the Batch
   API), most events one user's: within 1.5 x that user's events / 1,000 events/s.

Start-up is the wall time of a replay of tiny files in the same setup (emulator limits,
latency and options; for case 3 three at once, the slowest): as many files as the case, one
event each, since replay starts a worker process per file up to the CPUs it may use. Every
replay is checked like the others, and more strictly: every record delivered, the emulator
holding them all.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import inputs
from bench.checks import require
from bench.emulator import EmulatorProcess
from bench.inputs import Workload
from bench.process import ChildRun, run_measured
from bench.replay import replay_command
from bench.settings import SEED, Settings
from currents_export.amplitude.api import RetryPolicy

SLACK = 1.5  # a case's bound: SLACK x its ideal, plus start-up or pauses
MAX_REFUSED = 0.05  # share of requests a budgeted case may see refused (429 without indexes)
PROJECT_PAUSE_S = RetryPolicy().project_pause_s  # the tool's pause after a project 429
STARTER_EPS, STARTER_RPS = 1_000, 100  # an Amplitude Starter-plan project
STARTER_BUDGET_EPS, STARTER_BUDGET_RPS = 950, 95
SHARED_EPS, SHARED_RUNS, SHARED_BUDGET_EPS = 1_500, 3, 475  # case 3
ID_EPS, ID_WINDOW_S = 1_000, 30  # the Batch API's per-user/device limit and its window


@dataclass(frozen=True, slots=True)
class CasePlan:
    """What one case runs: its inputs (a workload per replay started together), the
    emulator's limits, replay's options, and what its ideal and bound are made of."""

    number: int
    name: str
    limit: str  # the limit in words, for the report
    budget: str  # the budget given to replay, in words
    emulator_limits: dict[str, Any]  # config over BENCH_CONFIG
    options: tuple[str, ...]  # replay's options besides the bench's usual ones
    workloads: tuple[Workload, ...]  # one per replay, started together
    ideal_events: int  # events the ideal counts (a run's; case 4: the hot user's)
    ideal_rate: float  # events/s: the budget, or the limit when there is no budget
    startup: tuple[Workload, ...] = ()  # tiny files timed for the start-up (none: not bound)
    allowance_s: float = 0.0  # added to the bound besides (case 2: the tool's pauses)
    allowance: str = ""  # what the allowance is, for the report
    max_refused: float | None = None  # share of requests refused allowed (None: no bound)


@dataclass(frozen=True, slots=True)
class RateRun:
    """One replay of a case: its summary's figures and the child's cost."""

    workload: str
    records: int
    delivered: int
    skipped: int
    dead_lettered: int
    duplicates: int
    objects_failed: int
    requests: int
    retries: int
    elapsed_s: float  # the summary's (interpreter start-up excluded)
    wall_s: float  # the whole child process: the measured time
    peak_rss_mb: float
    sending: dict[str, Any]  # the summary's "sending" ({} when it has none)

    @property
    def refused(self) -> int:
        """429s without indexes: the project's limit."""
        return int(self.sending.get("requests_refused_429") or 0)

    @property
    def throttled(self) -> int:
        """429s naming users or devices."""
        return int(self.sending.get("requests_throttled_429") or 0)

    @property
    def found(self) -> float | None:
        value = self.sending.get("found_events_per_second")
        return None if value is None else float(value)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RateCase:
    """A measured case: its runs, start-up, what the emulator saw, and its bound."""

    number: int
    name: str
    limit: str
    budget: str
    shape: str
    emulator_limits: dict[str, Any]
    options: tuple[str, ...]
    latency_ms: int
    ideal_events: int
    ideal_rate: float
    runs: tuple[RateRun, ...]
    startup_s: float | None  # None: start-up is not part of this case's bound
    allowance_s: float
    allowance: str
    max_refused: float | None
    stored: int  # events the emulator stored during the case (all its runs)
    emulator_requests: int  # ingestion requests it answered
    statuses: str  # its answers, by status

    @property
    def events(self) -> int:
        """Events of one run."""
        return self.runs[0].records

    @property
    def ideal_s(self) -> float:
        return self.ideal_events / self.ideal_rate

    @property
    def bound_s(self) -> float:
        return SLACK * self.ideal_s + (self.startup_s or 0.0) + self.allowance_s

    @property
    def refused_share(self) -> float:
        """Requests refused (429 without indexes) / requests, over all the case's runs."""
        requests = sum(run.requests for run in self.runs)
        return sum(run.refused for run in self.runs) / requests if requests else 0.0

    def time_met(self, run: RateRun) -> bool:
        return run.wall_s <= self.bound_s

    @property
    def refused_met(self) -> bool:
        return self.max_refused is None or self.refused_share <= self.max_refused

    def met(self, run: RateRun) -> bool:
        return self.time_met(run) and self.refused_met

    @property
    def passed(self) -> bool:
        return all(self.met(run) for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "limit": self.limit,
            "budget": self.budget,
            "shape": self.shape,
            "emulator_limits": self.emulator_limits,
            "options": list(self.options),
            "latency_ms": self.latency_ms,
            "events": self.events,
            "ideal_events": self.ideal_events,
            "ideal_rate": self.ideal_rate,
            "ideal_s": self.ideal_s,
            "startup_s": self.startup_s,
            "allowance_s": self.allowance_s,
            "bound_s": self.bound_s,
            "max_refused": self.max_refused,
            "refused_share": self.refused_share,
            "runs": [
                {**run.to_json(), "ratio_to_ideal": run.wall_s / self.ideal_s,
                 "time_met": self.time_met(run), "met": self.met(run)}
                for run in self.runs
            ],
            "emulator": {
                "stored": self.stored, "requests": self.emulator_requests,
                "statuses": self.statuses,
            },
            "refused_met": self.refused_met,
            "passed": self.passed,
        }


@dataclass(frozen=True, slots=True)
class RateResult:
    """The rate-limited workload: its measured cases, and the cases left out (why)."""

    cases: tuple[RateCase, ...]
    left_out: tuple[str, ...]
    latency_ms: int
    smoke: bool = False  # tiny sizes: the times are start-up, the bounds say nothing

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases)

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "startup": "wall time of a replay of as many files as the case's, one event "
                       "each, in the same setup (three at once for case 3: the slowest)",
            "cases": [case.to_json() for case in self.cases],
            "left_out": list(self.left_out),
            "smoke": self.smoke,
            "passed": self.passed,
        }


# ---- the cases ------------------------------------------------------------------------------


def plan_cases(root: Path, settings: Settings) -> tuple[list[CasePlan], list[str]]:
    """Generate the inputs (untimed) and plan the cases; → the plans and why any case is
    left out."""
    events, files = settings.rate_events, settings.rate_files

    def identified(name: str, seed: int, n: int, k: int, hot: int = 0) -> Workload:
        label = f"{n:,} custom events" + (f", {hot:,} one user's" if hot else "")
        if n == k:
            label = f"{k:,} file{'s' if k != 1 else ''} of 1 custom event"
        return inputs.identified_events(root / name, n, k, seed=seed, label=label, hot=hot)

    # Different seeds, different ids: runs at once must not look like each other's repeats.
    own = [identified(f"rate-{i}", SEED + 22_000 + i, events, files) for i in range(SHARED_RUNS)]
    # The start-up: as many files as the case (replay starts a worker process per file, up
    # to the CPUs it may use), of one event each.
    tiny = [identified(f"rate-tiny-{i}", SEED + 22_100 + i, files, files)
            for i in range(SHARED_RUNS)]
    hot = identified("rate-hot", SEED + 22_200, settings.rate_hot_events, files,
                     settings.rate_hot_user_events)
    starter = {"project_eps_cap": STARTER_EPS, "project_rps_cap": STARTER_RPS}
    starter_limit = f"{STARTER_EPS:,} events/s, {STARTER_RPS} requests/s (project)"
    plans = [
        CasePlan(
            1, "Starter plan, budget", starter_limit,
            f"{STARTER_BUDGET_EPS:,} events/s, {STARTER_BUDGET_RPS} requests/s", starter,
            ("--max-events-per-second", str(STARTER_BUDGET_EPS),
             "--max-requests-per-second", str(STARTER_BUDGET_RPS)),
            (own[0],), events, STARTER_BUDGET_EPS, startup=(tiny[0],),
            max_refused=MAX_REFUSED,
        ),
    ]
    left_out = []
    if settings.rate_found:
        plans.append(CasePlan(
            2, "Starter plan, no budget", starter_limit, "none (found after a 429)", starter,
            (), (own[0],), events, STARTER_EPS,
            allowance_s=2 * PROJECT_PAUSE_S,
            allowance=f"2 × {PROJECT_PAUSE_S:g} s pause",
        ))
    else:
        left_out.append(
            f"2. Starter plan, no budget: not run with these settings (`--smoke` leaves it "
            f"out; `--rate-found` runs it): it waits out the tool's {PROJECT_PAUSE_S:g} s "
            "pause after Amplitude's first 429, which cannot be shortened from the command line"
        )
    plans += [
        CasePlan(
            3, f"{SHARED_RUNS} runs at once", f"{SHARED_EPS:,} events/s (project, shared)",
            f"{SHARED_BUDGET_EPS:,} events/s each", {"project_eps_cap": SHARED_EPS},
            ("--max-events-per-second", str(SHARED_BUDGET_EPS)),
            tuple(own), events, SHARED_BUDGET_EPS, startup=tuple(tiny),
            max_refused=MAX_REFUSED,
        ),
        CasePlan(
            4, "a hot user", f"{ID_EPS:,} events/s per user/device (over {ID_WINDOW_S} s)",
            "none", {"rate_limits": True,
                     "batch": {"eps_threshold": ID_EPS, "eps_window_s": ID_WINDOW_S}},
            ("--api", "batch"), (hot,), settings.rate_hot_user_events, ID_EPS,
        ),
    ]
    return plans, left_out


def statuses(stats: dict[str, Any]) -> str:
    by_status = stats["by_status"]
    return ", ".join(f"{status}: {count}" for status, count in by_status.items()) or "none"


def replays_together(
    workloads: tuple[Workload, ...], options: tuple[str, ...], emulator: EmulatorProcess,
    case_dir: Path, timeout_s: float,
) -> tuple[RateRun, ...]:
    """Replays of ``workloads`` (one each, all started together), each with ``options``."""
    commands = [
        replay_command(workload, emulator.url, case_dir / f"run-{index + 1}", *options)
        for index, workload in enumerate(workloads)
    ]

    def child(index: int) -> ChildRun:
        command, summary_path = commands[index]
        return run_measured(command, summary_path.parent / "replay", timeout_s)

    if len(commands) == 1:
        children = [child(0)]
    else:
        with ThreadPoolExecutor(len(commands)) as pool:
            children = list(pool.map(child, range(len(commands))))
    runs = []
    for workload, (_, summary_path), done in zip(workloads, commands, children, strict=True):
        what = f"replay of {workload.label} ({summary_path.parent})"
        require(not done.timed_out, f"{what} was killed after {timeout_s:.0f} s "
                f"(emulator: {statuses(emulator.stats())}):\n{done.tail()}")
        require(done.exit_code == 0, f"{what} exited with {done.exit_code}:\n{done.tail()}")
        require(summary_path.is_file(), f"{what} wrote no summary JSON")
        summary = json.loads(summary_path.read_text())
        runs.append(RateRun(
            workload=workload.label,
            records=summary["records"],
            delivered=summary["delivered"],
            skipped=sum(summary["skipped"].values()),
            dead_lettered=sum(summary["dead_lettered"].values()),
            duplicates=summary["duplicates"],
            objects_failed=summary["objects_failed"],
            requests=summary["requests"],
            retries=summary["retries"],
            elapsed_s=summary["elapsed_s"],
            wall_s=done.wall_s,
            peak_rss_mb=done.peak_rss_mb,
            sending=dict(summary.get("sending") or {}),
        ))
        require(summary["pending_records"] == 0 and summary["balanced"],
                f"{what}: {summary['pending_records']} records pending, balanced: "
                f"{summary['balanced']}")
    return tuple(runs)


def check_delivered(
    runs: tuple[RateRun, ...], workloads: tuple[Workload, ...], stats: dict[str, Any], what: str
) -> None:
    """Every record of every run delivered, no object failed, and the emulator holding
    exactly the delivered events of all of them."""
    for run, workload in zip(runs, workloads, strict=True):
        require(
            run.objects_failed == 0 and run.records == workload.records == run.delivered,
            f"{what}: {run.workload}: {run.delivered:,} of {workload.records:,} events "
            f"delivered ({run.records:,} read, {run.skipped:,} skipped, "
            f"{run.dead_lettered:,} dead-lettered, {run.objects_failed} objects failed; "
            f"sending {run.sending}; emulator: {statuses(stats)})",
        )
    delivered = sum(run.delivered for run in runs)
    stored = int(stats["events_stored"])
    require(stored == delivered,
            f"{what}: the emulator stored {stored:,} events, the summaries say {delivered:,}")
