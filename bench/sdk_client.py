"""Child process for (c): Currents files → the official ``amplitude-analytics`` SDK.

``python -m bench.sdk_client MANIFEST SERVER_URL API_KEY`` reads the files listed in
``MANIFEST`` (a JSON list of ``[path, event_type]``) one after another with one client: it
decodes and maps each record as the project does (``mapped_records``: fastavro and the
project's mapper, the same work as the replay), tracks one ``BaseEvent`` per mapped record,
then flushes and shuts the client down. The SDK is configured with its defaults except
``server_url``. Prints one JSON line: records, tracked, elapsed_s (from the first decode to
the end of the flush).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from amplitude import Amplitude, BaseEvent, Config

from bench.events import outcomes
from currents_export.mapping import Mapped


def to_base_event(event: dict[str, Any]) -> BaseEvent:
    """The SDK's event for one mapped Amplitude event (revenue fields when present)."""
    return BaseEvent(
        event_type=event["event_type"],
        user_id=event.get("user_id"),
        device_id=event.get("device_id"),
        time=event.get("time"),
        insert_id=event.get("insert_id"),
        event_properties=event.get("event_properties"),
        price=event.get("price"),
        quantity=event.get("quantity"),
        revenue=event.get("revenue"),
        product_id=event.get("productId"),
        currency=event.get("currency"),
    )


def send_file(path: Path, event_type: str, client: Amplitude) -> tuple[int, int]:
    """Track every mapped record of ``path``; returns (records, tracked)."""
    records = tracked = 0
    for outcome in outcomes(path, event_type):
        records += 1
        if isinstance(outcome, Mapped):
            client.track(to_base_event(outcome.event))
            tracked += 1
    return records, tracked


def main(argv: list[str]) -> int:
    manifest, server_url, api_key = argv
    files = json.loads(Path(manifest).read_text())
    client = Amplitude(api_key, Config(server_url=server_url))
    started = time.perf_counter()
    records = tracked = 0
    for path, event_type in files:
        file_records, file_tracked = send_file(Path(path), event_type, client)
        records += file_records
        tracked += file_tracked
    for future in client.flush():
        if future is not None:
            future.result()
    client.shutdown()  # waits for every request the SDK's workers still have in flight
    elapsed_s = time.perf_counter() - started
    print(json.dumps({"records": records, "tracked": tracked, "elapsed_s": elapsed_s}))
    return 0


if __name__ == "__main__":
    status = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Measured and shut down: exit now rather than let the interpreter wait out the SDK
    # consumer thread's flush interval (up to 10 s of idle wall time per run).
    os._exit(status)
