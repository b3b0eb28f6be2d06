"""Command line: ``python -m bench [--events N] [--smoke] [--only rate] [--output FILE] ...``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from bench.checks import CheckFailed
from bench.report import render
from bench.runner import run, say
from bench.settings import FULL, SMOKE, WORKLOADS, Settings


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark currents-export against a bare fastavro loop, the official "
        "Amplitude SDK and the emulator alone, on single files, on several files with worker "
        "processes and on real Currents shapes "
        "(a realistic hour, small files) with emulator latency, the replay's peak memory "
        "on events spread over queue hours at two sizes, and the time to deliver under "
        "Amplitude's rate limits against the ideal; writes a Markdown report.",
    )
    p.add_argument("--events", type=_positive, help=f"custom events in the single-file "
                   f"workload (default {FULL.events:,})")
    p.add_argument("--memory-events", type=_positive, help=f"events of the smaller "
                   f"memory replay, spread over --memory-hours queue hours (default "
                   f"{FULL.memory_events:,})")
    p.add_argument("--memory-large-events", type=_positive, help=f"events of the larger "
                   f"memory replay, same hours (default {FULL.memory_large_events:,})")
    p.add_argument("--memory-hours", type=_positive, help=f"queue hours both memory replays "
                   f"spread their events over (default {FULL.memory_hours})")
    p.add_argument("--mix-per-type", type=_positive, help=f"records per event type in the "
                   f"mix of all types (default {FULL.mix_per_type:,})")
    p.add_argument("--repeats", type=_positive, help=f"runs per measurement, the best is "
                   f"reported (default {FULL.repeats})")
    p.add_argument("--latency-ms", type=_non_negative, help=f"the emulator's answer delay for "
                   f"the real-shape workloads (default {FULL.latency_ms})")
    p.add_argument("--latency-repeats", type=_positive, help=f"runs per replay/SDK measurement "
                   f"of the real-shape workloads (default {FULL.latency_repeats})")
    p.add_argument("--small-files", type=_positive, help=f"files in the small-files-only "
                   f"workload (default {FULL.small_files:,})")
    p.add_argument("--small-file-events", type=_positive, help=f"events per file there "
                   f"(default {FULL.small_file_events:,})")
    p.add_argument("--ten-files", type=_positive, help=f"custom-event files replayed with "
                   f"--workers 1 and 2 against decode-only (default {FULL.ten_files})")
    p.add_argument("--ten-file-events", type=_positive, help=f"events per file there "
                   f"(default {FULL.ten_file_events:,})")
    p.add_argument("--rate-events", type=_positive, help=f"rate-limited workload: each "
                   f"run's events in the project-limit cases 1-3 (default {FULL.rate_events:,})")
    p.add_argument("--rate-files", type=_positive, help=f"the files those events are in "
                   f"(default {FULL.rate_files}; case 4 uses as many)")
    p.add_argument("--rate-hot-events", type=_positive, help=f"events of the hot-user case 4 "
                   f"(default {FULL.rate_hot_events:,})")
    p.add_argument("--rate-hot-user-events", type=_positive, help=f"of which the hot user's "
                   f"(default {FULL.rate_hot_user_events:,})")
    p.add_argument("--rate-found", action=argparse.BooleanOptionalAction, default=None,
                   help="run case 2, no budget: the rate found after a 429 (waits out the "
                   "tool's 60 s pause; default: on, off with --smoke)")
    p.add_argument("--only", choices=WORKLOADS, help="run only these workloads: rate (the "
                   "rate-limited one: a few minutes at full size) or unlimited (all the others; "
                   "default: both)")
    p.add_argument("--output", type=Path, help=f"Markdown report (default {FULL.output})")
    p.add_argument("--json", type=Path, dest="json_output", help="also write the raw results "
                   "as JSON here")
    p.add_argument("--smoke", action="store_true", help=f"tiny sizes for CI: {SMOKE.events} "
                   f"events, {SMOKE.mix_per_type} per type, memory replays of "
                   f"{SMOKE.memory_events:,} and {SMOKE.memory_large_events:,} events over "
                   f"{SMOKE.memory_hours} hours, {SMOKE.repeats} repeat, rate-limited cases "
                   f"of {SMOKE.rate_events} and {SMOKE.rate_hot_events} events without case 2 "
                   "(explicit options still win)")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The preset (full or smoke) with every option given on the command line applied."""
    base = SMOKE if args.smoke else FULL
    given = {
        name: getattr(args, name)
        for name in (
            "events", "memory_events", "memory_large_events", "memory_hours", "mix_per_type",
            "repeats", "latency_ms", "latency_repeats",
            "small_files", "small_file_events", "ten_files", "ten_file_events",
            "rate_events", "rate_files", "rate_hot_events", "rate_hot_user_events",
            "rate_found", "only", "output", "json_output",
        )
        if getattr(args, name) is not None
    }
    return replace(base, **given)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every correctness check passed (targets may be missed)."""
    args_list = sys.argv[1:] if argv is None else argv
    cli = parser()
    settings = settings_from(cli.parse_args(args_list))
    fewest = min(settings.memory_events, settings.memory_large_events)
    if fewest < settings.memory_hours:
        cli.error(f"{fewest:,} memory events cannot fill {settings.memory_hours} queue hours")
    for events in ("rate_events", "rate_hot_events"):
        if getattr(settings, events) < settings.rate_files:
            cli.error(f"--{events.replace('_', '-')} {getattr(settings, events):,} cannot "
                      f"fill {settings.rate_files} files")
    if settings.rate_hot_user_events > settings.rate_hot_events:
        cli.error(f"the hot user's {settings.rate_hot_user_events:,} events are more than "
                  f"case 4's {settings.rate_hot_events:,}")
    command = shlex.join([sys.executable, "-m", "bench", *args_list])
    try:
        results = run(settings, command)
    except CheckFailed as exc:
        print(f"[bench] CORRECTNESS CHECK FAILED: {exc}", file=sys.stderr)
        return 1
    report = render(results)
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(report)
    if settings.json_output is not None:
        settings.json_output.parent.mkdir(parents=True, exist_ok=True)
        settings.json_output.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    print(report)
    say(f"report written to {settings.output}")
    return 0
