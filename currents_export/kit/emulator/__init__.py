"""A local emulator of Amplitude's ingestion endpoints (HTTP API v2, Batch, Identify) and
of its User Privacy API v1 (deletions).

A real HTTP/1.1 server on loopback, built on the standard library, that answers like Amplitude
closely enough to test the upload client: the same limits, check order and response bodies
as Amplitude's public API documentation (https://amplitude.com/docs/apis/analytics/http-v2,
https://amplitude.com/docs/apis/analytics/batch-event-upload), insert_id deduplication,
optional per-id throttling, daily quota and project caps (events/s ``project_eps_cap``,
requests/s ``project_rps_cap``), a virtual clock, and seeded fault injection.

User Privacy API v1 (HTTP Basic: API key, secret key; see ``deletions`` for the details):
``POST /api/2/deletions/users`` schedules ``user_ids``/``amplitude_ids`` (at most 100, known
= events stored for them in that project; ``ignore_invalid_id``) into the project's job of
the day ``today + 10``; ``GET /api/2/deletions/users?start_day=&end_day=`` lists the jobs (at
most 6 months); ``DELETE /api/2/deletions/users/{AMPLITUDE_ID}/{JOB_DAY}`` takes an id out of
a staging job. Each project may make ``deletion_requests_per_second`` requests (default 1)
with at most ``deletion_max_in_flight`` (8) in flight, else 429; ``secret_keys`` (api key →
secret; default any secret) is checked. Amplitude ids are given to users (user_id, else
device_id) in order of their first stored event, from 100000001 (``Emulator.amplitude_id``).
``GET /_emulator/deletions`` → ``{"jobs": [...], "requests": [...]}`` (also
``Emulator.deletion_jobs()`` / ``deletion_requests()``); ``reset`` clears them. Fault rules
do not apply to these routes.

What it stored: ``GET /_emulator/events`` (filters, ``limit``/``offset`` pages of at most
10,000, 1,000 by default, each naming the ``next`` one and the ``total``) and
``GET /_emulator/counts`` (events per ``event_type``, ``user_id`` or ``device_id``); the
``server`` module's docstring has their parameters and answers.

Modules, from pure to stateful:

* ``config`` — the knobs and their runtime patching;
* ``validation`` — pure: request bytes + config → a ``Reply`` (rejected) or the events that
  may be stored;
* ``windows`` — sliding windows and hourly buckets of accepted events;
* ``deletions`` — the User Privacy API: Basic auth, request parsing, days, the jobs;
* ``faults`` — fault rules, their pure matching (``select_fault``) and replies;
* ``state`` — ``EmulatorState``: what the emulator remembers, guarded by one lock, and its
  clock;
* ``server`` — ``Emulator``: HTTP routing and server lifecycle only.
"""

from .config import (
    BATCH_LIMITS,
    DEFAULT_DAILY_QUOTA,
    DEFAULT_PROJECT_EPS_CAP,
    DEFAULT_PROJECT_RPS_CAP,
    EMPTY_EVENTS_MODES,
    SHORT_ID_MODES,
    V2_LIMITS,
    ConfigError,
    EmulatorConfig,
    EndpointLimits,
    apply_config_patch,
    config_to_dict,
)
from .deletions import (
    DELETION_DELAY_DAYS,
    DELETIONS_PATH,
    MAX_DELETION_IDS,
    DeletionJob,
    DeletionJobs,
    DeletionRequest,
    ScheduledId,
    check_basic_auth,
    parse_day_range,
    parse_deletion_request,
)
from .faults import (
    FAULT_ACTIONS,
    FAULT_BODIES,
    FAULT_ROUTES,
    FAULT_STATUS_ERRORS,
    MAX_DELAY_S,
    STORE_FIRST_STATUSES,
    FaultRule,
    FaultRuleError,
    RequestFacts,
    RuleProgress,
    fake_success_reply,
    fault_reply,
    parse_fault_document,
    parse_fault_rules,
    select_fault,
)
from .server import Emulator
from .state import (
    COUNT_KEYS,
    EVENT_FILTERS,
    IDENTIFY_FILTERS,
    REQUEST_LOG_LIMIT,
    EmulatorState,
    FiredFault,
    key_fingerprint,
)
from .validation import (
    BLOCKED_ID_VALUES,
    ERR_EVENT_JSON,
    ERR_ID_LENGTH,
    ERR_INVALID_FIELDS,
    ERR_INVALID_JSON,
    ERR_MISSING_BODY,
    ERR_MISSING_FIELD,
    ERR_PATH,
    ERR_PROJECT_THROTTLED,
    ERR_SILENCED,
    ERR_THROTTLED,
    ERR_TOO_LARGE,
    Reply,
    ValidBatch,
    check_events,
    check_silenced,
    derive_device_id,
    error_reply,
    first_values,
    may_contain_long_strings,
    parse_form,
    too_large_reply,
    truncate_event,
    truncate_strings,
    validate_identify,
    validate_ingest,
)
from .windows import BucketCounts, SlidingWindows

__all__ = [
    "BATCH_LIMITS",
    "BLOCKED_ID_VALUES",
    "COUNT_KEYS",
    "DEFAULT_DAILY_QUOTA",
    "DEFAULT_PROJECT_EPS_CAP",
    "DEFAULT_PROJECT_RPS_CAP",
    "DELETIONS_PATH",
    "DELETION_DELAY_DAYS",
    "EMPTY_EVENTS_MODES",
    "ERR_EVENT_JSON",
    "ERR_ID_LENGTH",
    "ERR_INVALID_FIELDS",
    "ERR_INVALID_JSON",
    "ERR_MISSING_BODY",
    "ERR_MISSING_FIELD",
    "ERR_PATH",
    "ERR_PROJECT_THROTTLED",
    "ERR_SILENCED",
    "ERR_THROTTLED",
    "ERR_TOO_LARGE",
    "EVENT_FILTERS",
    "FAULT_ACTIONS",
    "FAULT_BODIES",
    "FAULT_ROUTES",
    "FAULT_STATUS_ERRORS",
    "IDENTIFY_FILTERS",
    "MAX_DELAY_S",
    "MAX_DELETION_IDS",
    "REQUEST_LOG_LIMIT",
    "SHORT_ID_MODES",
    "STORE_FIRST_STATUSES",
    "V2_LIMITS",
    "BucketCounts",
    "ConfigError",
    "DeletionJob",
    "DeletionJobs",
    "DeletionRequest",
    "Emulator",
    "EmulatorConfig",
    "EmulatorState",
    "EndpointLimits",
    "FaultRule",
    "FaultRuleError",
    "FiredFault",
    "Reply",
    "RequestFacts",
    "RuleProgress",
    "ScheduledId",
    "SlidingWindows",
    "ValidBatch",
    "apply_config_patch",
    "check_basic_auth",
    "check_events",
    "check_silenced",
    "config_to_dict",
    "derive_device_id",
    "error_reply",
    "fake_success_reply",
    "fault_reply",
    "first_values",
    "key_fingerprint",
    "may_contain_long_strings",
    "parse_day_range",
    "parse_deletion_request",
    "parse_fault_document",
    "parse_fault_rules",
    "parse_form",
    "select_fault",
    "too_large_reply",
    "truncate_event",
    "truncate_strings",
    "validate_identify",
    "validate_ingest",
]
