"""One Braze record → one Amplitude event, or a skip or rejection with a reason.

Pure logic: no I/O. A mapper is built once per (event type, options, float fields) and then
applied to every record of a file, so per-record work stays small.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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
DeviceFields = Literal["event_properties", "top_level"]
PiiPolicy = Literal["keep", "hash", "drop"]
PROFILES: tuple[str, ...] = ("braze", "plain")
PII_POLICIES: tuple[str, ...] = ("keep", "hash", "drop")

# Fields consumed by the mapping itself rather than copied into event_properties.
_IDENTITY_AND_TIME = frozenset(
    {"id", "external_user_id", "device_id", "user_id", "time", "time_ms"}
)
_PROPERTY_PREFIXES = {
    CUSTOM_EVENT_TYPE: "[Custom event property] ",
    PURCHASE_TYPE: "[Purchase property] ",
}
# Braze field → Amplitude top-level field, with ``device_fields = "top_level"``.
DEVICE_FIELDS = {
    "platform": "platform",
    "os_version": "os_version",
    "device_model": "device_model",
    "carrier": "carrier",
}
PROFILE_UPDATE_TYPE = "users.profile.Update"
SUBSCRIPTION_TYPES = frozenset({
    "users.behaviors.subscription.GlobalStateChange",
    "users.behaviors.subscriptiongroup.StateChange",
})
IDENTIFY = "$identify"
SKIP_USER_PROPERTIES_SYNC = "$skip_user_properties_sync"
# Profile-update fields about the update rather than the user: not user properties.
_PROFILE_UPDATE_META = frozenset({"app_group_id", "app_id", "update_source"})

# Skip and rejection reasons (summary keys).
NO_IDENTITY = "no_identity"
NO_EVENT_ID = "no_event_id"
NO_TIME = "no_time"
EVENT_TYPE_DISABLED = "event_type_disabled"
# Warnings: the event is still sent, but the summary counts what was odd about it.
PROPERTIES_NOT_JSON = "properties_not_json"


@dataclass(frozen=True, slots=True)
class TypeRule:
    """What the configuration says about one Currents event type."""

    enabled: bool = True
    event_type: str | None = None  # the Amplitude event_type; "{name}" = the custom event's
    drop: frozenset[str] = frozenset()  # Braze fields (or custom property keys) left out
    rename: dict[str, str] = field(default_factory=dict)  # property key → new key


@dataclass(frozen=True, slots=True)
class UserProperties:
    """Which records become ``$identify`` operations that ``$set`` user properties."""

    profile_updates: bool = False  # users.profile.Update
    subscription_changes: bool = False  # global and group subscription state changes

    def identify_types(self) -> frozenset[str]:
        types: set[str] = set()
        if self.profile_updates:
            types.add(PROFILE_UPDATE_TYPE)
        if self.subscription_changes:
            types |= SUBSCRIPTION_TYPES
        return frozenset(types)


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """How records become Amplitude events (see DESIGN.md, "Default mapping", and the
    ``[mapping]`` table of the configuration file, docs/mapping.md)."""

    profile: Profile = "braze"
    identity_fallback: IdentityFallback = "none"  # "braze_id": user_id ← Braze's internal id
    device_fields: DeviceFields = "event_properties"
    backfill: bool = False  # send $skip_user_properties_sync: history must not touch profiles
    only_event_types: frozenset[str] | None = None  # None: every type is sent
    drop: frozenset[str] = frozenset()  # fields left out of every type
    types: dict[str, TypeRule] = field(default_factory=dict)
    pii: dict[str, str] = field(default_factory=dict)  # Braze field → keep | hash | drop
    pii_salt: bytes | None = field(default=None, repr=False)
    user_properties: UserProperties = field(default_factory=UserProperties)
    min_id_length: int | None = None  # from the file; the command line may override it

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown mapping profile {self.profile!r}; use braze or plain")
        if self.identity_fallback not in ("none", "braze_id"):
            raise ValueError(
                f"unknown identity fallback {self.identity_fallback!r}; use none or braze_id"
            )
        if "hash" in self.pii.values() and not self.pii_salt:
            raise ValueError("hashing personal data needs a secret salt")

    def with_overrides(self, **changes: Any) -> MappingOptions:
        """A copy with some settings replaced (command-line flags over the file)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def rule(self, event_type: str) -> TypeRule:
        return self.types.get(event_type) or _DEFAULT_RULE

    def enabled(self, event_type: str) -> bool:
        if self.only_event_types is not None and event_type not in self.only_event_types:
            return False
        return self.rule(event_type).enabled

    def policy(self, field_name: str) -> str:
        return self.pii.get(field_name, "keep")

    def hash_value(self, value: str) -> str:
        """The salted hash that stands in for a personal value (stable for one salt)."""
        assert self.pii_salt is not None
        return hmac.new(self.pii_salt, value.encode(), hashlib.sha256).hexdigest()


_DEFAULT_RULE = TypeRule()


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

    Everything that depends only on the type and the options (names, which fields are
    dropped, hashed, renamed or moved) is worked out once here, so that ``map`` does
    little more per record than one dict comprehension and one JSON parse.
    """

    event_type: str
    options: MappingOptions = field(default_factory=MappingOptions)
    float_fields: frozenset[str] = frozenset()
    _enabled: bool = field(init=False)
    _identify: bool = field(init=False)
    _fixed_name: str | None = field(init=False)
    _name_template: str = field(init=False)
    _unnamed: str = field(init=False)  # event_type of a custom event without a name
    _library: str = field(init=False)
    _property_prefix: str = field(init=False)
    _is_purchase: bool = field(init=False)
    _excluded: frozenset[str] = field(init=False)
    _dropped: frozenset[str] = field(init=False)
    _hashed: tuple[str, ...] = field(init=False)
    _renames: dict[str, str] = field(init=False)
    _top_level: dict[str, str] = field(init=False)
    _user_id_policy: str = field(init=False)
    _braze_id_policy: str = field(init=False)

    def __post_init__(self) -> None:
        options = self.options
        braze = options.profile == "braze"
        rule = options.rule(self.event_type)
        is_custom_event = self.event_type == CUSTOM_EVENT_TYPE
        self._enabled = options.enabled(self.event_type)
        self._identify = self.event_type in options.user_properties.identify_types()
        name_for = braze_event_type if braze else plain_event_type
        if rule.event_type is not None:
            template = rule.event_type
        elif is_custom_event:
            template = name_for(self.event_type, "") + "{name}" if braze else "{name}"
        else:
            template = name_for(self.event_type)
        # Only custom events are named per record; every other type has one fixed name.
        self._fixed_name = None if "{name}" in template else template
        self._name_template = template
        plain_default = not braze and rule.event_type is None
        self._unnamed = self.event_type if plain_default else template.replace("{name}", "")
        self._library = "Braze" if braze else "currents-export"
        self._is_purchase = self.event_type == PURCHASE_TYPE
        self._property_prefix = _PROPERTY_PREFIXES.get(self.event_type, "") if braze else ""
        consumed = set(_IDENTITY_AND_TIME) | {"properties"}
        if is_custom_event:
            consumed.add("name")
        if self._is_purchase:
            consumed |= {"price", "product_id"}
        if self._identify and self.event_type == PROFILE_UPDATE_TYPE:
            consumed |= _PROFILE_UPDATE_META | {"custom_attributes"}
        pii_dropped = {name for name, policy in options.pii.items() if policy == "drop"}
        self._dropped = frozenset(rule.drop | options.drop | pii_dropped)
        self._excluded = frozenset(consumed | self._dropped)
        self._hashed = tuple(sorted(
            name for name, policy in options.pii.items()
            if policy == "hash" and name not in _IDENTITY_AND_TIME
        ))
        self._renames = dict(rule.rename)
        self._top_level = (
            {k: v for k, v in DEVICE_FIELDS.items() if k not in self._dropped}
            if options.device_fields == "top_level" and not self._identify else {}
        )
        self._user_id_policy = options.policy("external_user_id")
        self._braze_id_policy = options.policy("user_id")

    @property
    def amplitude_event_type(self) -> str:
        """The event_type sent; ``{name}`` stands for a custom event's own name."""
        return IDENTIFY if self._identify else self._name_template

    def destination(self, name: str) -> str:
        """Where the record field ``name`` ends in the Amplitude event (for documentation:
        it reads the same tables ``map`` uses)."""
        if not self._enabled:
            return "not sent (event type disabled)"
        policy = self.options.policy(name)
        if name == "id":
            return "insert_id"
        if name in ("time", "time_ms"):
            return "time (milliseconds; time_ms preferred)"
        if name in ("external_user_id", "user_id") and policy == "drop":
            return "dropped (personal data)"
        hashed = " (salted hash)" if policy == "hash" else ""
        if name == "external_user_id":
            return "user_id" + hashed
        if name == "device_id":
            return "device_id"
        if name == "user_id":
            fallback = (", and user_id when a record has neither id"
                        if self.options.identity_fallback == "braze_id" else "")
            where = "not sent" if self._identify else "event_properties.braze_id"
            return where + hashed + fallback
        if name in self._dropped:
            return "dropped" + (" (personal data)" if policy == "drop" else " (configuration)")
        if self._identify:
            return self._identify_destination(name, hashed)
        if name == "properties":
            prefix = self._property_prefix
            return "event_properties: its JSON merged" + (
                f" with keys prefixed '{prefix}'" if prefix else ""
            )
        if name == "name" and self.event_type == CUSTOM_EVENT_TYPE:
            return f"event_type ({self._name_template})"
        if self._is_purchase and name in ("price", "product_id", "currency"):
            return {"price": "price and revenue (quantity 1)", "product_id": "productId",
                    "currency": "currency and event_properties.currency"}[name]
        if name in self._top_level:
            return self._top_level[name] + " (top level)"
        return "event_properties." + self._renames.get(name, name) + hashed

    def _identify_destination(self, name: str, hashed: str) -> str:
        if self.event_type != PROFILE_UPDATE_TYPE:
            if name != "subscription_status":
                return "not sent"
            group = self.event_type == "users.behaviors.subscriptiongroup.StateChange"
            key = "subscription_group_<subscription_group_id>" if group else "<channel>_subscribe"
            return "user_properties.$set." + key
        if name in _PROFILE_UPDATE_META:
            return "not sent"
        if name == "custom_attributes":
            return "user_properties.$set: its JSON merged"
        return "user_properties.$set." + self._renames.get(name, name) + hashed

    def map(self, record: dict[str, Any]) -> MapResult:
        if not self._enabled:
            return Skipped(EVENT_TYPE_DISABLED)
        event_id = record.get("id")
        if not event_id:
            return Rejected(NO_EVENT_ID, "the record has no id")
        time_ms = _time_ms(record)
        if time_ms is None:
            return Rejected(NO_TIME, "the record has neither time nor time_ms")

        user_id = self._personal(record.get("external_user_id") or None, self._user_id_policy)
        device_id = record.get("device_id") or None
        braze_id = self._personal(record.get("user_id") or None, self._braze_id_policy)
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
        if self.options.backfill:
            event[SKIP_USER_PROPERTIES_SYNC] = True
        if self._identify:
            return self._identify_event(event, record)

        properties, warnings = self._event_properties(record, braze_id)
        if self._is_purchase:
            _set_revenue(event, record)
        for name, top_level in self._top_level.items():
            value = properties.pop(name, None)
            if value is not None:
                event[top_level] = value
        event["event_properties"] = properties
        return Mapped(event, warnings)

    def _personal(self, value: str | None, policy: str) -> str | None:
        if value is None or policy == "keep":
            return value
        return None if policy == "drop" else self.options.hash_value(value)

    def _custom_event_type(self, name: str | None) -> str:
        return self._name_template.replace("{name}", name) if name else self._unnamed

    def _event_properties(
        self, record: dict[str, Any], braze_id: str | None
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        properties: dict[str, Any] = {}
        warnings: tuple[str, ...] = ()
        if "properties" in record and record["properties"] is not None:
            warnings = self._merge_custom_properties(properties, record["properties"])
        excluded = self._excluded
        for name, value in record.items():
            if value is None or name in excluded:
                continue
            if name in self.float_fields and isinstance(value, float):
                value = float32(value)
            properties[name] = value
        if braze_id and "user_id" not in self._dropped:
            properties["braze_id"] = braze_id
        self._apply_policies(properties)
        return properties, warnings

    def _apply_policies(self, properties: dict[str, Any]) -> None:
        """Hash personal fields and rename keys, as the configuration says."""
        for name in self._hashed:
            value = properties.get(name)
            if value is not None:
                properties[name] = self.options.hash_value(str(value))
        for old, new in self._renames.items():
            if old in properties:
                properties[new] = properties.pop(old)

    def _merge_custom_properties(self, properties: dict[str, Any], raw: Any) -> tuple[str, ...]:
        """Merge the JSON in ``properties``; keep the raw string when it is not JSON."""
        try:
            parsed = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        except orjson.JSONDecodeError:
            properties["properties"] = raw
            return (PROPERTIES_NOT_JSON,)
        if isinstance(parsed, dict):
            prefix, dropped, renames = self._property_prefix, self._dropped, self._renames
            for key, value in parsed.items():
                if key in dropped:
                    continue
                properties[renames.get(key) or prefix + key] = value
        elif parsed is not None:
            properties["properties"] = parsed
        return ()

    def _identify_event(self, event: dict[str, Any], record: dict[str, Any]) -> Mapped:
        """A profile update or subscription change as ``$identify`` with ``$set``."""
        event["event_type"] = IDENTIFY
        warnings: tuple[str, ...] = ()
        if self.event_type == PROFILE_UPDATE_TYPE:
            values, _ = self._event_properties(record, None)
            values.pop("braze_id", None)
            raw = record.get("custom_attributes")
            if raw is not None and "custom_attributes" not in self._dropped:
                try:
                    attributes = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
                except orjson.JSONDecodeError:
                    attributes, warnings = {"custom_attributes": raw}, (PROPERTIES_NOT_JSON,)
                if isinstance(attributes, dict):
                    values = {**attributes, **values}
        else:
            values = {_subscription_key(record): record.get("subscription_status")}
        event["user_properties"] = {"$set": values}
        return Mapped(event, warnings)


def _subscription_key(record: dict[str, Any]) -> str:
    """The user property a subscription change sets: per group, or per channel."""
    group = record.get("subscription_group_id")
    if group:
        return f"subscription_group_{group}"
    return f"{record.get('channel') or 'email'}_subscribe"


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
