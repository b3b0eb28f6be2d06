"""The ``[deletions]`` table: off unless present (``enabled = false`` turns it off again)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_GRACE_S = 3_600.0  # events queued in the same hour are seen before the deletion
DEFAULT_REQUESTER = "currents-export"
DEFAULT_IDENTITY_TTL_DAYS = 0  # DynamoDB: forget a Braze id not seen for this long; 0: never
PRIVACY_REQUESTS_PER_SECOND = 1.0  # Amplitude's documented limit for the endpoint
_KEYS = {"enabled": bool, "grace_period_s": float, "requester": str,
         "identity_ttl_days": int, "requests_per_second": float}
_EXPECTED = {bool: "true or false", float: "a number", int: "a whole number", str: "text"}


@dataclass(frozen=True, slots=True)
class DeletionOptions:
    enabled: bool = False
    grace_period_s: float = DEFAULT_GRACE_S
    requester: str = DEFAULT_REQUESTER
    identity_ttl_days: int = DEFAULT_IDENTITY_TTL_DAYS
    requests_per_second: float = PRIVACY_REQUESTS_PER_SECOND


def deletion_options(table: Mapping[str, Any], where: str) -> DeletionOptions:
    """The options the table gives; ``where`` (file and line) names it in errors."""
    values: dict[str, Any] = {"enabled": True}
    value: Any
    for key, value in table.items():
        kind = _KEYS.get(key)
        if kind is None:
            raise ValueError(f"{where}: unknown key deletions.{key}; known keys: "
                             f"{', '.join(sorted(_KEYS))}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"{where}: deletions.{key} must be {_EXPECTED[kind]}")
        _check_value(key, value, where)
        values[key] = value
    return DeletionOptions(**values)


def _check_value(key: str, value: Any, where: str) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and (
            value < 0 or (key == "requests_per_second" and value == 0)):
        raise ValueError(f"{where}: deletions.{key} must be above 0"
                         + (" (0: never)" if key == "identity_ttl_days" else ""))
    if isinstance(value, str) and not value.strip():
        raise ValueError(f"{where}: deletions.{key} is empty")
