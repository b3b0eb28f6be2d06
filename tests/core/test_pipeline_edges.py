"""Edges of a run found in review: a stop while the reader waits for room, and an object
the owner cannot open after claiming it. Either way the run returns its summary and every
object is reported."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from currents_export.amplitude.api import REQUEST_LIMITS, RetryPolicy
from currents_export.amplitude.client import AmplitudeClient
from currents_export.compose import lanes_over
from currents_export.core.pipeline import Pipeline
from currents_export.counts import ObjectReport
from currents_export.deadletter import DeadLetterDirectory
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import NoLedger
from currents_export.ledger.sqlite import SqliteLedger
from currents_export.sources import find_local_objects
from currents_export.stopping import Stop
from tests.support.fake_amplitude import API_KEY, URL, FakeAmplitude

TYPES = ["users.behaviors.CustomEvent", "users.messages.email.Open",
         "users.behaviors.app.SessionStart"]


def test_a_stop_while_waiting_for_room_still_returns_the_summary(tmp_path: Path) -> None:
    """One object may be open and one lane holds a request Amplitude has not answered:
    the reader waits for room, and the stop finds the lane's queue full."""
    generate_fixtures(tmp_path / "bucket", events_per_type=40, seed=1, event_types=TYPES)
    objects = find_local_objects([tmp_path / "bucket"])
    stop = Stop()
    in_flight = threading.Event()

    def slow(events: list[dict[str, Any]]) -> None:
        in_flight.set()
        stop.sleep(60)  # answers only once the run is stopping
        threading.Event().wait(1.0)  # and a moment after: the lane stays busy

    client = AmplitudeClient(URL, API_KEY, transport=httpx.MockTransport(
        FakeAmplitude(on_request=slow)), retry=RetryPolicy(horizon_s=30.0), stop=stop)
    reports: list[ObjectReport] = []
    pipeline = Pipeline(open_outbox=lanes_over(client, REQUEST_LIMITS["batch"], 1,
                                               events_per_request=7),
                        stop=stop, ledger=NoLedger(), on_object=reports.append,
                        dead_letter=DeadLetterDirectory(tmp_path / "dl"), max_open_objects=1)
    threading.Thread(target=lambda: in_flight.wait(10) and stop.request("interrupted by SIGINT"),
                     daemon=True).start()
    try:
        summary = pipeline.run(objects)
    finally:
        client.close()
    assert summary.interrupted
    assert sorted(report.object for report in reports) == sorted(o.uri for o in objects)
    # The objects the stop left are not finished (pending), not failed; said once.
    assert summary.objects_done + summary.objects_unfinished == len(objects)
    assert summary.objects_unfinished >= 1 and summary.objects_failed == 0
    assert summary.stopped_by == "interrupted by SIGINT" and summary.failures == []
    assert summary.balanced


def test_an_object_the_owner_cannot_open_is_reported_failed(tmp_path: Path) -> None:
    """A checkpoint whose figures cannot be read (a hand-edited or damaged ledger row):
    the object fails, named, instead of vanishing; the others are delivered."""
    generate_fixtures(tmp_path / "bucket", events_per_type=20, seed=2, event_types=TYPES)
    objects = find_local_objects([tmp_path / "bucket"])
    broken = objects[0]
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    ledger.begin(broken.identity, location=broken.uri)
    ledger.save_progress(broken.identity, 3, {"records": "three"})
    ledger.fail(broken.identity, "interrupted")  # pending: the next run resumes it
    ledger.close()

    fake = FakeAmplitude()
    client = AmplitudeClient(URL, API_KEY, transport=httpx.MockTransport(fake))
    ledger = SqliteLedger(tmp_path / "state.sqlite", owner="second-run")
    reports: list[ObjectReport] = []
    pipeline = Pipeline(open_outbox=lanes_over(client, REQUEST_LIMITS["batch"], 2),
                        stop=client.stop, ledger=ledger, on_object=reports.append,
                        dead_letter=DeadLetterDirectory(tmp_path / "dl"))
    try:
        summary = pipeline.run(objects)
    finally:
        client.close()
    by_object = {report.object: report for report in reports}
    assert set(by_object) == {o.uri for o in objects}
    assert by_object[broken.uri].status == "failed"
    assert "three" in (by_object[broken.uri].error or "")
    assert summary.objects_done == len(objects) - 1 and summary.objects_failed == 1
    state = ledger.state(broken.identity)
    assert state is not None and state.status == "failed"
    ledger.close()
