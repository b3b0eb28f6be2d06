"""The continuous pipeline: objects are not drained one by one. Requests carry several
objects' events, each object is finished when its own records are accounted for, and the
ledger ends up exactly as with one object at a time."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson

from currents_export.amplitude.api import REQUEST_LIMITS
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import AmplitudeClient
from currents_export.compose import lanes_over
from currents_export.core.dryrun import DryRunOutbox
from currents_export.core.lanes import Lanes
from currents_export.core.pipeline import Pipeline
from currents_export.counts import ObjectReport, RunSummary
from currents_export.deadletter import DeadLetterDirectory
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import NoLedger, SqliteLedger
from currents_export.sources import find_local_objects
from currents_export.stopping import Stop
from tests.support.emulator import stored_events
from tests.support.runs import read_all
from tests.support.sinks import RecordingSink


def test_small_objects_share_requests_and_each_is_finished_on_its_own(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=600, files_per_type=60,
                              seed=31, event_types=["users.behaviors.CustomEvent"])
    assert len(files) == 60  # ten events each
    records = read_all(files)
    client = AmplitudeClient(f"{emulator.url}/batch", "continuous-key-0001")
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    reports: list[ObjectReport] = []
    pipeline = Pipeline(open_outbox=lanes_over(client, REQUEST_LIMITS["batch"], 1),
                        stop=client.stop, ledger=ledger, on_object=reports.append,
                        dead_letter=DeadLetterDirectory(tmp_path / "dead-letter"))
    summary = pipeline.run(find_local_objects([tmp_path / "bucket"]))
    client.close()

    assert summary.objects_done == 60 and summary.objects_failed == 0, summary.failures
    assert summary.balanced and summary.records == len(records)
    log = emulator.requests_log()
    # Drained object by object, one lane would have sent 60 requests of about 10 events.
    assert summary.requests == len(log) < 60 // 4
    assert max(entry["event_count"] for entry in log) > 10  # several objects in one
    assert len(stored_events(emulator)) == summary.delivered
    # Every object was finished once, with its own figures, and is done in the ledger.
    assert sorted(r.object for r in reports) == sorted(str(f.path) for f in files)
    assert sum(r.records for r in reports) == summary.records
    for source in find_local_objects([tmp_path / "bucket"]):
        state = ledger.state(source.identity)
        assert state is not None and state.status == "done"
    ledger.close()


def test_a_record_that_fails_in_hand_leaves_its_object_pending_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    """Writing --output fails (a full disk: /dev/full) while a record is in hand: each object
    fails with that record pending, and the run neither hangs nor counts it twice (with at
    most two objects open, it would wait forever for objects that cannot finish)."""
    files = generate_fixtures(tmp_path / "bucket", events_per_type=60, files_per_type=6,
                              seed=32, event_types=["users.behaviors.CustomEvent"])
    summaries: list[RunSummary] = []
    with open("/dev/full", "wb", buffering=0) as full:
        pipeline = Pipeline(open_outbox=DryRunOutbox, dry_run=True, stop=Stop(),
                            ledger=NoLedger(), output=full, max_open_objects=2,
                            dead_letter=DeadLetterDirectory(tmp_path / "dead-letter"))
        runner = threading.Thread(target=lambda: summaries.append(
            pipeline.run(find_local_objects([tmp_path / "bucket"]))), daemon=True)
        runner.start()
        runner.join(60)
    assert not runner.is_alive(), "the run hung"
    summary = summaries[0]
    assert summary.objects_failed == len(files) == 6
    assert all("No space left on device" in f["error"] for f in summary.failures)
    assert summary.pending_records == 6  # the record in hand of each object, once
    assert summary.balanced


def test_an_id_throttled_past_the_horizon_is_given_back(emulator: Emulator) -> None:
    """Amplitude throttles one user on every attempt: after the horizon its events are
    handed back (pending) instead of being re-sent forever."""
    emulator.set_faults([{"action": "status", "status": 429, "ids": ["user-throttled-1"]}],
                        seed=1)
    client = AmplitudeClient(f"{emulator.url}/batch", "continuous-key-0001",
                             throttle_pause_s=0.05)
    sink: RecordingSink[str] = RecordingSink()
    lanes: Lanes[str] = Lanes(client, REQUEST_LIMITS["batch"], lanes=2, horizon_s=0.5,
                              sink=sink)
    try:
        event = {"event_type": "e", "user_id": "user-throttled-1", "insert_id": "i-1",
                 "time": 1_768_471_200_000}
        lanes.submit(PendingEvent(orjson.dumps(event), "i-1", ("user-throttled-1",)))
        drained = threading.Thread(target=lanes.drain, daemon=True)
        drained.start()
        drained.join(30)
        assert not drained.is_alive(), "drain never returned"
    finally:
        lanes.close()
        client.close()
        emulator.clear_faults()
    assert [ref for ref, _ in sink.abandoned_refs] == ["i-1"]
    assert "throttled" in sink.abandoned_refs[0][1]
