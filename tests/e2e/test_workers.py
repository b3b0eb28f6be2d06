"""``--workers N``: real worker processes against a real emulator.

Every event arrives exactly once and the summary equals one process's; Ctrl-C stops every
worker with its progress saved; a worker killed mid-object has its objects resumed by
another; a worker that dies again and again on one object does not loop forever.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from currents_export.amplitude.pacing import PaceState
from currents_export.compose import build_worker_pipeline
from currents_export.counts import ProgressSnapshot, RunSummary
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.ledger import SqliteLedger
from currents_export.settings import load_settings
from currents_export.sources import SourceObject, find_local_objects
from currents_export.stopping import Stop
from currents_export.workers import WorkerPool, WorkerSpec
from tests.support.emulator import stored_events
from tests.support.runs import API_KEY, assert_balanced, read_all, replay, run_cli

TYPES = ["users.behaviors.CustomEvent", "users.messages.email.Open",
         "users.behaviors.Purchase", "users.behaviors.app.SessionStart"]
ENV = {**os.environ, "AMPLITUDE_API_KEY": API_KEY}
FIGURES = ("records", "delivered", "skipped", "dead_lettered", "duplicates", "warnings",
           "objects_done", "objects_already_done", "objects_failed", "pending_records",
           "resumed_records", "by_event_type", "failures", "balanced", "interrupted")


def fixtures(root: Path, events: int, files_per_type: int = 2) -> list[FixtureFile]:
    """No repeated event ids: each worker detects repeats only among its own objects, so
    with repeats across files the split between delivered and duplicates would depend on
    which worker read which file."""
    return generate_fixtures(root, events_per_type=events, seed=13, event_types=TYPES,
                             files_per_type=files_per_type, duplicate_rate=0)


def valid_ids(files: list[FixtureFile]) -> list[str]:
    return sorted(r["id"] for _, r in read_all(files)
                  if r.get("external_user_id") or r.get("device_id"))


def lease_owners(state: Path) -> dict[str, tuple[str, int, str]]:
    """Every ledger row: its status, checkpoint and lease owner (read while a run writes)."""
    if not state.exists():
        return {}
    with sqlite3.connect(state, timeout=30) as db:
        try:
            rows = db.execute(
                "SELECT object_id, status, next_index, lease_owner FROM objects").fetchall()
        except sqlite3.OperationalError:  # the table is not made yet
            return {}
    return {row[0]: (row[1], row[2], row[3] or "") for row in rows}


def owner_pid(owner: str) -> int:
    return int(owner.split(":")[1])


def worker_pids(parent: int) -> list[int]:
    """The worker processes of ``parent`` (its children started by multiprocessing's
    spawn; the resource tracker is a child too, but not a worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(b")")[2].split()[1]) == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def replay_command(emulator: Emulator, work: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "currents_export", "replay", str(work / "bucket"),
        "--amplitude-url", emulator.url, "--api", "http",
        "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dead-letter"),
        "--summary-json", str(work / "summary.json"), "--checkpoint-every", "100",
        "--lanes", "2", "--retry-horizon", "120", "--workers", "2", *extra,
    ]


def wait_until(condition: Any, process: subprocess.Popen[bytes], what: str) -> Any:
    """Poll ``condition`` until it answers something true (a guard against a hang, not a
    timing check)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"the replay ended or stalled before {what}")


# ---- every event once, the same figures as one process ------------------------------------

def test_two_workers_deliver_every_event_once_and_add_up_like_one_process(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket", events=600, files_per_type=3)
    for work in ("two", "one"):
        (tmp_path / work).mkdir()

    result, two = replay(emulator, tmp_path / "two", tmp_path / "bucket",
                         extra=("--workers", "2"))
    assert result.exit_code == 0, result.output
    stored = [event["insert_id"] for event in stored_events(emulator)]
    # Each valid event stored once, and acknowledged once: none was sent by both workers.
    assert sorted(stored) == valid_ids(files) and two["delivered"] == len(stored)
    assert two["objects_done"] == len(files) and two["records"] == sum(f.records for f in files)
    assert_balanced(two)
    # The objects were processed by worker processes, not by this one.
    rows = lease_owners(tmp_path / "two" / "state.sqlite")
    assert len(rows) == len(files) and {status for status, _, _ in rows.values()} == {"done"}
    assert os.getpid() not in {owner_pid(owner) for _, _, owner in rows.values()}

    httpx.post(f"{emulator.url}/_emulator/reset").raise_for_status()
    result, one = replay(emulator, tmp_path / "one", tmp_path / "bucket",
                         extra=("--workers", "1"))
    assert result.exit_code == 0, result.output
    assert {k: two[k] for k in FIGURES} == {k: one[k] for k in FIGURES}
    assert two["worker_restarts"] == one["worker_restarts"] == 0
    assert {owner_pid(owner) for _, _, owner in
            lease_owners(tmp_path / "one" / "state.sqlite").values()} == {os.getpid()}

    # A second run with workers: everything is already done, nothing is sent.
    result, again = replay(emulator, tmp_path / "two", tmp_path / "bucket",
                           extra=("--workers", "2"))
    assert result.exit_code == 0, result.output
    assert again["objects_already_done"] == len(files) and again["requests"] == 0


def test_workers_come_from_the_environment_and_output_takes_one_process(
    emulator: Emulator, tmp_path: Path
) -> None:
    fixtures(tmp_path / "bucket", events=40)
    base = ["replay", str(tmp_path / "bucket"), "--api-key", API_KEY,
            "--amplitude-url", emulator.url, "--dead-letter", str(tmp_path / "dl")]

    from_env = run_cli(*base, "--state", str(tmp_path / "env.sqlite"),
                       env={"CURRENTS_EXPORT_WORKERS": "2"})
    assert from_env.exit_code == 0, from_env.output
    owners = lease_owners(tmp_path / "env.sqlite").values()
    assert os.getpid() not in {owner_pid(owner) for _, _, owner in owners}

    # --output is one file: two processes would interleave its lines.
    refused = run_cli(*base, "--state", str(tmp_path / "out.sqlite"), "--workers", "2",
                      "--output", str(tmp_path / "events.jsonl"))
    assert refused.exit_code == 2
    assert "--output writes one file from one process" in refused.output
    assert not (tmp_path / "out.sqlite").exists()
    # Without --workers (none in the environment either), --output runs in this process.
    alone = run_cli(*base, "--state", str(tmp_path / "out.sqlite"),
                    "--output", str(tmp_path / "events.jsonl"),
                    env={"CURRENTS_EXPORT_WORKERS": None})  # type: ignore[dict-item]
    assert alone.exit_code == 0, alone.output
    owners = lease_owners(tmp_path / "out.sqlite").values()
    assert {owner_pid(owner) for _, _, owner in owners} == {os.getpid()}
    assert len((tmp_path / "events.jsonl").read_bytes().splitlines()) > 0


# ---- Ctrl-C ------------------------------------------------------------------------------

def test_sigint_stops_every_worker_with_progress_saved_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    files = fixtures(tmp_path / "bucket", events=3_000, files_per_type=1)
    with Emulator() as emulator:
        emulator.set_faults([{"action": "delay", "delay_s": 0.3}])
        state = tmp_path / "state.sqlite"
        # A session of its own: Ctrl-C on a terminal goes to the whole process group.
        process = subprocess.Popen(replay_command(emulator, tmp_path), env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        try:
            wait_until(lambda: any(index > 0 for _, index, _ in lease_owners(state).values()),
                       process, "saving progress")
            workers = worker_pids(process.pid)
            os.killpg(process.pid, signal.SIGINT)
            _, stderr = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        assert process.returncode == 1, stderr.decode()
        assert b"Traceback" not in stderr and b"died" not in stderr
        summary = orjson.loads((tmp_path / "summary.json").read_bytes())
        assert summary["interrupted"] is True and summary["worker_restarts"] == 0
        assert summary["objects_done"] + summary["objects_unfinished"] == len(files)
        # Not finished, not failed: the interrupt is the cause, said once for every worker.
        assert summary["objects_unfinished"] > 0 and summary["objects_failed"] == 0
        assert "interrupted by SIGINT" in summary["stopped_by"] and summary["failures"] == []
        assert b"ERROR" not in stderr
        assert_balanced(summary)
        # Every worker stopped cleanly: what is not done is recorded as failed (its
        # checkpoint kept, its lease released), none is left held by a stopped worker.
        rows = lease_owners(state)
        assert {status for status, _, _ in rows.values()} <= {"done", "failed"}
        assert len(workers) == 2  # both ended (reaped by the parent)
        assert not any(Path(f"/proc/{pid}").exists() for pid in workers)

        emulator.clear_faults()
        again = subprocess.run(replay_command(emulator, tmp_path), env=ENV,
                               capture_output=True, timeout=300)
        assert again.returncode == 0, again.stderr.decode()
        final = orjson.loads((tmp_path / "summary.json").read_bytes())
        stored = [event["insert_id"] for event in emulator.events()]
    assert final["objects_done"] + final["objects_already_done"] == len(files)
    assert final["objects_already_done"] == summary["objects_done"]
    assert final["objects_failed"] == 0
    assert_balanced(final)
    assert sorted(stored) == valid_ids(files)
    # Per object, the ledger's figures account for every record exactly once.
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    for source, fixture in zip(find_local_objects([tmp_path / "bucket"]),
                               sorted(files, key=lambda f: f.path), strict=True):
        row = ledger.status(source.identity)
        assert row is not None and row["status"] == "done"
        assert orjson.loads(row["figures"])["records"] == fixture.records
    ledger.close()


# ---- a worker killed -----------------------------------------------------------------------

def test_a_killed_worker_s_objects_are_resumed_by_another_and_the_run_completes(
    tmp_path: Path,
) -> None:
    files = fixtures(tmp_path / "bucket", events=3_000, files_per_type=1)
    with Emulator() as emulator:
        emulator.set_faults([{"action": "delay", "delay_s": 0.2}])
        state = tmp_path / "state.sqlite"
        process = subprocess.Popen(replay_command(emulator, tmp_path), env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)

        def a_worker_with_progress() -> tuple[int, str] | None:
            workers = set(worker_pids(process.pid))
            for object_id, (status, index, owner) in lease_owners(state).items():
                if status == "in_progress" and index > 0 and owner_pid(owner) in workers:
                    return owner_pid(owner), object_id
            return None

        try:
            pid, object_id = wait_until(a_worker_with_progress, process,
                                        "a worker saved progress")
            os.kill(pid, signal.SIGKILL)
            _, stderr = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        stored = [event["insert_id"] for event in emulator.events()]
    assert process.returncode == 0, stderr.decode()
    assert f"(pid {pid}) died (killed by SIGKILL)".encode() in stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["worker_restarts"] == 1 and summary["objects_failed"] == 0
    assert summary["objects_done"] == len(files)
    assert summary["records"] == sum(f.records for f in files)
    assert summary["resumed_records"] > 0  # the killed object resumed from its checkpoint
    assert_balanced(summary)
    # Nothing lost, and each event acknowledged once in the summary.
    assert sorted(stored) == valid_ids(files) and summary["delivered"] == len(stored)
    rows = lease_owners(state)
    assert {status for status, _, _ in rows.values()} == {"done"}
    _, _, owner = rows[object_id]
    assert owner_pid(owner) != pid  # finished by another worker
    ledger = SqliteLedger(state)
    row = ledger.status(object_id)
    ledger.close()
    assert row is not None and row["attempts"] == 2


# ---- a worker that dies on one object every time -------------------------------------------

class _DiesOn:
    """A real pipeline whose process is killed when it is handed one given object: a
    crash that comes back every time that object is read (a fault injected in the test)."""

    def __init__(self, pipeline: Any, poison: str) -> None:
        self._pipeline = pipeline
        self._poison = poison
        self.ledger = pipeline.ledger
        self.dead_letter = pipeline.dead_letter

    def snapshot(self) -> ProgressSnapshot:
        return self._pipeline.snapshot()

    def run(self, objects: Iterable[SourceObject]) -> RunSummary:
        return self._pipeline.run(self._watch(objects))

    def _watch(self, objects: Iterable[SourceObject]) -> Iterator[SourceObject]:
        for source in objects:
            if source.uri == self._poison:
                os.kill(os.getpid(), signal.SIGKILL)
            yield source


def _poisoned_pipeline(poison: str, *args: Any) -> _DiesOn:
    """WorkerSpec.build of the test below (run in the worker processes)."""
    return _DiesOn(build_worker_pipeline(*args), poison)


def test_an_object_that_kills_its_worker_every_time_is_reported_failed(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path / "bucket", events=200)
    objects = find_local_objects([tmp_path / "bucket"])
    poison = objects[1].uri
    settings = load_settings("replay", environ={}, flags={
        "amplitude_url": emulator.url, "state": str(tmp_path / "state.sqlite"),
        "dead_letter": str(tmp_path / "dl"), "retry_horizon": 0.0})
    spec = WorkerSpec(_poisoned_pipeline,
                      (poison, settings, API_KEY, 0, PaceState.shared(tmp_path)))
    with ExitStack() as stack:
        ledger = SqliteLedger(tmp_path / "state.sqlite")
        stack.callback(ledger.close)
        summary = WorkerPool(spec, workers=2, stop=Stop(), ledger=ledger).run(objects)
    assert summary.worker_restarts == 4  # the first death, then three more alone with it
    assert summary.objects_failed == 1 and summary.objects_done == len(files) - 1
    [failure] = summary.failures
    assert failure["object"] == poison and failure["retryable"] is True
    assert "died 4 times (last: killed by SIGKILL)" in failure["error"]
    assert "resumes from its checkpoint on the next run" in failure["error"]
    assert summary.balanced and not summary.interrupted
    others = [f for f in files if str(f.path.resolve()) != poison]
    assert summary.records == sum(f.records for f in others)


@pytest.mark.parametrize("value", ["0", "65"])
def test_workers_out_of_range_are_refused(value: str, tmp_path: Path) -> None:
    result = run_cli("replay", str(tmp_path), "--workers", value, "--dry-run")
    assert result.exit_code == 2 and "--workers" in result.output


def test_workers_do_not_run_the_command_s_script_again(tmp_path: Path) -> None:
    """``spawn`` would run the parent's ``__main__`` script in every worker (the
    ``currents-export`` script imports the whole command line); the workers leave it out."""
    fixtures(tmp_path / "bucket", events=20, files_per_type=1)
    runs = tmp_path / "script-runs"
    script = tmp_path / "currents-export-script.py"
    script.write_text(
        "import os, sys\n"
        f"with open({str(runs)!r}, 'a') as log:\n"
        "    log.write(f'{os.getpid()} {__name__}\\n')\n"
        "from currents_export.cli import main\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(main())\n")
    done = subprocess.run(
        [sys.executable, str(script), "replay", str(tmp_path / "bucket"), "--dry-run",
         "--workers", "2", "--summary-json", str(tmp_path / "summary.json")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["objects_would_be_done"] == len(TYPES)  # a dry run: nothing marked done
    assert summary["worker_restarts"] == 0
    ran = runs.read_text().splitlines()
    assert len(ran) == 1 and ran[0].endswith(" __main__"), ran  # in the parent only
