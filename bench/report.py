"""The Markdown report of one run: header, throughput, memory, emulator, per-run details."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bench.emulator_only import BATCH_SIZE
from bench.replay import ReplayRun
from bench.results import MEMORY_GROWTH, REPLAY_VS_DECODE, REPLAY_VS_SDK, Results, Target


def rate(value: float) -> str:
    return f"{value:,.0f}"


def judged(value: float, target: Target) -> str:
    """``0.72 ✓ (≥ 0.6)``: the ratio, whether it meets its target, and the target."""
    return f"{value:.2f} {'✓' if target.met(value) else '✗'} ({target})"


def _header(results: Results) -> list[str]:
    config = results.emulator_config
    switches = ", ".join(
        f"`{key}: {json.dumps(config.get(key))}`"
        for key in ("rate_limits", "daily_quota", "project_eps_cap")
    )
    lines = [
        "# currents-export benchmark",
        "",
        f"A snapshot taken {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Regenerate with the command "
        "below; the numbers vary between machines and runs.",
        "",
        "| | |",
        "|---|---|",
        f"| command | `{results.command}` |",
    ]
    lines += [f"| {name} | {value} |" for name, value in results.machine.items()]
    lines += [
        f"| emulator | its own process; {switches}; reset before every measurement |",
        f"| repeats | {results.repeats} per measurement; the fastest run is reported, "
        "memory is the highest peak |",
    ]
    return lines


def _throughput(results: Results) -> list[str]:
    large, mix = results.large, results.mix
    return [
        "## Throughput (events/s)",
        "",
        "| workload | (a) decode only | (b) replay | (c) amplitude-analytics SDK "
        "| b/a | b/c |",
        "|---|--:|--:|--:|---|---|",
        f"| {large.label} | {rate(large.decode.events_per_s)} "
        f"| {rate(large.replay.events_per_s)} | {rate(results.sdk.events_per_s)} "
        f"| {judged(large.replay_vs_decode, REPLAY_VS_DECODE)} "
        f"| {judged(results.replay_vs_sdk, REPLAY_VS_SDK)} |",
        f"| {mix.label} | {rate(mix.decode.events_per_s)} | {rate(mix.replay.events_per_s)} "
        f"| — | {judged(mix.replay_vs_decode, REPLAY_VS_DECODE)} | — |",
    ]


def _peaks(runs: tuple[ReplayRun, ...]) -> str:
    """The highest peak, and the spread over the repeats when there are several."""
    peaks = [run.peak_rss_mb for run in runs]
    spread = f" (runs: {min(peaks):.1f}–{max(peaks):.1f})" if len(peaks) > 1 else ""
    return f"{max(peaks):.1f} MB{spread}"


def _memory(results: Results) -> list[str]:
    small, large = results.small_events, results.large.records
    return [
        "## Memory (peak RSS of the replay process)",
        "",
        "| replay of | peak RSS |",
        "|---|--:|",
        f"| CustomEvent × {small:,} | {_peaks(results.small_replays)} |",
        f"| CustomEvent × {large:,} | {_peaks(results.large.replays)} |",
        f"| ratio {large:,} / {small:,} | {judged(results.memory_growth, MEMORY_GROWTH)} |",
        "",
        f"For comparison, the SDK process peaked at {results.sdk.peak_rss_mb:.1f} MB "
        f"for {large:,} events.",
    ]


def _emulator(results: Results) -> list[str]:
    run = results.emulator_alone
    return [
        "## The emulator alone",
        "",
        "| load | events/s |",
        "|---|--:|",
        f"| emulator alone: /batch, {BATCH_SIZE:,} pre-serialised events per request, "
        f"1 connection ({run.events:,} events in {run.requests:,} "
        f"request{'' if run.requests == 1 else 's'}) "
        f"| {rate(run.events_per_s)} |",
    ]


def _details(results: Results) -> list[str]:
    lines = [
        "## Every run",
        "",
        "| run | records | delivered | skipped | dead-lettered | duplicates "
        "| stored by emulator | requests | retries | emulator answers | elapsed s | wall s "
        "| peak RSS MB | events/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for run in results.replays:
        lines.append(
            f"| replay {run.workload} | {run.records:,} | {run.delivered:,} | {run.skipped:,} "
            f"| {run.dead_lettered:,} | {run.duplicates:,} | {run.stored:,} | {run.requests:,} "
            f"| {run.retries:,} | {run.statuses} | {run.elapsed_s:.3f} | {run.wall_s:.3f} "
            f"| {run.peak_rss_mb:.1f} | {rate(run.events_per_s)} |"
        )
    for sdk in results.sdks:
        lines.append(
            f"| SDK {results.large.label} | {sdk.records:,} | {sdk.tracked:,} tracked "
            f"| {sdk.records - sdk.tracked:,} | — | — | {sdk.stored:,} ({sdk.dropped:,} dropped) "
            f"| — | — | {sdk.statuses} | {sdk.elapsed_s:.3f} | {sdk.wall_s:.3f} "
            f"| {sdk.peak_rss_mb:.1f} | {rate(sdk.events_per_s)} |"
        )
    return lines


NOTES = [
    "## How it is measured",
    "",
    "- Inputs: `generate_fixtures`, uncompressed Avro, no duplicate records: one file of "
    "`users.behaviors.CustomEvent` per size, and one file per event type for the mix. "
    "Generation is not timed.",
    "- (a) decode only: `for record in fastavro.reader(f): pass` in the benchmark process.",
    "- (b) replay: `currents-export replay FILE --api-key … --amplitude-url EMULATOR --state … "
    "--dead-letter … --summary-json …` as a child process, default options otherwise "
    "(Batch API). events/s = the summary's `records` / `elapsed_s` (interpreter start-up "
    "excluded; it is in the wall time). After each run the emulator must hold exactly the "
    "delivered events and records = delivered + skipped + dead-lettered + duplicates.",
    "- (c) SDK: a child process (`bench/sdk_client.py`) decodes each record with fastavro, "
    "maps it with `mapper_for(...).map(record)`, tracks one `amplitude.BaseEvent` per mapped "
    "record with `client.track`, then `client.flush()` and `client.shutdown()`. `Config` "
    "defaults except `server_url` = the emulator's `/2/httpapi`. events/s = records / (first "
    "decode → end of flush and shutdown; `shutdown` joins the SDK's sending threads). Its wall "
    "time can include up to 10 s more: at exit the SDK's consumer thread may still sit out "
    "`flush_interval_millis`.",
    "- Memory: `ru_maxrss` of the replay child, from `os.wait4`; the highest over the "
    "repeats.",
    "- Emulator alone: the same file's events, mapped and serialised beforehand, POSTed with "
    "httpx over one keep-alive connection; only the POSTs are timed. The emulator, the "
    "replay and the SDK share this machine's cores.",
]


def render(results: Results) -> str:
    """The whole report as Markdown."""
    sections = [
        _header(results),
        _throughput(results),
        _memory(results),
        _emulator(results),
        _details(results),
        NOTES,
    ]
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
