"""The identity map and deletions, in SQLite and in DynamoDB (moto); the tracker's bounded
memory; resolving and packing deletions into requests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from currents_export.deletions.privacy_api import DeletionJob
from currents_export.deletions.store import (
    DEVICE_ONLY,
    FAILED,
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
from currents_export.errors import PrivacyApiError
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
    """A deleter that records each request's ids; ids starting with "ghost" are unknown,
    and one naming "bad" is refused (HTTP 400)."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.jobs: set[str] = set()

    def delete(self, user_ids: list[str]) -> DeletionJob:
        self.requests.append(user_ids)
        if any(i.startswith("bad") for i in user_ids):
            raise PrivacyApiError("HTTP 400 to a request", refused=True)
        self.jobs.update(user_ids)
        return DeletionJob("2026-12-12", "staging",
                           frozenset(i for i in user_ids if i.startswith("ghost")))

    def scheduled(self, start_day: str, end_day: str) -> set[str]:
        return set(self.jobs)


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
    assert found[big].status == SUBMITTED and found[big].user_ids == 150
    assert (found[small].not_in_amplitude, found[small].job_day) == (1, "2026-12-12")
    assert "small_001" not in repr(found[small])  # a submitted deletion keeps no user id
    assert store.identity(big) == Identity()  # nor does the map
    assert (found[dave].status, found[dave].reason) == (UNRESOLVED, DEVICE_ONLY)
    assert (found[never].status, found[never].reason) == (UNRESOLVED, NEVER_SEEN)
    again = submit_deletions(store, deleter, grace_s=0, now=6_000.0)
    assert again.submitted == 0 and len(deleter.requests) == 2
    store.remember([(never, "late_0001")])  # the map learns it later: resolved next time
    late = submit_deletions(store, deleter, grace_s=0, now=7_000.0)
    assert late.submitted == 1 and deleter.requests[-1] == ["late_0001"]
    # Seen again with one id already sent and one new: only the new one is sent.
    store.remember([(small, "small_001"), (small, "small_renamed")])
    store.reopen([small])
    reopened = submit_deletions(store, deleter, grace_s=0, now=8_000.0)
    assert reopened.submitted == 1 and deleter.requests[-1] == ["small_renamed"]
    status = deletion_status(list(store.deletions()), grace_s=0, now=9_000.0)
    assert (status["submitted"], status["unresolved"]) == (3, {DEVICE_ONLY: 1})


def test_a_lost_answer_is_looked_up_before_anything_is_sent_again(
    store: DeletionStore
) -> None:
    key, other = braze_key("l" * 24), braze_key("o" * 24)
    store.remember([(key, "lost_0001"), (other, "other_001")])
    store.request(key, 1.0)
    store.request(other, 1.0)
    deleter = Recorder()

    class Crash(Exception):
        pass

    class LosesTheAnswer(Recorder):
        def delete(self, user_ids: list[str]) -> DeletionJob:
            deleter.delete(user_ids)  # Amplitude takes it …
            raise Crash  # … and the process dies before the answer is saved

    with pytest.raises(Crash):
        submit_deletions(store, LosesTheAnswer(), grace_s=0, now=5_000.0)
    assert {d.status for d in store.deletions()} == {"submitting"}
    report = submit_deletions(store, deleter, grace_s=0, now=6_000.0)
    assert len(deleter.requests) == 1  # found in Amplitude's jobs: not sent again
    assert {d.status for d in store.deletions()} == {SUBMITTED} and report.requests == 0


def test_a_refused_deletion_fails_alone_and_the_others_go_on(store: DeletionStore) -> None:
    good, bad = braze_key("g" * 24), braze_key("b" * 24)
    store.remember([(good, "good_0001"), (bad, "bad_00001")])
    store.request(good, 1.0)
    store.request(bad, 1.0)
    deleter = Recorder()
    report = submit_deletions(store, deleter, grace_s=0, now=5_000.0)
    assert (report.submitted, report.failed, report.error) == (1, 1, None)
    found = {d.key: d for d in store.deletions()}
    assert found[good].status == SUBMITTED
    assert (found[bad].status, found[bad].reason) == (FAILED, "HTTP 400 to a request")
    assert submit_deletions(store, deleter, grace_s=0, now=6_000.0).submitted == 0


def test_an_outage_leaves_the_rest_for_the_next_submit(store: DeletionStore) -> None:
    class Failing(Recorder):
        def delete(self, user_ids: list[str]) -> DeletionJob:
            raise PrivacyApiError("HTTP 503 six times")

    key = braze_key("x" * 24)
    store.remember([(key, "x_000001")])
    store.request(key, 1.0)
    report = submit_deletions(store, Failing(), grace_s=0, now=5_000.0)
    assert report.error == "HTTP 503 six times" and report.submitted == 0
    assert [d.status for d in store.deletions()] == ["submitting"]  # looked up next time
    deleter = Recorder()
    assert submit_deletions(store, deleter, grace_s=0, now=6_000.0).submitted == 1
    assert deleter.requests == [["x_000001"]]  # not in Amplitude's jobs: sent again


def test_the_tracker_writes_each_pair_once_with_bounded_memory(tmp_path: Path) -> None:
    store = SqliteDeletionStore(tmp_path / "state.sqlite")
    written: list[int] = []
    remember = store.remember
    store.remember = lambda pairs: (written.append(len(list(pairs))),  # type: ignore[method-assign]
                                    remember(pairs))
    tracker = DeletionTracker(store, window=1_000)
    for _ in range(3):  # users recur: each pair is written once, not once per event
        for n in range(5_000):
            tracker.observe(f"k{n % 1_500}", f"user_{n % 1_500}")
    tracker.flush()
    assert sum(written) == 1_500
    for n in range(50_000):  # more users than the window: memory stays bounded
        tracker.observe(f"m{n}", f"many_{n}")
        assert tracker.remembered <= 2_000
    tracker.flush()
    assert store.identity("k7") == Identity(frozenset({"user_7"}), False)
    assert tracker.request("k7", 1.0) is True and tracker.request("k7", 2.0) is False
    later = DeletionTracker(store)
    assert tracker.is_deleted("k7") and not later.is_deleted("k7")
    later.refresh()  # a run loads the tombstones
    assert later.is_deleted("k7")
    store.close()


def test_a_ledger_table_without_the_deletions_index_is_a_clear_error(aws: str) -> None:
    from currents_export.errors import ConfigurationError

    client = boto3.client("dynamodb", endpoint_url=aws)
    client.create_table(TableName="old-ledger", BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    store = DynamoDbDeletionStore(client, "old-ledger", identity_ttl_days=400)
    with pytest.raises(ConfigurationError, match="has no usable 'deletions' index"):
        list(store.deletions())
    missing = DynamoDbDeletionStore(client, "no-such-table", identity_ttl_days=400)
    with pytest.raises(ConfigurationError, match="no-such-table: the table does not exist"):
        missing.deleted_keys()
