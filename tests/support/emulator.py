"""What the emulator saw, read over its HTTP inspection API."""

from __future__ import annotations

import httpx

from currents_export.kit.emulator import Emulator


def stored_events(emulator: Emulator, **filters: str) -> list[dict]:
    """Events the emulator stored, read over its HTTP inspection API, page after page."""
    events: list[dict] = []
    for page in _pages(emulator, filters):
        events.extend(page.json()["events"])
    return events


def _pages(emulator: Emulator, filters: dict[str, str]) -> list[httpx.Response]:
    """Every page of ``GET /_emulator/events`` (the largest pages), following ``next``."""
    pages = []
    path: str | None = "/_emulator/events"
    params: dict[str, str] | None = {**filters, "limit": "10000"}
    while path is not None:
        response = httpx.get(f"{emulator.url}{path}", params=params, timeout=60)
        response.raise_for_status()
        pages.append(response)
        path, params = response.json()["next"], None  # the next page's query is in it
    return pages


def requests_made(emulator: Emulator) -> int:
    """Upload requests the emulator saw, without the runs' reachability probes."""
    return len(upload_requests(emulator))


def upload_requests(emulator: Emulator) -> list[dict]:
    """The request log without the probe each run sends before reading (``amplitude.probe``:
    one event without ``event_type``, which Amplitude, and the emulator, refuse)."""
    log = httpx.get(f"{emulator.url}/_emulator/requests").json()["requests"]
    return [entry for entry in log if not is_probe(entry)]


def is_probe(entry: dict) -> bool:
    response = entry.get("response")
    missing = response.get("events_with_missing_fields") if isinstance(response, dict) else None
    return (entry.get("event_count") == 1 and entry.get("status") == 400
            and isinstance(missing, dict) and missing.get("event_type") == [0])


def raw_events(emulator: Emulator) -> bytes:
    """The bytes of every page of stored events, one page a line."""
    return b"\n".join(page.content for page in _pages(emulator, {}))
