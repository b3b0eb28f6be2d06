"""A replay killed with SIGKILL mid-object resumes and finishes: nothing lost, nothing
counted twice, and a further run sends nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from currents_export.counts import Tally
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import SqliteLedger
from currents_export.sources import find_local_objects
from tests.support.emulator import requests_made
from tests.support.runs import read_all

ENV = {**os.environ, "AMPLITUDE_API_KEY": "kill-test-key"}


def requests_seen(emulator: Emulator) -> int:
    return requests_made(emulator)


def replay_command(emulator: Emulator, work: Path) -> list[str]:
    return [
        sys.executable, "-m", "currents_export", "replay", str(work / "bucket"),
        "--amplitude-url", emulator.url, "--api", "http",
        "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dead-letter"),
        "--summary-json", str(work / "summary.json"), "--checkpoint-every", "250",
        "--lanes", "3", "--retry-horizon", "120",
    ]


def progress_of(state: Path, object_id: str) -> tuple[str, int]:
    """The ledger's status and checkpoint for one object, read while the replay writes."""
    if not state.exists():
        return "", 0
    ledger = SqliteLedger(state)
    row = ledger.status(object_id) or {}
    ledger.close()
    return row.get("status", ""), row.get("next_index", 0)


def kill_after_progress(command: list[str], state: Path, object_id: str) -> tuple[str, int]:
    """Start a replay and SIGKILL it as soon as it saved progress beyond the last checkpoint.

    Returns the object's status and checkpoint at the moment of the kill.
    """
    _, before = progress_of(state, object_id)
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline:
            status, index = progress_of(state, object_id)
            if index > before:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return status, index
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    raise AssertionError("the replay finished or stalled before saving progress")


def test_sigkill_at_several_points_then_resume(tmp_path: Path) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=24_000, seed=77,
                              files_per_type=1, event_types=["users.behaviors.CustomEvent"])
    files += generate_fixtures(tmp_path / "bucket", events_per_type=1_500, seed=78,
                               files_per_type=1, event_types=["users.messages.email.Open"])
    records = read_all(files)
    first: dict[str, dict] = {}
    for _, record in records:
        first.setdefault(record["id"], record)
    valid = {i for i, r in first.items() if r.get("external_user_id") or r.get("device_id")}

    with Emulator() as emulator:
        # Slow every request a little so that the kills land in the middle of the work.
        emulator.set_faults([{"action": "delay", "delay_s": 0.25}])
        command = replay_command(emulator, tmp_path)
        # The 24,000-event object's id in the ledger: its Currents identity.
        big = find_local_objects([files[0].path])[0].identity
        kills = [kill_after_progress(command, tmp_path / "state.sqlite", big)
                 for _ in range(3)]
        # Three kills, each in the middle of the object, each after further progress.
        assert [status for status, _ in kills] == ["in_progress"] * 3
        checkpoints = [index for _, index in kills]
        assert checkpoints == sorted(set(checkpoints)) and checkpoints[-1] < 24_000
        emulator.clear_faults()

        finished = subprocess.run(command, env=ENV,
                                  capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr
        summary = orjson.loads((tmp_path / "summary.json").read_bytes())
        stored = emulator.events()
        requests_before_last = requests_seen(emulator)

        again = subprocess.run(command, env=ENV,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0
        last = orjson.loads((tmp_path / "summary.json").read_bytes())
        assert requests_seen(emulator) == requests_before_last
        assert last["objects_already_done"] == len(files) and last["requests"] == 0

    # Every valid event is in Amplitude exactly once (repeats dropped by insert_id).
    insert_ids = [event["insert_id"] for event in stored]
    assert sorted(insert_ids) == sorted(valid)

    # The finishing run's summary adds up (it counts resumed records from the checkpoint).
    assert summary["balanced"] and summary["objects_failed"] == 0

    # Per object, the ledger's figures account for every record exactly once.
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    for source, fixture in zip(find_local_objects([tmp_path / "bucket"]),
                               sorted(files, key=lambda f: f.path), strict=True):
        row = ledger.status(source.identity)
        assert row is not None and row["status"] == "done"
        tally = Tally.from_json(orjson.loads(row["figures"]))
        assert tally.records == fixture.records
        assert tally.balanced
    ledger.close()


def test_sigkill_of_a_run_with_two_workers_then_resume(tmp_path: Path) -> None:
    """The parent and both worker processes killed at once (SIGKILL to the process group),
    mid-object; the resumed run finishes and every event is in Amplitude exactly once."""
    files = generate_fixtures(tmp_path / "bucket", events_per_type=6_000, seed=79,
                              files_per_type=2, event_types=["users.behaviors.CustomEvent",
                                                              "users.messages.email.Open"],
                              duplicate_rate=0)
    valid = sorted(r["id"] for _, r in read_all(files)
                   if r.get("external_user_id") or r.get("device_id"))
    state = tmp_path / "state.sqlite"
    ids = [source.identity for source in find_local_objects([tmp_path / "bucket"])]

    def checkpoints() -> dict[str, tuple[str, int]]:
        return {object_id: progress_of(state, object_id) for object_id in ids}

    with Emulator() as emulator:
        emulator.set_faults([{"action": "delay", "delay_s": 0.25}])
        command = [*replay_command(emulator, tmp_path), "--workers", "2"]
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        try:
            while process.poll() is None and time.monotonic() < deadline:
                # Killed once two objects (so: both workers, most likely) saved progress.
                at_kill = checkpoints()
                if sum(1 for status, index in at_kill.values()
                       if status == "in_progress" and index > 0) >= 2:
                    os.killpg(process.pid, signal.SIGKILL)  # parent, workers, all at once
                    break
                time.sleep(0.02)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert process.returncode == -signal.SIGKILL, "the replay ended before the kill"
        assert any(status == "in_progress" for status, _ in at_kill.values())
        emulator.clear_faults()

        finished = subprocess.run(command, env=ENV, capture_output=True, text=True,
                                  timeout=300)
        assert finished.returncode == 0, finished.stderr
        summary = orjson.loads((tmp_path / "summary.json").read_bytes())
        stored = emulator.events()
        requests_before_last = requests_seen(emulator)

        again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0
        last = orjson.loads((tmp_path / "summary.json").read_bytes())
        assert requests_seen(emulator) == requests_before_last
        assert last["objects_already_done"] == len(files) and last["requests"] == 0

    # Every valid event is in Amplitude exactly once; the resumed objects took up from
    # their checkpoints (the leases of the killed workers did not hold them).
    assert sorted(event["insert_id"] for event in stored) == valid
    assert summary["balanced"] and summary["objects_failed"] == 0
    assert summary["resumed_records"] > 0
    ledger = SqliteLedger(state)
    for source, fixture in zip(find_local_objects([tmp_path / "bucket"]),
                               sorted(files, key=lambda f: f.path), strict=True):
        row = ledger.status(source.identity)
        assert row is not None and row["status"] == "done"
        tally = Tally.from_json(orjson.loads(row["figures"]))
        assert tally.records == fixture.records and tally.balanced
    ledger.close()
