"""The live progress display: the status line from snapshots, the refresher thread on a
terminal and off one, and the replay/backfill wiring (stderr only, stdout keeps the summary)."""

from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export import cli, display
from currents_export.core.dryrun import DryRunOutbox
from currents_export.core.pipeline import Pipeline
from currents_export.counts import ObjectReport, SendingReport
from currents_export.deadletter import open_dead_letter
from currents_export.display import (
    LiveProgress,
    ProgressSnapshot,
    ReportedSnapshot,
    Totals,
    estimate_eta,
    format_duration,
    format_status,
)
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.ledger import NoLedger
from currents_export.sources import find_local_objects
from currents_export.stopping import Stop

API_KEY = "test-key-0123456789"
TYPES = ["users.behaviors.CustomEvent", "users.messages.email.Open", "users.behaviors.Purchase",
         "users.messages.pushnotification.Send", "users.behaviors.app.SessionStart",
         "users.messages.email.Delivery"]


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- the line, from snapshots ----------------------------------------------------------------

def test_the_line_shows_rate_objects_buckets_and_the_eta_from_bytes() -> None:
    # 4 of 10 objects finished (1 failed), 2 in flight; 4,000 records per 1,000,000 bytes read.
    snap = ProgressSnapshot(
        objects_done=3, objects_failed=1, objects_in_flight=2, records=5_000, delivered=4_700,
        skipped=200, dead_lettered=60, duplicates=40, in_flight_records=1_000,
        bytes_finished=1_000_000, bytes_processed=1_000_000, records_processed=4_000)
    totals = Totals(objects=10, bytes=3_000_000)
    line = format_status("replay", snap, elapsed_s=75, rate=1234.4, totals=totals)
    # Records to come: 2,000,000 bytes left x 0.004 per byte - 1,000 in flight = 7,000;
    # at 1,234.4 events/s: 5.67 s.
    assert line == ("replay 0:01:15, ETA 0:00:06 | 1,234 events/s | "
                    "objects 4/10 (2 in flight, 1 failed) | delivered 4,700 | skipped 200 | "
                    "dead-lettered 60 | duplicates 40")


def test_the_line_ends_with_what_sending_meets() -> None:
    snap = ProgressSnapshot(objects_done=1, records=950, delivered=950)
    sending = SendingReport(events_per_second=950.0, requests_per_second=95.0,
                            found_events_per_second=712.6, refused=1, throttled=2,
                            waited_on_budget_s=4.2, waited_on_amplitude_s=60.1)
    line = format_status("replay", snap, elapsed_s=70, rate=900.0, sending=sending)
    assert line.endswith(" | dead-lettered 0 | budget 950 events/s, 95 requests/s, found 713 "
                         "events/s, 429s: 1 project, 2 users/devices, waited: Amplitude 60 s, "
                         "budget 4 s")


def test_no_eta_without_a_known_total_and_no_rate_before_one_is_measured() -> None:
    snap = ProgressSnapshot(objects_done=2, objects_in_flight=1, records=10, delivered=10)
    line = format_status("backfill", snap, elapsed_s=3, rate=None, totals=None)
    assert line == ("backfill 0:00:03 | - events/s | objects 2 (1 in flight) | delivered 10 | "
                    "skipped 0 | dead-lettered 0")
    assert estimate_eta(snap, rate=5.0, elapsed_s=3, totals=None) is None


def test_eta_falls_back_to_objects_when_bytes_are_unknown() -> None:
    snap = ProgressSnapshot(objects_done=4, objects_already_done=1, records=500)
    # 5 of 20 finished in 60 s: 15 left at 12 s each.
    assert estimate_eta(snap, rate=10.0, elapsed_s=60, totals=Totals(20)) == 180.0
    # Bytes known but nothing read yet (only skipped objects): the object pace too.
    skipped_only = ProgressSnapshot(objects_already_done=5, bytes_finished=5_000)
    assert estimate_eta(skipped_only, rate=0.0, elapsed_s=10, totals=Totals(10, 10_000)) == 10.0
    # Nothing finished yet: unknown.
    assert estimate_eta(ProgressSnapshot(), rate=50.0, elapsed_s=5, totals=Totals(3, 300)) is None
    # From bytes, a rate is needed.
    read = ProgressSnapshot(objects_done=1, bytes_finished=100, bytes_processed=100,
                            records_processed=10, records=10)
    assert estimate_eta(read, rate=0.0, elapsed_s=5, totals=Totals(3, 300)) is None
    assert estimate_eta(read, rate=2.0, elapsed_s=5, totals=Totals(3, 300)) == 10.0


def test_everything_finished_shows_no_eta() -> None:
    snap = ProgressSnapshot(objects_done=3, records=30, delivered=30, bytes_finished=300,
                            bytes_processed=300, records_processed=30)
    assert estimate_eta(snap, rate=10.0, elapsed_s=3, totals=Totals(3, 300)) == 0.0
    assert "ETA" not in format_status("replay", snap, elapsed_s=3, rate=10.0,
                                      totals=Totals(3, 300))


def test_durations() -> None:
    assert [format_duration(s) for s in (0, 59.6, 61, 3_600 * 27 + 5)] == [
        "0:00:00", "0:01:00", "0:01:01", "27:00:05"]


def test_snapshots_add_up() -> None:
    a = ProgressSnapshot(objects_done=1, records=10, delivered=9, skipped=1, bytes_finished=5)
    b = ProgressSnapshot(objects_in_flight=2, records=7, resumed=3, delivered=7)
    total = a + b
    assert (total.objects_finished, total.objects_in_flight, total.records, total.delivered,
            total.records_this_run) == (1, 2, 17, 16, 14)
    remote = ReportedSnapshot()  # what a worker process would feed
    assert remote.snapshot() == ProgressSnapshot()
    remote.update(total)
    assert remote.snapshot() == total


def test_a_finished_object_adds_its_buckets_and_its_bytes_when_read() -> None:
    report = ObjectReport(object="/data/f.avro", records=12, delivered=6, duplicates=1,
                          resumed=4)
    report.skipped.update({"no_identity": 2, "dry_run": 1})
    report.dead_lettered["invalid_id"] = 2
    assert ProgressSnapshot.of_finished(report, 300, read=True) == ProgressSnapshot(
        objects_done=1, records=12, resumed=4, delivered=6, skipped=3, dead_lettered=2,
        duplicates=1, bytes_finished=300, bytes_processed=300, records_processed=12)
    # Not read (e.g. already done): its bytes are finished, not a measure of records/byte.
    already = ObjectReport(object="/data/g.avro", status="already_done")
    assert ProgressSnapshot.of_finished(already, 50, read=False) == ProgressSnapshot(
        objects_already_done=1, bytes_finished=50)
    # A size unknown: nothing for the bytes.
    failed = ObjectReport(object="/data/h.avro", status="failed", records=3, delivered=3)
    assert ProgressSnapshot.of_finished(failed, None, read=True) == ProgressSnapshot(
        objects_failed=1, records=3, delivered=3)


def test_the_rate_is_measured_over_the_recent_window() -> None:
    clock, source = FakeClock(), ReportedSnapshot()
    tty = FakeTTY()
    live = LiveProgress("replay", tty, window_s=10, clock=clock)
    live.add(source)
    lines = []  # ticks driven by hand, on the fake clock
    for second in range(31):  # 100 events/s for 20 s, then 10 events/s
        records = 100 * min(second, 20) + 10 * max(second - 20, 0)
        source.update(ProgressSnapshot(records=records, delivered=records))
        clock.now = 1000.0 + second
        live._tick()
        lines.append(tty.getvalue().rsplit("\r", 1)[-1])
    assert "- events/s" in lines[0]  # not started: no sample at the start
    assert "| 100 events/s |" in lines[15]
    assert "| 10 events/s |" in lines[30]  # the last 10 s only, not the run's average


def test_the_listing_sets_the_total_once_it_ends() -> None:
    live = LiveProgress("backfill", io.StringIO())

    class Obj:
        def __init__(self, size: int | None) -> None:
            self.size = size

    listed = live.counting([Obj(10), Obj(20)])
    next(listed)
    assert live._totals is None
    list(listed)
    assert live._totals == Totals(2, 30)
    list(live.counting([Obj(10), Obj(None)]))
    assert live._totals == Totals(2, None)  # a size unknown: objects only


def test_closing_writes_a_final_line_even_when_no_tick_happened() -> None:
    tty, log = FakeTTY(), io.StringIO()
    for stream in (tty, log):
        live = LiveProgress("replay", stream, refresh_s=3600)
        live.add(ReportedSnapshot())
        with live:
            pass
    assert tty.getvalue().startswith("\rreplay 0:00:00 |") and tty.getvalue().endswith("\n")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ replay 0:00:00 \|.* \(final\)\n",
                        log.getvalue())


def test_a_broken_stream_never_stops_the_run() -> None:
    class Broken(FakeTTY):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    live = LiveProgress("replay", Broken(), refresh_s=0.01)
    live.add(ReportedSnapshot())
    with live:
        threading.Event().wait(0.05)
    assert live.updates == 0


# ---- the pipeline's snapshot -----------------------------------------------------------------

def test_a_pipeline_snapshot_counts_the_object_in_flight_then_the_finished(
    twelve_files: tuple[Path, list[FixtureFile]], tmp_path: Path,
) -> None:
    _, files = twelve_files
    [source] = find_local_objects([files[0].path])
    seen: list[ProgressSnapshot] = []

    class Output(io.BytesIO):  # --output: written once per mapped record, mid-object
        writes = 0

        def write(self, data: Any) -> int:
            self.writes += 1
            if self.writes == 600:  # the owner has been told of 512 skipped at least:
                seen.append(_published(pipeline, 512))  # it publishes them soon
            return super().write(data)

    pipeline = Pipeline(open_outbox=DryRunOutbox, dry_run=True, stop=Stop(),
                        ledger=NoLedger(), output=Output(),
                        dead_letter=open_dead_letter(str(tmp_path / "dl")))
    assert pipeline.snapshot() == ProgressSnapshot()
    summary = pipeline.run([source])
    [during] = seen
    assert (during.objects_finished, during.objects_in_flight) == (0, 1)
    assert during.records == during.in_flight_records >= 512  # resolved so far: dry run skips
    assert during.skipped + during.duplicates + during.dead_lettered == during.records
    after = pipeline.snapshot()
    assert (after.objects_done, after.objects_in_flight, after.in_flight_records) == (1, 0, 0)
    assert (after.records, after.skipped) == (summary.records, sum(summary.skipped.values()))
    assert after.bytes_finished == after.bytes_processed == source.size
    assert after.records_processed == summary.records


def _published(pipeline: Pipeline, records: int) -> ProgressSnapshot:
    """The pipeline's snapshot once it shows ``records`` (the owner publishes a few times
    a second), or the last one after 10 s."""
    deadline = time.monotonic() + 10
    snapshot = pipeline.snapshot()
    while snapshot.records < records and time.monotonic() < deadline:
        time.sleep(0.02)
        snapshot = pipeline.snapshot()
    return snapshot


# ---- a real replay against a slowed emulator ----------------------------------------------------

@pytest.fixture(scope="module")
def twelve_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FixtureFile]]:
    root = tmp_path_factory.mktemp("display-bucket")
    return root, generate_fixtures(root, events_per_type=2_000, event_types=TYPES,
                                   files_per_type=2, seed=5)


@pytest.fixture
def slow_emulator(emulator: Emulator) -> Iterator[Emulator]:
    emulator.set_faults([{"action": "delay", "delay_s": 0.5}], seed=1)
    yield emulator
    emulator.clear_faults()


def replay(emulator: Emulator, work: Path, root: Path, *extra: str) -> Result:
    work.mkdir(parents=True, exist_ok=True)
    return CliRunner().invoke(cli.main, [
        "replay", str(root), "--amplitude-url", emulator.url, "--lanes", "1",
        "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dl"),
        "--summary-json", str(work / "summary.json"), "--retry-horizon", "0", *extra,
    ], env={"AMPLITUDE_API_KEY": API_KEY}, catch_exceptions=False)


def summary_of(work: Path) -> dict[str, Any]:
    return orjson.loads((work / "summary.json").read_bytes())


def test_on_a_terminal_the_line_is_rewritten_every_second_during_a_replay(
    slow_emulator: Emulator, twelve_files: tuple[Path, list[FixtureFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, files = twelve_files
    tty = FakeTTY()
    monkeypatch.setenv("COLUMNS", "250")  # the width the line is cut to
    monkeypatch.setattr(cli, "LiveProgress",
                        lambda label, _stderr, as_json: LiveProgress(label, tty))
    result = replay(slow_emulator, tmp_path, root, "--progress")
    assert result.exit_code == 0, result.output
    summary = summary_of(tmp_path)
    assert summary["objects_done"] == len(files)

    written = tty.getvalue()
    assert written.endswith("\x1b[K\n")  # the final line, ended
    updates = [u.removesuffix("\n").removesuffix("\x1b[K") for u in written.split("\r") if u]
    *during, final = updates
    delivered = [int(re.search(r"delivered ([\d,]+)", u)[1].replace(",", ""))  # type: ignore[index]
                 for u in during]
    elapsed = [re.match(r"replay (\d+:\d\d:\d\d)[ ,]", u)[1] for u in during]  # type: ignore[index]
    # At least two updates before the end, showing the run moving; one per second.
    assert len(during) >= 2 and len(set(delivered)) >= 2
    assert delivered == sorted(delivered)
    assert elapsed == sorted(set(elapsed))
    assert f"objects {len(files)}/{len(files)} (0 in flight)" in final
    assert f"delivered {summary['delivered']:,}" in final
    assert any(re.search(rf"/{len(files)} \([1-9]\d* in flight\)", u) for u in during)
    assert any(", ETA " in u for u in during)  # the total is known: replay lists its files
    # stdout: the summary table only; stderr: nothing (the display went to the terminal).
    assert result.stdout.startswith("event type") and " | delivered " not in result.stdout
    assert result.stderr == ""


def test_off_a_terminal_a_line_every_interval(
    slow_emulator: Emulator, twelve_files: tuple[Path, list[FixtureFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, files = twelve_files
    monkeypatch.setattr(display, "REFRESH_S", 0.1)
    monkeypatch.setattr(display, "LOG_EVERY_S", 0.5)
    result = replay(slow_emulator, tmp_path, root, "--progress")
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert "\r" not in result.stderr
    assert len(lines) >= 3  # periodic lines, then the final one
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ replay \d+:\d\d:\d\d(, ETA | \| )", line)
               for line in lines)
    assert lines[-1].endswith("(final)") and f"objects {len(files)}/{len(files)}" in lines[-1]
    assert not any(line.endswith("(final)") for line in lines[:-1])
    assert result.stdout.startswith("event type") and " | delivered " not in result.stdout


def test_progress_json_writes_one_object_per_line_for_programs(
    slow_emulator: Emulator, twelve_files: tuple[Path, list[FixtureFile]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, files = twelve_files
    monkeypatch.setattr(display, "REFRESH_S", 0.1)
    monkeypatch.setattr(display, "LOG_EVERY_S", 0.5)
    result = replay(slow_emulator, tmp_path, root, "--progress", "json")
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) >= 3 and [line["final"] for line in lines].count(True) == 1
    final = lines[-1]
    assert final["final"] and final["objects_total"] == final["objects_done"] == len(files)
    summary = summary_of(tmp_path)
    assert (final["delivered"], final["records"]) == (summary["delivered"], summary["records"])
    delivered = [line["delivered"] for line in lines]
    assert delivered == sorted(delivered) and len(set(delivered)) >= 2
    assert all(line["command"] == "replay" and line["sending"] is not None for line in lines)
    assert result.stdout.startswith("event type")  # stdout: still the summary table
    both = replay(slow_emulator, tmp_path / "x", root, "--progress", "--no-progress")
    assert both.exit_code == 2 and "give one" in both.output


def test_no_progress_and_the_default_off_a_terminal_write_nothing_on_stderr(
    emulator: Emulator, twelve_files: tuple[Path, list[FixtureFile]], tmp_path: Path,
) -> None:
    root, _ = twelve_files
    quiet = replay(emulator, tmp_path / "a", root, "--no-progress")
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""
    assert quiet.stdout.startswith("event type") and "TOTAL" in quiet.stdout
    default = replay(emulator, tmp_path / "b", root)  # CliRunner: not a terminal
    assert default.exit_code == 0, default.output
    assert default.stderr == ""
