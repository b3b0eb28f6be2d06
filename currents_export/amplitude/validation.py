"""Client-side checks that keep one bad event from sinking a whole request."""

from __future__ import annotations

from typing import Any

# Values Amplitude always rejects as user_id / device_id (compared case-insensitively).
BLOCKED_ID_VALUES = frozenset(
    {
        "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
        "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
    }
)

INVALID_ID = "invalid_id"
DEFAULT_MIN_ID_LENGTH = 5  # Amplitude's default shortest user_id / device_id


def is_blocked_id(value: str) -> bool:
    return value.strip().lower() in BLOCKED_ID_VALUES


def id_problem(event: dict[str, Any], min_id_length: int) -> str | None:
    """Why Amplitude would reject the event's ids, or None when they are fine.

    Amplitude fails the whole request when one event has an id that is too short or
    blocklisted, so such events are set aside before packing.
    """
    for field in ("user_id", "device_id"):
        value = event.get(field)
        if value is None:
            continue
        if not isinstance(value, str):
            return f"{field} is not a string"
        if len(value) < min_id_length:
            return f"{field} is shorter than min_id_length={min_id_length}"
        if is_blocked_id(value):
            return f"{field} is a value Amplitude blocks"
    return None
