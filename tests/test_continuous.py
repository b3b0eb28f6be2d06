"""The continuous pipeline: objects are not drained one by one. Requests carry several
objects' events, each object is finished when its own records are accounted for, and the
ledger ends up exactly as with one object at a time."""

from __future__ import annotations

from pathlib import Path

from conftest import stored_events
from test_replay import read_all

from currents_export.amplitude.client import AmplitudeClient
from currents_export.amplitude.emulator import Emulator
from currents_export.currents.fixtures import generate_fixtures
from currents_export.deadletter import DeadLetterDirectory
from currents_export.ledger import SqliteLedger
from currents_export.pipeline import Pipeline
from currents_export.sources import find_local_objects
from currents_export.summary import ObjectReport


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
    pipeline = Pipeline(client=client, ledger=ledger, lanes=1, on_object=reports.append,
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
