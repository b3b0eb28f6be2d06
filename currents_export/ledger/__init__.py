"""Which objects are done: a small protocol with a SQLite adapter (DynamoDB comes later)."""

from __future__ import annotations

from currents_export.ledger.base import Ledger, Resume
from currents_export.ledger.sqlite import SqliteLedger


class LedgerConfigError(ValueError):
    """The --state URI cannot be used."""


def open_ledger(uri: str) -> Ledger:
    """``dynamodb://TABLE`` (not yet supported) or a file path for SQLite."""
    if uri.startswith("dynamodb://"):
        raise LedgerConfigError(
            f"--state {uri}: the DynamoDB ledger is not available yet; use a file path"
        )
    if "://" in uri:
        raise LedgerConfigError(
            f"--state {uri}: unknown scheme; use a file path (SQLite) or dynamodb://TABLE"
        )
    return SqliteLedger(uri)


__all__ = ["Ledger", "LedgerConfigError", "Resume", "SqliteLedger", "open_ledger"]
