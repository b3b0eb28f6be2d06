"""Pure validation of ingestion and identify requests: the checks that need no state.

Request bytes + config in, a ``Reply`` (rejected) or the events that may be stored out; no
state, no clock, no I/O.
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

import orjson

from .config import EmulatorConfig, EndpointLimits, JSONDict

BLOCKED_ID_VALUES = frozenset(
    {
        "anonymous", "nil", "none", "null", "n/a", "na", "undefined", "unknown", '""',
        "00000000-0000-0000-0000-000000000000", "{}", "lmy47d", "0", "-1",
    }
)  # fmt: skip

ERR_MISSING_FIELD = "Request missing required field"
ERR_INVALID_FIELDS = "Invalid field values on some events"
ERR_ID_LENGTH = "Invalid id length for user_id or device_id"
ERR_EVENT_JSON = "Invalid event JSON"
ERR_INVALID_JSON = "Invalid JSON request body"
ERR_MISSING_BODY = "Missing request body"
ERR_TOO_LARGE = "Payload too large"
ERR_PATH = "Invalid request path"
ERR_SILENCED = "Events silenced for device_id"
ERR_THROTTLED = "Too many requests for some devices and users"
ERR_PROJECT_THROTTLED = "Too many requests"

_ID_FIELDS = ("user_id", "device_id")

# Event-level problem categories, in the order Amplitude ranks them; the lowest that fired
# names the error string of the 400.
_P_EVENT_JSON, _P_MISSING_TYPE, _P_INVALID, _P_MISSING_ID, _P_ID_LENGTH, _P_NONE = range(6)
_CATEGORY_ERRORS = (
    ERR_EVENT_JSON,
    ERR_MISSING_FIELD,
    ERR_INVALID_FIELDS,
    ERR_MISSING_FIELD,
    ERR_ID_LENGTH,
)


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP status and JSON body, plus request facts the request log wants.

    ``raw``, when set, is sent instead of the JSON body with ``content_type`` (fault bodies
    that are not JSON: HTML pages, empty bodies).
    """

    status: int
    body: JSONDict
    api_key: str | None = None
    event_count: int | None = None
    raw: bytes | None = None
    content_type: str = "application/json"


@dataclass(slots=True)
class ValidBatch:
    """A request that passed every stateless check."""

    api_key: str
    events: list[JSONDict]
    payload_size: int
    may_need_truncation: bool = True
    body: bytes | None = None  # the request body, when ``events`` are exactly what it holds


def error_reply(status: int, error: str, **extra: Any) -> Reply:
    """A reply whose body is ``{"code": status, "error": error, **extra}``."""
    return Reply(status, {"code": status, "error": error, **extra})


def too_large_reply() -> Reply:
    return error_reply(413, ERR_TOO_LARGE)


def derive_device_id(user_id: str) -> str:
    """The stable device_id stored for an event that only has a user_id."""
    return hashlib.md5(user_id.encode(), usedforsecurity=False).hexdigest()


def validate_ingest(
    body: bytes, limits: EndpointLimits, config: EmulatorConfig
) -> Reply | ValidBatch:
    """The stateless checks of a ``/2/httpapi`` or ``/batch`` body, in order: size, body, JSON,
    api_key, events, key validity, event count, empty events, options, each event, silenced
    devices.

    Returns the rejection, or the validated events (possibly with short ids removed when
    ``short_id_mode == "strip"``). Parsed event dicts are owned by the result and may be
    mutated by the caller.
    """
    if len(body) > limits.max_body_bytes:
        return too_large_reply()
    if not body:
        return error_reply(400, ERR_MISSING_BODY)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error_reply(400, ERR_INVALID_JSON)
    if not isinstance(payload, dict):
        return error_reply(400, ERR_INVALID_JSON)

    api_key = payload.get("api_key")
    if not isinstance(api_key, str) or not api_key:
        return error_reply(400, ERR_MISSING_FIELD, missing_field="api_key")
    events = payload.get("events")
    if not isinstance(events, list):
        return with_facts(error_reply(400, ERR_MISSING_FIELD, missing_field="events"), api_key)
    count = len(events)
    if config.valid_api_keys is not None and api_key not in config.valid_api_keys:
        return with_facts(error_reply(400, f"Invalid API key: {api_key}"), api_key, count)
    if count > limits.max_events:
        return with_facts(too_large_reply(), api_key, count)
    if not events and config.empty_events_mode == "reject_400":
        return with_facts(error_reply(400, ERR_MISSING_FIELD, missing_field="events"), api_key, 0)

    min_len = _min_id_length(payload.get("options"), config.min_id_length_default)
    if isinstance(min_len, Reply):
        return with_facts(min_len, api_key, count)
    rejection = check_events(events, min_len, strip_short_ids=config.short_id_mode == "strip")
    if rejection is None and config.silenced_device_ids:
        rejection = check_silenced(events, config.silenced_device_ids, limits.eps_threshold)
    if rejection is not None:
        return with_facts(rejection, api_key, count)
    long_strings = may_contain_long_strings(body, config.truncate_strings_at)
    unchanged = config.short_id_mode != "strip"
    return ValidBatch(api_key, events, len(body), may_need_truncation=long_strings,
                      body=body if unchanged else None)


def may_contain_long_strings(body: bytes, limit: int) -> bool:
    """False only when no JSON string in ``body`` can decode to more than ``limit`` chars.

    A cheap scan of the raw bytes (a decoded string is never longer than its raw token) that
    spares walking every event of the usual request; escaped quotes force the slow path.
    """
    return b'\\"' in body or _long_token_pattern(limit).search(body) is not None


@functools.lru_cache(maxsize=8)
def _long_token_pattern(limit: int) -> re.Pattern[bytes]:
    return re.compile(b'"[^"]{%d}' % (limit + 1))


def with_facts(reply: Reply, api_key: str | None, event_count: int | None = None) -> Reply:
    return replace(reply, api_key=api_key, event_count=event_count)


def _min_id_length(options: Any, default: int) -> int | Reply:
    """``options.min_id_length`` when given, else the default; a bad value is a 400."""
    if not isinstance(options, dict) or options.get("min_id_length") is None:
        return default
    value = options["min_id_length"]
    if type(value) is not int or value < 0:
        return error_reply(400, ERR_INVALID_FIELDS, invalid_option="min_id_length")
    return value


def check_events(events: list[Any], min_id_length: int, *, strip_short_ids: bool) -> Reply | None:
    """Per-event validation, listing every bad index; None when all are fine.

    In strip mode an id shorter than ``min_id_length`` is deleted from its event (the
    documented behaviour) instead of failing the request; blocklisted ids always fail.
    """
    missing: dict[str, list[int]] = {}
    invalid: dict[str, list[int]] = {}
    id_lengths: dict[str, list[int]] = {}
    first = _P_NONE
    for index, event in enumerate(events):
        if type(event) is not dict:
            invalid.setdefault("event", []).append(index)
            first = _P_EVENT_JSON
            continue
        event_type = event.get("event_type")
        if event_type is None:
            missing.setdefault("event_type", []).append(index)
            first = min(first, _P_MISSING_TYPE)
        elif type(event_type) is not str or not event_type:
            invalid.setdefault("event_type", []).append(index)
            first = min(first, _P_INVALID)
        event_time = event.get("time")
        if event_time is not None and type(event_time) is not int:
            invalid.setdefault("time", []).append(index)
            first = min(first, _P_INVALID)
        insert_id = event.get("insert_id")
        if insert_id is not None and type(insert_id) is not str:
            invalid.setdefault("insert_id", []).append(index)
            first = min(first, _P_INVALID)
        id_problem = _check_ids(
            event, index, min_id_length, strip_short_ids, invalid, missing, id_lengths
        )
        first = min(first, id_problem)
    if first == _P_NONE:
        return None
    return error_reply(
        400,
        _CATEGORY_ERRORS[first],
        events_with_missing_fields=missing,
        events_with_invalid_fields=invalid,
        events_with_invalid_id_lengths=id_lengths,
    )


def _check_ids(
    event: JSONDict,
    index: int,
    min_id_length: int,
    strip_short_ids: bool,
    invalid: dict[str, list[int]],
    missing: dict[str, list[int]],
    id_lengths: dict[str, list[int]],
) -> int:
    """Check user_id/device_id of one event; return the first problem category (or none)."""
    has_id = False
    first = _P_NONE
    for name in _ID_FIELDS:
        value = event.get(name)
        if value is None:
            continue
        if type(value) is not str:
            invalid.setdefault(name, []).append(index)
            first = min(first, _P_INVALID)
        elif value.lower() in BLOCKED_ID_VALUES:
            id_lengths.setdefault(name, []).append(index)
            first = min(first, _P_ID_LENGTH)
        elif len(value) < min_id_length:
            if strip_short_ids:
                del event[name]
            else:
                id_lengths.setdefault(name, []).append(index)
                first = min(first, _P_ID_LENGTH)
        elif value:
            has_id = True
    if not has_id and first == _P_NONE:
        missing.setdefault("user_id", []).append(index)
        first = _P_MISSING_ID
    return first


def check_silenced(
    events: list[JSONDict], silenced: frozenset[str], eps_threshold: int
) -> Reply | None:
    """The 400 for events whose device_id is silenced (Amplitude's silenced-device reply), or
    None."""
    indexes = [i for i, event in enumerate(events) if event.get("device_id") in silenced]
    if not indexes:
        return None
    devices = list(dict.fromkeys(events[i]["device_id"] for i in indexes))
    return error_reply(
        400,
        ERR_SILENCED,
        eps_threshold=eps_threshold,
        exceeded_daily_quota_devices={},
        silenced_devices=devices,
        silenced_events=indexes,
        throttled_devices={},
        throttled_events=[],
    )


def truncate_strings(value: Any, limit: int) -> Any:
    """``value`` with every string longer than ``limit`` cut, recursing into dicts and lists.

    Containers are modified in place (and returned).
    """
    if type(value) is str:
        return value[:limit] if len(value) > limit else value
    if type(value) is dict:
        for key, item in value.items():
            if type(item) is str:
                if len(item) > limit:
                    value[key] = item[:limit]
            elif type(item) in (dict, list):
                truncate_strings(item, limit)
    elif type(value) is list:
        for i, item in enumerate(value):
            if type(item) is str or type(item) in (dict, list):
                value[i] = truncate_strings(item, limit)
    return value


def truncate_event(event: JSONDict, limit: int) -> None:
    """Cut long top-level strings and long strings anywhere in event/user properties."""
    for key, value in event.items():
        if type(value) is str:
            if len(value) > limit:
                event[key] = value[:limit]
        elif key in ("event_properties", "user_properties") and type(value) in (dict, list):
            truncate_strings(value, limit)


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """Fields of an ``x-www-form-urlencoded`` or ``multipart/form-data`` body (first value)."""
    if content_type.lower().startswith("multipart/form-data"):
        head = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        form: dict[str, str] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if isinstance(name, str):
                form.setdefault(name, str(part.get_content()))
        return form
    return first_values(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))


def first_values(query: Mapping[str, list[str]]) -> dict[str, str]:
    return {key: values[0] for key, values in query.items() if values}


def validate_identify(
    form: Mapping[str, str], kind: str, config: EmulatorConfig
) -> Reply | tuple[str, list[JSONDict]]:
    """Validate an Identify (``kind="identify"``) or Group Identify form.

    Returns the rejection or ``(api_key, identifications)``.
    """
    api_key = form.get("api_key")
    if not api_key:
        return error_reply(400, ERR_MISSING_FIELD, missing_field="api_key")
    if config.valid_api_keys is not None and api_key not in config.valid_api_keys:
        return with_facts(error_reply(400, f"Invalid API key: {api_key}"), api_key)
    raw = form.get("identification")
    if not raw:
        return with_facts(
            error_reply(400, ERR_MISSING_FIELD, missing_field="identification"), api_key
        )
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return with_facts(error_reply(400, ERR_INVALID_JSON), api_key)
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        return with_facts(error_reply(400, "missing_event"), api_key, 0)
    if not all(isinstance(item, dict) for item in items):
        return with_facts(error_reply(400, ERR_EVENT_JSON), api_key, len(items))
    required = ("group_type", "group_value") if kind == "groupidentify" else None
    missing: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if required:
            for name in required:
                if not item.get(name):
                    missing.setdefault(name, []).append(index)
        elif not any(isinstance(item.get(n), str) and item.get(n) for n in _ID_FIELDS):
            missing.setdefault("user_id", []).append(index)
    if missing:
        reply = error_reply(400, ERR_MISSING_FIELD, events_with_missing_fields=missing)
        return with_facts(reply, api_key, len(items))
    return api_key, items
