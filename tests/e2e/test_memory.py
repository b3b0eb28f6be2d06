"""Memory is bounded by what is in flight, not by the size of the object.

Measured as the peak RSS of a real ``currents-export replay`` process (the emulator runs
in its own process, and the replay is started from a small parent, so neither's memory is
counted). A memory bound, not a timing: no speed is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any, ClassVar

from currents_export.amplitude.batching import PendingEvent
from currents_export.core.dryrun import DryRunOutbox
from currents_export.core.pipeline import Pipeline
from currents_export.deadletter import DeadLetterDirectory
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import NoLedger
from currents_export.sources import find_local_objects
from currents_export.stopping import Stop


def peak_rss_mb(command: list[str]) -> float:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss / 1024


def test_peak_memory_does_not_grow_with_object_size(tmp_path: Path) -> None:
    emulator = subprocess.Popen(
        [sys.executable, "-m", "currents_export", "emulator", "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().split("listening on ")[1].split()[0]
        peaks = {}
        for events in (30_000, 90_000):
            root = tmp_path / str(events)
            generate_fixtures(root, events_per_type=events, files_per_type=1, seed=events,
                              event_types=["users.behaviors.CustomEvent"])
            peaks[events] = peak_rss_mb([
                sys.executable, "-m", "currents_export", "replay", str(root),
                "--api-key", "memory-test-key", "--amplitude-url", url,
                "--state", str(root / "state.sqlite"), "--dead-letter", str(root / "dl"),
            ])
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
    # Three times the records; nothing is kept per record beyond a bounded window of seen
    # event ids, so the peak stays nearly flat.
    assert peaks[90_000] <= 1.25 * peaks[30_000], peaks


class _Keeping(DryRunOutbox[Any]):
    """A dry run's outbox that also keeps every event handed to it, as lanes do while a
    request is open or in flight."""

    kept: ClassVar[list[PendingEvent[Any]]] = []

    def submit_many(self, events: list[PendingEvent[Any]]) -> list[PendingEvent[Any]]:
        self.kept.extend(events)
        return super().submit_many(events)


def test_events_waiting_in_the_outbox_hold_about_their_own_size(tmp_path: Path) -> None:
    """What the pipeline hands the lanes stays there for a round trip; orjson's results
    come in 4-8 KiB blocks whatever their length, so they must be kept at their length."""
    generate_fixtures(tmp_path / "bucket", events_per_type=2_000, files_per_type=1, seed=7,
                      event_types=["users.behaviors.CustomEvent"])
    sender = _Keeping
    pipeline = Pipeline(open_outbox=_Keeping, dry_run=True, stop=Stop(), ledger=NoLedger(),
                        dead_letter=DeadLetterDirectory(tmp_path / "dead-letter"))
    tracemalloc.start()
    try:
        pipeline.run(find_local_objects([tmp_path / "bucket"]))
        payloads = [event.payload for event in sender.kept]
        sender.kept.clear()
        events, text = len(payloads), sum(len(payload) for payload in payloads)
        held = tracemalloc.get_traced_memory()[0]
        del payloads
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert events > 1_500  # most records are events (a few lack ids, by design)
    assert freed < text * 1.2, f"{freed / events:.0f} bytes held per {text / events:.0f}-byte event"
