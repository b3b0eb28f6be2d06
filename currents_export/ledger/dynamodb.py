"""The ledger in DynamoDB, for the Lambda fleet and shared backfills.

One item per object with a lease, so duplicate notifications never process an object twice
at once: a claim needs the object not done and its lease free, expired or ours; every later
write is fenced on the owner. DONE and FAILED items get a TTL (``expires_at``), never used
as a clock: the conditions compare times themselves.

Legacy items (keyed by ``s3://`` URI or path) are moved with UpdateItem only (the ledger
needs no more than GetItem and UpdateItem): claim the legacy item and mark it MOVED (then
invisible), create the identity's item with its checkpoint, seal the legacy one (a lease
until 9999) against older code. There is no migration scan: an old item is found only when
the object is seen at the same URI, as the Lambda's are on redelivery.

``connect_timeout``/``read_timeout`` (None: botocore's 60 s) and ``max_attempts`` (the first
included; None: standard mode's ``max_attempts`` 10) bound each call; the Lambda's are tighter.

The destination the objects were delivered to (``ledger.base.Destination``) is the reserved
item ``currents-export:destination`` (no TTL), written with a conditional UpdateItem: two
first runs at once agree on one binding. Each ledger's (process's, container's) first
completion, or checkpoint with events delivered, sets its ``recorded`` (one UpdateItem
more; a table from before destinations is not scanned: a Lambda's role cannot). A ledger
that bound the table and is closed with nothing recorded removes the binding (the Lambda's
is never closed). A table whose key is not ``pk`` (string) alone is a configuration error
naming the key it expects, not a failure of every object.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, cast

import orjson
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from currents_export.errors import (
    AlreadyDone,
    DiedReading,
    LeaseHeld,
    LeaseLost,
    LedgerConfigError,
)
from currents_export.ledger.base import (
    MAX_READ_DEATHS,
    Destination,
    ObjectState,
    Resume,
    died_reading,
    read_deaths,
    records_delivery,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import (
        AttributeDefinitionTypeDef,
        GlobalSecondaryIndexTypeDef,
    )

log = logging.getLogger(__name__)

IN_PROGRESS, DONE, FAILED = "IN_PROGRESS", "DONE", "FAILED"
MOVED = "MOVED"  # a legacy item whose progress now lives under the object's identity
_SEALED_UNTIL = 253_402_300_799  # 9999-12-31T23:59:59Z: a moved item's lease never ends
MAX_ERROR_CHARS = 1_000
_CONDITION_FAILED = "ConditionalCheckFailedException"
_R = TypeVar("_R")

# The deletions store (``deletions.store``) keeps its items in this table too: identities
# and deletions, the latter listed through a sparse index (only they have its key).
IDENTITY_PREFIX, DELETION_PREFIX = "identity#", "deletion#"
DESTINATION_KEY = "currents-export:destination"  # where the objects were delivered
NOT_OBJECTS = (IDENTITY_PREFIX, DELETION_PREFIX, DESTINATION_KEY)
EXPECTED_KEY = "partition key pk (string), no sort key"
DELETIONS_INDEX = "deletions"
DELETIONS_INDEX_ATTRIBUTES: list[AttributeDefinitionTypeDef] = [
    {"AttributeName": "deletion_queue", "AttributeType": "S"},
    {"AttributeName": "recorded_at", "AttributeType": "N"},
]
DELETIONS_INDEX_DEFINITION: GlobalSecondaryIndexTypeDef = {
    "IndexName": DELETIONS_INDEX,
    "KeySchema": [{"AttributeName": "deletion_queue", "KeyType": "HASH"},
                  {"AttributeName": "recorded_at", "KeyType": "RANGE"}],
    "Projection": {"ProjectionType": "ALL"},
}

# A claim: the object is new, or not done and its lease is expired or ours.
_CLAIM = ("attribute_not_exists(pk)"
          " OR (#state <> :done AND (lease_until < :now OR lease_owner = :me))")
_CLAIM_AGAIN = _CLAIM + " OR #state = :done"  # restart: a done object may be redone
# Moving a legacy item: it exists, is not done, and its lease is expired or ours.
_CLAIM_LEGACY = ("attribute_exists(pk) AND #state <> :done"
                 " AND (lease_until < :now OR lease_owner = :me)")


class DynamoDbLedger:
    """The :class:`~currents_export.ledger.base.Ledger` protocol on one DynamoDB table."""

    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        owner: str | None = None,
        lease_s: float = 960.0,
        ttl_days: float | None = 400.0,
        client: DynamoDBClient | None = None,
        clock: Callable[[], float] = time.time,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        self.table = table
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_s = lease_s
        self.ttl_s = None if ttl_days is None else ttl_days * 86_400
        self._clock = clock
        self._recorded = False  # this ledger marked the destination recorded
        self._bound: Destination | None = None  # the binding this ledger made
        if client is None:
            timeouts: _Timeouts = {}  # None: botocore's, so not passed at all
            if connect_timeout is not None:
                timeouts["connect_timeout"] = connect_timeout
            if read_timeout is not None:
                timeouts["read_timeout"] = read_timeout
            import boto3  # here: a SQLite ledger's run never needs it
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": 10} if max_attempts is None
                else {"mode": "standard", "total_max_attempts": max_attempts},
                **timeouts,
            )
            try:
                client = boto3.session.Session().client(
                    "dynamodb", endpoint_url=endpoint_url, region_name=region, config=config
                )
            except NoRegionError:
                raise LedgerConfigError(
                    f"--state dynamodb://{table}: no AWS region; set "
                    "AWS_DEFAULT_REGION (or a region in the AWS profile)"
                ) from None
        self._client = client

    def __repr__(self) -> str:
        return f"DynamoDbLedger({self.table!r})"

    @property
    def client(self) -> Any:
        """The DynamoDB client (the deletions store keeps its items in this table too)."""
        return self._client

    @staticmethod
    def create_table(client: DynamoDBClient, table: str) -> None:
        """Create an on-demand table keyed by ``pk`` (string), with TTL on ``expires_at``
        and the sparse index the deletions are listed through (``deletions.store``)."""
        client.create_table(
            TableName=table,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  *DELETIONS_INDEX_ATTRIBUTES],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[DELETIONS_INDEX_DEFINITION],
        )
        client.get_waiter("table_exists").wait(
            TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )

    def state(self, object_id: str, *, legacy_id: str | None = None) -> ObjectState | None:
        """The item for ``object_id``, else the one under ``legacy_id`` (strongly consistent)."""
        for candidate in (object_id, legacy_id):
            if candidate is not None:
                item = self.status(candidate)
                if item is not None and item.get("state") != MOVED:
                    return _object_state(item)
        return None

    def is_done(self, object_id: str, *, legacy_id: str | None = None) -> bool:
        found = self.state(object_id, legacy_id=legacy_id)
        return found is not None and found.done

    def begin(
        self,
        object_id: str,
        *,
        location: str | None = None,
        legacy_id: str | None = None,
        restart: bool = False,
    ) -> Resume | None:
        """Claim the object (one conditional write) and return the previous checkpoint.

        When ``object_id`` has no item and ``legacy_id`` has an unfinished one, that item's
        checkpoint moves to ``object_id`` (see the module's docstring).

        Raises AlreadyDone when another worker finished it, LeaseHeld when another worker's
        lease is still live.
        """
        if legacy_id is not None and legacy_id != object_id and self.status(object_id) is None:
            legacy = self.status(legacy_id)
            if legacy is not None and legacy.get("state") == DONE:
                if not restart:
                    raise AlreadyDone(object_id)
            elif legacy is not None and legacy.get("moved_to", object_id) == object_id:
                moved, resume = self._move(object_id, legacy_id, location, restart)
                if moved:
                    return resume
        return self._claim(object_id, location, restart)

    def _claim(self, object_id: str, location: str | None, restart: bool) -> Resume | None:
        now = self._clock()
        sets = ("#state = :progress, lease_owner = :me, lease_until = :until, updated_at = :now,"
                " started_at = :now")
        removes = "#error, expires_at, finished_at, #permanent"
        # Marked read from its checkpoint: the reader starts at once (``reading``).
        sets += (", reading_from = :zero" if restart
                 else ", reading_from = if_not_exists(next_index, :zero)")
        values = {":done": _s(DONE), ":progress": _s(IN_PROGRESS), ":me": _s(self.owner),
                  ":now": _n(now), ":until": _n(now + self.lease_s), ":one": _n(1)}
        names = {"#state": "state", "#error": "error", "#permanent": "permanent"}
        if location is not None:
            sets += ", #location = :location"
            values[":location"] = _s(location)
            names["#location"] = "location"
        values[":zero"] = _n(0)
        if restart:  # from the start: drop the checkpoint
            sets += ", next_index = :zero"
            removes += ", figures"
        claimed, item = self._update(
            object_id, f"SET {sets} ADD attempts :one REMOVE {removes}",
            _CLAIM_AGAIN if restart else _CLAIM, values, names, return_old=True,
        )
        if not claimed:
            if item.get("state") == DONE:
                raise AlreadyDone(object_id)
            raise LeaseHeld(object_id, str(item.get("lease_owner", "?")),
                            float(item.get("lease_until", 0)))
        next_index, figures = int(item.get("next_index", 0)), item.get("figures")
        marked, before = int(item.get("reading_from", -1)), int(item.get("read_deaths", 0))
        deaths = 0 if restart or item.get("state") == DONE else read_deaths(
            marked, before, next_index)
        if deaths >= MAX_READ_DEATHS:
            error = died_reading(object_id, deaths, marked)
            self.fail(object_id, error, permanent=True)
            raise DiedReading(error)
        if deaths != before:
            self._update(object_id, "SET read_deaths = :n", "lease_owner = :me",
                         {":n": _n(deaths), ":me": _s(self.owner)}, {})
        if restart or item.get("state") == DONE or next_index <= 0 or not figures:
            return None
        return Resume(next_index=next_index, figures=orjson.loads(figures))

    def _move(
        self, object_id: str, legacy_id: str, location: str | None, restart: bool
    ) -> tuple[bool, Resume | None]:
        """Move an unfinished legacy item to ``object_id``; ``(False, None)``: nothing to move
        (the caller claims ``object_id`` as usual). Raises like :meth:`begin`."""
        now = self._clock()
        until = now + self.lease_s
        claimed, old = self._update(
            legacy_id,
            "SET #state = :moved, moved_to = :to, lease_owner = :me, lease_until = :until,"
            " updated_at = :now",
            _CLAIM_LEGACY,
            {":moved": _s(MOVED), ":to": _s(object_id), ":me": _s(self.owner),
             ":until": _n(until), ":now": _n(now), ":done": _s(DONE)},
            {"#state": "state"}, return_old=True,
        )
        if not claimed:
            if not old:  # gone (TTL) since it was read
                return False, None
            if old.get("state") == DONE:  # finished meanwhile by a worker keyed by path/URI
                if restart:
                    return False, None
                raise AlreadyDone(object_id)
            raise LeaseHeld(object_id, str(old.get("lease_owner", "?")),
                            float(old.get("lease_until", 0)))
        next_index, figures = int(old.get("next_index", 0)), old.get("figures")
        keep = not restart and next_index > 0 and bool(figures)
        sets = ("#state = :progress, lease_owner = :me, lease_until = :until, updated_at = :now,"
                " started_at = :now, attempts = :attempts, next_index = :next,"
                " previous_id = :previous")
        values = {":progress": _s(IN_PROGRESS), ":me": _s(self.owner), ":until": _n(until),
                  ":now": _n(now), ":attempts": _n(int(old.get("attempts", 0)) + 1),
                  ":next": _n(next_index if keep else 0), ":previous": _s(legacy_id)}
        names = {"#state": "state"}
        if keep:
            sets += ", figures = :figures"
            values[":figures"] = _s(str(figures))
        if location is not None:
            sets += ", #location = :location"
            values[":location"] = _s(location)
            names["#location"] = "location"
        created, _ = self._update(object_id, f"SET {sets}", "attribute_not_exists(pk)",
                                  values, names)
        if not created:  # another worker created it first: claim it as usual
            return False, None
        seal = {":sealed": _n(_SEALED_UNTIL), ":now": _n(now), ":me": _s(self.owner)}
        self._update(legacy_id, "SET lease_until = :sealed, updated_at = :now"
                     + self._ttl(now, seal), "lease_owner = :me", seal, {})
        if not keep:
            return True, None
        return True, Resume(next_index=next_index, figures=orjson.loads(str(figures)))

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        """Save a checkpoint and extend the lease; never moves ``next_index`` backwards."""
        now = self._clock()
        saved, item = self._update(
            object_id,
            "SET next_index = :next, figures = :figures, lease_until = :until, updated_at = :now",
            "lease_owner = :me AND #state = :progress"
            " AND (attribute_not_exists(next_index) OR next_index <= :next)",
            {":next": _n(next_index), ":figures": _s(orjson.dumps(figures).decode()),
             ":until": _n(now + self.lease_s), ":now": _n(now), ":me": _s(self.owner),
             ":progress": _s(IN_PROGRESS)},
            {"#state": "state"},
        )
        if not saved and item.get("lease_owner") != self.owner:
            raise LeaseLost(object_id)
        if saved and records_delivery(figures):
            self._mark_recorded()
        # Still ours: a larger checkpoint was saved first by another thread, or the attempt
        # already finished (as in SQLite, a late checkpoint is then a no-op).

    def complete(self, object_id: str, figures: dict[str, Any]) -> None:
        """Mark done and release the lease."""
        now = self._clock()
        update = "SET #state = :state, figures = :figures, finished_at = :now, updated_at = :now"
        values = {":state": _s(DONE), ":figures": _s(orjson.dumps(figures).decode())}
        self._finish(object_id, now, update + self._ttl(now, values)
                     + " REMOVE lease_until, reading_from, read_deaths",
                     values, {"#state": "state"})
        self._mark_recorded()

    def _mark_recorded(self) -> None:
        """The destination has progress recorded under it (once per ledger; nothing when
        the table is not bound)."""
        if self._recorded:
            return
        self._update(DESTINATION_KEY, "SET recorded = :yes", "attribute_exists(#host)",
                     {":yes": {"BOOL": True}}, {"#host": "host"})
        self._recorded = True

    def fail(self, object_id: str, error: str, *, permanent: bool = False) -> None:
        """Mark failed and release the lease at once, so that a retry can claim it."""
        now = self._clock()
        update = ("SET #state = :state, #error = :error, #permanent = :permanent,"
                  " lease_until = :zero, updated_at = :now, finished_at = :now")
        values = {":state": _s(FAILED), ":error": _s(error[:MAX_ERROR_CHARS]), ":zero": _n(0),
                  ":permanent": {"BOOL": permanent}}
        self._finish(object_id, now,
                     update + self._ttl(now, values) + " REMOVE reading_from, read_deaths",
                     values, {"#state": "state", "#error": "error", "#permanent": "permanent"})

    def reading(self, object_id: str, index: int | None) -> None:
        if index is None:  # its reading ended: the deaths before it no longer count
            update, values = "REMOVE reading_from, read_deaths", {":me": _s(self.owner)}
        else:
            update, values = "SET reading_from = :i", {":i": _n(index), ":me": _s(self.owner)}
        self._update(object_id, update, "lease_owner = :me", values, {})

    def release(self, object_id: str, owner: str) -> bool:
        """Free the lease ``owner`` holds on the object, when ``owner`` is known to be dead
        (a worker process that died), so that another worker can claim it at once; True
        when it held it. The checkpoint stays."""
        claimed, _ = self._update(
            object_id, "SET lease_until = :zero", "lease_owner = :dead AND #state = :progress",
            {":zero": _n(0), ":dead": _s(owner), ":progress": _s(IN_PROGRESS)},
            {"#state": "state"},
        )
        return claimed

    def objects(self, *, page_size: int | None = None) -> Iterator[ObjectState]:
        """Every item (a paginated, strongly consistent Scan), moved legacy items left out."""
        arguments: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        if page_size is not None:
            arguments["Limit"] = page_size
        while True:
            page = self._call(self._client.scan, **arguments)
            for raw in page.get("Items", []):
                item = _plain_item(raw)
                if item.get("state") != MOVED and not str(item["pk"]).startswith(NOT_OBJECTS):
                    yield _object_state(item)
            if not page.get("LastEvaluatedKey"):
                return
            arguments["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def status(self, object_id: str) -> dict[str, Any] | None:
        """The item for ``object_id`` as plain Python (strongly consistent read)."""
        response = self._call(self._client.get_item, TableName=self.table,
                              Key={"pk": _s(object_id)}, ConsistentRead=True)
        item = response.get("Item")
        return None if item is None else _plain_item(item)

    def destination(self) -> Destination | None:
        item = self.status(DESTINATION_KEY)
        return None if item is None or "host" not in item else _destination(item)

    def bind_destination(
        self, destination: Destination, *, replacing: Destination | None
    ) -> Destination | None:
        """Compare and set, as one conditional UpdateItem (see ``ledger.base.Ledger``)."""
        now = self._clock()
        names = {"#host": "host", "#fingerprint": "key_fingerprint"}
        values: dict[str, Any] = {":host": _s(destination.host),
                                  ":fingerprint": _s(destination.key_fingerprint),
                                  ":now": _n(now)}
        update = "SET #host = :host, #fingerprint = :fingerprint, bound_at = :now"
        if replacing is None:
            condition = "attribute_not_exists(#host)"  # a released item has none
            update += ", recorded = :no REMOVE previous"
            values[":no"] = {"BOOL": False}
        else:
            condition = "#host = :old_host AND #fingerprint = :old_fingerprint"
            values.update({":old_host": _s(replacing.host),
                           ":old_fingerprint": _s(replacing.key_fingerprint),
                           ":previous": _s(str(replacing))})
            update += ", previous = :previous"
        bound, current = self._update(DESTINATION_KEY, update, condition, values, names)
        if bound:
            self._bound = Destination(
                host=destination.host, key_fingerprint=destination.key_fingerprint,
                bound_at=now, previous=None if replacing is None else str(replacing),
                recorded=replacing is not None and replacing.recorded)
            return self._bound
        return _destination(current) if "host" in current else None

    def close(self) -> None:
        try:
            self._release_binding()
        finally:
            self._client.close()

    def _release_binding(self) -> None:
        """Remove the binding this ledger made if nothing was recorded under it."""
        bound = self._bound
        if bound is None or bound.bound_at is None:
            return
        self._bound = None
        try:
            removed, _ = self._update(
                DESTINATION_KEY, "REMOVE #host, #fingerprint, bound_at, previous, recorded",
                "#host = :host AND #fingerprint = :fingerprint AND bound_at = :at"
                " AND (attribute_not_exists(recorded) OR recorded = :no)",
                {":host": _s(bound.host), ":fingerprint": _s(bound.key_fingerprint),
                 ":at": _n(bound.bound_at), ":no": {"BOOL": False}},
                {"#host": "host", "#fingerprint": "key_fingerprint"})
        except (ClientError, BotoCoreError, LedgerConfigError):
            log.debug("ledger %s: the binding stays", self.table, exc_info=True)
            return
        if removed:
            log.info("ledger dynamodb://%s: nothing was recorded for %s; the table is not "
                     "bound", self.table, bound)

    def _ttl(self, now: float, values: dict[str, Any]) -> str:
        """The ``expires_at`` clause for a finished item ('' when TTL is off)."""
        if self.ttl_s is None:
            return ""
        values[":expires"] = _n(int(now + self.ttl_s))
        return ", expires_at = :expires"

    def _finish(
        self, object_id: str, now: float, update: str, values: dict[str, Any],
        names: dict[str, str],
    ) -> None:
        """A final write, fenced on the lease owner."""
        values.update({":now": _n(now), ":me": _s(self.owner)})
        if not self._update(object_id, update, "lease_owner = :me", values, names)[0]:
            raise LeaseLost(object_id)

    def _update(
        self,
        object_id: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        names: dict[str, str],
        *,
        return_old: bool = False,
    ) -> tuple[bool, dict[str, Any]]:
        """One conditional UpdateItem.

        Returns ``(True, item before the write)`` (empty unless ``return_old``) or, when the
        condition failed, ``(False, the current item)`` (empty if there is none).
        """
        extra = {"ReturnValues": "ALL_OLD"} if return_old else {}
        try:
            response = self._call(
                self._client.update_item, TableName=self.table, Key={"pk": _s(object_id)},
                UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD", **extra,
            )
        except ClientError as exc:
            if _code(exc) != _CONDITION_FAILED:
                raise
            # The item DynamoDB returns with ReturnValuesOnConditionCheckFailure: botocore's
            # stubs type ClientError.response without it.
            current = cast("dict[str, Any] | None", exc.response.get("Item"))
            return False, _plain_item(current or {})
        return True, _plain_item(response.get("Attributes") or {})

    def _call(self, operation: Callable[..., _R], **arguments: Any) -> _R:
        """Call the client, turning a missing table, or one keyed otherwise than the
        ledger, into a configuration error."""
        try:
            return operation(**arguments)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise LedgerConfigError(
                    f"--state dynamodb://{self.table}: DynamoDB table {self.table!r} does not "
                    f"exist in {self._client.meta.region_name}; create it (the SAM stack does): "
                    f"on-demand, {EXPECTED_KEY}, TTL on expires_at"
                ) from None
            if _code(exc) == "ValidationException":
                problem = self._key_schema_problem(exc)
                if problem is not None:
                    raise LedgerConfigError(problem) from None
            raise

    def _key_schema_problem(self, exc: ClientError) -> str | None:
        """Why the table cannot be the ledger, when its key is not ``pk`` (string) alone;
        None when the key is right (``exc`` is another problem). The table's own key is
        named when DescribeTable may be called; else DynamoDB's message must say it."""
        wrong = f"--state dynamodb://{self.table}: the table's key is not the ledger's"
        fix = (f"the ledger needs a table with {EXPECTED_KEY} (and TTL on expires_at): "
               "create one (the SAM stack does) and point --state at it")
        try:
            table = self._client.describe_table(TableName=self.table)["Table"]
        except (ClientError, BotoCoreError, KeyError):
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if "does not match the schema" in message or "mismatch for key" in message:
                return f"{wrong} (DynamoDB: {message}); {fix}"
            return None
        types = {d["AttributeName"]: d["AttributeType"]
                 for d in table.get("AttributeDefinitions", [])}
        key = [(k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?"))
               for k in table.get("KeySchema", [])]
        if key == [("pk", "HASH", "S")]:
            return None
        kinds = {"HASH": "partition key", "RANGE": "sort key"}
        named = {"S": "string", "N": "number", "B": "binary"}
        has = ", ".join(f"{kinds.get(kind, kind)} {name} ({named.get(type_, type_)})"
                        for name, kind, type_ in key)
        return f"{wrong}: it has {has or 'no key'}; {fix}"


class _Timeouts(TypedDict, total=False):
    connect_timeout: float
    read_timeout: float


def _object_state(item: dict[str, Any]) -> ObjectState:
    def number(name: str) -> float | None:
        value = item.get(name)
        return None if value is None else float(value)

    return ObjectState(
        object_id=str(item["pk"]),
        status=str(item.get("state", IN_PROGRESS)).lower(),
        permanent=bool(item.get("permanent", False)),
        error=item.get("error"),
        location=item.get("location"),
        attempts=int(item.get("attempts", 0)),
        next_index=int(item.get("next_index", 0)),
        started_at=number("started_at"),
        updated_at=number("updated_at") or 0.0,
        finished_at=number("finished_at"),
    )


def _destination(item: dict[str, Any]) -> Destination:
    bound_at = item.get("bound_at")
    return Destination(host=str(item.get("host", "")),
                       key_fingerprint=str(item.get("key_fingerprint", "")),
                       bound_at=None if bound_at is None else float(bound_at),
                       previous=item.get("previous"),
                       recorded=bool(item.get("recorded", False)))


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _plain_item(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _plain(value) for name, value in item.items()}


def _plain(value: dict[str, Any]) -> Any:
    """One attribute value as Python: numbers as int when whole, else float."""
    if "N" in value:
        try:
            return int(value["N"])
        except ValueError:
            number = float(value["N"])
            return int(number) if number.is_integer() else number
    if "NULL" in value:
        return None
    return next(iter(value.values()))
