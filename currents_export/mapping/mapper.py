"""One Braze record → one Amplitude event, or a skip or rejection with a reason.

Pure logic, no I/O. A mapper is built once per (event type, options, writer schema) and
applied to every record of a file, through code generated once per record layout
(``compiled``). ``map`` never raises on a value's type (Braze's schemas
drift): a value that plainly means the same is converted where it is read (an id number to
its decimal string, a time as text or float to an int, a price as text to a float, a
``properties`` map as the parsed JSON); one that cannot be used is
``Rejected(MAPPING_ERROR, …)``; anything else goes to ``event_properties`` JSON-safe
(``bytes``/``fixed`` as hex, or as text when UTF-8 and the scan is on). Each check is one
``value.__class__ is …`` test, so records of the documented schema pay nearly nothing.
"""

from __future__ import annotations

import hmac
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

import orjson

from currents_export.currents.schemas import (
    CLASS_KEYS,
    FIELD_CLASSES,
    event_type_fields,
    field_class,
)
from currents_export.mapping.compiled import (
    CompiledLayout,
    PropertiesFunction,
    compile_layout,
    compile_properties,
    value_classes,
)
from currents_export.mapping.names import (
    CUSTOM_EVENT_TYPE,
    PURCHASE_TYPE,
    braze_event_type,
    plain_event_type,
)
from currents_export.mapping.pii import (
    DROP,
    SCAN_POLICIES,
    Redactor,
    ScanPolicy,
    hmac_hasher,
    key_name,
    strip_query,
)
from currents_export.support.jsonbytes import bytes_text as _bytes_text
from currents_export.support.jsonbytes import json_safe
from currents_export.support.jsonbytes import text_of as _text

Profile = Literal["braze", "plain"]
IdentityFallback = Literal["none", "braze_id"]
DeviceFields = Literal["event_properties", "top_level"]
PROFILES: tuple[str, ...] = ("braze", "plain")
PII_POLICIES: tuple[str, ...] = ("keep", "hash", "drop")
URL_POLICIES: tuple[str, ...] = (*PII_POLICIES, "strip_query")  # for URL fields and `urls`
PII_CLASS_KEYS: tuple[str, ...] = tuple(CLASS_KEYS.values())  # free_text, urls, …

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
# MAPPING_ERROR (currents_export.errors): a field whose type the mapping cannot use, e.g. an
# external_user_id that is a list; the detail names the field and what it held.
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
class PropertiesPolicy:
    """``[mapping.properties]``: custom event and purchase ``properties`` and profile
    ``custom_attributes``. Key names are compared without case (and without ``_ - .`` and
    spaces) at any depth; the scan also covers the kept free-text, URL, token and
    user-agent fields."""

    drop: frozenset[str] = frozenset()  # keys left out, wherever they are
    hash: frozenset[str] = frozenset()  # keys whose value is replaced by its salted hash
    scan: ScanPolicy = "off"  # values shaped like an e-mail address or phone number

    @property
    def active(self) -> bool:
        return bool(self.drop or self.hash) or self.scan != "off"


def needs_salt(
    pii: Mapping[str, str], pii_classes: Mapping[str, str], properties: PropertiesPolicy
) -> bool:
    """Whether a configuration hashes anything (and so needs the secret salt): a field or a
    class set to ``hash``, keys in ``[mapping.properties].hash`` or ``scan = "hash"``."""
    return ("hash" in pii.values() or "hash" in pii_classes.values()
            or bool(properties.hash) or properties.scan == "hash")


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """How records become Amplitude events (README.md, "The default mapping" and "Mapping
    configuration": the ``[mapping]`` table of the configuration file; docs/mapping.md)."""

    profile: Profile = "braze"
    identity_fallback: IdentityFallback = "none"  # "braze_id": user_id ← Braze's internal id
    device_fields: DeviceFields = "event_properties"
    backfill: bool = False  # send $skip_user_properties_sync: history must not touch profiles
    only_event_types: frozenset[str] | None = None  # None: every type is sent
    drop: frozenset[str] = frozenset()  # fields left out of every type
    types: dict[str, TypeRule] = field(default_factory=dict)
    pii: dict[str, str] = field(default_factory=dict)  # field → keep|hash|drop|strip_query
    # class key (free_text, urls, device_tokens, user_agents) → policy; a field's own wins
    pii_classes: dict[str, str] = field(default_factory=dict)
    properties: PropertiesPolicy = field(default_factory=PropertiesPolicy)
    pii_salt: bytes | None = field(default=None, repr=False)
    dead_letter_raw_record: bool = False  # True: the dead letter keeps records unredacted
    user_properties: UserProperties = field(default_factory=UserProperties)
    min_id_length: int | None = None  # from the file; the command line may override it

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown mapping profile {self.profile!r}; use braze or plain")
        if self.identity_fallback not in ("none", "braze_id"):
            raise ValueError(
                f"unknown identity fallback {self.identity_fallback!r}; use none or braze_id"
            )
        if self.properties.scan not in SCAN_POLICIES:
            raise ValueError(f"unknown scan policy {self.properties.scan!r}")
        if self.needs_salt and not self.pii_salt:
            raise ValueError("hashing personal data needs a secret salt")

    @property
    def needs_salt(self) -> bool:
        """Whether this configuration hashes anything (see ``needs_salt``)."""
        return needs_salt(self.pii, self.pii_classes, self.properties)

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
        """keep, hash, drop or strip_query: the field's own key, else its class's key."""
        own = self.pii.get(field_name)
        if own is not None:
            return own
        if self.pii_classes:
            key = CLASS_KEYS.get(field_class(field_name) or "")
            if key is not None:
                return self.pii_classes.get(key, "keep")
        return "keep"

    def field_policies(self) -> dict[str, str]:
        """Every field name whose policy is not keep, with its policy."""
        names = set(self.pii)
        if self.pii_classes:
            names.update(n for n, kind in FIELD_CLASSES.items() if CLASS_KEYS.get(kind)
                         in self.pii_classes)
        return {name: policy for name in sorted(names)
                if (policy := self.policy(name)) != "keep"}

    def hash_value(self, value: object) -> str:
        """The salted hash that stands in for a personal value (stable for one salt).

        A value that is not a string (a number, after schema drift) is hashed as its str().
        """
        assert self.pii_salt is not None
        text = value if value.__class__ is str else str(value)
        return hmac.digest(self.pii_salt, text.encode(), "sha256").hex()


_DEFAULT_RULE = TypeRule()
_MAX_LAYOUTS = 64  # generated functions kept per mapper
_MAX_PREFIXED = 4096  # custom property keys remembered with their prefix, per mapper
_CUSTOM_JSON = ("properties", "custom_attributes")
_USER_IDS = frozenset({"external_user_id", "user_id", "device_id"})  # under their own policy
_POLICY_NOTES = {"hash": " (salted hash)", "strip_query": " (query and fragment removed)"}


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
    """Cannot become a valid event; goes to the dead letter. ``without_value`` says the same
    as ``detail`` without quoting the record (for messages that reach logs)."""

    reason: str
    detail: str
    without_value: str = ""


MapResult = Mapped | Skipped | Rejected
_DISABLED = Skipped(EVENT_TYPE_DISABLED)  # immutable: one for every record of such a type


def float32(value: float) -> float:
    """The shortest decimal that is the same single-precision float (9.989999771… → 9.99).

    A value a single-precision float cannot hold (a double, after schema drift) is returned
    unchanged. Results are remembered (prices and the like recur), but not for zeros:
    0.0 and -0.0 are equal keys with different results.
    """
    known = _FLOAT32.get(value)
    if known is not None:
        return known
    result = value
    try:
        packed = struct.pack("<f", value)
    except OverflowError:
        return value
    for digits in range(1, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            result = candidate
            break
    if value and len(_FLOAT32) < _MAX_FLOAT32:
        _FLOAT32[value] = result
    return result


_FLOAT32: dict[float, float] = {}  # float32's results
_MAX_FLOAT32 = 4096


@dataclass(slots=True)
class EventMapper:
    """Maps the records of one Currents event type.

    Everything that depends only on the type and the options (names, which fields are
    dropped, hashed, renamed or moved) is worked out once here; what ``map`` does to a
    record is then generated once per record layout (``compiled``), so that per record it
    is straight-line work and one JSON parse. ``value_classes``: the class the writer
    schema says each field decodes to (``compiled.value_classes``), the class each value is
    tested for first.
    """

    event_type: str
    options: MappingOptions = field(default_factory=MappingOptions)
    float_fields: frozenset[str] = frozenset()
    value_classes: dict[str, type] = field(default_factory=dict)
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
    _stripped: tuple[str, ...] = field(init=False)  # URL fields: query and fragment removed
    _scanned: tuple[str, ...] = field(init=False)  # kept free text, URLs, tokens: the scan
    _redactor: Redactor | None = field(init=False)  # None: no properties policy, no scan
    _custom_json: bool = field(init=False)  # properties / custom_attributes get the policy
    _attributes_json: bool = field(init=False)  # custom_attributes sent as JSON text
    _rewrites: bool = field(init=False)  # hashes, strips or scans fields of this type
    _redacts: bool = field(init=False)  # redact_record changes records at all
    # custom property keys named like a hashed field (hashed as that field is)
    _hashed_props: frozenset[str] = field(init=False)
    _rest: Redactor | None = field(init=False)  # the scan of every other kept string value
    _rest_skip: frozenset[str] = field(init=False)  # fields hashed or scanned on their own
    # record layout (its keys, in order) → the functions generated for it
    _layouts: dict[tuple[Any, ...], CompiledLayout] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _properties_of: dict[tuple[Any, ...], PropertiesFunction] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _prefixed: dict[str, str] = field(  # custom property key → the key with the prefix
        init=False, repr=False, compare=False, default_factory=dict
    )

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
        policies = options.field_policies()
        pii_dropped = {name for name, policy in policies.items() if policy == "drop"}
        self._dropped = frozenset(rule.drop | options.drop | pii_dropped)
        self._excluded = frozenset(consumed | self._dropped)
        self._hashed = tuple(
            name for name, policy in policies.items()
            if policy == "hash" and name not in _IDENTITY_AND_TIME
        )
        self._stripped = tuple(n for n, policy in policies.items() if policy == "strip_query")
        scan = options.properties.scan != "off"
        self._scanned = tuple(sorted(
            name for name, kind in FIELD_CLASSES.items()
            if scan and kind in CLASS_KEYS and name not in self._dropped
            and options.policy(name) in ("keep", "strip_query")
        ))
        hash_text = hmac_hasher(options.pii_salt) if options.pii_salt else None
        self._redactor = (
            Redactor(options.properties.scan, hash_text, options.properties.drop,
                     options.properties.hash)
            if options.properties.active else None
        )
        self._custom_json = self._redactor is not None
        # A custom property named like a hashed field is hashed as that field is (as one named
        # like a dropped field is dropped), unless [mapping.properties].hash already does it.
        hashed_by_key = frozenset(key_name(k) for k in options.properties.hash)
        self._hashed_props = frozenset(
            name for name, policy in policies.items()
            if policy == "hash" and key_name(name) not in hashed_by_key
        )
        self._rest = self._redactor if scan else None
        self._rest_skip = frozenset((*self._hashed, *self._scanned, *_CUSTOM_JSON))
        self._attributes_json = (self._custom_json and self.event_type == PROFILE_UPDATE_TYPE
                                 and not self._identify)
        self._rewrites = bool(self._hashed or self._stripped or self._scanned
                              or self._attributes_json)
        self._renames = dict(rule.rename)
        self._top_level = (
            {k: v for k, v in DEVICE_FIELDS.items() if k not in self._dropped}
            if options.device_fields == "top_level" and not self._identify else {}
        )
        self._user_id_policy = options.policy("external_user_id")
        self._braze_id_policy = options.policy("user_id")
        self._redacts = bool(
            self._rewrites or self._dropped or self._custom_json
            or self._user_id_policy != "keep" or self._braze_id_policy != "keep"
        )

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
        hashed = _POLICY_NOTES.get(policy, "")
        scan_note = (" (e-mail addresses and phone numbers hashed)"
                     if self.options.properties.scan == "hash"
                     else " (e-mail addresses and phone numbers removed)")
        if name in self._scanned or (
            self._rest is not None and name not in self._rest_skip
            and name not in _USER_IDS and self._holds_text(name)
        ):  # kept free text, URLs and tokens; with a scan, every other kept text too
            hashed += scan_note
        elif self._custom_json and name in ("properties", "custom_attributes"):
            hashed = " (under [mapping.properties])"
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
            ) + hashed
        if name == "name" and self.event_type == CUSTOM_EVENT_TYPE:
            return f"event_type ({self._name_template})" + hashed
        if self._is_purchase and name in ("price", "product_id", "currency"):
            return {"price": "price and revenue (quantity 1)", "product_id": "productId",
                    "currency": "currency and event_properties.currency"}[name] + hashed
        if name in self._top_level:
            return self._top_level[name] + " (top level)"
        return "event_properties." + self._renames.get(name, name) + hashed

    def _holds_text(self, name: str) -> bool:
        """Whether the catalogue types ``name`` as a string (or strings), for ``destination``;
        True for a field it does not know."""
        try:
            specs = {spec.name: spec for spec in event_type_fields(self.event_type)}
        except KeyError:  # a type the catalogue does not know
            return True
        spec = specs.get(name)
        return spec is None or "string" in (spec.avro_type, spec.item_type)

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
            return "user_properties.$set: its JSON merged" + hashed
        return "user_properties.$set." + self._renames.get(name, name) + hashed

    def map(self, record: dict[str, Any]) -> MapResult:
        """The event for ``record``, or why there is none; never raises on a value's type.

        The work is that of the functions generated for the record's layout (``compiled``):
        ids checked (``_id_text`` refuses an id it cannot use), time, identity, then the
        event, its ``event_properties`` and the policies."""
        if not self._enabled:
            return _DISABLED
        layout = tuple(record)
        compiled = self._layouts.get(layout)
        if compiled is None:
            compiled = self._compile(layout)
        result: MapResult = compiled.map(record)
        return result

    def _compile(self, layout: tuple[Any, ...]) -> CompiledLayout:
        """The functions for ``layout``, generated on its first record (a file has one)."""
        if len(self._layouts) >= _MAX_LAYOUTS:  # dicts built by hand, each its own keys
            self._layouts.clear()
        compiled = self._layouts[layout] = compile_layout(self, layout, self.value_classes)
        return compiled

    def generated_names(self) -> dict[str, Any]:
        """What the code ``compiled`` generates for this mapper refers to: this module's
        rules and results, and this mapper's methods for what is rare or depends on the
        configuration."""
        return {
            "_Refused": _Refused, "_Rejected": Rejected, "_Mapped": Mapped,
            "_id_text": _id_text, "_drifted_time_ms": _drifted_time_ms,
            "_no_time_detail": _no_time_detail, "_set_revenue": _set_revenue,
            "_float32": float32, "_NO_EVENT_ID": NO_EVENT_ID, "_NO_TIME": NO_TIME,
            "_NO_IDENTITY": Skipped(NO_IDENTITY),
            "_SKIP_USER_PROPERTIES_SYNC": SKIP_USER_PROPERTIES_SYNC,
            "_float_value": _float_value, "_mapper": self,
            "_custom_event_type": self._custom_event_type,
            "_merge_custom_properties": self._merge_custom_properties,
            "_scan_value": self._scan_value, "_apply_policies": self._apply_policies,
            "_prefix": self._prefix,
        }

    def _custom_event_type(self, name: Any) -> str:
        if name.__class__ is not str:  # a number, after schema drift: used as text
            name = None if name is None else _text(name)
        rest = self._rest
        if rest is not None and name and rest.looks(name):  # "Signup jane@example.com"
            name = rest.text(name)
            if name is DROP:
                name = None
        return self._name_template.replace("{name}", name) if name else self._unnamed

    def _scan_values(self, values: dict[str, Any], names: Iterable[str]) -> None:
        """The scan of ``values[name]`` for each name, in place (left out when dropped)."""
        rest = self._rest
        assert rest is not None
        for name in names:
            value = values.get(name)
            if value is None:
                continue
            value = rest.value(value)
            if value is DROP:
                del values[name]
            else:
                values[name] = value

    def _event_properties(
        self, record: dict[str, Any], braze_id: str | None
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """``event_properties`` for ``record`` and its warnings (as ``map`` builds them)."""
        layout = tuple(record)
        properties = self._properties_of.get(layout)
        if properties is None:
            if len(self._properties_of) >= _MAX_LAYOUTS:
                self._properties_of.clear()
            properties = self._properties_of[layout] = compile_properties(
                self, layout, self.value_classes)
        return properties(record, braze_id)

    def _prefix(self, key: str) -> str:
        """A custom property's key with the prefix, remembered (up to ``_MAX_PREFIXED``)."""
        name = self._property_prefix + key
        if len(self._prefixed) < _MAX_PREFIXED:
            self._prefixed[key] = name
        return name

    def _scan_value(self, value: Any, is_float: bool, hashed: bool, skip: bool) -> Any:
        """A field's value that is not a str (nor None), under the scan: ints and booleans as
        they are, a float rounded when the schema has it single-precision, a hashed field's
        JSON-safe (its hash comes later), else readable and scanned unless ``skip`` (scanned
        on its own later); ``DROP`` when the scan drops it."""
        cls = value.__class__
        if cls is int or cls is bool:
            return value
        if cls is float:
            return float32(value) if is_float else value
        if hashed:  # hashed as always: bytes as hex
            return json_safe(value)
        value = readable(value)  # bytes that are UTF-8 as their text: the scan reads it
        if skip:
            return value
        assert self._rest is not None
        return self._rest.value(value)

    def _apply_policies(self, properties: dict[str, Any]) -> None:
        """Hash personal fields, strip URLs, scan free text and rename keys, as the
        configuration says."""
        if self._rewrites:
            self._rewrite_fields(properties)
            if self._attributes_json:  # a profile update's custom_attributes, as JSON text
                value = properties.get("custom_attributes")
                if value is not None:
                    value = self._record_json(value, frozenset())
                    if value is None:
                        del properties["custom_attributes"]
                    else:
                        properties["custom_attributes"] = value
        for old, new in self._renames.items():
            if old in properties:
                properties[new] = properties.pop(old)

    def _rewrite_fields(self, values: dict[str, Any]) -> None:
        """The field policies (hash, strip_query, the scan) on ``values`` in place."""
        for name in self._hashed:
            value = values.get(name)
            if value is not None:
                values[name] = self._hash_field(value)
        for name in self._stripped:
            value = values.get(name)
            if value.__class__ is str:
                values[name] = strip_query(value)
            elif value.__class__ is list:  # media_urls
                values[name] = [strip_query(v) if v.__class__ is str else v for v in value]
        redactor = self._redactor
        for name in self._scanned:
            value = values.get(name)
            if value is not None:
                assert redactor is not None  # a scan implies the properties policy
                value = redactor.value(value)
                if value is DROP:
                    del values[name]
                else:
                    values[name] = value

    def _bytes_value(self, value: bytes) -> str:
        """Bytes that are not JSON: their text when the scan is on and they are UTF-8 (the
        scan could not read an address in hex), else hex as always."""
        return _utf8_or_hex(value) if self._rest is not None else _bytes_text(value)

    def _json_value(self, value: Any) -> Any:
        """``json_safe``, or ``readable`` when the scan is on."""
        return readable(value) if self._rest is not None else json_safe(value)

    def _hash_property(self, value: Any) -> Any:
        """A custom property named like a hashed field: a text (or number) as the field is
        hashed, a list item by item, an object as its JSON text; null stays null."""
        if value is None:
            return None
        if value.__class__ is list:
            return [None if v is None else self.options.hash_value(_text(v)) for v in value]
        return self.options.hash_value(_text(value))

    def _hash_field(self, value: Any) -> Any:
        """A hashed field: its text (a number's decimal text), or each item of a list."""
        if value.__class__ is list:
            return [None if v is None else self.options.hash_value(_text(v)) for v in value]
        return self.options.hash_value(value)  # str() of a number: as hashes always were

    def _custom_value(self, value: Any) -> Any:
        """Custom JSON (or a text that is not JSON) under ``[mapping.properties]``."""
        assert self._redactor is not None
        value = self._redactor.value(value)
        return None if value is DROP else value

    def _record_json(
        self, raw: Any, dropped: frozenset[str], hashed: frozenset[str] = frozenset()
    ) -> Any:
        """``properties`` or ``custom_attributes`` as the record holds them (JSON text, or a
        map after schema drift) without the ``dropped`` top-level keys, the ``hashed`` ones
        hashed and under ``[mapping.properties]``; JSON text stays JSON text."""
        custom = self._custom_json
        cls = raw.__class__
        if cls is str or cls is bytes:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                text = raw if cls is str else self._bytes_value(raw)
                return self._custom_value(text) if custom else text
        else:
            value = self._json_value(raw)
        if dropped and value.__class__ is dict:
            value = {k: v for k, v in value.items() if k not in dropped}
        if custom:
            value = self._custom_value(value)
        if hashed and value.__class__ is dict:
            value = {k: self._hash_property(v) if k in hashed else v for k, v in value.items()}
        if value is None or not (cls is str or cls is bytes):
            return value
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # e.g. nested deeper than orjson writes: not kept
            return None

    def redact_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """The Braze record as the privacy policy lets it be kept (for the dead letter):
        the ids hashed or dropped as in events, dropped fields left out (personal data and
        the configuration's ``drop``), hashed fields hashed, URLs stripped, free text
        scanned, ``properties`` and ``custom_attributes`` under ``[mapping.properties]``.
        The record itself when the configuration changes nothing (no copy); never raises
        on a value's type."""
        if not self._redacts:
            return record
        out = {name: value for name, value in record.items() if name not in self._dropped}
        for name, policy in (("external_user_id", self._user_id_policy),
                             ("user_id", self._braze_id_policy)):
            value = out.get(name)
            if policy == "keep" or value is None:
                continue
            if policy == "drop":
                del out[name]
            else:
                out[name] = self.options.hash_value(_text(value))
        rest = self._rest
        if rest is not None:  # every other kept value, the custom event's name included,
            # and id, time and time_ms (a record is here when one of them was unusable)
            skip = self._rest_skip
            for name, value in list(out.items()):
                if value is None or name in skip or name in _USER_IDS:
                    continue
                if value.__class__ is not str:
                    value = readable(value)
                elif not rest.looks(value):
                    continue
                value = rest.value(value)
                if value is DROP:
                    del out[name]
                else:
                    out[name] = value
        if self._rewrites:
            self._rewrite_fields(out)
        open_keys = self.event_type in (CUSTOM_EVENT_TYPE, PURCHASE_TYPE)
        for name in _CUSTOM_JSON:
            value = out.get(name)
            is_properties = open_keys and name == "properties"
            dropped = self._dropped if is_properties else frozenset()
            hashed = self._hashed_props if is_properties else frozenset()
            if value is not None and (dropped or hashed or self._custom_json):
                out[name] = self._record_json(value, dropped, hashed)
        return out

    def _merge_custom_properties(self, properties: dict[str, Any], raw: Any) -> tuple[str, ...]:
        """Merge the JSON in ``properties``; keep the raw value when it is not a JSON text.

        A map or record (``properties`` typed as such by a drifted schema) is merged as if it
        were the parsed JSON; a list or a scalar is kept under ``properties`` and counted.
        """
        cls = raw.__class__
        custom = self._custom_json
        if cls is str or cls is bytes:
            try:
                parsed = orjson.loads(raw)
            except orjson.JSONDecodeError:
                kept = raw if cls is str else self._bytes_value(raw)
                kept = self._custom_value(kept) if custom else kept
                if kept is not None:
                    properties["properties"] = kept
                return (PROPERTIES_NOT_JSON,)
        elif cls is dict:
            parsed = self._json_value(raw)
        else:
            kept = self._json_value(raw)
            kept = self._custom_value(kept) if custom else kept
            if kept is not None:
                properties["properties"] = kept
            return (PROPERTIES_NOT_JSON,)
        if custom:
            parsed = self._custom_value(parsed)
        if parsed.__class__ is dict:
            prefix, dropped, renames = self._property_prefix, self._dropped, self._renames
            hashed = self._hashed_props
            for key, value in parsed.items():
                if key in dropped:
                    continue
                if key in hashed:  # named like a hashed field: hashed as that field is
                    value = self._hash_property(value)
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
                if self._custom_json and raw.__class__ is not str:
                    raw = self._json_value(raw)  # bytes that are UTF-8 as their text
                attributes, warnings = _custom_attributes(raw)
                if attributes is not None and self._custom_json:
                    attributes = self._custom_value(attributes)
                if attributes is not None:
                    values = {**attributes, **values}
        else:
            status = record.get("subscription_status")
            if status.__class__ is not str and status is not None:
                status = json_safe(status)
            values = {_subscription_key(record): status}
            if self._rest is not None:
                self._scan_values(values, list(values))
        event["user_properties"] = {"$set": values}
        return Mapped(event, warnings)


def _custom_attributes(raw: Any) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
    """A profile update's ``custom_attributes`` as a dict to merge (None: nothing to merge),
    and the warnings: JSON text or a map are merged; anything else is kept under its name."""
    cls = raw.__class__
    if cls is str or cls is bytes:
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            kept = raw if cls is str else _bytes_text(raw)
            return {"custom_attributes": kept}, (PROPERTIES_NOT_JSON,)
        # JSON that is not an object (a list, a number) has never been merged.
        return (parsed if parsed.__class__ is dict else None), ()
    if cls is dict:
        return json_safe(raw), ()
    return {"custom_attributes": json_safe(raw)}, (PROPERTIES_NOT_JSON,)


def _subscription_key(record: dict[str, Any]) -> str:
    """The user property a subscription change sets: per group, or per channel."""
    group = record.get("subscription_group_id")
    if group:
        return f"subscription_group_{_text(group)}"
    channel = record.get("channel")
    return f"{_text(channel) if channel else 'email'}_subscribe"


# ---- conversions of values whose Avro type drifted -----------------------------------------

_INT64_MAX = 2**63 - 1  # orjson (and Amplitude) take 64-bit integers (compiled: a literal)
# Types orjson serialises as they are (fastavro's logical types included).


class _Refused(Exception):
    """A field the mapping cannot use; its message becomes the rejection's detail."""

    def __init__(self, message: str, without_value: str) -> None:
        super().__init__(message)
        self.without_value = without_value  # the same, naming the value's type only


def _describe(value: object) -> str:
    """``a list (['a', 'b'])``, for rejection details: the type and a short repr."""
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{type(value).__name__} ({shown})"


def _type_name(value: object) -> str:
    return type(value).__name__


def _id_text(value: object, name: str) -> str | None:
    """An id field that is not a str: None stays None, an integer or a UUID becomes its
    text (a long where Braze used to write a string); anything else is refused."""
    if value is None:
        return None
    cls = value.__class__
    if cls is int or cls is UUID:
        return str(value)
    raise _Refused(f"{name} is a {_describe(value)}, not a string or an integer",
                   f"{name} is a {type(value).__name__}, not a string or an integer")


def _utf8_or_hex(value: bytes | bytearray) -> str:
    """Bytes as their text when they are UTF-8, else as hex (``_bytes_text``)."""
    try:
        return bytes(value).decode()
    except UnicodeDecodeError:
        return _bytes_text(value)


def readable(value: Any) -> Any:
    """``json_safe`` for the scan: bytes that are UTF-8 become their text rather than hex
    (an address in hex would pass the scan unseen), anywhere inside ``value``."""
    cls = value.__class__
    if cls is bytes or cls is bytearray:
        return _utf8_or_hex(value)
    if cls is list or cls is tuple:
        return [readable(item) for item in value]
    if cls is dict:
        return {(key if key.__class__ is str else _text(key)): readable(item)
                for key, item in value.items()}
    return json_safe(value)


def _number(value: Any) -> float | int | None:
    """A finite number from an int (64-bit, not a bool), a float, a Decimal or a numeric
    string; else None."""
    cls = value.__class__
    if cls is str:
        text = value.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                return None
        cls = value.__class__
    if cls is int:
        return value if -_INT64_MAX <= value <= _INT64_MAX else None
    if cls is Decimal:
        if not value.is_finite():  # float() refuses a signalling NaN
            return None
        value = float(value)
    elif cls is not float:
        return None
    return value if math.isfinite(value) else None


def _drifted_time_ms(time_ms: Any, time_s: Any) -> int | None:
    """The event time in ms (None: no usable timestamp) when ``time_ms`` is not an int in
    range nor None with ``time`` one (the generated code handles those): floats, numeric
    strings, datetimes and out-of-range numbers."""
    for value, scale in ((time_ms, 1), (time_s, 1000)):
        if value is None:
            continue
        if value.__class__ is datetime:  # a timestamp logical type; naive means UTC
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
            millis = round(moment.timestamp() * 1000)
        else:
            number = _number(value)
            if number is None:
                continue
            if isinstance(number, int):
                millis = number * scale
            else:
                product = number * scale
                if not math.isfinite(product):
                    continue
                millis = round(product)
        if -_INT64_MAX <= millis <= _INT64_MAX:
            return millis
    return None


def _no_time_detail(record: dict[str, Any], without_value: bool) -> str:
    """Why a record has no time; ``without_value`` (under a privacy policy): naming the type
    of each value only, never the value."""
    describe = _type_name if without_value else _describe
    given = [f"{name} is a {describe(record[name])}" for name in ("time_ms", "time")
             if record.get(name) is not None]
    if not given:
        return "the record has neither time nor time_ms"
    return "no usable timestamp: " + "; ".join(given)


def _set_revenue(event: dict[str, Any], record: dict[str, Any]) -> Any:
    """Purchase fields Braze's connector sets (price, productId) plus revenue for Amplitude.

    Returns a price that is not a number (nor a numeric string), JSON-safe, for
    ``event_properties``; else None.
    """
    unused = None
    price = record.get("price")
    if price is not None:
        number = _number(price)  # a float, or a number given as an int, a string, a decimal
        if number is None:
            unused = json_safe(price)
        else:
            price = float32(float(number))
            event["price"] = price
            event["quantity"] = 1
            event["revenue"] = price
    product_id = record.get("product_id")
    if product_id:
        event["productId"] = product_id if product_id.__class__ is str else _text(product_id)
    currency = record.get("currency")
    if currency:
        if currency.__class__ is not str:
            currency = _text(currency)  # e.g. an ISO 4217 numeric code
        event["currency"] = currency.strip().upper()
    return unused


def _float_value(value: Any) -> Any:
    """A single-precision field's value: a float rounded (``float32``), else JSON-safe."""
    return float32(value) if value.__class__ is float else json_safe(value)


def mapper_for(
    event_type: str,
    options: MappingOptions,
    float_fields: Iterable[str] = (),
    writer_schema: Mapping[str, Any] | None = None,
) -> EventMapper:
    """The mapper for ``event_type``; ``writer_schema`` (of the file, when known) says which
    class each field's values are tested for first."""
    return EventMapper(event_type, options, frozenset(float_fields),
                       value_classes(writer_schema))


_REDACTORS: dict[tuple[str, int], EventMapper] = {}
_MAX_REDACTORS = 1024


def redacted_record(
    event_type: str, options: MappingOptions, record: dict[str, Any]
) -> dict[str, Any]:
    """``EventMapper.redact_record`` for one record of ``event_type`` (the dead letter's
    record), with the mapper kept per (type, options). Never raises: a record the policy
    cannot be applied to is not kept (only why)."""
    key = (event_type, id(options))
    mapper = _REDACTORS.get(key)
    if mapper is None or mapper.options is not options:
        if len(_REDACTORS) >= _MAX_REDACTORS:
            _REDACTORS.clear()
        mapper = _REDACTORS[key] = EventMapper(event_type, options)
    try:
        return mapper.redact_record(record)
    except Exception as exc:  # e.g. JSON nested deeper than Python recurses
        return {"not_kept": f"the privacy policy could not be applied ({type(exc).__name__})"}
