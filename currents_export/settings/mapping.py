"""The ``[mapping]`` table of the TOML configuration: parsed, checked, turned into options.

Pure logic: ``mapping_options`` takes the parsed table (and the file's text, to point at
lines) and returns ``MappingOptions`` or raises ``MappingConfigError`` naming the key, its
line and what to do. The salt for hashing personal data comes from an environment variable
(named in the file), never from the file itself.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from currents_export.currents.schemas import (
    URL,
    event_type_fields,
    field_class,
    known_event_types,
    personal_fields,
)
from currents_export.errors import MappingConfigError
from currents_export.mapping.mapper import (
    PII_CLASS_KEYS,
    PII_POLICIES,
    PROFILES,
    URL_POLICIES,
    MappingOptions,
    PropertiesPolicy,
    TypeRule,
    UserProperties,
    needs_salt,
)
from currents_export.mapping.names import CUSTOM_EVENT_TYPE, PURCHASE_TYPE
from currents_export.mapping.pii import SCAN_POLICIES, key_name

DEFAULT_SALT_ENV = "CURRENTS_EXPORT_PII_SALT"
DEVICE_FIELDS = ("event_properties", "top_level")
FALLBACKS = ("none", "braze_id")
# Types whose properties JSON holds keys of the customer's own: drop/rename may name those.
_OPEN_PROPERTY_TYPES = (CUSTOM_EVENT_TYPE, PURCHASE_TYPE)

_TOP_KEYS = {
    "profile", "device_fields", "backfill", "event_types", "drop", "identity",
    "user_properties", "pii", "properties", "events", "dead_letter_raw_record",
}
# What the mapping itself needs: these are governed by [mapping.pii] and identity, not drop.
_NOT_DROPPABLE = frozenset({"id", "time", "time_ms", "external_user_id", "device_id", "user_id"})
_IDENTITY_KEYS = {"fallback", "min_id_length"}
_USER_PROPERTY_KEYS = {"profile_updates", "subscription_changes"}
_EVENT_KEYS = {"enabled", "event_type", "drop", "rename"}
_PROPERTIES_KEYS = {"drop", "hash", "scan"}


def mapping_options(
    table: Mapping[str, Any],
    *,
    source: str = "",
    text: str = "",
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> MappingOptions:
    """Check the ``[mapping]`` table and build the options it describes.

    ``source`` (a file name) and ``text`` (its content) only serve error messages.
    ``overrides`` (``profile``, ``identity_fallback``) win over the file: command-line flags.
    """
    check = _Checker(source, text)
    check.keys(table, _TOP_KEYS, ("mapping",))
    profile = check.choice(table, "profile", PROFILES, ("mapping",), "braze")
    device_fields = check.choice(table, "device_fields", DEVICE_FIELDS, ("mapping",),
                                 "event_properties")
    backfill = check.boolean(table, "backfill", ("mapping",), False)
    only = check.event_type_list(table, "event_types", ("mapping",))
    drop = check.string_list(table, "drop", ("mapping",))
    every_field = {spec.name for name in known_event_types() for spec in event_type_fields(name)}
    for name in drop:
        if name not in every_field:
            raise check.error(("mapping", "drop"), f"{name!r} is not a field of any Currents "
                                                   "event type (see docs/mapping.md)")
    check.droppable(drop, ("mapping", "drop"))

    identity = check.table(table, "identity", ("mapping",))
    check.keys(identity, _IDENTITY_KEYS, ("mapping", "identity"))
    fallback = check.choice(identity, "fallback", FALLBACKS, ("mapping", "identity"), "none")
    min_id_length = check.integer(identity, "min_id_length", ("mapping", "identity"), None)

    users = check.table(table, "user_properties", ("mapping",))
    check.keys(users, _USER_PROPERTY_KEYS, ("mapping", "user_properties"))
    user_properties = UserProperties(
        profile_updates=check.boolean(users, "profile_updates", ("mapping", "user_properties"),
                                      False),
        subscription_changes=check.boolean(
            users, "subscription_changes", ("mapping", "user_properties"), False
        ),
    )
    if backfill and (user_properties.profile_updates or user_properties.subscription_changes):
        raise check.error(
            ("mapping", "backfill"),
            "backfill = true sends $skip_user_properties_sync, which would make the "
            "user_properties identify operations do nothing; turn one of them off",
        )

    raw_record = check.boolean(table, "dead_letter_raw_record", ("mapping",), False)
    properties = check.properties(table)
    pii, classes, salt = check.pii(table, properties, environ if environ is not None else {})
    rules = {name: check.event_rule(table, name) for name in check.table(table, "events",
                                                                             ("mapping",))}
    options = MappingOptions(
        profile=profile,
        identity_fallback=fallback,
        device_fields=device_fields,
        backfill=backfill,
        only_event_types=only,
        drop=frozenset(drop),
        types=rules,
        pii=pii,
        pii_classes=classes,
        properties=properties,
        pii_salt=salt,
        dead_letter_raw_record=raw_record,
        user_properties=user_properties,
        min_id_length=min_id_length,
    )
    if overrides:
        options = options.with_overrides(**overrides)
    return options


def load_mapping_file(path: str, environ: Mapping[str, str]) -> MappingOptions:
    """The options of the ``[mapping]`` table of the TOML file at ``path`` (for the Lambda;
    its other keys are command-line options, which the Lambda takes from variables)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise MappingConfigError(f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise MappingConfigError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("mapping", {})
    if not isinstance(table, dict):
        raise MappingConfigError(f"{path}: mapping must be a table")
    return mapping_options(table, source=path, text=text, environ=environ)


class _Checker:
    """Type checks that raise errors naming the dotted key and its line in the file."""

    def __init__(self, source: str, text: str) -> None:
        self.source = source
        self.lines = text.splitlines()

    def error(self, path: tuple[str, ...], problem: str) -> MappingConfigError:
        where = self.source or "configuration"
        line = _line_of(self.lines, path)
        if line:
            where += f", line {line}"
        return MappingConfigError(f"{where}: {_dotted(path)}: {problem}")

    def keys(self, table: Mapping[str, Any], known: set[str], path: tuple[str, ...]) -> None:
        for key in table:
            if key not in known:
                raise self.error((*path, key), f"unknown key; known keys here: "
                                                f"{', '.join(sorted(known))}")

    def table(self, table: Mapping[str, Any], key: str, path: tuple[str, ...]) -> dict[str, Any]:
        value = table.get(key, {})
        if not isinstance(value, dict):
            raise self.error((*path, key), f"must be a table, not {_kind(value)}")
        return value

    def choice(self, table: Mapping[str, Any], key: str, choices: tuple[str, ...],
               path: tuple[str, ...], default: str) -> Any:
        value = table.get(key, default)
        if value not in choices:
            raise self.error((*path, key), f"{value!r} is not one of {', '.join(choices)}")
        return value

    def boolean(self, table: Mapping[str, Any], key: str, path: tuple[str, ...],
                default: bool) -> bool:
        value = table.get(key, default)
        if not isinstance(value, bool):
            raise self.error((*path, key), f"must be true or false, not {_kind(value)}")
        return value

    def integer(self, table: Mapping[str, Any], key: str, path: tuple[str, ...],
                default: int | None) -> int | None:
        value = table.get(key, default)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.error((*path, key), f"must be a whole number ≥ 1, not {value!r}")
        return value

    def string_list(self, table: Mapping[str, Any], key: str,
                    path: tuple[str, ...]) -> list[str]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error((*path, key), f"must be a list of strings, not {_kind(value)}")
        return value

    def event_type_list(self, table: Mapping[str, Any], key: str,
                        path: tuple[str, ...]) -> frozenset[str] | None:
        names = self.string_list(table, key, path)
        for name in names:
            self.known_type(name, (*path, key))
        return frozenset(names) if names else None

    def known_type(self, name: str, path: tuple[str, ...]) -> None:
        if name not in known_event_types():
            raise self.error(path, f"unknown Currents event type {name!r} (see "
                                   "docs/mapping.md for the 94 names)")

    def droppable(self, names: list[str], path: tuple[str, ...]) -> None:
        for name in names:
            if name in _NOT_DROPPABLE:
                raise self.error(path, f"{name!r} cannot be dropped: the mapping needs it "
                                       "(use [mapping.pii] to hash or drop personal ids)")

    def properties(self, table: Mapping[str, Any]) -> PropertiesPolicy:
        path = ("mapping", "properties")
        section = self.table(table, "properties", ("mapping",))
        self.keys(section, _PROPERTIES_KEYS, path)
        lists: dict[str, list[str]] = {}
        for key in ("drop", "hash"):
            names = self.string_list(section, key, path)
            if not all(name.strip() for name in names):
                raise self.error((*path, key), "key names must not be empty")
            lists[key] = names
        both = {key_name(n) for n in lists["drop"]} & {key_name(n) for n in lists["hash"]}
        if both:
            raise self.error((*path, "hash"), f"{', '.join(sorted(both))}: both dropped and "
                                              "hashed; name each key in one list only")
        scan = self.choice(section, "scan", SCAN_POLICIES, path, "off")
        return PropertiesPolicy(drop=frozenset(lists["drop"]), hash=frozenset(lists["hash"]),
                                scan=scan)

    def pii(
        self, table: Mapping[str, Any], properties: PropertiesPolicy,
        environ: Mapping[str, str],
    ) -> tuple[dict[str, str], dict[str, str], bytes | None]:
        path = ("mapping", "pii")
        section = self.table(table, "pii", ("mapping",))
        salt_env = section.get("salt_env", DEFAULT_SALT_ENV)
        if not isinstance(salt_env, str) or not salt_env:
            raise self.error((*path, "salt_env"), "must name an environment variable")
        policies: dict[str, str] = {}
        classes: dict[str, str] = {}
        for name, policy in section.items():
            if name == "salt_env":
                continue
            is_class = name in PII_CLASS_KEYS
            if not is_class and name not in personal_fields():
                raise self.error((*path, name), (
                    "neither a class (" + ", ".join(PII_CLASS_KEYS) + ") nor a field that "
                    "holds personal data, free text, a URL, a push token or a user agent "
                    "(docs/mapping.md, column 'class'); those fields are: "
                    + ", ".join(sorted(personal_fields()))))
            allowed = URL_POLICIES if name == "urls" or field_class(name) == URL else (
                PII_POLICIES)
            if policy not in allowed:
                raise self.error((*path, name), f"{policy!r} is not one of "
                                                 f"{', '.join(allowed)}")
            (classes if is_class else policies)[name] = policy
        salt = None
        if needs_salt(policies, classes, properties):
            value = environ.get(salt_env, "")
            if len(value) < 16:
                raise self.error((*path, "salt_env"), f"hashing needs a secret salt of at "
                                 f"least 16 characters in the environment variable "
                                 f"{salt_env}; set it (and keep it: changing it changes "
                                 "every hashed value)")
            salt = value.encode()
        return policies, classes, salt

    def event_rule(self, table: Mapping[str, Any], name: str) -> TypeRule:
        path = ("mapping", "events", name)
        self.known_type(name, path)
        rule = self.table(table["events"], name, ("mapping", "events"))
        self.keys(rule, _EVENT_KEYS, path)
        enabled = self.boolean(rule, "enabled", path, True)
        event_type = rule.get("event_type")
        if event_type is not None and (not isinstance(event_type, str) or not event_type):
            raise self.error((*path, "event_type"), "must be a non-empty string")
        if event_type and "{name}" in event_type and name != CUSTOM_EVENT_TYPE:
            raise self.error((*path, "event_type"), "{name} only exists for custom events")
        drop = self.string_list(rule, "drop", path)
        self.droppable(drop, (*path, "drop"))
        rename = self.table(rule, "rename", path)
        for old, new in rename.items():
            if not isinstance(new, str) or not new:
                raise self.error((*path, "rename", old), "must be a non-empty string")
        fields = {spec.name for spec in event_type_fields(name)}
        if name not in _OPEN_PROPERTY_TYPES:
            for field in [*drop, *rename]:
                if field not in fields:
                    raise self.error(path, f"{field!r} is not a field of {name}; its fields "
                                           f"are: {', '.join(sorted(fields))}")
        return TypeRule(enabled=enabled, event_type=event_type, drop=frozenset(drop),
                        rename=dict(rename))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(p if re.fullmatch(r"[A-Za-z0-9_-]+", p) else f'"{p}"' for p in path)


def _line_of(lines: list[str], path: tuple[str, ...]) -> int | None:
    """Best-effort line of ``path`` in the TOML text: the key inside its table, else the
    table's header, else the first line that mentions the last part."""
    header: tuple[str, ...] = ()
    best: int | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if line.startswith("["):
            header = _header_path(line)
            if header == path:
                return number
            if best is None and header and path[: len(header)] == header:
                best = number
            continue
        key = _key_path(line)
        if key and path[: len(header) + len(key)] == header + key:
            return number
    if best is not None:
        return best
    for number, raw in enumerate(lines, start=1):
        if path and path[-1] in raw:
            return number
    return None


_PART = r'\s*("([^"]*)"|\'([^\']*)\'|[A-Za-z0-9_-]+)\s*'


def _split_dotted(text: str) -> tuple[str, ...]:
    parts = []
    for match in re.finditer(_PART + r"(\.|$)", text):
        token = match.group(1)
        parts.append(token[1:-1] if token[:1] in "\"'" else token)
    return tuple(parts)


def _header_path(line: str) -> tuple[str, ...]:
    match = re.match(r"\[\[?([^\]]*)\]\]?", line)
    return _split_dotted(match.group(1)) if match else ()


def _key_path(line: str) -> tuple[str, ...]:
    if not line or line.startswith("#") or "=" not in line:
        return ()
    return _split_dotted(line.split("=", 1)[0])
