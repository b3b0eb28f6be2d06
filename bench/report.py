"""The Markdown report of one run: header, throughput, memory, emulator, per-run details."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bench.emulator import BATCH_SIZE
from bench.inputs import RATE_USERS
from bench.rate import (
    MAX_REFUSED,
    PROJECT_PAUSE_S,
    SLACK,
    RateCase,
    RateResult,
    RateRun,
)
from bench.replay import ReplayRun
from bench.results import (
    MEMORY_CEILING,
    MEMORY_GROWTH,
    REPLAY_VS_DECODE,
    REPLAY_VS_SDK,
    TEN_FILES_VS_DECODE,
    MemoryRuns,
    Results,
    Target,
    Unlimited,
)


def rate(value: float) -> str:
    return f"{value:,.0f}"


def judged(value: float, target: Target, shown: str | None = None) -> str:
    """``0.72 ✓ (≥ 0.6)``: the value (``shown``, else two decimals), whether it meets its
    target, and the target."""
    text = f"{value:.2f}" if shown is None else shown
    return f"{text} {'✓' if target.met(value) else '✗'} ({target})"


def _header(results: Results) -> list[str]:
    config = results.emulator_config
    switches = ", ".join(
        f"`{key}: {json.dumps(config.get(key))}`"
        for key in ("rate_limits", "daily_quota", "project_eps_cap", "project_rps_cap")
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
    unlimited, limited = results.unlimited, results.rate
    latency = []
    if unlimited is not None:
        latency.append(f"the real-shape workloads (`latency_ms: {_latency(unlimited)}`)")
    if limited is not None:
        latency.append(f"the rate-limited workload (`latency_ms: {limited.latency_ms}`; its "
                       "limits are turned on per case, see there)")
    lines.append(
        f"| emulator | its own process; {switches}; reset before every measurement; "
        f"answers at once except for {' and '.join(latency)} |"
    )
    if unlimited is not None:
        lines.append(
            f"| repeats | {results.repeats} per measurement ({_shape_repeats(unlimited)} for "
            "the real-shape replays and SDK runs); the fastest run is reported, memory is the "
            "highest peak |"
        )
    if limited is not None:
        lines.append("| rate-limited workload | each case once |")
    return lines


def _latency(results: Unlimited) -> str:
    return ", ".join(sorted({str(shape.latency_ms) for shape in results.shapes})) or "—"


def _shape_repeats(results: Unlimited) -> int:
    return max((len(shape.workers1) for shape in results.shapes), default=0)


def _throughput(results: Unlimited) -> list[str]:
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


def _ten_files(results: Unlimited) -> list[str]:
    files = results.ten_files
    r1, r2 = files.replay1, files.replay2
    w1 = "--workers 1" if results.replay_has_workers else "as it is (no `--workers` yet)"
    ratio2 = None if r2 is None else files.vs_decode(r2)
    return [
        "## Several files, worker processes (events/s)",
        "",
        f"Issue 13: `replay DIR --workers 2` over {files.files:,} files of custom events at "
        f"{TEN_FILES_VS_DECODE} × decode-only in one process over the same files; the "
        "emulator answers at once.",
        "",
        f"| workload | files | events | (a) decode only | (b1) replay {w1} "
        "| (b2) replay --workers 2 | b1/a | b2/a |",
        "|---|--:|--:|--:|--:|--:|---|---|",
        f"| {files.label} | {files.files:,} | {files.records:,} "
        f"| {rate(files.decode.events_per_s)} | {rate(r1.events_per_s)} | {_replay_cell(r2)} "
        f"| {_ratio_cell(files.vs_decode(r1), None)} "
        f"| {_ratio_cell(ratio2, TEN_FILES_VS_DECODE)} |",
    ]


def _replay_cell(run: ReplayRun | None) -> str:
    return "— (replay has no `--workers`)" if run is None else rate(run.events_per_s)


def _ratio_cell(value: float | None, target: Target | None) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if target is None else judged(value, target)


def _shapes(results: Unlimited) -> list[str]:
    if not results.shapes:
        return []
    w1 = "--workers 1" if results.replay_has_workers else "as it is (no `--workers` yet)"
    lines = [
        "## Real shapes, with emulator latency (events/s)",
        "",
        "The emulator answers every ingestion request the given latency after handling it "
        "(requests on different connections wait side by side).",
        "",
        f"| workload | files | events | latency | (a) decode only | (b1) replay {w1} "
        "| (b2) replay --workers 2 | (c) SDK | b1/a | b2/a | b1/c | b2/c |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|---|---|---|",
    ]
    for shape in results.shapes:
        r1, r2 = shape.replay1, shape.replay2
        lines.append(
            f"| {shape.label} | {shape.files:,} | {shape.records:,} | {shape.latency_ms} ms "
            f"| {rate(shape.decode.events_per_s)} | {rate(r1.events_per_s)} "
            f"| {_replay_cell(r2)} | {rate(shape.sdk.events_per_s)} "
            f"| {_ratio_cell(shape.vs_decode(r1), shape.decode_target)} "
            f"| {_ratio_cell(None if r2 is None else shape.vs_decode(r2), shape.decode_target)} "
            f"| {_ratio_cell(shape.vs_sdk(r1), shape.sdk_target)} "
            f"| {_ratio_cell(None if r2 is None else shape.vs_sdk(r2), shape.sdk_target)} |"
        )
    lines += [
        "",
        "| workload | peak RSS: replay --workers 1 | replay --workers 2 | SDK |",
        "|---|--:|--:|--:|",
    ]
    for shape in results.shapes:
        two = _peaks(shape.workers2) if shape.workers2 else "—"
        sdk_peak = max(run.peak_rss_mb for run in shape.sdks)
        lines.append(
            f"| {shape.label} | {_peaks(shape.workers1)} | {two} | {sdk_peak:.1f} MiB |"
        )
    lines += ["", "Shapes:", ""]
    lines += [f"- {shape.label}: {shape.shape}." for shape in results.shapes]
    return lines


def _peaks(runs: tuple[ReplayRun, ...]) -> str:
    """The highest peak, and the spread over the repeats when there are several."""
    peaks = [run.peak_rss_mb for run in runs]
    spread = f" (runs: {min(peaks):.1f}–{max(peaks):.1f})" if len(peaks) > 1 else ""
    return f"{max(peaks):.1f} MiB{spread}"


def _memory_row(runs: MemoryRuns) -> str:
    peak = judged(runs.peak_rss_mb, MEMORY_CEILING, _peaks(runs.replays))
    return f"| {runs.label} | {runs.files:,} | {peak} |"


def _memory(results: Unlimited) -> list[str]:
    memory = results.memory
    small, large = memory.small, memory.large
    workers = "`--workers 1`, " if results.replay_has_workers else ""
    return [
        "## Memory (peak RSS of the replay process)",
        "",
        f"`replay DIR` ({workers}every other option at its default) of the same shape of "
        f"files at two sizes, {large.hours} queue hours each, the emulator answering at once.",
        "",
        "| replay of | files | peak RSS |",
        "|---|--:|---|",
        _memory_row(small),
        _memory_row(large),
        f"| ratio {large.records:,} / {small.records:,} | "
        f"| {judged(memory.growth, MEMORY_GROWTH)} |",
        "",
        "Shapes:",
        "",
        f"- {small.label}: {small.shape}.",
        f"- {large.label}: {large.shape}.",
        "",
        f"For comparison, the SDK process peaked at {results.sdk.peak_rss_mb:.1f} MiB "
        f"for {results.large.label} (the SDK is not run over the queue hours).",
    ]


def _emulator(results: Unlimited) -> list[str]:
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


def _details(results: Unlimited) -> list[str]:
    lines = [
        "## Every run",
        "",
        "| run | records | delivered | skipped | dead-lettered | duplicates "
        "| stored by emulator | requests | retries | emulator answers | elapsed s | wall s "
        "| peak RSS MiB | events/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|",
    ]
    for run in results.replays:
        lines.append(
            f"| replay {_run_name(run)} | {run.records:,} | {run.delivered:,} | {run.skipped:,} "
            f"| {run.dead_lettered:,} | {run.duplicates:,} | {run.stored:,} | {run.requests:,} "
            f"| {run.retries:,} | {run.statuses} | {run.elapsed_s:.3f} | {run.wall_s:.3f} "
            f"| {run.peak_rss_mb:.1f} | {rate(run.events_per_s)} |"
        )
    for sdk in results.sdks + tuple(s for shape in results.shapes for s in shape.sdks):
        lines.append(
            f"| SDK {sdk.workload}{_latency_tag(sdk.latency_ms)} | {sdk.records:,} "
            f"| {sdk.tracked:,} tracked "
            f"| {sdk.records - sdk.tracked:,} | — | — | {sdk.stored:,} ({sdk.dropped:,} dropped) "
            f"| — | — | {sdk.statuses} | {sdk.elapsed_s:.3f} | {sdk.wall_s:.3f} "
            f"| {sdk.peak_rss_mb:.1f} | {rate(sdk.events_per_s)} |"
        )
    return lines


def _latency_tag(latency_ms: int) -> str:
    return f", {latency_ms} ms latency" if latency_ms else ""


def _run_name(run: ReplayRun) -> str:
    workers = "" if run.workers is None else f" --workers {run.workers}"
    return f"{run.workload}{workers}{_latency_tag(run.latency_ms)}"


def _seconds(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _bound_cell(case: RateCase) -> str:
    parts = [f"{SLACK:g} × ideal"]
    if case.startup_s is not None:
        parts.append(f"{_seconds(case.startup_s)} s start-up")
    if case.allowance:
        parts.append(case.allowance)
    text = f"≤ {' + '.join(parts)} = {_seconds(case.bound_s)} s"
    if case.max_refused is not None:
        overall = " overall" if len(case.runs) > 1 else ""
        text += (f"; ≤ {case.max_refused:.0%} refused{overall} "
                 f"({case.refused_share:.1%})")
    return text


def _verdict(case: RateCase, run: RateRun) -> str:
    if case.met(run):
        return "✓ pass"
    missed = [] if case.time_met(run) else ["time"]
    if not case.refused_met:
        missed.append(f"refused {case.refused_share:.1%}")
    return f"✗ fail ({', '.join(missed)})"


def _rate_limited(result: RateResult) -> list[str]:
    lines = [
        "## Rate limits (issue 22): time to deliver against the ideal",
        "",
        f"Each case replays into the emulator with Amplitude's limits turned on and "
        f"`latency_ms: {result.latency_ms}`; ideal = the events / the budget (or, without one, "
        "the limit); measured = the wall time of the `replay` process, interpreter start-up "
        "included. Start-up = the wall time of a replay of as many files as the case's, of "
        "one event each (replay starts a worker process per file, up to the CPUs it may use), "
        "in the same setup just before the case (same emulator limits, latency and options; "
        "case 3: three started together, the slowest). "
        "429s refused: the summaries' `requests_refused_429` (429s without indexes: the "
        "project's limit); throttled: `requests_throttled_429` (429s naming users or devices).",
        *(["", "At these sizes (`--smoke`) the times are mostly start-up: the bounds say "
           "nothing; only the checks (every event delivered) count."] if result.smoke else []),
        "",
        "| case | events | limit | budget | ideal s | measured s | ratio to ideal | requests "
        "| 429s refused | found rate | bound | pass/fail |",
        "|---|--:|---|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for case in result.cases:
        for index, run in enumerate(case.runs):
            name = f"{case.number}. {case.name}"
            if len(case.runs) > 1:
                name += f": run {index + 1}"
            events = f"{run.records:,}"
            if case.ideal_events != run.records:
                events += f" ({case.ideal_events:,} one user's)"
            refused = f"{run.refused:,}"
            if run.throttled:
                refused += f" (+{run.throttled:,} throttled)"
            found = "—" if run.found is None else f"{run.found:,.0f} events/s"
            lines.append(
                f"| {name} | {events} | {case.limit} | {case.budget} "
                f"| {_seconds(case.ideal_s)} | {_seconds(run.wall_s)} "
                f"| {run.wall_s / case.ideal_s:.2f} | {run.requests:,} | {refused} | {found} "
                f"| {_bound_cell(case)} | {_verdict(case, run)} |"
            )
    if result.left_out:
        lines += ["", "Not run:", ""]
        lines += [f"- {note}." for note in result.left_out]
    lines += [
        "",
        "| case | run | delivered | requests | retries | 429s refused | 429s throttled "
        "| waited on budget s | waited on Amplitude s | sending events/s | elapsed s "
        "| wall s | peak RSS MiB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for case in result.cases:
        for index, run in enumerate(case.runs):
            sending = run.sending
            lines.append(
                f"| {case.number} | {index + 1} | {run.delivered:,} | {run.requests:,} "
                f"| {run.retries:,} | {run.refused:,} | {run.throttled:,} "
                f"| {_optional(sending.get('waited_on_budget_s'))} "
                f"| {_optional(sending.get('waited_on_amplitude_s'))} "
                f"| {_optional(sending.get('events_per_second'), ',.0f')} "
                f"| {run.elapsed_s:.2f} | {run.wall_s:.2f} | {run.peak_rss_mb:.1f} |"
            )
    lines += [
        "",
        "| case | emulator limits | replay options | start-up s | events stored "
        "| requests answered | emulator answers |",
        "|---|---|---|--:|--:|--:|---|",
    ]
    for case in result.cases:
        limits = ", ".join(f"`{key}: {json.dumps(value)}`"
                           for key, value in case.emulator_limits.items())
        options = f"`{' '.join(case.options)}`" if case.options else "—"
        startup = "—" if case.startup_s is None else f"{case.startup_s:.2f}"
        lines.append(
            f"| {case.number} | {limits} | {options} | {startup} | {case.stored:,} "
            f"| {case.emulator_requests:,} | {case.statuses} |"
        )
    lines += ["", "Shapes (each run's files):", ""]
    lines += [f"- case {case.number}: {case.shape}." for case in result.cases]
    return lines


def _optional(value: object, spec: str = ".1f") -> str:
    return "—" if not isinstance(value, int | float) else format(value, spec)


RATE_NOTES = [
    "## How the rate-limited workload is measured",
    "",
    "- Inputs: `users.behaviors.CustomEvent` from `generate_fixtures` (no duplicates), every "
    "record rewritten with an external user id and a device id of its own user (so every "
    "record is delivered: none skipped for want of an identity), in files of one queue hour "
    f"each; the users take the records in turn ({RATE_USERS} of them). Case 3's three runs "
    "have their own ids (other seeds). Case 4's hot user (one user id, one device) holds its "
    "share of the events, spread evenly through the files. Generation is not timed.",
    "- Limits (the emulator, `PATCH /_emulator/config` before each case): `project_eps_cap` "
    "and `project_rps_cap` count each API key's accepted events and requests over a "
    "sliding 1 s window (every run uses the same key: one project) and answer 429 "
    "`{\"code\":429,\"error\":\"Too many requests\"}` without indexes past them; "
    "`rate_limits: true` turns on the per-user/device limit (Batch API: over "
    "`batch.eps_threshold` events/s averaged over `batch.eps_window_s`), whose 429 names "
    "the throttled ids.",
    f"- Bounds: {SLACK:g} × ideal, plus the start-up for the budgeted cases (1, 3), plus two "
    f"of the tool's {PROJECT_PAUSE_S:g} s pauses (Amplitude's guidance after a 429) for the "
    f"case without a budget (2); budgeted cases also ≤ {MAX_REFUSED:.0%} of requests refused "
    "(the summaries' refused 429s / requests; the emulator's own answers are listed beside). "
    "Case 4's ideal is the hot user's events / the per-id limit. A missed bound is reported "
    "(✗) and does not fail the run.",
    "- Checks (a failure stops the benchmark): every replay exits 0 with no object failed "
    "and nothing pending, delivers every record, and the emulator stores exactly the "
    "events the case's summaries delivered.",
]


NOTES = [
    "## How it is measured",
    "",
    "- Inputs: `generate_fixtures`, uncompressed Avro, no duplicate records: one file of "
    "`users.behaviors.CustomEvent`, and one file per event type for the mix. "
    "The real-shape workloads follow Braze's cadence (a file per event type every 5 minutes "
    "or 15,000 events): the realistic hour has every type, busy ones in full 15,000-event "
    "files and quiet ones in files of 5–300 events over 12 five-minute windows; small files "
    "only is 400 files of 250 events (at full size; this run's exact shapes are listed "
    "under its table). Generation is not timed.",
    "- Several files: `users.behaviors.CustomEvent` in 10 files of 10,000 events (at full "
    "size), one per queue hour, from one generation (no id repeats across the files); "
    "(a) decodes them all one after the other in the benchmark process, (b1)/(b2) are "
    "`replay DIR --workers 1` / `--workers 2` with the emulator answering at once, each "
    "checked like every replay.",
    "- Latency: the emulator's `latency_ms` (set through `PATCH /_emulator/config`) delays "
    "each answer of `/batch` and `/2/httpapi` after the request was handled; the control "
    "API is not delayed. Requests on separate connections overlap.",
    "- Real shapes: (b1)/(b2) are `replay DIR --workers 1` / `--workers 2` (when replay "
    "has no `--workers`, (b1) is replay as it is and (b2) is not run); (c) is one SDK client "
    "over all the files in the same order. Peak RSS of a run with several processes is "
    "that of its largest process (`ru_maxrss`), not their sum.",
    "- (a) decode only: `for record in fastavro.reader(f): pass` in the benchmark process.",
    "- (b) replay: `currents-export replay FILE --api-key … --amplitude-url EMULATOR --state … "
    "--dead-letter … --summary-json …` as a child process, default options otherwise "
    "(Batch API). events/s = the summary's `records` / `elapsed_s` (interpreter start-up "
    "excluded; it is in the wall time). After each run the emulator must hold exactly the "
    "delivered events and records = delivered + skipped + dead-lettered + duplicates.",
    "- (c) SDK: a child process (`bench/sdk_client.py`) decodes and maps each record as the "
    "replay does (`currents_export.mapping.mapped_records`: fastavro and the project's "
    "mapper), tracks one `amplitude.BaseEvent` per mapped "
    "record with `client.track`, then `client.flush()` and `client.shutdown()`. `Config` "
    "defaults except `server_url` = the emulator's `/2/httpapi`. events/s = records / (first "
    "decode → end of flush and shutdown; `shutdown` joins the SDK's sending threads). The child "
    "then exits at once (`os._exit`) instead of letting the interpreter wait out the SDK "
    "consumer thread's `flush_interval_millis` (up to 10 s of idle wall time).",
    "- Memory (issue 13: 1,000,000 events over 20 queue hours within 1.25 × the peak of "
    "200,000, and under 200 MiB at default settings): the 5 busy types of the realistic "
    "hour in proportion 3:2:2:2:1, spread evenly over the queue hours "
    "(`…/event_type=T/date=YYYY-MM-DD-HH/…`), a type's events of an hour in files of at "
    "most 15,000; each type's largest hour is generated once and written again for every "
    "hour with the hour in the ids' first 8 hex digits (no two ids alike: nothing is "
    "deduplicated) and the times moved by the hour. Both sizes have the same files, the "
    "larger 5× the events. `replay DIR --workers 1` (when replay has `--workers`; every "
    "other option at its default), checked like every replay.",
    "- Peak RSS: `ru_maxrss` of the replay child, from `os.wait4` in a small launcher "
    "(`bench/rusage.py`): Linux carries a process's RSS high-water mark across `exec`, so a "
    "child started straight from the benchmark process would report at least the "
    "benchmark's own size. The highest over the repeats; MiB = 2²⁰ bytes.",
    "- Emulator alone: the same file's events, mapped and serialised beforehand, POSTed with "
    "httpx over one keep-alive connection; only the POSTs are timed. The emulator, the "
    "replay and the SDK share this machine's cores.",
]


def render(results: Results) -> str:
    """The whole report as Markdown (the sections of the workloads measured)."""
    sections = [_header(results)]
    unlimited, limited = results.unlimited, results.rate
    if unlimited is not None:
        sections += [
            _throughput(unlimited),
            _ten_files(unlimited),
            _shapes(unlimited),
            _memory(unlimited),
            _emulator(unlimited),
        ]
    if limited is not None:
        sections.append(_rate_limited(limited))
    if unlimited is not None:
        sections += [_details(unlimited), NOTES]
    if limited is not None:
        sections.append(RATE_NOTES)
    return "\n\n".join("\n".join(section) for section in sections) + "\n"
