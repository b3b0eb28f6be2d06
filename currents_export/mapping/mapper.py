"""One Braze record → one Amplitude event, or a skip or rejection with a reason.

Pure logic: no I/O. A mapper is built once per (event type, options, float fields) and then
applied to every record of a file, so per-record work stays small.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from currents_export.mapping.names import (
    CUSTOM_EVENT_TYPE,
    PURCHASE_TYPE,
    braze_event_type,
    plain_event_type,
)

Profile = Literal["braze", "plain"]
IdentityFallback = Literal["none", "braze_id"]
PROFILES: tuple[str, ...] = ("braze", "plain")

# Fields consumed by the mapping itself rather than copied into event_properties.
_IDENTITY_AND_TIME = frozenset(
    {"id", "external_user_id", "device_id", "user_id", "time", "time_ms"}
)
_PROPERTY_PREFIXES = {
    CUSTOM_EVENT_TYPE: "[Custom event property] ",
    PURCHASE_TYPE: "[Purchase property] ",
}

# Skip and rejection reasons (summary keys).
NO_IDENTITY = "no_identity"
NO_EVENT_ID = "no_event_id"
NO_TIME = "no_time"
# Warnings: the event is still sent, but the summary counts what was odd about it.
PROPERTIES_NOT_JSON = "properties_not_json"


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """How records become Amplitude events (see DESIGN.md, "Default mapping")."""

    profile: Profile = "braze"
    identity_fallback: IdentityFallback = "none"  # "braze_id": user_id ← Braze's internal id

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown mapping profile {self.profile!r}; use braze or plain")
        if self.identity_fallback not in ("none", "braze_id"):
            raise ValueError(
                f"unknown identity fallback {self.identity_fallback!r}; use none or braze_id"
            )


@dataclass(slots=True)
class Mapped:
    event: dict[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Skipped:
    """Left out on purpose (policy); counted under ``skipped``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """Cannot become a valid event; goes to the dead letter."""

    reason: str
    detail: str


MapResult = Mapped | Skipped | Rejected


def float32(value: float) -> float:
    """The shortest decimal that is the same single-precision float (9.989999771… → 9.99)."""
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


@dataclass(slots=True)
class EventMapper:
    """Maps the records of one Currents event type.

    Everything that depends only on the type and the options is worked out once here, so
    that ``map`` does little more per record than one dict comprehension and one JSON parse.
    """

    event_type: str
    options: MappingOptions = field(default_factory=MappingOptions)
    float_fields: frozenset[str] = frozenset()
    _fixed_name: str | None = field(init=False)
    _custom_name_prefix: str = field(init=False)
    _library: str = field(init=False)
    _property_prefix: str = field(init=False)
    _is_purchase: bool = field(init=False)
    _consumed: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        braze = self.options.profile == "braze"
        name_for = braze_event_type if braze else plain_event_type
        is_custom_event = self.event_type == CUSTOM_EVENT_TYPE
        # Only custom events are named per record; every other type has one fixed name.
        self._fixed_name = None if is_custom_event else name_for(self.event_type)
        self._custom_name_prefix = name_for(self.event_type, "") if braze else ""
        self._library = "Braze" if braze else "currents-export"
        self._is_purchase = self.event_type == PURCHASE_TYPE
        self._property_prefix = _PROPERTY_PREFIXES.get(self.event_type, "") if braze else ""
        consumed = set(_IDENTITY_AND_TIME) | {"properties"}
        if is_custom_event:
            consumed.add("name")
        if self._is_purchase:
            consumed |= {"price", "product_id"}
        self._consumed = frozenset(consumed)

    def map(self, record: dict[str, Any]) -> MapResult:
        event_id = record.get("id")
        if not event_id:
            return Rejected(NO_EVENT_ID, "the record has no id")
        time_ms = _time_ms(record)
        if time_ms is None:
            return Rejected(NO_TIME, "the record has neither time nor time_ms")

        user_id = record.get("external_user_id") or None
        device_id = record.get("device_id") or None
        braze_id = record.get("user_id") or None
        if user_id is None and device_id is None:
            if self.options.identity_fallback == "braze_id" and braze_id:
                user_id = braze_id
            else:
                return Skipped(NO_IDENTITY)

        event: dict[str, Any] = {
            "event_type": self._fixed_name or self._custom_event_type(record.get("name")),
            "insert_id": event_id,
            "time": time_ms,
        }
        if user_id is not None:
            event["user_id"] = user_id
        if device_id is not None:
            event["device_id"] = device_id
        event["library"] = self._library

        properties, warnings = self._event_properties(record, braze_id)
        if self._is_purchase:
            _set_revenue(event, record)
        event["event_properties"] = properties
        return Mapped(event, warnings)

    def _custom_event_type(self, name: str | None) -> str:
        if self.options.profile == "plain":
            return name or self.event_type
        return self._custom_name_prefix + (name or "")

    def _event_properties(
        self, record: dict[str, Any], braze_id: str | None
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        properties: dict[str, Any] = {}
        warnings: tuple[str, ...] = ()
        if "properties" in record and record["properties"] is not None:
            warnings = self._merge_custom_properties(properties, record["properties"])
        for name, value in record.items():
            if value is None or name in self._consumed:
                continue
            if name in self.float_fields and isinstance(value, float):
                value = float32(value)
            properties[name] = value
        if braze_id:
            properties["braze_id"] = braze_id
        return properties, warnings

    def _merge_custom_properties(self, properties: dict[str, Any], raw: Any) -> tuple[str, ...]:
        """Merge the JSON in ``properties``; keep the raw string when it is not JSON."""
        try:
            parsed = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        except orjson.JSONDecodeError:
            properties["properties"] = raw
            return (PROPERTIES_NOT_JSON,)
        if isinstance(parsed, dict):
            prefix = self._property_prefix
            for key, value in parsed.items():
                properties[prefix + key] = value
        elif parsed is not None:
            properties["properties"] = parsed
        return ()


def _time_ms(record: dict[str, Any]) -> int | None:
    time_ms = record.get("time_ms")
    if type(time_ms) is int:  # not bool
        return time_ms
    time_s = record.get("time")
    if type(time_s) is int:
        return time_s * 1000
    if isinstance(time_s, float):
        return round(time_s * 1000)
    return None


def _set_revenue(event: dict[str, Any], record: dict[str, Any]) -> None:
    """Purchase fields Braze's connector sets (price, productId) plus revenue for Amplitude."""
    price = record.get("price")
    if isinstance(price, int | float) and not isinstance(price, bool):
        price = float32(float(price))
        event["price"] = price
        event["quantity"] = 1
        event["revenue"] = price
    if record.get("product_id"):
        event["productId"] = record["product_id"]
    currency = record.get("currency")
    if isinstance(currency, str) and currency:
        event["currency"] = currency.strip().upper()


def mapper_for(
    event_type: str, options: MappingOptions, float_fields: Iterable[str] = ()
) -> EventMapper:
    return EventMapper(event_type, options, frozenset(float_fields))
