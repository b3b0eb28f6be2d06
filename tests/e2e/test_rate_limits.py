"""Amplitude's project limit against the real emulator (HTTP on loopback).

With a budget under the project's cap (``project_eps_cap``) nothing is refused, with two
worker processes sharing it too; without one the run finds the rate after a few 429s
(never a storm) and still delivers everything; per-id throttling under a budget loses
and reorders nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from currents_export.amplitude.api import REQUEST_LIMITS, RetryPolicy
from currents_export.amplitude.client import AmplitudeClient
from currents_export.amplitude.pacing import Pacer, RateBudget
from currents_export.compose import lanes_over
from currents_export.core.pipeline import Pipeline
from currents_export.counts import RunSummary
from currents_export.deadletter import DeadLetterDirectory
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.ledger import SqliteLedger
from currents_export.sources import find_local_objects
from currents_export.stopping import Stop
from tests.support.emulator import stored_events
from tests.support.runs import API_KEY, assert_balanced, read_all, replay

TYPES = ["users.behaviors.CustomEvent", "users.messages.email.Open",
         "users.behaviors.Purchase", "users.behaviors.app.SessionStart"]


def fixtures(root: Path, events_per_type: int, files_per_type: int = 2) -> list[FixtureFile]:
    """No repeated records: every valid record is one stored event."""
    return generate_fixtures(root, events_per_type=events_per_type, seed=31,
                             event_types=TYPES, files_per_type=files_per_type,
                             duplicate_rate=0)


def in_read_order(files: list[FixtureFile]) -> list[str]:
    """The ids of the records that have a user or device id, in the order a run reads
    them (objects in sorted path order)."""
    return [record["id"] for _, record in read_all(sorted(files, key=lambda f: f.path))
            if record.get("external_user_id") or record.get("device_id")]


def configure(emulator: Emulator, **config: Any) -> None:
    httpx.patch(f"{emulator.url}/_emulator/config", json=config).raise_for_status()


def by_status(emulator: Emulator) -> dict[str, int]:
    stats = httpx.get(f"{emulator.url}/_emulator/stats").json()
    counts: dict[str, int] = stats["by_status"]
    return counts


def largest_request(emulator: Emulator) -> int:
    log = httpx.get(f"{emulator.url}/_emulator/requests").json()["requests"]
    return max(entry["event_count"] or 0 for entry in log)


# ---- a budget under the project's cap -----------------------------------------------------


def test_two_workers_share_a_budget_under_the_cap_and_nothing_is_refused(
    emulator: Emulator, tmp_path: Path
) -> None:
    configure(emulator, project_eps_cap=400)
    files = fixtures(tmp_path / "bucket", events_per_type=500)
    (tmp_path / "run").mkdir()

    result, summary = replay(emulator, tmp_path / "run", tmp_path / "bucket",
                             extra=("--workers", "2", "--lanes", "4",
                                    "--max-events-per-second", "350"))

    assert result.exit_code == 0, result.output
    stored = [event["insert_id"] for event in stored_events(emulator)]
    assert sorted(stored) == sorted(in_read_order(files))  # every event, once
    assert summary["delivered"] == len(stored) and summary["objects_failed"] == 0
    assert_balanced(summary)
    # One budget for both processes: the cap never refused a request.
    assert "429" not in by_status(emulator)
    assert summary["sending"]["budget_events_per_second"] == 350.0
    assert summary["sending"]["requests_refused_429"] == 0
    assert summary["sending"]["requests_throttled_429"] == 0
    assert largest_request(emulator) <= 350 // 20  # requests of the budget's size

    # A run that shares the budget with another: it paces at half.
    httpx.post(f"{emulator.url}/_emulator/reset").raise_for_status()
    configure(emulator, project_eps_cap=400)
    small = fixtures(tmp_path / "small", events_per_type=50, files_per_type=1)
    (tmp_path / "half").mkdir()

    result, summary = replay(emulator, tmp_path / "half", tmp_path / "small",
                             extra=("--max-events-per-second", "350", "--budget-shares", "2"))

    assert result.exit_code == 0, result.output
    assert sorted(e["insert_id"] for e in stored_events(emulator)) == sorted(
        in_read_order(small))
    assert summary["sending"]["budget_events_per_second"] == 175.0
    assert summary["sending"]["requests_refused_429"] == 0
    assert largest_request(emulator) <= 175 // 20


# ---- in process: the rate found, per-id throttling ----------------------------------------


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Clients, ledgers and dead letters to close after the test."""
    opened: list[Any] = []
    yield opened
    for thing in reversed(opened):
        thing.close()


def run_pipeline(client: AmplitudeClient, root: Path, work: Path, closing: list[Any],
                 events_per_request: int = 500) -> RunSummary:
    dead_letter = DeadLetterDirectory(work / "dead-letter")
    ledger = SqliteLedger(work / "state.sqlite")
    closing.extend([client, ledger, dead_letter])
    pipeline = Pipeline(
        open_outbox=lanes_over(client, REQUEST_LIMITS["batch"], 4,
                               events_per_request=events_per_request),
        stop=client.stop, ledger=ledger, dead_letter=dead_letter, checkpoint_every=200)
    return pipeline.run(find_local_objects([root]))


def test_without_a_budget_the_rate_is_found_after_a_few_429s(
    emulator: Emulator, tmp_path: Path, closing: list[Any]
) -> None:
    configure(emulator, project_eps_cap=500)
    files = fixtures(tmp_path / "bucket", events_per_type=500)
    client = AmplitudeClient(
        f"{emulator.url}/batch", API_KEY,
        retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.2, horizon_s=120,
                          project_pause_s=0.5),
    )  # and its default pacer: no budget, pausing as long as the policy says

    summary = run_pipeline(client, tmp_path / "bucket", tmp_path, closing)

    assert summary.objects_failed == 0, summary.failures
    assert summary.balanced
    stored = [event["insert_id"] for event in stored_events(emulator)]
    assert sorted(stored) == sorted(in_read_order(files))
    assert summary.delivered == len(stored)
    report = client.pacer.report()
    assert report.refused >= 1
    assert report.found_events_per_second is not None
    assert report.found_events_per_second <= 500
    assert report.waited_on_amplitude_s > 0
    refused = by_status(emulator).get("429", 0)
    assert 1 <= refused <= 10  # a few, never a storm


def test_per_id_throttling_under_a_budget_loses_and_reorders_nothing(
    emulator: Emulator, tmp_path: Path, closing: list[Any]
) -> None:
    configure(emulator, rate_limits=True, batch={"eps_threshold": 4, "eps_window_s": 1})
    files = fixtures(tmp_path / "bucket", events_per_type=300)
    stop = Stop()
    pacer = Pacer(RateBudget(events_per_second=1_000), pause_s=0.1, stop=stop)
    client = AmplitudeClient(
        f"{emulator.url}/batch", API_KEY, throttle_pause_s=0.2, stop=stop, pacer=pacer,
        retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.2, horizon_s=120,
                          project_pause_s=0.1),
    )
    size = pacer.request_size()
    assert size == 50

    summary = run_pipeline(client, tmp_path / "bucket", tmp_path, closing,
                           events_per_request=size)

    assert summary.objects_failed == 0, summary.failures
    assert summary.balanced
    report = pacer.report()
    assert report.throttled >= 1  # Amplitude named users or devices: they were held
    assert report.refused == 0
    stored = stored_events(emulator)
    expected = in_read_order(files)
    assert sorted(event["insert_id"] for event in stored) == sorted(expected)
    assert summary.delivered == len(stored)
    # Each user's and device's events arrived in record order, the held ones included.
    position = {insert_id: n for n, insert_id in enumerate(expected)}
    for key in ("user_id", "device_id"):
        arrivals: dict[str, list[int]] = defaultdict(list)
        for event in stored:
            if event.get(key):
                arrivals[event[key]].append(position[event["insert_id"]])
        assert arrivals and all(order == sorted(order) for order in arrivals.values()), key
