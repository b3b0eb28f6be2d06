"""The identity map and deletions, in SQLite and in DynamoDB (moto); the tracker's bounded
memory; resolving and packing deletions into requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from currents_export.deletions.privacy import DeletionJob
from currents_export.deletions.store import (
    DEVICE_ONLY,
    NEVER_SEEN,
    SUBMITTED,
    UNRESOLVED,
    DeletionStore,
    DynamoDbDeletionStore,
    Identity,
    SqliteDeletionStore,
    braze_key,
)
from currents_export.deletions.submit import deletion_status, submit_deletions
from currents_export.deletions.tracker import DeletionTracker
from currents_export.ledger.dynamodb import DynamoDbLedger


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeletionStore]:
    if request.param == "sqlite":
        sqlite = SqliteDeletionStore(tmp_path / "state.sqlite", clock=lambda: 1_000.0)
        yield sqlite
        sqlite.close()
        return
    aws = request.getfixturevalue("aws")
    client = boto3.client("dynamodb", endpoint_url=aws)
    DynamoDbLedger.create_table(client, "ledger")
    yield DynamoDbDeletionStore(client, "ledger", identity_ttl_days=400, clock=lambda: 1_000.0)


class Recorder:
    """A deleter that records each request's ids; ids starting with "ghost" are unknown."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []

    def delete(self, user_ids: list[str]) -> DeletionJob:
        self.requests.append(user_ids)
        return DeletionJob("2026-12-12", "staging",
                           frozenset(i for i in user_ids if i.startswith("ghost")))


def test_the_store_keeps_sets_of_user_ids_and_idempotent_deletions(
    store: DeletionStore
) -> None:
    alice, dave = braze_key("a" * 24), braze_key("d" * 24)
    assert "a" * 24 not in alice  # the Braze id itself is never stored
    store.remember([(alice, "alice_0001"), (alice, "alice_renamed"), (dave, "")])
    store.remember([(alice, "alice_0001")])  # known already: nothing changes
    assert store.identity(alice) == Identity(frozenset({"alice_0001", "alice_renamed"}), False)
    assert store.identity(dave) == Identity(frozenset(), True)
    assert store.identity(braze_key("nobody")) == Identity()
    assert store.request(alice, 1_764_500_400.0) is True
    assert store.request(alice, 1_764_500_999.0) is False  # a repeated request adds nothing
    assert store.request(dave, 1_764_500_401.0) is True
    assert [(d.key, d.status) for d in store.deletions()] == [(alice, "pending"),
                                                             (dave, "pending")]


def test_submit_resolves_packs_by_100_and_records_what_became_of_each(
    store: DeletionStore
) -> None:
    big, small, dave, never = (braze_key(c * 24) for c in "bsdn")
    store.remember([(big, f"user_{n:04d}") for n in range(150)])
    store.remember([(small, "small_001"), (small, "ghost_0001"), (dave, "")])
    for key in (big, small, dave, never):
        store.request(key, 1.0)
    deleter = Recorder()
    dry = submit_deletions(store, None, grace_s=0, now=2_000.0)
    assert (dry.submitted, dry.user_ids, dry.requests, dry.unresolved) == \
        (2, 152, 2, {DEVICE_ONLY: 1, NEVER_SEEN: 1})
    assert all(d.status == "pending" for d in store.deletions())  # a dry run writes nothing
    waiting = submit_deletions(store, deleter, grace_s=3_600, now=2_000.0)
    assert (waiting.waiting, waiting.submitted, deleter.requests) == (4, 0, [])
    report = submit_deletions(store, deleter, grace_s=0, now=5_000.0)
    assert [len(r) for r in deleter.requests] == [100, 52]  # big spans both requests
    assert (report.submitted, report.user_ids, report.not_in_amplitude) == (2, 152, 1)
    found = {d.key: d for d in store.deletions()}
    assert found[big].status == SUBMITTED and len(found[big].user_ids) == 150
    assert found[small].invalid_ids == ("ghost_0001",) and found[small].job_day == "2026-12-12"
    assert (found[dave].status, found[dave].reason) == (UNRESOLVED, DEVICE_ONLY)
    assert (found[never].status, found[never].reason) == (UNRESOLVED, NEVER_SEEN)
    again = submit_deletions(store, deleter, grace_s=0, now=6_000.0)
    assert again.submitted == 0 and len(deleter.requests) == 2
    store.remember([(never, "late_0001")])  # the map learns it later: resolved next time
    late = submit_deletions(store, deleter, grace_s=0, now=7_000.0)
    assert late.submitted == 1 and deleter.requests[-1] == ["late_0001"]
    status = deletion_status(list(store.deletions()), grace_s=0, now=8_000.0)
    assert (status["submitted"], status["unresolved"]) == (3, {DEVICE_ONLY: 1})


def test_a_failing_request_leaves_the_rest_pending(store: DeletionStore) -> None:
    class Failing(Recorder):
        def delete(self, user_ids: list[str]) -> DeletionJob:
            from currents_export.deletions.privacy import PrivacyApiError

            raise PrivacyApiError("HTTP 503 six times")

    key = braze_key("x" * 24)
    store.remember([(key, "x_000001")])
    store.request(key, 1.0)
    report = submit_deletions(store, Failing(), grace_s=0, now=5_000.0)
    assert report.error == "HTTP 503 six times" and report.submitted == 0
    assert [d.status for d in store.deletions()] == ["pending"]


def test_the_tracker_writes_each_pair_once_with_bounded_memory(tmp_path: Path) -> None:
    store = SqliteDeletionStore(tmp_path / "state.sqlite")
    tracker = DeletionTracker(store, window=1_000)
    for _ in range(3):  # users recur: each pair is written once, not once per event
        for n in range(5_000):
            tracker.observe(f"k{n % 1_500}", f"user_{n % 1_500}")
    tracker.flush()
    assert tracker.counts.pairs_written == 1_500
    for n in range(50_000):  # more users than the window: memory stays bounded
        tracker.observe(f"m{n}", f"many_{n}")
        assert tracker.remembered <= 2_000
    tracker.flush()
    assert store.identity("k7") == Identity(frozenset({"user_7"}), False)
    tracker.request("k7", 1.0)
    tracker.request("k7", 2.0)
    assert (tracker.counts.requested, tracker.counts.repeated) == (1, 1)
    assert tracker.is_deleted("k7") and DeletionTracker(store).is_deleted("k7")  # tombstone
    store.close()


def test_a_ledger_table_without_the_deletions_index_is_a_clear_error(aws: str) -> None:
    from currents_export.errors import ConfigurationError

    client = boto3.client("dynamodb", endpoint_url=aws)
    client.create_table(TableName="old-ledger", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    store = DynamoDbDeletionStore(client, "old-ledger", identity_ttl_days=400)
    with pytest.raises(ConfigurationError, match="has no 'deletions' index"):
        list(store.deletions())
