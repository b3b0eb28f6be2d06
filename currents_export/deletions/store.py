"""Where the identity map and the deletions live: with the ledger.

Never a Braze id: records are keyed by :func:`braze_key` (its SHA-256), enough to match a
delete request; the Amplitude ``user_id`` values are kept as sent (after the PII policy),
since a deletion must name them. SQLite: tables ``identities`` (``user_id`` empty for "seen
without one") and ``deletions``. DynamoDB: ``identity#KEY`` items (a string set, a flag,
TTL refreshed on each new pair) and ``deletion#KEY`` items in the sparse index
``deletions`` (partition ``deletion_queue``), without TTL: the tombstones that keep a replay
of old files from sending a deleted user's events again.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from currents_export.errors import ConfigurationError
from currents_export.ledger.dynamodb import DELETION_PREFIX, DELETIONS_INDEX, IDENTITY_PREFIX

PENDING, SUBMITTING, SUBMITTED = "pending", "submitting", "submitted"
UNRESOLVED, FAILED = "unresolved", "failed"
NEVER_SEEN, DEVICE_ONLY = "never_seen", "device_only"
_QUEUE = "deletions"  # the deletion items' partition in the ledger's sparse index


def braze_key(braze_id: str) -> str:
    """How the store names a Braze id (never the id itself)."""
    return hashlib.sha256(b"currents-export:braze:" + braze_id.encode()).hexdigest()[:40]


def id_digest(user_id: str) -> str:
    """How a submitted deletion remembers a user id it sent (not the id itself)."""
    return hashlib.sha256(b"currents-export:user:" + user_id.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Deletion:
    """One Braze id's deletion and what became of it.

    Once submitted it keeps no user id, only digests of the ids sent (to tell ids learned
    later from those already deleted) and counts; its identity rows are forgotten.
    """

    key: str
    requested_at: float  # the delete request's event time (s)
    recorded_at: float  # when a run recorded it (the grace period counts from here)
    status: str = PENDING  # pending, submitting, submitted, unresolved or failed
    reason: str | None = None  # unresolved: never_seen, device_only; failed: why
    sending: tuple[str, ...] = ()  # submitting: the user ids in the request (if it crashed)
    sent: tuple[str, ...] = ()  # submitted: digests of every user id sent (id_digest)
    user_ids: int = 0  # user ids submitted
    not_in_amplitude: int = 0  # of those, unknown to Amplitude (nothing to delete)
    job_day: str | None = None  # the Amplitude job's day
    job_status: str | None = None  # its status when submitted (staging, …)
    submitted_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "requested_at": self.requested_at,
                "recorded_at": self.recorded_at, "status": self.status, "reason": self.reason,
                "user_ids": self.user_ids, "not_in_amplitude": self.not_in_amplitude,
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

    def forget(self, key: str) -> None:
        """Drop what the map holds of ``key`` (its deletion was submitted)."""

    def request(self, key: str, requested_at: float) -> bool:
        """Record a deletion; False when one is recorded for ``key`` already."""

    def reopen(self, keys: Iterable[str]) -> None:
        """Submitted deletions whose Braze id was seen again: pending, to submit the user
        ids learned since (``submit`` leaves out those already sent)."""

    def deletions(self) -> Iterator[Deletion]: ...

    def deleted_keys(self, since: float = 0.0) -> set[str]:
        """The keys of the deletions recorded at ``since`` or later (tombstones)."""

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
        self._db.execute("PRAGMA synchronous=FULL")  # as the ledger: durable before a checkpoint
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

    def forget(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM identities WHERE braze_key = ?", (key,))

    def reopen(self, keys: Iterable[str]) -> None:
        with self._lock:
            self._db.executemany(
                "UPDATE deletions SET status = ? WHERE braze_key = ? AND status = ?",
                [(PENDING, key, SUBMITTED) for key in keys])

    def deleted_keys(self, since: float = 0.0) -> set[str]:
        with self._lock:
            rows = self._db.execute("SELECT braze_key FROM deletions WHERE recorded_at >= ?",
                                    (since,)).fetchall()
        return {row[0] for row in rows}

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
    return {"reason": deletion.reason, "sending": list(deletion.sending),
            "sent": list(deletion.sent), "user_ids": deletion.user_ids,
            "not_in_amplitude": deletion.not_in_amplitude, "job_day": deletion.job_day,
            "job_status": deletion.job_status, "submitted_at": deletion.submitted_at}


def _from_detail(deletion: Deletion, detail: dict[str, Any]) -> Deletion:
    return replace(deletion, reason=detail.get("reason"),
                   sending=tuple(detail.get("sending") or ()),
                   sent=tuple(detail.get("sent") or ()),
                   user_ids=int(detail.get("user_ids") or 0),
                   not_in_amplitude=int(detail.get("not_in_amplitude") or 0),
                   job_day=detail.get("job_day"), job_status=detail.get("job_status"),
                   submitted_at=detail.get("submitted_at"))


class DynamoDbDeletionStore:
    """The identity map and deletions as items of the DynamoDB ledger table.

    New pairs are written by a few threads at once (one UpdateItem per Braze id, an
    idempotent ADD to its set of user ids); deletions are listed and tombstones refreshed
    through the sparse index, by when they were recorded.
    """

    def __init__(self, client: Any, table: str, *, identity_ttl_days: int | None,
                 clock: Callable[[], float] = time.time, writers: int = 8) -> None:
        self._client = client
        self.table = table
        self._ttl_s = None if not identity_ttl_days else identity_ttl_days * 86_400
        self._clock = clock
        self._writers = writers

    def __repr__(self) -> str:
        return f"DynamoDbDeletionStore({self.table!r})"

    def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        by_key: dict[str, set[str]] = {}
        for key, user_id in pairs:
            by_key.setdefault(key, set()).add(user_id)
        if len(by_key) <= 1:
            for key, user_ids in by_key.items():
                self._remember_one(key, user_ids)
            return
        with ThreadPoolExecutor(max_workers=self._writers) as pool:
            for future in [pool.submit(self._remember_one, key, user_ids)
                           for key, user_ids in by_key.items()]:
                future.result()  # the first failure is raised (the pairs are kept)

    def _remember_one(self, key: str, user_ids: set[str]) -> None:
        sets: list[str] = []
        values: dict[str, Any] = {}
        if self._ttl_s is not None:
            sets.append("expires_at = :expires")
            values[":expires"] = {"N": str(int(self._clock() + self._ttl_s))}
        if "" in user_ids:
            sets.append("seen_without_user_id = :yes")
            values[":yes"] = {"BOOL": True}
        named = sorted(user_ids - {""})
        clauses = []
        if sets:
            clauses.append("SET " + ", ".join(sets))
        if named:
            clauses.append("ADD user_ids :ids")
            values[":ids"] = {"SS": named}
        if not clauses:
            return
        self._client.update_item(TableName=self.table,
                                 Key={"pk": {"S": IDENTITY_PREFIX + key}},
                                 UpdateExpression=" ".join(clauses),
                                 ExpressionAttributeValues=values)

    def identity(self, key: str) -> Identity:
        item = self._client.get_item(TableName=self.table,
                                     Key={"pk": {"S": IDENTITY_PREFIX + key}},
                                     ConsistentRead=True).get("Item") or {}
        return Identity(frozenset(item.get("user_ids", {}).get("SS", [])),
                        bool(item.get("seen_without_user_id", {}).get("BOOL", False)))

    def forget(self, key: str) -> None:
        self._client.delete_item(TableName=self.table,
                                 Key={"pk": {"S": IDENTITY_PREFIX + key}})

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

    def reopen(self, keys: Iterable[str]) -> None:
        from botocore.exceptions import ClientError

        for key in keys:
            try:
                self._client.update_item(
                    TableName=self.table, Key={"pk": {"S": DELETION_PREFIX + key}},
                    UpdateExpression="SET #status = :pending",
                    ConditionExpression="#status = :submitted",
                    ExpressionAttributeNames={"#status": "status"},
                    ExpressionAttributeValues={":pending": {"S": PENDING},
                                               ":submitted": {"S": SUBMITTED}})
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != \
                        "ConditionalCheckFailedException":
                    raise

    def deletions(self) -> Iterator[Deletion]:
        for item in self._items(0.0, keys_only=False):
            deletion = Deletion(
                key=item["pk"]["S"].removeprefix(DELETION_PREFIX),
                requested_at=float(item["requested_at"]["N"]),
                recorded_at=float(item["recorded_at"]["N"]),
                status=item["status"]["S"])
            yield _from_detail(deletion, orjson.loads(item["detail"]["S"]))

    def deleted_keys(self, since: float = 0.0) -> set[str]:
        return {item["pk"]["S"].removeprefix(DELETION_PREFIX)
                for item in self._items(since, keys_only=True)}

    def _items(self, since: float, *, keys_only: bool) -> Iterator[dict[str, Any]]:
        arguments: dict[str, Any] = {
            "TableName": self.table, "IndexName": DELETIONS_INDEX,
            "KeyConditionExpression": "deletion_queue = :queue AND recorded_at >= :since",
            "ExpressionAttributeValues": {":queue": {"S": _QUEUE},
                                          ":since": {"N": repr(since)}}}
        if keys_only:
            arguments["ProjectionExpression"] = "pk"
        while True:
            page = self._query(arguments)
            yield from page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                return
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            page: dict[str, Any] = self._client.query(**arguments)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), str(error.get("Message", ""))
            if code == "ResourceNotFoundException" and self._table_exists():
                code, message = "ValidationException", "no such index"  # as moto says it
            if code == "ResourceNotFoundException":
                raise ConfigurationError(
                    f"--state dynamodb://{self.table}: the table does not exist; create it "
                    "(the SAM stack does)") from None
            if code == "ValidationException" and "index" in message.lower():
                raise ConfigurationError(
                    f"--state dynamodb://{self.table}: the table has no usable "
                    f"{DELETIONS_INDEX!r} index, which deletions need (a table made before "
                    "deletions existed, or the index is still being built): update the "
                    f"stack, or add a global secondary index named {DELETIONS_INDEX!r} on "
                    "deletion_queue (string) and recorded_at (number)") from None
            raise
        return page

    def _table_exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.describe_table(TableName=self.table)
        except ClientError:
            return False
        return True

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
