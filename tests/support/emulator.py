"""What the emulator saw, read over its HTTP inspection API."""

from __future__ import annotations

import httpx

from currents_export.kit.emulator import Emulator


def stored_events(emulator: Emulator, **filters: str) -> list[dict]:
    """Events the emulator stored, read over its HTTP inspection API."""
    response = httpx.get(f"{emulator.url}/_emulator/events", params=filters, timeout=30)
    response.raise_for_status()
    return response.json()["events"]


def requests_made(emulator: Emulator) -> int:
    return len(httpx.get(f"{emulator.url}/_emulator/requests").json()["requests"])


def raw_events(emulator: Emulator) -> bytes:
    return httpx.get(f"{emulator.url}/_emulator/events", timeout=60).content
