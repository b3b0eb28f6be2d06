"""Memory is bounded by what is in flight, not by the size of the object.

Measured as the peak RSS of a real ``currents-export replay`` process (the emulator runs
in its own process, and the replay is started from a small parent, so neither's memory is
counted). A memory bound, not a timing: no speed is asserted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from currents_export.kit.fixtures import generate_fixtures


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
