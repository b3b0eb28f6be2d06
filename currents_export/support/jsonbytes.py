"""JSON bytes for what is kept a while, and values made serialisable.

orjson (3.12 and later) hands back each result in a block of at least 4 KiB, never
shrunk; events in flight and dead-letter lines waiting for a flush are therefore copied
to a block of their own length (:func:`kept_json`; README, Performance, has the figures).
Bytes written out at once need no copy. :func:`json_safe` turns what a drifted Avro
schema may hold (bytes, decimals, non-string keys) into what orjson writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson


def kept(serialised: bytes) -> bytes:
    """``serialised`` (orjson's result) in a block of its own length."""
    return bytes(memoryview(serialised))


def kept_json(value: Any, *, default: Callable[[Any], Any] | None = None,
              option: int | None = None) -> bytes:
    """``orjson.dumps(value, default=, option=)`` in a block of its own length."""
    return kept(orjson.dumps(value, default=default, option=option))


JSON_NATIVE = frozenset({str, int, float, bool, type(None), UUID, datetime, date, time_of_day})


def json_safe(value: Any) -> Any:
    """``value`` as something orjson serialises: itself when it already is (no copy), else a
    copy with bytes as hex, decimals as floats and dict keys as strings.

    Also usable as ``orjson.dumps(obj, default=json_safe)`` for a decoded Braze record (the
    dead letter keeps records as decoded, and a drifted schema may put bytes in them).
    """
    cls = value.__class__
    native = JSON_NATIVE
    if cls is list or cls is tuple:  # first: the commonest caller is an array field
        for item in value:
            if item.__class__ not in native:
                return [json_safe(item) for item in value]
        return value
    if cls in native:
        return value
    if cls is dict:
        for key, item in value.items():
            if key.__class__ is not str or item.__class__ not in native:
                return {(key if key.__class__ is str else text_of(key)): json_safe(item)
                        for key, item in value.items()}
        return value
    if cls is bytes or cls is bytearray:
        return bytes_text(value)
    if cls is Decimal:  # Avro decimal: a number stays a number
        number = float(value) if value.is_finite() else math.nan
        return number if math.isfinite(number) else str(value)
    return str(value)


def text_of(value: Any) -> str:
    """A value where Amplitude wants a string: numbers and booleans as JSON writes them,
    bytes as hex, lists and maps as JSON text."""
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[no-any-return]
    if cls is bool:
        return "true" if value else "false"
    if cls is bytes or cls is bytearray:
        return bytes_text(value)
    if cls is list or cls is tuple or cls is dict:
        return orjson.dumps(json_safe(value)).decode()
    return str(value)


def bytes_text(value: bytes | bytearray) -> str:
    """Avro ``bytes`` and ``fixed`` values as lowercase hex.

    Hex rather than base64: the bytes Braze might send this way are digests and binary ids
    (``fixed``), which are conventionally written in hex; hex is unambiguous, stable and
    needs no padding or alphabet choice, at twice the size (base64 would be 4/3).
    """
    return value.hex()
