"""Where the identity map and the deletions live: with the ledger.

The store never holds a Braze id: records are keyed by :func:`braze_key` (a SHA-256 of
it), which is all a delete request needs to be matched. It holds the Amplitude
``user_id`` values as they were sent (after the PII policy): those are what a deletion
must name.

- SQLite (the ledger file): tables ``identities`` (one row per pair; ``user_id`` empty
  for "seen without a user id") and ``deletions``.
- DynamoDB (the ledger table): ``identity#KEY`` items (a string set of user ids, a flag
  for "seen without one", TTL refreshed on each new pair) and ``deletion#KEY`` items,
  listed through the sparse index ``deletions`` (partition ``deletion_queue``).
  Deletion items have no TTL: they are the tombstones that keep a replay of old files
  from sending a deleted user's events again.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from currents_export.errors import ConfigurationError
from currents_export.ledger.dynamodb import DELETION_PREFIX, DELETIONS_INDEX, IDENTITY_PREFIX

PENDING, SUBMITTED, UNRESOLVED = "pending", "submitted", "unresolved"
NEVER_SEEN, DEVICE_ONLY, NOT_IN_AMPLITUDE = "never_seen", "device_only", "not_in_amplitude"
_QUEUE = "deletions"  # the deletion items' partition in the ledger's sparse index


def braze_key(braze_id: str) -> str:
    """How the store names a Braze id (never the id itself)."""
    return hashlib.sha256(b"currents-export:braze:" + braze_id.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Deletion:
    """One Braze id's deletion and what became of it."""

    key: str
    requested_at: float  # the delete request's event time (s)
    recorded_at: float  # when a run recorded it (the grace period counts from here)
    status: str = PENDING  # pending, submitted or unresolved
    reason: str | None = None  # why unresolved: never_seen, device_only
    user_ids: tuple[str, ...] = ()  # submitted for deletion
    invalid_ids: tuple[str, ...] = ()  # of those, unknown to Amplitude (nothing to delete)
    job_day: str | None = None  # the Amplitude job's day
    job_status: str | None = None  # its status when submitted (staging, …)
    submitted_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "requested_at": self.requested_at,
                "recorded_at": self.recorded_at, "status": self.status, "reason": self.reason,
                "user_ids": len(self.user_ids), "invalid_ids": len(self.invalid_ids),
                "job_day": self.job_day, "job_status": self.job_status,
                "submitted_at": self.submitted_at}


@dataclass(frozen=True, slots=True)
class Identity:
    """What is known of one Braze id: its user ids as sent, and whether it was seen
    without one (a device-only or anonymous user)."""

    user_ids: frozenset[str] = frozenset()
    seen_without_user_id: bool = False


class DeletionStore(Protocol):
    def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Add (key, user_id) pairs; ``user_id`` ``""``: seen without one."""

    def identity(self, key: str) -> Identity: ...

    def request(self, key: str, requested_at: float) -> bool:
        """Record a deletion; False when one is recorded for ``key`` already."""

    def deletions(self) -> Iterator[Deletion]: ...

    def save(self, deletion: Deletion) -> None: ...

    def close(self) -> None: ...


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    braze_key TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    seen_at   REAL NOT NULL,
    PRIMARY KEY (braze_key, user_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deletions (
    braze_key    TEXT PRIMARY KEY,
    requested_at REAL NOT NULL,
    recorded_at  REAL NOT NULL,
    status       TEXT NOT NULL,
    detail       TEXT NOT NULL DEFAULT '{}'
);
"""


class SqliteDeletionStore:
    """The identity map and deletions as two tables of the SQLite ledger file (its own
    connection; WAL lets it write beside the ledger's)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SQLITE_SCHEMA)

    def __repr__(self) -> str:
        return f"SqliteDeletionStore({str(self.path)!r})"

    def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        rows = [(key, user_id, self._clock()) for key, user_id in pairs]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO identities VALUES (?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def identity(self, key: str) -> Identity:
        with self._lock:
            rows = self._db.execute("SELECT user_id FROM identities WHERE braze_key = ?",
                                    (key,)).fetchall()
        ids = {row[0] for row in rows}
        return Identity(frozenset(ids - {""}), "" in ids)

    def request(self, key: str, requested_at: float) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO deletions (braze_key, requested_at, recorded_at, status)"
                " VALUES (?, ?, ?, ?)", (key, requested_at, self._clock(), PENDING))
        return cursor.rowcount == 1

    def deletions(self) -> Iterator[Deletion]:
        with self._lock:
            rows = self._db.execute(
                "SELECT braze_key, requested_at, recorded_at, status, detail FROM deletions "
                "ORDER BY recorded_at, braze_key").fetchall()
        for key, requested_at, recorded_at, status, detail in rows:
            yield _from_detail(Deletion(key, requested_at, recorded_at, status),
                               orjson.loads(detail))

    def save(self, deletion: Deletion) -> None:
        with self._lock:
            self._db.execute("UPDATE deletions SET status = ?, detail = ? WHERE braze_key = ?",
                             (deletion.status, orjson.dumps(_detail(deletion)), deletion.key))

    def close(self) -> None:
        self._db.close()


def _detail(deletion: Deletion) -> dict[str, Any]:
    return {"reason": deletion.reason, "user_ids": list(deletion.user_ids),
            "invalid_ids": list(deletion.invalid_ids), "job_day": deletion.job_day,
            "job_status": deletion.job_status, "submitted_at": deletion.submitted_at}


def _from_detail(deletion: Deletion, detail: dict[str, Any]) -> Deletion:
    return replace(deletion, reason=detail.get("reason"),
                   user_ids=tuple(detail.get("user_ids") or ()),
                   invalid_ids=tuple(detail.get("invalid_ids") or ()),
                   job_day=detail.get("job_day"), job_status=detail.get("job_status"),
                   submitted_at=detail.get("submitted_at"))


class DynamoDbDeletionStore:
    """The identity map and deletions as items of the DynamoDB ledger table."""

    def __init__(self, client: Any, table: str, *, identity_ttl_days: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self.table = table
        self._ttl_s = identity_ttl_days * 86_400
        self._clock = clock

    def __repr__(self) -> str:
        return f"DynamoDbDeletionStore({self.table!r})"

    def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        by_key: dict[str, set[str]] = {}
        for key, user_id in pairs:
            by_key.setdefault(key, set()).add(user_id)
        expires = {"N": str(int(self._clock() + self._ttl_s))}
        for key, user_ids in by_key.items():
            named = sorted(user_ids - {""})
            update = "SET expires_at = :expires"
            values: dict[str, Any] = {":expires": expires}
            if named:
                update += " ADD user_ids :ids"
                values[":ids"] = {"SS": named}
            if "" in user_ids:
                update += ", seen_without_user_id = :yes"
                values[":yes"] = {"BOOL": True}
            self._client.update_item(TableName=self.table,
                                     Key={"pk": {"S": IDENTITY_PREFIX + key}},
                                     UpdateExpression=update,
                                     ExpressionAttributeValues=values)

    def identity(self, key: str) -> Identity:
        item = self._client.get_item(TableName=self.table,
                                     Key={"pk": {"S": IDENTITY_PREFIX + key}},
                                     ConsistentRead=True).get("Item") or {}
        return Identity(frozenset(item.get("user_ids", {}).get("SS", [])),
                        bool(item.get("seen_without_user_id", {}).get("BOOL", False)))

    def request(self, key: str, requested_at: float) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.put_item(
                TableName=self.table,
                Item={"pk": {"S": DELETION_PREFIX + key}, "deletion_queue": {"S": _QUEUE},
                      "requested_at": {"N": repr(requested_at)},
                      "recorded_at": {"N": repr(self._clock())},
                      "status": {"S": PENDING}, "detail": {"S": "{}"}},
                ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def deletions(self) -> Iterator[Deletion]:
        arguments: dict[str, Any] = {
            "TableName": self.table, "IndexName": DELETIONS_INDEX,
            "KeyConditionExpression": "deletion_queue = :queue",
            "ExpressionAttributeValues": {":queue": {"S": _QUEUE}}}
        while True:
            page = self._query(arguments)
            for item in page.get("Items", []):
                deletion = Deletion(
                    key=item["pk"]["S"].removeprefix(DELETION_PREFIX),
                    requested_at=float(item["requested_at"]["N"]),
                    recorded_at=float(item["recorded_at"]["N"]),
                    status=item["status"]["S"])
                yield _from_detail(deletion, orjson.loads(item["detail"]["S"]))
            if not page.get("LastEvaluatedKey"):
                return
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            page: dict[str, Any] = self._client.query(**arguments)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in ("ValidationException", "ResourceNotFoundException"):
                raise ConfigurationError(
                    f"--state dynamodb://{self.table}: the table has no {DELETIONS_INDEX!r} "
                    "index, which deletions need (tables made before deletions existed): "
                    "update the stack, or add a global secondary index named "
                    f"{DELETIONS_INDEX!r} on deletion_queue (string) and requested_at "
                    f"(number) ({error.get('Code')})") from None
            raise
        return page

    def save(self, deletion: Deletion) -> None:
        self._client.update_item(
            TableName=self.table, Key={"pk": {"S": DELETION_PREFIX + deletion.key}},
            UpdateExpression="SET #status = :status, detail = :detail",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":status": {"S": deletion.status},
                                       ":detail": {"S": orjson.dumps(_detail(deletion))
                                                   .decode()}})

    def close(self) -> None:
        """The client belongs to the ledger."""
