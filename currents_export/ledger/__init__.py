"""Which objects are done: a small protocol with SQLite and DynamoDB adapters."""

from __future__ import annotations

from currents_export.ledger.base import (
    LeaseError,
    LeaseHeld,
    LeaseLost,
    Ledger,
    LedgerConfigError,
    Resume,
)
from currents_export.ledger.dynamodb import DynamoDbLedger
from currents_export.ledger.sqlite import SqliteLedger


def open_ledger(uri: str) -> Ledger:
    """``dynamodb://TABLE`` (endpoint and region from the AWS environment) or a SQLite path."""
    if uri.startswith("dynamodb://"):
        table = uri[len("dynamodb://") :]
        if not table or "/" in table:
            raise LedgerConfigError(f"--state {uri}: expected dynamodb://TABLE")
        return DynamoDbLedger(table)
    if "://" in uri:
        raise LedgerConfigError(
            f"--state {uri}: unknown scheme; use a file path (SQLite) or dynamodb://TABLE"
        )
    return SqliteLedger(uri)


__all__ = [
    "DynamoDbLedger",
    "LeaseError",
    "LeaseHeld",
    "LeaseLost",
    "Ledger",
    "LedgerConfigError",
    "Resume",
    "SqliteLedger",
    "open_ledger",
]
