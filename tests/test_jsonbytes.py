"""JSON bytes kept in flight are no larger in memory than they are long."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import orjson

from currents_export.support.jsonbytes import kept_json

EVENT = {
    "event_type": "Purchase",
    "user_id": "user-0001",
    "device_id": "device-0001",
    "time": 1_700_000_000_000,
    "event_properties": {f"property_{i}": "value" * 3 for i in range(20)},
}


def _allocated(make: Callable[[], bytes]) -> tuple[int, list[bytes]]:
    """Bytes allocated (and still held) by 200 calls of ``make``."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(200)]
        return tracemalloc.get_traced_memory()[0] - before, kept
    finally:
        tracemalloc.stop()


def test_kept_json_is_orjson_s_text_in_a_block_of_its_own_length() -> None:
    assert kept_json(EVENT) == orjson.dumps(EVENT)
    allocated, kept = _allocated(lambda: kept_json(EVENT))
    per_event = allocated / len(kept)
    assert per_event < len(kept[0]) + 128  # the bytes object's header, the list's slot


def test_kept_json_passes_default_and_option_on() -> None:
    line = kept_json({"b": b"x", 1: 2}, default=lambda value: value.decode(),
                     option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
    assert line == b'{"b":"x","1":2}\n'
