"""Seeded chaos: thousands of events through every fault the emulator can inject.

Afterwards the emulator's deduplicated store must hold every valid event exactly once,
invalid events must be in the dead letter with their reason, and the summary must add up.
It runs against both answers Amplitude might give (whether ``events_ingested`` counts
``insert_id`` repeats is not documented): the emulator's ``ingested_counts_repeats``.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest

from currents_export.amplitude.api import REQUEST_LIMITS, RequestLimits, RetryPolicy
from currents_export.amplitude.client import AmplitudeClient
from currents_export.compose import lanes_over
from currents_export.core.pipeline import Pipeline
from currents_export.deadletter import DeadLetterDirectory
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import Identity, generate_fixtures, make_record, write_avro
from currents_export.ledger import SqliteLedger
from currents_export.sources import find_local_objects
from tests.support.emulator import stored_events
from tests.support.runs import assert_balanced, read_all, replay

EVENT_TYPES = [
    "users.behaviors.CustomEvent",
    "users.behaviors.Purchase",
    "users.behaviors.app.SessionStart",
    "users.messages.email.Open",
    "users.messages.pushnotification.Send",
    "users.messages.sms.Delivery",
]
BAD_IDS = ["abc", "null", "Anonymous", "0"]  # too short or blocklisted by Amplitude


def faults(busy_user: str) -> list[dict]:
    """Common faults at random (seeded), rarer ones on a schedule so each one happens."""
    return [
        {"action": "status", "status": 500, "probability": 0.04},  # stored, then 500
        {"action": "status", "status": 503, "probability": 0.04},  # not stored
        {"action": "status", "status": 502, "every": 23, "body": "html"},
        {"action": "status", "status": 504, "every": 29, "body": "empty"},
        {"action": "reset", "every": 31},
        {"action": "reset", "store": True, "every": 37},
        {"action": "delay", "delay_s": 0.6, "every": 41, "times": 3},  # beyond the timeout
        {"action": "status", "status": 429, "ids": [busy_user], "times": 4},
        # project-level, no indexes: each one slows the run (the rate is found again)
        {"action": "status", "status": 429, "every": 43, "times": 3},
        {"action": "status", "status": 413, "every": 47},
        {"action": "status", "status": 403, "after": 5, "times": 1},
    ]


def write_invalid_ids(root: Path) -> list[str]:
    """A file of CustomEvents whose user ids Amplitude would refuse (and no device)."""
    rng = random.Random(99)
    records = [
        make_record("users.behaviors.CustomEvent", rng,
                    identity=Identity(external_user_id=bad, device_id=None,
                                      braze_id="5f8e1c2b3a4d5e6f7a8b9c0d"),
                    time_s=1_768_471_200 + n)
        for n, bad in enumerate(BAD_IDS * 5)
    ]
    folder = root / "currents" / "event_type=users.behaviors.CustomEvent" / "date=2026-01-15-12"
    folder.mkdir(parents=True)
    with (folder / "bad-ids+0+0000000001.avro").open("wb") as out:
        write_avro(out, "users.behaviors.CustomEvent", records)
    return [r["id"] for r in records]


@pytest.mark.parametrize("counts_repeats", [
    pytest.param(True, id="events_ingested-counts-repeats"),
    pytest.param(False, id="events_ingested-counts-new-events-only"),
])
def test_every_valid_event_arrives_exactly_once_through_chaos(
    tmp_path: Path, counts_repeats: bool
) -> None:
    root = tmp_path / "bucket"
    files = generate_fixtures(root, events_per_type=700, seed=2024, event_types=EVENT_TYPES)
    invalid_ids = set(write_invalid_ids(root))
    records = read_all(sorted(files, key=lambda f: f.path))
    first: dict[str, dict] = {}
    for _, record in records:
        first.setdefault(record["id"], record)
    identified = {i: r for i, r in first.items()
                  if r.get("external_user_id") or r.get("device_id")}
    devices = Counter(r["device_id"] for r in identified.values() if r.get("device_id"))
    silenced = devices.most_common(1)[0][0]
    users = Counter(r["external_user_id"] for r in identified.values()
                    if r.get("external_user_id"))
    busy_user = users.most_common(1)[0][0]
    valid = {i for i, r in identified.items() if r.get("device_id") != silenced}

    with Emulator() as emulator:
        httpx.patch(f"{emulator.url}/_emulator/config", json={
            "silenced_device_ids": [silenced], "rate_limits": True,
            "batch": {"eps_threshold": 6, "eps_window_s": 1},
            "ingested_counts_repeats": counts_repeats,
        }).raise_for_status()
        emulator.set_faults(faults(busy_user), seed=1234)
        client = AmplitudeClient(
            f"{emulator.url}/batch", "chaos-key", throttle_pause_s=0.2,
            timeout=httpx.Timeout(0.3),
            retry=RetryPolicy(initial_delay_s=0.01, max_delay_s=0.2, horizon_s=120,
                              project_pause_s=0.1),
        )
        dead_letter = DeadLetterDirectory(tmp_path / "dead-letter")
        ledger = SqliteLedger(tmp_path / "state.sqlite")
        limits = RequestLimits(max_events=40,
                               max_body_bytes=REQUEST_LIMITS["batch"].max_body_bytes)
        pipeline = Pipeline(open_outbox=lanes_over(client, limits, 4), stop=client.stop,
                            ledger=ledger, dead_letter=dead_letter, checkpoint_every=200)
        summary = pipeline.run(find_local_objects([root]))
        dead_letter.close()
        client.close()
        stored = emulator.events()
        fired = [rule["fired"] for rule in emulator.faults()["rules"]]
        log = emulator.requests_log()

    # Every fault kind actually happened, several times for the probabilistic ones.
    assert all(count > 0 for count in fired), fired
    assert any(entry["status"] == 429 and entry.get("fault") is None for entry in log)

    assert summary.objects_failed == 0, summary.failures
    assert summary.balanced
    assert summary.records == len(records) + len(invalid_ids)
    assert summary.duplicates == len(records) - len(first)
    assert summary.retries > 0
    if counts_repeats:  # every acknowledgement counted every event sent
        assert summary.repeats_dropped == 0
    else:  # the retries after a 500 (or a reset) that came after storing were answered short
        assert summary.repeats_dropped > 0

    lines = [orjson.loads(line) for path in (tmp_path / "dead-letter").glob("*.jsonl")
             for line in path.read_bytes().splitlines()]
    by_reason = Counter(line["reason"] for line in lines)
    assert dict(summary.dead_lettered) == dict(by_reason)
    # A 413 injected on a request of one event makes that event "too large": the client
    # must dead-letter it (Amplitude's rule). If an earlier, timed-out attempt of the same
    # request was stored after all, the event is in both places (redrive would be deduped).
    too_large = {line["event"]["insert_id"] for line in lines
                 if line["reason"] == "amplitude_payload_too_large"}
    assert len(too_large) <= sum(1 for e in log if e["status"] == 413 and e["event_count"] == 1)
    # Such an event may be one of the silenced device's: the 413 came before the refusal.
    assert too_large <= set(identified)

    insert_ids = Counter(event["insert_id"] for event in stored)
    assert valid - too_large <= set(insert_ids) <= valid
    assert max(insert_ids.values()) == 1
    assert summary.delivered == len(valid - too_large)

    assert {reason: n for reason, n in by_reason.items()
            if reason != "amplitude_payload_too_large"} == {
        "amplitude_silenced_device": len(identified) - len(valid) - len(too_large - valid),
        "invalid_id": len(invalid_ids),
    }
    assert {line["record"]["id"] for line in lines if line["reason"] == "invalid_id"} == (
        invalid_ids
    )
    assert all(line["event"]["device_id"] == silenced for line in lines
               if line["reason"] == "amplitude_silenced_device")

    # Each user's and device's events arrived in the order they were read.
    read_order = [i for i in first if i in valid]  # objects are read in sorted path order
    position = {insert_id: n for n, insert_id in enumerate(read_order)}
    for key in ("user_id", "device_id"):
        arrivals: dict[str, list[int]] = {}
        for event in stored:
            if event.get(key) and event["insert_id"] in position:
                arrivals.setdefault(event[key], []).append(position[event["insert_id"]])
        assert all(order == sorted(order) for order in arrivals.values()), key


def test_an_amplitude_that_does_not_count_repeats_never_makes_the_run_loop(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Issue 23's scenario through the command line: an Amplitude whose ``events_ingested``
    leaves out insert_id repeats, and 10 requests stored and then answered 500 among some
    45. Each retry is acknowledged with fewer events ingested than sent: that is a
    delivery (the repeats counted), not a reason to retry until Amplitude "is unavailable"."""
    files = generate_fixtures(tmp_path / "bucket", events_per_type=3_000, seed=23,
                              event_types=EVENT_TYPES[:3], files_per_type=3)
    records = read_all(sorted(files, key=lambda f: f.path))
    assert 8_500 <= len(records) <= 9_500
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"ingested_counts_repeats": False}).raise_for_status()
    emulator.set_faults([{"action": "status", "status": 500, "every": 3, "times": 10}], seed=23)

    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--lanes", "4", "--retry-horizon", "120"))

    log = emulator.requests_log()
    faulted = [entry for entry in log if entry["fault"] is not None]
    assert len(faulted) == 10 and all(entry["status"] == 500 for entry in faulted)
    assert 30 <= len(log) <= 70  # some 45 requests, as in the issue
    assert result.exit_code == 0, result.output
    assert summary["objects_failed"] == 0 and summary["objects_done"] == len(files)
    assert_balanced(summary)
    stored = Counter(event["insert_id"] for event in stored_events(emulator))
    assert max(stored.values()) == 1  # every event stored once
    identified = {r["id"] for _, r in records if r.get("external_user_id") or r.get("device_id")}
    assert set(stored) == identified and summary["delivered"] == len(identified)
    # The retries of the faulted requests were answered short: counted, not re-sent.
    assert 0 < summary["repeats_dropped"] <= sum(entry["event_count"] for entry in faulted)
    assert summary["retries"] == 10
    assert f"repeats Amplitude dropped: {summary['repeats_dropped']}" in result.output
