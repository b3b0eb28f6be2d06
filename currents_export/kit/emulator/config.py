"""The emulator's configuration and its runtime patching."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

JSONDict = dict[str, Any]


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

DEFAULT_DAILY_QUOTA = 500_000  # events per rolling 24 h per id, when the quota is turned on
DEFAULT_PROJECT_EPS_CAP = 50_000  # events/s per project, when the cap is turned on
DEFAULT_PROJECT_RPS_CAP = 100  # requests/s per project (Amplitude Starter plan), when turned on
MAX_LATENCY_MS = 60_000  # the longest latency_ms accepted
DEFAULT_DELETION_RPS = 1  # User Privacy API: requests per second per project
DEFAULT_DELETION_IN_FLIGHT = 8  # User Privacy API: requests in flight per project
REDACTED = "<redacted>"  # what the config shows instead of a secret key


@dataclass
class EmulatorConfig:
    """The emulator's knobs; all can be changed at runtime.

    ``daily_quota``, ``project_eps_cap`` and ``project_rps_cap`` are off when None; a PATCH may
    turn them on with ``true`` (their documented defaults: ``DEFAULT_DAILY_QUOTA``,
    ``DEFAULT_PROJECT_EPS_CAP``, ``DEFAULT_PROJECT_RPS_CAP``) or a number, and off with
    ``false`` or ``null``.

    The project caps count per ``api_key`` over a sliding 1-second window, ``/2/httpapi`` and
    ``/batch`` together: ``project_eps_cap`` the events of accepted requests,
    ``project_rps_cap`` the accepted requests (whatever their size, empty ones included). A
    request over either cap gets a 429 ``{"code": 429, "error": "Too many requests"}`` without
    indexes, stores nothing and counts in neither window. ``project_eps_cap=1_000`` with
    ``project_rps_cap=100`` emulates a project on Amplitude's Starter plan.

    ``latency_ms`` delays every answer of an Amplitude endpoint (``/2/httpapi``, ``/batch``,
    ``/identify``, ``/groupidentify``; not the control API) by that many milliseconds, like a
    round trip over the internet. The request is handled (and logged) on arrival; only its
    answer waits, in that connection's handler thread, so concurrent requests overlap. The
    User Privacy API (``/api/2/deletions/users``) waits too.

    User Privacy API (HTTP Basic auth, username = API key, password = secret key):
    ``secret_keys`` maps each API key to its secret key; None (the default) accepts any
    non-empty secret for any key, as ``valid_api_keys=None`` accepts any key (a key outside
    ``valid_api_keys`` is refused either way). It is left out of the repr and shown as
    ``"<redacted>"`` by ``config_to_dict``. ``deletion_requests_per_second`` (None = no limit)
    and ``deletion_max_in_flight`` limit each project's requests on that endpoint (429 beyond).

    ``ingested_counts_repeats``: what a 200's ``events_ingested`` counts (Amplitude does not
    document it). True (the default): every validated event of the request, ``insert_id``
    repeats within ``dedup_window_s`` included. False: only the events newly stored, so a
    request that repeats events already stored gets a 200 with fewer events ingested than
    sent (0 when it repeats them all), as a real Amplitude might answer.
    """

    v2: EndpointLimits = field(default_factory=lambda: replace(V2_LIMITS))
    batch: EndpointLimits = field(default_factory=lambda: replace(BATCH_LIMITS))
    valid_api_keys: frozenset[str] | None = None  # None = any key accepted
    min_id_length_default: int = 5
    short_id_mode: str = "reject_400"  # or "strip"
    empty_events_mode: str = "ok_200"  # or "reject_400"
    dedup_window_s: int = 604_800
    truncate_strings_at: int = 1_024
    rate_limits: bool = False  # per-id EPS throttling (429 naming the throttled ids)
    silenced_device_ids: frozenset[str] = frozenset()
    daily_quota: int | None = None  # events per rolling 24 h per (api_key, id)
    project_eps_cap: int | None = None  # events/s per api_key, both endpoints together
    project_rps_cap: int | None = None  # requests/s per api_key, both endpoints together
    latency_ms: int = 0  # before every ingestion/identify/deletion answer, 0..MAX_LATENCY_MS
    secret_keys: dict[str, str] | None = field(default=None, repr=False)  # None = any secret
    deletion_requests_per_second: int | None = DEFAULT_DELETION_RPS  # per api_key; None = off
    deletion_max_in_flight: int = DEFAULT_DELETION_IN_FLIGHT  # per api_key
    ingested_counts_repeats: bool = True  # False: events_ingested counts new events only

    def __post_init__(self) -> None:
        if self.short_id_mode not in SHORT_ID_MODES:
            raise ValueError(f"short_id_mode must be one of {SHORT_ID_MODES}")
        if self.empty_events_mode not in EMPTY_EVENTS_MODES:
            raise ValueError(f"empty_events_mode must be one of {EMPTY_EVENTS_MODES}")
        for name in ("daily_quota", "project_eps_cap", "project_rps_cap"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be None or a positive integer")
        latency = self.latency_ms
        if type(latency) is not int or not 0 <= latency <= MAX_LATENCY_MS:
            raise ValueError(f"latency_ms must be an integer from 0 to {MAX_LATENCY_MS}")
        if self.secret_keys is not None:
            self.secret_keys = _secret_map("secret_keys", self.secret_keys, ValueError)
        rps = self.deletion_requests_per_second
        if rps is not None and (type(rps) is not int or rps < 1):
            raise ValueError("deletion_requests_per_second must be None or a positive integer")
        in_flight = self.deletion_max_in_flight
        if type(in_flight) is not int or in_flight < 1:
            raise ValueError("deletion_max_in_flight must be a positive integer")
        if not isinstance(self.ingested_counts_repeats, bool):
            raise ValueError("ingested_counts_repeats must be a boolean")

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
        elif f.name == "secret_keys" and value is not None:
            value = dict.fromkeys(sorted(value), REDACTED)
        out[f.name] = value
    return out


_SWITCHED_LIMITS = {
    "daily_quota": DEFAULT_DAILY_QUOTA,
    "project_eps_cap": DEFAULT_PROJECT_EPS_CAP,
    "project_rps_cap": DEFAULT_PROJECT_RPS_CAP,
}


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
        elif key == "latency_ms":
            changes[key] = _int_at_least(key, value, 0)
            if value > MAX_LATENCY_MS:
                raise ConfigError(
                    f"Invalid value for config key: {key} (integer <= {MAX_LATENCY_MS})"
                )
        elif key in ("rate_limits", "ingested_counts_repeats"):
            if not isinstance(value, bool):
                raise ConfigError(f"Invalid value for config key: {key} (expected a boolean)")
            changes[key] = value
        elif key in _SWITCHED_LIMITS:
            changes[key] = _optional_limit(key, value, _SWITCHED_LIMITS[key])
        elif key == "secret_keys":
            changes[key] = None if value is None else _secret_map(key, value, ConfigError)
        elif key == "deletion_requests_per_second":
            changes[key] = None if value is None else _int_at_least(key, value, 1)
        elif key == "deletion_max_in_flight":
            changes[key] = _int_at_least(key, value, 1)
        elif key in ("short_id_mode", "empty_events_mode"):
            allowed = SHORT_ID_MODES if key == "short_id_mode" else EMPTY_EVENTS_MODES
            if value not in allowed:
                raise ConfigError(f"Invalid value for config key: {key} (one of {allowed})")
            changes[key] = value
        else:
            raise ConfigError(f"Unknown config key: {key}")
    return replace(config, **changes)


def _optional_limit(name: str, value: Any, default: int) -> int | None:
    """``null``/``false`` → off, ``true`` → the default, a positive integer → itself."""
    if value is None or value is False:
        return None
    if value is True:
        return default
    return _int_at_least(name, value, 1)


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


def _secret_map(name: str, value: object, error: type[ValueError]) -> dict[str, str]:
    """A copy of an api_key → secret key mapping of non-empty strings (the message never
    shows a value: secrets stay out of errors and logs)."""
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise error(
            f"Invalid value for config key: {name} "
            "(expected an object of API key to secret key, non-empty strings)"
        )
    return {str(k): str(v) for k, v in value.items()}
