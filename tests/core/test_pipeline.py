"""A run end to end through a fake Amplitude behind ``httpx.MockTransport``.

``Pipeline`` over ``lanes_over(AmplitudeClient(transport=MockTransport(fake)))`` and small
generated Currents files: no sockets, no emulator; the client's backoff sleeps move a
virtual clock, so retries cost no time. Each record's fate is worked out independently of
the tool (from the Avro files), then compared with the summary, the fake's store, the dead
letter and the ledger.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pytest

from currents_export.amplitude.api import REQUEST_LIMITS, RetryPolicy
from currents_export.amplitude.client import AmplitudeClient
from currents_export.compose import lanes_over
from currents_export.core.dryrun import DryRunOutbox
from currents_export.core.owner import _shares
from currents_export.core.pipeline import Pipeline
from currents_export.counts import DRY_RUN, ObjectReport, RunSummary
from currents_export.deadletter import DeadLetterDirectory
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import NoLedger, SqliteLedger
from currents_export.ledger.base import Ledger
from currents_export.sources import SourceObject, find_local_objects
from currents_export.stopping import Stop
from tests.support.fake_amplitude import (
    API_KEY,
    URL,
    DedupingAmplitude,
    FakeAmplitude,
    VirtualTime,
    status,
)

EVENT_TYPES = [
    "users.behaviors.CustomEvent",
    "users.messages.email.Open",
    "users.behaviors.app.SessionStart",
]
SEND, SKIP, DUP = "send", "skip", "dup"
INVALID_TIME = "amplitude_invalid_field:time"

# One attempt, one virtual backoff of 0.75 s (jitter 0.5), a second attempt at the 0.75 s
# horizon, then the request gives up (two failures: the run's circuit stays closed).
TINY_HORIZON = RetryPolicy(initial_delay_s=1.0, max_delay_s=4.0, horizon_s=0.75)


# ---- the files, and what should become of each record -----------------------------------


@dataclass
class Files:
    root: Path
    objects: list[SourceObject]  # in the order the pipeline reads them
    records: dict[str, list[dict[str, Any]]]  # uri → its records, in file order
    fate: dict[tuple[str, int], str]  # (uri, index) → send | skip | dup

    def positions(self, fate: str) -> set[tuple[str, int]]:
        return {place for place, what in self.fate.items() if what == fate}

    def insert_id(self, place: tuple[str, int]) -> str:
        uri, index = place
        return str(self.records[uri][index]["id"])

    def sendable_ids(self) -> set[str]:
        return {self.insert_id(place) for place in self.positions(SEND)}

    def count(self, uri: str, fate: str) -> int:
        return sum(1 for (u, _), what in self.fate.items() if u == uri and what == fate)


def make_files(root: Path, *, events_per_type: int = 80, seed: int = 5,
               event_types: list[str] = EVENT_TYPES) -> Files:
    generate_fixtures(root, events_per_type=events_per_type, seed=seed,
                      event_types=event_types)
    objects = find_local_objects([root])
    records: dict[str, list[dict[str, Any]]] = {}
    fate: dict[tuple[str, int], str] = {}
    seen: set[str] = set()
    for source in objects:  # the reader's order: a repeated Braze id is a duplicate
        with source.open() as fileobj:
            records[source.uri] = list(fastavro.reader(fileobj))  # type: ignore[arg-type]
        for index, record in enumerate(records[source.uri]):
            if record["id"] in seen:
                fate[source.uri, index] = DUP
            elif not record.get("external_user_id") and not record.get("device_id"):
                fate[source.uri, index] = SKIP  # no_identity
            else:
                fate[source.uri, index] = SEND
            seen.add(record["id"])
    assert len(objects) == 2 * len(event_types)
    assert len(set(fate.values())) == 3, "the files should hold every kind of record"
    return Files(root, objects, records, fate)


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return make_files(tmp_path / "bucket")


# ---- a run --------------------------------------------------------------------------------


@dataclass
class Run:
    summary: RunSummary
    reports: dict[str, ObjectReport]  # by uri
    dead_letter: list[dict[str, Any]]


class Runner:
    """Builds and runs pipelines over fake Amplitudes; closes what it opened."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.dead_letter_dir = tmp_path / "dead-letter"
        self.time = VirtualTime()
        self._clients: list[AmplitudeClient] = []

    def client(self, fake: FakeAmplitude, retry: RetryPolicy | None = None) -> AmplitudeClient:
        client = AmplitudeClient(
            URL, API_KEY, transport=httpx.MockTransport(fake),
            retry=retry or RetryPolicy(initial_delay_s=0.5, max_delay_s=2.0, horizon_s=30.0),
            sleep=self.time.sleep, clock=self.time.clock, jitter=lambda: 0.5,
            throttle_pause_s=0.05)
        self._clients.append(client)
        return client

    def run(self, objects: list[SourceObject], fake: FakeAmplitude, *,
            ledger: Ledger | None = None, retry: RetryPolicy | None = None,
            lanes: int = 3, per_request: int = 7, checkpoint_every: int = 5) -> Run:
        client = self.client(fake, retry)
        pipeline = Pipeline(
            open_outbox=lanes_over(client, REQUEST_LIMITS["batch"], lanes,
                                   events_per_request=per_request),
            stop=client.stop, ledger=ledger if ledger is not None else NoLedger(),
            dead_letter=DeadLetterDirectory(self.dead_letter_dir),
            checkpoint_every=checkpoint_every)
        return self._run(pipeline, objects)

    def dry_run(self, objects: list[SourceObject]) -> Run:
        pipeline = Pipeline(open_outbox=DryRunOutbox, stop=Stop(), ledger=NoLedger(),
                            dead_letter=DeadLetterDirectory(self.dead_letter_dir),
                            dry_run=True, checkpoint_every=5)
        return self._run(pipeline, objects)

    def _run(self, pipeline: Pipeline, objects: list[SourceObject]) -> Run:
        reports: list[ObjectReport] = []
        pipeline.on_object = reports.append
        summary = pipeline.run(objects)
        pipeline.dead_letter.close()
        by_uri = {report.object: report for report in reports}
        assert len(by_uri) == len(reports) == len(objects), "one report per object"
        return Run(summary, by_uri, dead_letter_lines(self.dead_letter_dir))

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    made = Runner(tmp_path)
    yield made
    made.close()


def dead_letter_lines(directory: Path) -> list[dict[str, Any]]:
    """Every closed dead-letter line (``.part`` files are not complete yet)."""
    return [orjson.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]


def balanced(tally: Any) -> bool:
    return bool(tally.records == tally.delivered + sum(tally.skipped.values())
                + sum(tally.dead_lettered.values()) + tally.duplicates)


# ---- every record in one bucket -----------------------------------------------------------


def test_every_record_lands_in_one_bucket_and_what_is_stored_is_what_is_delivered(
    files: Files, runner: Runner,
) -> None:
    fake = FakeAmplitude()
    run = runner.run(files.objects, fake)
    summary = run.summary

    total = sum(len(records) for records in files.records.values())
    assert summary.objects_done == len(files.objects) and summary.objects_failed == 0
    assert summary.records == total and summary.pending_records == 0
    assert summary.balanced and balanced(summary)
    assert summary.delivered == len(files.positions(SEND))
    assert dict(summary.skipped) == {"no_identity": len(files.positions(SKIP))}
    assert summary.duplicates == len(files.positions(DUP))
    assert dict(summary.dead_lettered) == {} and run.dead_letter == []

    # The fake holds each sendable event once, and nothing else.
    stored = fake.stored_ids()
    assert len(stored) == summary.delivered
    assert Counter(stored) == Counter(files.sendable_ids())
    # Sent more than one request, in parallel lanes: the accounting did not depend on luck.
    assert summary.requests == len(fake.requests) >= summary.delivered // 7

    for source in files.objects:  # and object by object
        report = run.reports[source.uri]
        assert report.status == "done" and report.pending == 0 and balanced(report)
        assert report.records == len(files.records[source.uri])
        assert report.delivered == files.count(source.uri, SEND)
        assert sum(report.skipped.values()) == files.count(source.uri, SKIP)
        assert report.duplicates == files.count(source.uri, DUP)


# ---- refused events -------------------------------------------------------------------------


def test_events_amplitude_refuses_by_index_are_dead_lettered_and_the_objects_complete(
    files: Files, runner: Runner,
) -> None:
    refused_places = sorted(files.positions(SEND))[::17]
    refused = {files.insert_id(place) for place in refused_places}
    assert len({uri for uri, _ in refused_places}) > 1  # in several objects

    def rule(events: list[dict[str, Any]]) -> httpx.Response | None:
        bad = [n for n, event in enumerate(events) if event["insert_id"] in refused]
        if not bad:
            return None
        return status(400, error="Invalid field values on some events",
                      events_with_invalid_fields={"time": bad})

    fake = FakeAmplitude(rule)
    run = runner.run(files.objects, fake)
    summary = run.summary

    assert summary.objects_done == len(files.objects) and summary.objects_failed == 0
    assert summary.balanced and summary.pending_records == 0
    assert dict(summary.dead_lettered) == {INVALID_TIME: len(refused)}
    assert summary.delivered == len(files.positions(SEND)) - len(refused)
    # The others of a refused event's request went again and were stored; the refused not.
    assert Counter(fake.stored_ids()) == Counter(files.sendable_ids() - refused)

    # One line per refused event, naming its object, its record's place and the reason.
    lines = run.dead_letter
    assert len(lines) == len(refused)
    assert {(line["object"], line["record_index"]) for line in lines} == set(refused_places)
    for line in lines:
        assert line["reason"] == INVALID_TIME
        assert line["detail"] == "Invalid field values on some events"
        record = files.records[line["object"]][line["record_index"]]
        assert line["event"]["insert_id"] == record["id"]  # the event as sent
        assert line["event_type"] == run.reports[line["object"]].event_type
    for source in files.objects:
        report = run.reports[source.uri]
        assert report.status == "done" and balanced(report)
        assert sum(report.dead_lettered.values()) == sum(
            1 for uri, _ in refused_places if uri == source.uri)


# ---- unanswered events fail their object ----------------------------------------------------


def lonely_user(files: Files, *, skip_first: int = 10) -> tuple[tuple[str, int], str]:
    """A sendable record, well inside its object, whose user has no other record (so one
    request, one event, fails) and whose device no other record shares."""
    users = Counter(r.get("external_user_id") for rs in files.records.values() for r in rs)
    devices = Counter(r.get("device_id") for rs in files.records.values() for r in rs)
    for uri, index in sorted(files.positions(SEND)):
        record = files.records[uri][index]
        user, device = record.get("external_user_id"), record.get("device_id")
        if (skip_first <= index < len(files.records[uri]) - 5 and user
                and users[user] == 1 and (device is None or devices[device] == 1)):
            return (uri, index), user
    raise AssertionError("no lonely user in the fixtures")


def unavailable_for(user: str) -> Callable[[list[dict[str, Any]]], httpx.Response | None]:
    def rule(events: list[dict[str, Any]]) -> httpx.Response | None:
        if any(event.get("user_id") == user for event in events):
            return httpx.Response(503, text="Service Unavailable")
        return None
    return rule


class WatchedLedger(SqliteLedger):
    """A SQLite ledger that notes, at each checkpoint, what Amplitude held then and what
    the dead letter said (so a checkpoint can be compared with what was delivered)."""

    def __init__(self, path: Path, fake: FakeAmplitude, dead_letter_dir: Path) -> None:
        super().__init__(path)
        self.fake = fake
        self.dead_letter_dir = dead_letter_dir
        self.saves: list[tuple[str, int, dict[str, Any], set[str], set[tuple[str, int]]]] = []

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        dead = {(line["object"], line["record_index"])
                for line in dead_letter_lines(self.dead_letter_dir)}
        self.saves.append((object_id, next_index, figures, set(self.fake.stored_ids()), dead))
        super().save_progress(object_id, next_index, figures)


def test_events_left_unanswered_fail_their_object_and_only_it(
    files: Files, runner: Runner, tmp_path: Path,
) -> None:
    (uri, index), user = lonely_user(files)
    fake = FakeAmplitude(unavailable_for(user))
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    # One event per request: the failing request holds nothing of the other objects.
    run = runner.run(files.objects, fake, ledger=ledger, retry=TINY_HORIZON, per_request=1)
    summary = run.summary

    failing = run.reports[uri]
    assert failing.status == "failed" and failing.retryable and not failing.not_started
    assert "gave up" in (failing.error or "")
    assert failing.pending == 1  # the unanswered event: in no bucket, counted pending
    assert failing.records == len(files.records[uri]) - 1 and balanced(failing)
    assert summary.pending_records == 1 and summary.objects_failed == 1
    assert summary.objects_done == len(files.objects) - 1 and summary.balanced
    assert summary.failures == [{"object": uri, "error": failing.error, "retryable": True}]
    # Retried (a virtual backoff), then given up within the horizon: 2 attempts.
    assert sum(1 for i in fake.sent_ids() if i == files.insert_id((uri, index))) == 2
    assert runner.time.sleeps == [0.75]

    state = ledger.state(_identity(files, uri))
    assert state is not None and state.status == "failed" and not state.permanent
    assert state.next_index == index  # the unanswered record: where the next run resumes
    for source in files.objects:
        if source.uri != uri:
            assert run.reports[source.uri].status == "done"
            other = ledger.state(source.identity)
            assert other is not None and other.status == "done"
    # Everything else was delivered: only the user's event is missing.
    assert Counter(fake.stored_ids()) == Counter(
        files.sendable_ids() - {files.insert_id((uri, index))})


# ---- repeats Amplitude dropped ----------------------------------------------------------------


def test_repeats_amplitude_dropped_are_delivered_and_shared_among_the_objects(
    files: Files, runner: Runner,
) -> None:
    amplitude = DedupingAmplitude(set(sorted(files.sendable_ids())[::9]))
    run = runner.run(files.objects, FakeAmplitude(amplitude))
    summary = run.summary

    assert summary.objects_done == len(files.objects) and summary.objects_failed == 0
    assert summary.balanced and summary.pending_records == 0
    assert summary.delivered == len(files.positions(SEND))
    assert Counter(amplitude.stored) == Counter(files.sendable_ids())  # once each
    # Every request faulted after storing was retried once, and that retry's answer (none
    # ingested) was taken as a delivery: its events are the repeats Amplitude dropped.
    assert summary.retries == len(amplitude.faulted) > 1
    assert summary.repeats_dropped == sum(amplitude.faulted) > 0
    # Object by object: their shares add up to the run's figure, none above its delivered.
    shares = {uri: report.repeats_dropped for uri, report in run.reports.items()}
    assert sum(shares.values()) == summary.repeats_dropped
    assert sum(1 for share in shares.values() if share) > 1
    assert all(run.reports[uri].repeats_dropped <= run.reports[uri].delivered
               for uri in shares)
    assert all(run.reports[uri].figures()["repeats_dropped"] == share
               for uri, share in shares.items())
    # The summary says it, in its JSON and in words.
    assert summary.to_json()["repeats_dropped"] == summary.repeats_dropped
    assert f"repeats Amplitude dropped: {summary.repeats_dropped}" in summary.render()


@pytest.mark.parametrize(("total", "weights", "expected"), [
    (5, {"a": 5}, {"a": 5}),
    (3, {"a": 2, "b": 4}, {"a": 1, "b": 2}),
    (2, {"a": 1, "b": 2}, {"a": 1, "b": 1}),  # 0.67 and 1.33: the larger remainder wins
    (7, {"a": 3, "b": 4}, {"a": 3, "b": 4}),
    (0, {"a": 3, "b": 4}, {"a": 0, "b": 0}),
])
def test_a_sends_repeats_are_shared_by_its_objects_events(
    total: int, weights: dict[str, int], expected: dict[str, int]
) -> None:
    assert _shares(total, weights) == expected  # type: ignore[arg-type]


def test_shares_always_add_up_and_never_exceed_an_objects_events() -> None:
    rng = random.Random(5)
    for _ in range(2_000):
        weights = {n: rng.randint(1, 50) for n in range(rng.randint(1, 6))}
        total = rng.randint(0, sum(weights.values()))
        shares = _shares(total, weights)  # type: ignore[arg-type]
        assert sum(shares.values()) == total
        assert all(0 <= shares[n] <= weights[n] for n in weights)


def test_a_run_without_repeats_reports_none(files: Files, runner: Runner) -> None:
    run = runner.run(files.objects, FakeAmplitude())
    assert run.summary.repeats_dropped == 0
    assert all(report.repeats_dropped == 0 for report in run.reports.values())
    assert run.summary.to_json()["repeats_dropped"] == 0
    assert "repeats Amplitude dropped" not in run.summary.render()


def _identity(files: Files, uri: str) -> str:
    return next(source.identity for source in files.objects if source.uri == uri)


def test_a_checkpoint_is_never_ahead_of_what_was_delivered(
    runner: Runner, tmp_path: Path,
) -> None:
    """Objects longer than the reader's batches (256 records), so progress is saved along
    the way; some events refused (dead-lettered) before one that is never answered."""
    files = make_files(tmp_path / "bucket", events_per_type=700,
                       event_types=["users.behaviors.CustomEvent"])
    (uri, index), user = lonely_user(files, skip_first=300)
    refused = {files.insert_id(place) for place in sorted(files.positions(SEND))[::25]}
    refused_before = {files.insert_id((uri, i)) for i in range(index)} & refused
    assert refused_before

    def rule(events: list[dict[str, Any]]) -> httpx.Response | None:
        if any(event.get("user_id") == user for event in events):
            return httpx.Response(503, text="Service Unavailable")
        bad = [n for n, event in enumerate(events) if event["insert_id"] in refused]
        if bad:
            return status(400, error="Invalid field values on some events",
                          events_with_invalid_fields={"time": bad})
        return None

    fake = FakeAmplitude(rule)
    ledger = WatchedLedger(tmp_path / "state.sqlite", fake, runner.dead_letter_dir)
    run = runner.run(files.objects, fake, ledger=ledger, retry=TINY_HORIZON, per_request=1,
                     checkpoint_every=3)
    assert run.reports[uri].status == "failed" and run.reports[uri].pending == 1

    identity = _identity(files, uri)
    saves = [save for save in ledger.saves if save[0] == identity]
    assert len(saves) >= 2  # progress saved along the way, then at the failure
    indexes = [next_index for _, next_index, *_ in saves]
    assert indexes == sorted(indexes) and 0 < indexes[0] < index
    for _, next_index, figures, stored, dead in saves:
        assert next_index <= index  # never past the record that was never answered
        expected: Counter[str] = Counter()
        for before in range(next_index):  # each record before it is in its bucket already
            fate, insert_id = files.fate[uri, before], files.insert_id((uri, before))
            if fate == SEND and insert_id in refused:
                assert (uri, before) in dead, (next_index, before)  # flushed first
                expected["dead_lettered"] += 1
            elif fate == SEND:
                assert insert_id in stored, (next_index, before)
                expected["delivered"] += 1
            else:
                expected[fate] += 1
        assert figures["records"] == next_index
        assert figures["delivered"] == expected["delivered"]
        assert figures["dead_lettered"] == (
            {INVALID_TIME: expected["dead_lettered"]} if expected["dead_lettered"] else {})
        assert sum(figures["skipped"].values()) == expected[SKIP]
        assert figures["duplicates"] == expected[DUP]
    # The last checkpoint stops exactly at the unanswered record (all before it resolved).
    state = ledger.state(identity)
    assert state is not None and state.status == "failed" and state.next_index == index
    assert indexes[-1] == index


def test_a_rerun_resumes_from_the_checkpoint_and_completes(
    files: Files, runner: Runner, tmp_path: Path,
) -> None:
    (uri, index), user = lonely_user(files)
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    first_fake = FakeAmplitude(unavailable_for(user))
    first = runner.run(files.objects, first_fake, ledger=ledger, retry=TINY_HORIZON,
                       per_request=1)
    assert first.reports[uri].status == "failed" and first.summary.pending_records == 1

    second_fake = FakeAmplitude()  # Amplitude is back
    second = runner.run(files.objects, second_fake, ledger=ledger, retry=TINY_HORIZON,
                        per_request=1)
    summary = second.summary
    assert summary.objects_done == 1 and summary.objects_failed == 0
    assert summary.objects_already_done == len(files.objects) - 1
    report = second.reports[uri]
    assert report.status == "done" and report.pending == 0
    assert report.resumed == index == summary.resumed_records
    assert report.records == len(files.records[uri])  # the saved prefix counts too
    assert balanced(report) and summary.balanced

    state = ledger.state(_identity(files, uri))
    assert state is not None and state.status == "done"
    # Only records from the checkpoint on were read and sent again.
    resent = set(second_fake.stored_ids())
    from_checkpoint = {str(r["id"]) for r in files.records[uri][index:]}
    assert files.insert_id((uri, index)) in resent and resent <= from_checkpoint
    # Every event stored at least once over the two runs.
    assert files.sendable_ids() <= set(first_fake.stored_ids()) | resent


# ---- the run ends -----------------------------------------------------------------------------


def test_an_invalid_api_key_ends_the_run_and_later_objects_are_not_started(
    files: Files, runner: Runner, tmp_path: Path,
) -> None:
    fake = FakeAmplitude(lambda events: status(400, error=f"Invalid API key: {API_KEY}"))
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    run = runner.run(files.objects, fake, ledger=ledger, lanes=1, per_request=5)
    summary = run.summary

    assert summary.configuration_error is not None
    assert "rejected the API key" in summary.configuration_error
    assert API_KEY not in summary.configuration_error
    first, *later = files.objects
    started = run.reports[first.uri]
    assert started.status == "failed" and not started.not_started and started.retryable
    assert summary.objects_not_started == len(later) and summary.objects_done == 0
    # The cause is said once (configuration_error); every object is "not finished".
    assert summary.objects_unfinished == len(files.objects) and summary.objects_failed == 0
    assert summary.failures == [] and "rejected the API key" in (summary.stopped_by or "")
    for source in later:
        report = run.reports[source.uri]
        assert report.status == "failed" and report.not_started
        assert report.records == 0
        assert ledger.state(source.identity) is None  # never claimed
    state = ledger.state(first.identity)
    assert state is not None and state.status == "failed" and not state.permanent
    assert fake.stored == [] and len(fake.requests) == 1  # one lane, one refusal: no retry
    assert summary.delivered == 0 and summary.balanced


# ---- dry run ---------------------------------------------------------------------------------


def test_a_dry_run_sends_nothing_and_counts_each_mappable_event_skipped(
    files: Files, runner: Runner,
) -> None:
    run = runner.dry_run(files.objects)
    summary = run.summary
    assert summary.dry_run and summary.requests == 0
    assert summary.objects_done == len(files.objects) and summary.balanced
    assert summary.delivered == 0
    assert dict(summary.skipped) == {DRY_RUN: len(files.positions(SEND)),
                                     "no_identity": len(files.positions(SKIP))}
    assert summary.duplicates == len(files.positions(DUP))
    assert run.dead_letter == []

    # What it says it would deliver is what a real run delivers.
    fake = FakeAmplitude()
    real = runner.run(files.objects, fake)
    assert summary.skipped[DRY_RUN] == real.summary.delivered == len(fake.stored)
    for source in files.objects:
        assert run.reports[source.uri].skipped[DRY_RUN] == real.reports[source.uri].delivered
