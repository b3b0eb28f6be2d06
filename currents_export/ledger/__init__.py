"""Which objects are done: a small protocol with SQLite and DynamoDB adapters."""

from __future__ import annotations

from currents_export.errors import LedgerConfigError
from currents_export.ledger.base import Destination, Ledger, ObjectState, Resume
from currents_export.ledger.dynamodb import DynamoDbLedger
from currents_export.ledger.none import NoLedger
from currents_export.ledger.sqlite import SqliteLedger


def open_ledger(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_attempts: int | None = None,
) -> Ledger:
    """``dynamodb://TABLE`` or a SQLite path.

    For DynamoDB, ``endpoint_url``/``region`` default to what botocore finds in the
    environment (``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``...);
    ``connect_timeout``/``read_timeout`` (None: botocore's) and ``max_attempts`` (in all,
    the first included; None: the default retries) bound each of its calls. A SQLite ledger
    ignores them.
    """
    table = dynamodb_table(uri)
    if table is not None:
        return DynamoDbLedger(table, endpoint_url=endpoint_url, region=region,
                              connect_timeout=connect_timeout, read_timeout=read_timeout,
                              max_attempts=max_attempts)
    return SqliteLedger(uri)


def dynamodb_table(uri: str) -> str | None:
    """The table of a ``dynamodb://TABLE`` ledger, None for a SQLite path; raises
    LedgerConfigError for anything else (checked before a run creates anything)."""
    if uri.startswith("dynamodb://"):
        table = uri[len("dynamodb://") :]
        if not table or "/" in table:
            raise LedgerConfigError(
                f"--state {uri}: expected dynamodb://TABLE with the name of an existing "
                "DynamoDB table (no '/'), e.g. --state dynamodb://currents-export-ledger"
            )
        return table
    if "://" in uri:
        raise LedgerConfigError(
            f"--state {uri}: unknown scheme; use a file path (SQLite) or dynamodb://TABLE"
        )
    return None


__all__ = [
    "Destination",
    "DynamoDbLedger",
    "Ledger",
    "NoLedger",
    "ObjectState",
    "Resume",
    "SqliteLedger",
    "dynamodb_table",
    "open_ledger",
]
