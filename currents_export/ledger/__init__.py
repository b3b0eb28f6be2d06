"""Which objects are done: a small protocol with a SQLite adapter (DynamoDB comes later)."""

from __future__ import annotations

from typing import Any, Protocol

from currents_export.ledger.sqlite import SqliteLedger


class Ledger(Protocol):
    """Durable record of objects processed.

    An object is marked done only after every one of its records has been accounted for
    (delivered, skipped or dead-lettered) and the dead letter has been flushed.
    """

    def is_done(self, object_id: str) -> bool: ...

    def begin(self, object_id: str) -> None: ...

    def complete(self, object_id: str, figures: dict[str, Any]) -> None: ...

    def fail(self, object_id: str, error: str) -> None: ...

    def close(self) -> None: ...


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


__all__ = ["Ledger", "LedgerConfigError", "SqliteLedger", "open_ledger"]
