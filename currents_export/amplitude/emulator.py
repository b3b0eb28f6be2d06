"""A local emulator of Amplitude's ingestion endpoints (HTTP API v2, Batch, Identify).

A real HTTP/1.1 server on loopback, built on the standard library, that answers like Amplitude
closely enough to test the upload client: the same limits, check order and response bodies
(reference §9), insert_id deduplication and an optional per-id throttling model.

Layers, from pure to stateful:

* ``validate_ingest`` / ``validate_identify`` — pure: request bytes + config → a ``Reply``
  (rejected) or the events that may be stored.
* ``EmulatorState`` — what the emulator remembers (events, dedup index, rate windows, request
  log, counters), guarded by one lock, with a replaceable ``clock``.
* ``_Handler`` / ``Emulator`` — HTTP routing and server lifecycle only.
"""

from __future__ import annotations

import contextlib
import copy
import email.parser
import email.policy
import functools
import hashlib
import re
import socket
import socketserver
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import orjson

JSONDict = dict[str, Any]

# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class EndpointLimits:
    """Size and rate limits of one ingestion endpoint."""

    max_body_bytes: int
    max_events: int
    eps_threshold: int
    eps_window_s: int = 30


V2_LIMITS = EndpointLimits(max_body_bytes=1_048_576, max_events=2_000, eps_threshold=30)
BATCH_LIMITS = EndpointLimits(max_body_bytes=20_971_520, max_events=2_000, eps_threshold=1_000)

SHORT_ID_MODES = ("reject_400", "strip")
EMPTY_EVENTS_MODES = ("ok_200", "reject_400")


@dataclass
class EmulatorConfig:
    """The emulator's knobs (reference §9.2); all can be changed at runtime."""

    v2: EndpointLimits = field(default_factory=lambda: replace(V2_LIMITS))
    batch: EndpointLimits = field(default_factory=lambda: replace(BATCH_LIMITS))
    valid_api_keys: frozenset[str] | None = None  # None = any key accepted
    min_id_length_default: int = 5
    short_id_mode: str = "reject_400"  # or "strip"
    empty_events_mode: str = "ok_200"  # or "reject_400"
    dedup_window_s: int = 604_800
    truncate_strings_at: int = 1_024
    rate_limits: bool = False  # per-id EPS throttling (§6)
    silenced_device_ids: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.short_id_mode not in SHORT_ID_MODES:
            raise ValueError(f"short_id_mode must be one of {SHORT_ID_MODES}")
        if self.empty_events_mode not in EMPTY_EVENTS_MODES:
            raise ValueError(f"empty_events_mode must be one of {EMPTY_EVENTS_MODES}")

    def limits_for(self, endpoint: str) -> EndpointLimits:
        """Limits of ``"v2"`` or ``"batch"``."""
        return self.batch if endpoint == "batch" else self.v2


class ConfigError(ValueError):
    """A config patch names an unknown key or carries an invalid value."""


def config_to_dict(config: EmulatorConfig) -> JSONDict:
    """The config as plain JSON data (sets become sorted lists)."""
    out: JSONDict = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if isinstance(value, EndpointLimits):
            value = {lf.name: getattr(value, lf.name) for lf in fields(value)}
        elif isinstance(value, frozenset):
            value = sorted(value)
        out[f.name] = value
    return out


def apply_config_patch(config: EmulatorConfig, patch: Mapping[str, Any]) -> EmulatorConfig:
    """A new config with ``patch`` applied; raises ConfigError naming the offending key."""
    changes: JSONDict = {}
    for key, value in patch.items():
        if key in ("v2", "batch"):
            changes[key] = _patch_limits(key, getattr(config, key), value)
        elif key in ("valid_api_keys", "silenced_device_ids"):
            changes[key] = _string_set(key, value, nullable=key == "valid_api_keys")
        elif key in ("min_id_length_default", "dedup_window_s", "truncate_strings_at"):
            changes[key] = _int_at_least(key, value, 0)
        elif key == "rate_limits":
            if not isinstance(value, bool):
                raise ConfigError(f"Invalid value for config key: {key} (expected a boolean)")
            changes[key] = value
        elif key in ("short_id_mode", "empty_events_mode"):
            allowed = SHORT_ID_MODES if key == "short_id_mode" else EMPTY_EVENTS_MODES
            if value not in allowed:
                raise ConfigError(f"Invalid value for config key: {key} (one of {allowed})")
            changes[key] = value
        else:
            raise ConfigError(f"Unknown config key: {key}")
    return replace(config, **changes)


def _patch_limits(name: str, limits: EndpointLimits, patch: Any) -> EndpointLimits:
    if not isinstance(patch, dict):
        raise ConfigError(f"Invalid value for config key: {name} (expected an object)")
    known = {f.name for f in fields(EndpointLimits)}
    changes = {}
    for key, value in patch.items():
        if key not in known:
            raise ConfigError(f"Unknown config key: {name}.{key}")
        changes[key] = _int_at_least(f"{name}.{key}", value, 1)
    return replace(limits, **changes)


def _int_at_least(name: str, value: Any, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"Invalid value for config key: {name} (integer >= {minimum})")
    return value


def _string_set(name: str, value: Any, *, nullable: bool) -> frozenset[str] | None:
    if value is None and nullable:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"Invalid value for config key: {name} (expected a list of strings)")
    return frozenset(value)


# ---------------------------------------------------------------------------------------------
# Pure validation
# ---------------------------------------------------------------------------------------------

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

_ID_FIELDS = ("user_id", "device_id")

# Event-level problem categories in the order of §9.3 step 6; the lowest that fired names the
# error string of the 400.
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
    """An HTTP status and JSON body, plus request facts the request log wants."""

    status: int
    body: JSONDict
    api_key: str | None = None
    event_count: int | None = None


@dataclass(slots=True)
class ValidBatch:
    """A request that passed every stateless check (§9.3 steps 1-7)."""

    api_key: str
    events: list[JSONDict]
    payload_size: int
    may_need_truncation: bool = True


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
    """Steps 1-7 of §9.3 for a ``/2/httpapi`` or ``/batch`` body.

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
        return _with_facts(error_reply(400, ERR_MISSING_FIELD, missing_field="events"), api_key)
    count = len(events)
    if config.valid_api_keys is not None and api_key not in config.valid_api_keys:
        return _with_facts(error_reply(400, f"Invalid API key: {api_key}"), api_key, count)
    if count > limits.max_events:
        return _with_facts(too_large_reply(), api_key, count)
    if not events and config.empty_events_mode == "reject_400":
        return _with_facts(error_reply(400, ERR_MISSING_FIELD, missing_field="events"), api_key, 0)

    min_len = _min_id_length(payload.get("options"), config.min_id_length_default)
    if isinstance(min_len, Reply):
        return _with_facts(min_len, api_key, count)
    rejection = check_events(events, min_len, strip_short_ids=config.short_id_mode == "strip")
    if rejection is None and config.silenced_device_ids:
        rejection = check_silenced(events, config.silenced_device_ids, limits.eps_threshold)
    if rejection is not None:
        return _with_facts(rejection, api_key, count)
    long_strings = may_contain_long_strings(body, config.truncate_strings_at)
    return ValidBatch(api_key, events, len(body), may_need_truncation=long_strings)


def may_contain_long_strings(body: bytes, limit: int) -> bool:
    """False only when no JSON string in ``body`` can decode to more than ``limit`` chars.

    A cheap scan of the raw bytes (a decoded string is never longer than its raw token) that
    spares walking every event of the usual request; escaped quotes force the slow path.
    """
    return b'\\"' in body or _long_token_pattern(limit).search(body) is not None


@functools.lru_cache(maxsize=8)
def _long_token_pattern(limit: int) -> re.Pattern[bytes]:
    return re.compile(b'"[^"]{%d}' % (limit + 1))


def _with_facts(reply: Reply, api_key: str | None, event_count: int | None = None) -> Reply:
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
    """Per-event validation (§9.3 step 6), listing every bad index; None when all are fine.

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
    """The 400 for events whose device_id is silenced (§5 shape), or None."""
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
        return _with_facts(error_reply(400, f"Invalid API key: {api_key}"), api_key)
    raw = form.get("identification")
    if not raw:
        return _with_facts(
            error_reply(400, ERR_MISSING_FIELD, missing_field="identification"), api_key
        )
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _with_facts(error_reply(400, ERR_INVALID_JSON), api_key)
    items = parsed if isinstance(parsed, list) else [parsed]
    if not items:
        return _with_facts(error_reply(400, "missing_event"), api_key, 0)
    if not all(isinstance(item, dict) for item in items):
        return _with_facts(error_reply(400, ERR_EVENT_JSON), api_key, len(items))
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
        return _with_facts(reply, api_key, len(items))
    return api_key, items


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------

REQUEST_LOG_LIMIT = 100_000
EVENT_FILTERS = ("api_key", "user_id", "device_id", "event_type", "insert_id")

# A stored event is a flat tuple of atomic values: the filterable fields (EVENT_FILTERS order)
# and the event's JSON. Millions of them then cost the garbage collector nothing, and
# GET /_emulator/events can splice the JSON without re-encoding.
StoredEvent = tuple[str, str | None, str, str, str | None, bytes]
_RAW = len(EVENT_FILTERS)
IDENTIFY_FILTERS = ("api_key", "kind", "user_id", "device_id")


def key_fingerprint(api_key: str | None) -> str | None:
    """A short, non-secret stand-in for an API key in logs."""
    return None if api_key is None else api_key[:4] + "…"


class _RateWindows:
    """Sliding windows of accepted event counts per (api_key, id kind, id). Not thread-safe."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, str], deque[tuple[float, int]]] = {}

    def count(self, key: tuple[str, str, str], now: float, window_s: float) -> int:
        """Events accepted for ``key`` within ``window_s`` before ``now`` (prunes older ones)."""
        entries = self._entries.get(key)
        if not entries:
            return 0
        horizon = now - window_s
        while entries and entries[0][0] <= horizon:
            entries.popleft()
        return sum(n for _, n in entries)

    def add(self, key: tuple[str, str, str], now: float, n: int) -> None:
        self._entries.setdefault(key, deque()).append((now, n))

    def rates(self, now: float, window_s: float) -> list[JSONDict]:
        """Current events/s of every id seen within the window."""
        out = []
        for key in list(self._entries):
            n = self.count(key, now, window_s)
            if n:
                api_key, kind, ident = key
                eps = round(n / window_s, 3)
                out.append({"api_key": key_fingerprint(api_key), kind: ident, "eps": eps})
            else:
                del self._entries[key]
        return out


class EmulatorState:
    """Everything the emulator remembers, behind one lock.

    Ingestion is split into a stateless verdict (``validate_ingest``), a throttle check and a
    commit, so fault rules (§9.4) can later hook in before or after storing, and the clock
    (``clock``, seconds since the epoch) can be swapped for a virtual one.
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self._initial_config = copy.deepcopy(config)
        self.config = copy.deepcopy(config)
        self.clock = clock
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._events: list[StoredEvent] = []
        self._identifies: list[tuple[str, JSONDict]] = []
        self._dedup: dict[tuple[str, str, str], float] = {}
        self._windows = _RateWindows()
        self._log: deque[JSONDict] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._status_counts: Counter[int] = Counter()
        self._requests = 0
        self._duplicates = 0
        self._connections = 0

    def reset(self) -> None:
        """Forget everything stored and counted, and restore the configuration given at start."""
        with self._lock:
            self._clear()
            self.config = copy.deepcopy(self._initial_config)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- ingestion ------------------------------------------------------------------------

    def ingest(self, endpoint: str, path: str, body: bytes | None, size: int) -> Reply:
        """Handle a ``/2/httpapi`` or ``/batch`` body; ``body`` is None when it was too large."""
        config = self.config
        limits = config.limits_for(endpoint)
        verdict = too_large_reply() if body is None else validate_ingest(body, limits, config)
        if isinstance(verdict, Reply):
            reply = verdict
        else:
            reply = self._accept(verdict, config, limits, daily_quota_keys=endpoint == "batch")
        self._record("POST", path, size, reply)
        return reply

    def _accept(
        self,
        batch: ValidBatch,
        config: EmulatorConfig,
        limits: EndpointLimits,
        *,
        daily_quota_keys: bool,
    ) -> Reply:
        """Steps 9 and 11: throttle or store, atomically."""
        counts = _id_counts(batch.events) if config.rate_limits else None
        with self._lock:
            now = self.clock()
            if counts is not None:
                throttled = self._throttle(batch, counts, limits, now, daily_quota_keys)
                if throttled is not None:
                    return throttled
                for key, n in counts.items():
                    self._windows.add((batch.api_key, *key), now, n)
            self._store(batch, config, now)
        body = {
            "code": 200,
            "events_ingested": len(batch.events),
            "payload_size_bytes": batch.payload_size,
            "server_upload_time": int(now * 1000),
        }
        return Reply(200, body, batch.api_key, len(batch.events))

    def _throttle(
        self,
        batch: ValidBatch,
        counts: Counter[tuple[str, str]],
        limits: EndpointLimits,
        now: float,
        daily_quota_keys: bool,
    ) -> Reply | None:
        """The §6 per-id 429, or None. Caller holds the lock."""
        window = limits.eps_window_s
        throttled: dict[str, dict[str, int]] = {"device_id": {}, "user_id": {}}
        for (kind, ident), n in counts.items():
            rate = (self._windows.count((batch.api_key, kind, ident), now, window) + n) / window
            if rate > limits.eps_threshold:
                throttled[kind][ident] = round(rate)
        devices, users = throttled["device_id"], throttled["user_id"]
        if not devices and not users:
            return None
        indexes = [
            i
            for i, event in enumerate(batch.events)
            if event.get("device_id") in devices or event.get("user_id") in users
        ]
        extra: JSONDict = {}
        if daily_quota_keys:
            extra = {"exceeded_daily_quota_users": {}, "exceeded_daily_quota_devices": {}}
        reply = error_reply(
            429,
            ERR_THROTTLED,
            eps_threshold=limits.eps_threshold,
            throttled_devices=devices,
            throttled_users=users,
            throttled_events=indexes,
            **extra,
        )
        return _with_facts(reply, batch.api_key, len(batch.events))

    def _store(self, batch: ValidBatch, config: EmulatorConfig, now: float) -> None:
        """Fill device_id, drop insert_id duplicates, truncate, store. Caller holds the lock."""
        upload_ms = int(now * 1000)
        window = config.dedup_window_s
        limit = config.truncate_strings_at
        for event in batch.events:
            device_id = event.get("device_id") or derive_device_id(event["user_id"])
            event["device_id"] = device_id
            insert_id = event.get("insert_id")
            if insert_id is not None:
                key = (batch.api_key, device_id, insert_id)
                stored_at = self._dedup.get(key)
                if stored_at is not None and now - stored_at < window:
                    self._duplicates += 1
                    continue
                self._dedup[key] = now
            if batch.may_need_truncation:
                truncate_event(event, limit)
            event["server_upload_time"] = upload_ms
            self._events.append(
                (
                    batch.api_key,
                    event.get("user_id"),
                    device_id,
                    event["event_type"],
                    event.get("insert_id"),
                    orjson.dumps(event),
                )
            )

    # -- identify, unknown routes ---------------------------------------------------------

    def identify(
        self, kind: str, method: str, path: str, form: Mapping[str, str], size: int
    ) -> Reply:
        """Handle an Identify / Group Identify request."""
        verdict = validate_identify(form, kind, self.config)
        if isinstance(verdict, Reply):
            reply = verdict
        else:
            api_key, items = verdict
            with self._lock:
                upload_ms = self.now_ms()
                for item in items:
                    record = {"kind": kind, **item, "server_upload_time": upload_ms}
                    self._identifies.append((api_key, record))
            reply = Reply(200, {"code": 200}, api_key, len(items))
        self._record(method, path, size, reply)
        return reply

    def not_found(self, method: str, path: str, size: int) -> Reply:
        reply = error_reply(404, ERR_PATH)
        self._record(method, path, size, reply)
        return reply

    def _record(self, method: str, path: str, size: int, reply: Reply) -> None:
        """Append to the request log and counters, with the API key reduced to a fingerprint."""
        entry = {
            "time": self.now_ms(),
            "method": method,
            "route": path,
            "api_key": key_fingerprint(reply.api_key),
            "body_bytes": size,
            "event_count": reply.event_count,
            "status": reply.status,
            "response": _redacted(reply),
            "fault": None,
        }
        with self._lock:
            self._log.append(entry)
            self._status_counts[reply.status] += 1
            self._requests += 1

    def connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    # -- inspection -----------------------------------------------------------------------

    def events(self, **filters: str) -> list[JSONDict]:
        """Stored events (fresh copies) in arrival order matching every filter."""
        return [orjson.loads(raw) for raw in self.raw_events(**filters)]

    def raw_events(self, **filters: str) -> list[bytes]:
        """JSON of the stored events in arrival order matching every filter (EVENT_FILTERS)."""
        wanted = [(_filter_index(name), value) for name, value in filters.items()]
        with self._lock:
            records = list(self._events)
        for index, value in wanted:
            records = [r for r in records if r[index] == value]
        return [r[_RAW] for r in records]

    def identifies(self, **filters: str) -> list[JSONDict]:
        with self._lock:
            records = list(self._identifies)
        return [dict(item) for api_key, item in records if _matches(api_key, item, filters)]

    def requests_log(self) -> list[JSONDict]:
        with self._lock:
            return [dict(entry) for entry in self._log]

    def stats(self) -> JSONDict:
        config = self.config
        with self._lock:
            now = self.clock()
            window = max(config.v2.eps_window_s, config.batch.eps_window_s)
            return {
                "requests": self._requests,
                "by_status": {str(k): v for k, v in sorted(self._status_counts.items())},
                "events_stored": len(self._events),
                "duplicates_dropped": self._duplicates,
                "identifies_stored": len(self._identifies),
                "connections_opened": self._connections,
                "current_eps": self._windows.rates(now, window),
            }

    def patch_config(self, patch: Mapping[str, Any]) -> EmulatorConfig:
        """Apply a partial config atomically; raises ConfigError."""
        with self._lock:
            self.config = apply_config_patch(self.config, patch)
            return self.config


def _id_counts(events: Iterable[JSONDict]) -> Counter[tuple[str, str]]:
    """Events per provided ``("device_id"|"user_id", id)`` in a request."""
    counts: Counter[tuple[str, str]] = Counter()
    for event in events:
        device_id = event.get("device_id")
        if device_id:
            counts["device_id", device_id] += 1
        user_id = event.get("user_id")
        if user_id:
            counts["user_id", user_id] += 1
    return counts


def _filter_index(name: str) -> int:
    try:
        return EVENT_FILTERS.index(name)
    except ValueError:
        raise ValueError(f"Unknown filter: {name}") from None


def _matches(api_key: str, record: JSONDict, filters: Mapping[str, str]) -> bool:
    for name, wanted in filters.items():
        actual = api_key if name == "api_key" else record.get(name)
        if actual != wanted:
            return False
    return True


def _redacted(reply: Reply) -> JSONDict:
    """The reply body with the API key (echoed by the invalid-key error) fingerprinted."""
    error = reply.body.get("error")
    if reply.api_key and isinstance(error, str) and reply.api_key in error:
        fingerprint = key_fingerprint(reply.api_key) or ""
        return {**reply.body, "error": error.replace(reply.api_key, fingerprint)}
    return reply.body


# ---------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------

_INGEST_ROUTES = {"/2/httpapi": "v2", "/batch": "batch"}
_IDENTIFY_ROUTES = {"/identify": "identify", "/groupidentify": "groupidentify"}
_CONTROL_PREFIX = "/_emulator/"
_CONTROL_MAX_BODY = 1_048_576
_DRAIN_CHUNK = 65_536
_POLL_INTERVAL_S = 0.05  # how quickly stop() takes effect


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: EmulatorState) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow on some machines)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, connection: Any, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down idle keep-alive connections so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to EmulatorState; holds no state of its own."""

    protocol_version = "HTTP/1.1"
    server_version = "AmplitudeEmulator/1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)
        self.server.state.connection_opened()

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: no per-request output."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing -------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except Exception:
            self.close_connection = True
            traceback.print_exc()
            with contextlib.suppress(OSError):
                self._send(error_reply(500, "Emulator internal error"))

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        state = self.server.state
        size = self._content_length()
        if size is None:
            return
        if path.startswith(_CONTROL_PREFIX):
            self._control(method, path, url.query, size)
        elif method == "POST" and path in _INGEST_ROUTES:
            endpoint = _INGEST_ROUTES[path]
            body = self._read_body(size, state.config.limits_for(endpoint).max_body_bytes)
            self._send(state.ingest(endpoint, path, body, size))
        elif method in ("GET", "POST") and path in _IDENTIFY_ROUTES:
            self._identify(method, path, url.query, size)
        else:
            self._read_body(size, 0)
            self._send(state.not_found(method, path, size))

    def _identify(self, method: str, path: str, query: str, size: int) -> None:
        state = self.server.state
        body = self._read_body(size, state.config.v2.max_body_bytes)
        if body is None:
            self._send(too_large_reply())
            return
        form = first_values(parse_qs(query, keep_blank_values=True))
        if body:
            form.update(parse_form(body, self.headers.get("Content-Type", "")))
        self._send(state.identify(_IDENTIFY_ROUTES[path], method, path, form, size))

    def _content_length(self) -> int | None:
        """The declared body length; None after answering a request we cannot frame."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send(error_reply(411, "Length Required"))
            return None
        raw = self.headers.get("Content-Length", "0")
        try:
            size = int(raw)
        except ValueError:
            size = -1
        if size < 0:
            self.close_connection = True
            self._send(error_reply(400, "Invalid Content-Length"))
            return None
        return size

    def _read_body(self, size: int, limit: int) -> bytes | None:
        """The body, or None when it exceeds ``limit`` (then it is read and discarded)."""
        if size <= limit:
            return self.rfile.read(size) if size else b""
        remaining = size
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _DRAIN_CHUNK))
            if not chunk:
                self.close_connection = True
                break
            remaining -= len(chunk)
        return None

    def _send(self, reply: Reply) -> None:
        self._send_bytes(reply.status, orjson.dumps(reply.body))

    def _send_bytes(self, status: int, payload: bytes) -> None:
        """Answer with a JSON payload, keeping the connection open unless told otherwise."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, data: Any) -> None:
        """A control-API answer (a plain JSON document, not an ingestion reply)."""
        self._send(Reply(status, data))

    # -- control API (§9.5) ---------------------------------------------------------------

    def _control(self, method: str, path: str, query: str, size: int) -> None:
        state = self.server.state
        body = self._read_body(size, _CONTROL_MAX_BODY)
        if body is None:
            self._send(too_large_reply())
            return
        name = path[len(_CONTROL_PREFIX) :]
        params = first_values(parse_qs(query, keep_blank_values=True))
        if method == "GET" and name in ("events", "identifies"):
            self._list(name, params)
        elif method == "GET" and name == "requests":
            log = state.requests_log()
            self._send_json(200, {"requests": log, "count": len(log)})
        elif method == "GET" and name == "stats":
            self._send_json(200, state.stats())
        elif method == "GET" and name == "config":
            self._send_json(200, config_to_dict(state.config))
        elif method == "PATCH" and name == "config":
            self._patch_config(body)
        elif method == "POST" and name == "reset":
            state.reset()
            self._send_json(200, {"reset": True})
        else:
            self._send(error_reply(404, ERR_PATH))

    def _list(self, name: str, params: dict[str, str]) -> None:
        allowed = EVENT_FILTERS if name == "events" else IDENTIFY_FILTERS
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            self._send(error_reply(400, f"Unknown filter: {unknown[0]}"))
            return
        state = self.server.state
        if name == "identifies":
            items = state.identifies(**params)
            self._send_json(200, {name: items, "count": len(items)})
            return
        raws = state.raw_events(**params)
        payload = b'{"events":[%b],"count":%d}' % (b",".join(raws), len(raws))
        self._send_bytes(200, payload)

    def _patch_config(self, body: bytes) -> None:
        try:
            patch = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._send(error_reply(400, ERR_INVALID_JSON))
            return
        if not isinstance(patch, dict):
            self._send(error_reply(400, "Config patch must be a JSON object"))
            return
        try:
            config = self.server.state.patch_config(patch)
        except (ConfigError, ValueError) as exc:
            self._send(error_reply(400, str(exc)))
            return
        self._send_json(200, config_to_dict(config))


# ---------------------------------------------------------------------------------------------
# Public server
# ---------------------------------------------------------------------------------------------


class Emulator:
    """The emulator server: ``with Emulator() as amp: httpx.post(amp.url + "/batch", ...)``.

    The socket is bound on construction (``port=0`` picks a free port), so ``url`` is known
    before ``start``. The emulator works on a copy of ``config``.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.state = EmulatorState(config if config is not None else EmulatorConfig())
        self._server = _Server((host, port), self.state)
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def config(self) -> EmulatorConfig:
        """The current config (replaced, never mutated, by PATCH /_emulator/config)."""
        return self.state.config

    def start(self) -> Self:
        """Serve in a daemon thread and return self."""
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name="amplitude-emulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop`` (from another thread) or Ctrl-C."""
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=_POLL_INTERVAL_S)
        finally:
            self._serving = False
            self._close()

    def stop(self) -> None:
        """Stop serving, drop open connections and release the port. Idempotent."""
        if self._serving:
            self._server.shutdown()
            self._serving = False
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.close_connections()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def events(self, **filters: str) -> list[dict]:
        """Stored events (copies), optionally filtered like ``GET /_emulator/events``."""
        return self.state.events(**filters)

    def requests_log(self) -> list[dict]:
        """The request log (copies), API keys fingerprinted."""
        return self.state.requests_log()

    def reset(self) -> None:
        """Same as ``POST /_emulator/reset``: clear all state, restore the initial config."""
        self.state.reset()
