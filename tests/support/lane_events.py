"""Events for lane tests: users, devices, shared devices; and how to check per-id order."""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Any


def workload(n: int) -> list[dict[str, str]]:
    """Users with their own devices, device-only events, and a few shared devices linking
    users that would otherwise live in different lanes."""
    events = []
    for i in range(n):
        user = f"user-{i % 37:03d}"
        kind = i % 10
        event = {"event_type": "e", "insert_id": f"i-{i:05d}"}
        if kind < 7:
            event |= {"user_id": user, "device_id": f"dev-of-{user}"}
        elif kind < 9:
            event |= {"device_id": f"anon-{i % 11:03d}"}
        else:
            event |= {"user_id": user, "device_id": f"kiosk-{i % 3}"}
        events.append(event)
    return events


def per_id_order(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each user's and device's insert_ids, in the order given."""
    order: dict[str, list[str]] = defaultdict(list)
    for event in events:
        for key in ("user_id", "device_id"):
            if key in event:
                order[event[key]].append(event["insert_id"])
    return order


def in_lane(lane: int, prefix: str, lanes: int) -> str:
    """An id that ``Lanes`` hashes to ``lane`` (when nothing else owns it)."""
    return next(f"{prefix}-{i:03d}" for i in range(1000)
                if zlib.crc32(f"{prefix}-{i:03d}".encode()) % lanes == lane)
