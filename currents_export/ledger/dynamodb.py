"""The ledger in DynamoDB, for the Lambda fleet and shared backfills.

One item per object (``pk`` = the object URI) with a lease, so that duplicate
notifications never process one object twice at the same time: a claim succeeds only if
the object is not done and its lease is free or expired (or already ours); every later
write is fenced on the lease owner. DONE and FAILED items get a TTL attribute
(``expires_at``); TTL is never used as a clock — conditions compare times themselves.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import orjson
from botocore.config import Config
from botocore.exceptions import ClientError

from currents_export.ledger.base import LeaseHeld, LeaseLost, LedgerConfigError, Resume

IN_PROGRESS, DONE, FAILED = "IN_PROGRESS", "DONE", "FAILED"


class MissingTable(LedgerConfigError):
    """The ledger table does not exist."""


class DynamoDbLedger:
    def __init__(
        self,
        table: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        owner: str | None = None,
        lease_s: float = 960.0,
        ttl_days: float | None = 400.0,
        client: Any | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_s = lease_s
        self.ttl_s = ttl_days * 86_400 if ttl_days is not None else None
        self._clock = clock
        self._client = client or boto3.client(
            "dynamodb", endpoint_url=endpoint_url, region_name=region,
            config=Config(retries={"mode": "standard", "max_attempts": 10}),
        )

    def __repr__(self) -> str:
        return f"DynamoDbLedger({self.table!r})"

    @staticmethod
    def create_table(client: Any, table: str) -> None:
        """On-demand table keyed by ``pk``, with TTL on ``expires_at``."""
        client.create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        )
        client.update_time_to_live(
            TableName=table,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
        )

    def is_done(self, object_id: str) -> bool:
        item = self._call(self._client.get_item, TableName=self.table,
                          Key={"pk": {"S": object_id}}, ConsistentRead=True).get("Item")
        return item is not None and item.get("state", {}).get("S") == DONE

    def begin(self, object_id: str, *, restart: bool = False) -> Resume | None:
        now = self._clock()
        condition = ("attribute_not_exists(pk) OR "
                     "(#state <> :done AND (lease_until < :now OR lease_owner = :me))")
        if restart:
            condition = ("attribute_not_exists(pk) OR lease_until < :now OR lease_owner = :me"
                         " OR #state = :done")
        update = ("SET #state = :progress, lease_owner = :me, lease_until = :until, "
                  "updated_at = :now ADD attempts :one REMOVE #error, expires_at")
        if restart:
            update = update.replace("REMOVE #error", "REMOVE #error, next_index, figures")
        names = {"#state": "state", "#error": "error"}
        values = {":done": {"S": DONE}, ":now": _n(now), ":me": {"S": self.owner},
                  ":progress": {"S": IN_PROGRESS}, ":until": _n(now + self.lease_s),
                  ":one": _n(1)}
        try:
            old = self._call(
                self._client.update_item, TableName=self.table, Key={"pk": {"S": object_id}},
                UpdateExpression=update, ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
                ReturnValues="ALL_OLD", ReturnValuesOnConditionCheckFailure="ALL_OLD",
            ).get("Attributes", {})
        except ClientError as exc:
            item = exc.response.get("Item", {})
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            owner = item.get("lease_owner", {}).get("S", "?")
            until = float(item.get("lease_until", {}).get("N", "0"))
            raise LeaseHeld(
                f"{object_id} is being processed elsewhere ({owner}, lease until "
                f"{time.strftime('%H:%M:%S', time.gmtime(until))} UTC); it will be retried"
            ) from None
        if restart or old.get("state", {}).get("S") == DONE:
            return None
        next_index = int(old.get("next_index", {}).get("N", "0"))
        figures = old.get("figures", {}).get("S")
        if next_index > 0 and figures:
            return Resume(next_index=next_index, figures=orjson.loads(figures))
        return None

    def save_progress(self, object_id: str, next_index: int, figures: dict[str, Any]) -> None:
        now = self._clock()
        try:
            self._call(
                self._client.update_item, TableName=self.table, Key={"pk": {"S": object_id}},
                UpdateExpression="SET next_index = :next, figures = :figures, "
                                 "lease_until = :until, updated_at = :now",
                ConditionExpression="lease_owner = :me AND "
                                    "(attribute_not_exists(next_index) OR next_index <= :next)",
                ExpressionAttributeValues={
                    ":next": _n(next_index), ":figures": {"S": orjson.dumps(figures).decode()},
                    ":until": _n(now + self.lease_s), ":now": _n(now), ":me": {"S": self.owner},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            if exc.response.get("Item", {}).get("lease_owner", {}).get("S") != self.owner:
                raise LeaseLost(f"{object_id}: another worker took this object over") from None
            # Ours, but a later checkpoint was saved first (checkpoints come from threads).

    def complete(self, object_id: str, figures: dict[str, Any]) -> None:
        self._finish(object_id, DONE, {"figures": {"S": orjson.dumps(figures).decode()},
                                       "finished_at": _n(self._clock())})

    def fail(self, object_id: str, error: str) -> None:
        self._finish(object_id, FAILED, {"error": {"S": error[:1000]}})

    def status(self, object_id: str) -> dict[str, Any] | None:
        item = self._call(self._client.get_item, TableName=self.table,
                          Key={"pk": {"S": object_id}}, ConsistentRead=True).get("Item")
        if item is None:
            return None
        return {name: _plain(value) for name, value in item.items()}

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if callable(close):
            close()

    def _finish(self, object_id: str, state: str, fields: dict[str, Any]) -> None:
        now = self._clock()
        values: dict[str, Any] = {":state": {"S": state}, ":now": _n(now),
                                  ":me": {"S": self.owner}, ":zero": _n(0)}
        sets = ["#state = :state", "updated_at = :now", "lease_until = :zero"]
        names = {"#state": "state"}
        for n, (name, value) in enumerate(fields.items()):
            names[f"#f{n}"] = name
            values[f":f{n}"] = value
            sets.append(f"#f{n} = :f{n}")
        if self.ttl_s is not None:
            values[":expires"] = _n(int(now + self.ttl_s))
            sets.append("expires_at = :expires")
        try:
            self._call(
                self._client.update_item, TableName=self.table, Key={"pk": {"S": object_id}},
                UpdateExpression="SET " + ", ".join(sets), ConditionExpression="lease_owner = :me",
                ExpressionAttributeNames=names, ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _code(exc) == "ConditionalCheckFailedException":
                raise LeaseLost(f"{object_id}: another worker took this object over") from None
            raise

    def _call(self, operation: Callable[..., dict[str, Any]], **arguments: Any) -> dict[str, Any]:
        try:
            return operation(**arguments)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                raise MissingTable(
                    f"--state dynamodb://{self.table}: the table does not exist; create it "
                    "(the SAM stack does) with a string partition key named pk"
                ) from None
            raise


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _plain(value: dict[str, Any]) -> Any:
    if "S" in value:
        return value["S"]
    if "N" in value:
        number = float(value["N"])
        return int(number) if number.is_integer() else number
    return next(iter(value.values()))
