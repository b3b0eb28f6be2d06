"""Fault injection: rules, their pure matching, and the replies they make.

A rule is a JSON object. Matching keys (all optional; every one given must match):

* ``route`` — ``"/2/httpapi"`` or ``"/batch"``;
* ``ids`` — user/device ids; matches when any event of the request carries one of them;
* ``after`` — n: skip the first n requests that match the keys above;
* ``every`` — k: then match every k-th of them (the k-th, 2k-th, … after the skipped ones);
* ``probability`` — p in [0, 1]: then match with that probability (the seeded RNG).

``times`` — N: the rule fires at most N times, then it is spent (absent = unlimited).

``action`` — one of:

* ``"status"`` with ``status`` 500, 502 or 504 (store first, then answer the status: the
  ambiguous case), 503, 403, 413 or 429 (answer without storing). 429 answers the per-id
  shape when the rule has ``ids`` (unless ``"indexes": false``), the project-level body
  otherwise. ``body``: ``"json"`` (default), ``"html"`` or ``"empty"``.
* ``"reset"`` — close the connection without a response (a TCP reset; ``"graceful": true``
  closes it cleanly instead); ``"store": true`` stores the events first.
* ``"delay"`` with ``delay_s`` (at most ``MAX_DELAY_S``) — wait, then handle normally.
* ``"not_amplitude"`` — a 200 that is not Amplitude: an HTML page (``text/html``, e.g. a
  captive portal or a proxy's sign-in page), nothing stored.
* ``"wrong_count"`` — an Amplitude-shaped 200 (``code`` 200, ``payload_size_bytes``,
  ``server_upload_time``) whose ``events_ingested`` is not the number of events sent, nothing
  stored: ``events_ingested`` — that number (default 0); or ``ingested_offset`` — a non-zero
  integer added to the number of events sent (``-1``: n-1), floored at 0. A count above the
  events sent is not Amplitude's answer (the client retries it); one below reads as
  Amplitude's own answer for repeats it dropped (the client counts them delivered), so a
  ``wrong_count`` below simulates a server that lies, not a failure it can see.

Every live rule sees every ingestion request, so each rule's ``after``/``every`` counting
and its draws from the RNG do not depend on the other rules; among the rules that match, the
first in order fires (and only it uses up one of its ``times``).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

import orjson

from .config import JSONDict
from .validation import ERR_PROJECT_THROTTLED, ERR_THROTTLED, ERR_TOO_LARGE, Reply, error_reply

FAULT_ROUTES = ("/2/httpapi", "/batch")
FAULT_ACTIONS = ("status", "reset", "delay", "not_amplitude", "wrong_count")
FAULT_BODIES = ("json", "html", "empty")
FAULT_STATUS_ERRORS = {
    403: "Forbidden",
    413: ERR_TOO_LARGE,
    429: ERR_PROJECT_THROTTLED,
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
STORE_FIRST_STATUSES = frozenset({500, 502, 504})
MAX_DELAY_S = 30.0

_RULE_KEYS = (
    "route", "ids", "after", "every", "probability", "times",
    "action", "status", "body", "indexes", "store", "graceful", "delay_s",
    "events_ingested", "ingested_offset",
)  # fmt: skip
_KEYS_OF_ACTION: dict[str, set[str]] = {
    "status": {"status", "body", "indexes"},
    "reset": {"store", "graceful"},
    "delay": {"delay_s"},
    "not_amplitude": set(),
    "wrong_count": {"events_ingested", "ingested_offset"},
}


class FaultRuleError(ValueError):
    """A fault rule (or the rules document) is malformed."""


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One validated fault rule; see the module docstring for the meaning of each key."""

    action: str
    route: str | None = None
    ids: frozenset[str] | None = None
    after: int = 0
    every: int | None = None
    probability: float | None = None
    times: int | None = None
    status: int | None = None
    body: str = "json"
    indexes: bool = True
    store: bool = False
    graceful: bool = False
    delay_s: float = 0.0
    events_ingested: int | None = None
    ingested_offset: int | None = None

    @property
    def stores_first(self) -> bool:
        """Whether the request is handled (and its events stored) before the fault."""
        if self.action == "status":
            return self.status in STORE_FIRST_STATUSES
        return self.action == "delay" or (self.action == "reset" and self.store)

    @classmethod
    def from_dict(cls, data: Any, index: int = 0) -> FaultRule:
        """Validate a rule object; raises FaultRuleError naming the rule and the key."""

        def fail(message: str) -> FaultRuleError:
            return FaultRuleError(f"Invalid fault rule {index}: {message}")

        if not isinstance(data, dict):
            raise fail("expected an object")
        unknown = sorted(set(data) - set(_RULE_KEYS))
        if unknown:
            raise fail(f"unknown key {unknown[0]!r}")
        action = data.get("action")
        if action not in FAULT_ACTIONS:
            raise fail(f"'action' must be one of {list(FAULT_ACTIONS)}")
        foreign = sorted(
            key
            for key in data
            if key in set().union(*_KEYS_OF_ACTION.values()) - _KEYS_OF_ACTION[action]
        )
        if foreign:
            raise fail(f"key {foreign[0]!r} does not apply to action {action!r}")
        values: JSONDict = {"action": action}
        for key, value in data.items():
            if key != "action":
                values[key] = _checked(key, value, fail)
        if action == "status" and "status" not in values:
            raise fail(f"'status' is required, one of {sorted(FAULT_STATUS_ERRORS)}")
        if action == "delay" and "delay_s" not in values:
            raise fail("'delay_s' is required")
        if "events_ingested" in values and "ingested_offset" in values:
            raise fail("'ingested_offset' cannot be given with 'events_ingested'")
        return cls(**values)

    def to_dict(self) -> JSONDict:
        """The rule as JSON data: the action and every key that differs from its default."""
        out: JSONDict = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "action" or value != f.default:
                out[f.name] = sorted(value) if isinstance(value, frozenset) else value
        return out


def _checked(key: str, value: Any, fail: Any) -> Any:
    """The validated value of one rule key (ids become a frozenset)."""
    if key == "route":
        if value not in FAULT_ROUTES:
            raise fail(f"'route' must be one of {list(FAULT_ROUTES)}")
        return value
    if key == "ids":
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise fail("'ids' must be a non-empty list of non-empty strings")
        return frozenset(value)
    if key == "ingested_offset":
        if type(value) is not int or value == 0:
            raise fail("'ingested_offset' must be a non-zero integer")
        return value
    if key in ("after", "every", "times", "events_ingested"):
        minimum = 1 if key == "every" else 0
        if type(value) is not int or value < minimum:
            raise fail(f"{key!r} must be an integer >= {minimum}")
        return value
    if key in ("probability", "delay_s"):
        top = 1.0 if key == "probability" else MAX_DELAY_S
        if type(value) not in (int, float) or not 0 <= value <= top:
            raise fail(f"{key!r} must be a number between 0 and {top:g}")
        return float(value)
    if key == "status":
        if type(value) is not int or value not in FAULT_STATUS_ERRORS:
            raise fail(f"'status' must be one of {sorted(FAULT_STATUS_ERRORS)}")
        return value
    if key == "body":
        if value not in FAULT_BODIES:
            raise fail(f"'body' must be one of {list(FAULT_BODIES)}")
        return value
    if type(value) is not bool:  # indexes, store, graceful
        raise fail(f"{key!r} must be a boolean")
    return value


def parse_fault_rules(rules: Any) -> tuple[FaultRule, ...]:
    """Validate a list of rule objects; raises FaultRuleError."""
    if not isinstance(rules, list):
        raise FaultRuleError("'rules' must be a list of rule objects")
    return tuple(FaultRule.from_dict(rule, i) for i, rule in enumerate(rules))


def parse_fault_document(document: Any) -> tuple[tuple[FaultRule, ...], int]:
    """``{"seed": int, "rules": [...]}`` → (rules, seed); the seed defaults to 0."""
    if not isinstance(document, dict):
        raise FaultRuleError("Faults must be a JSON object with 'rules' (and 'seed')")
    unknown = sorted(set(document) - {"rules", "seed"})
    if unknown:
        raise FaultRuleError(f"Unknown faults key: {unknown[0]}")
    seed = document.get("seed", 0)
    if type(seed) is not int:
        raise FaultRuleError("'seed' must be an integer")
    return parse_fault_rules(document.get("rules")), seed


# ---------------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------------


class RequestFacts:
    """What rules match on: the route, and the body's ids (parsed only when asked for).

    Tests may give ``ids`` directly instead of a body.
    """

    def __init__(
        self, route: str, body: bytes | None = None, *, ids: Iterable[str] | None = None
    ) -> None:
        self.route = route
        self._body = body
        if ids is not None:
            self.__dict__["ids"] = frozenset(ids)

    @functools.cached_property
    def payload(self) -> JSONDict | None:
        """The parsed request object, or None when the body is absent or not a JSON object."""
        if not self._body:
            return None
        try:
            payload = orjson.loads(self._body)
        except orjson.JSONDecodeError:
            return None
        return payload if isinstance(payload, dict) else None

    @property
    def events(self) -> list[Any] | None:
        events = self.payload.get("events") if self.payload is not None else None
        return events if isinstance(events, list) else None

    @property
    def api_key(self) -> str | None:
        api_key = self.payload.get("api_key") if self.payload is not None else None
        return api_key if isinstance(api_key, str) and api_key else None

    @functools.cached_property
    def ids(self) -> frozenset[str]:
        """Every user_id and device_id (strings) carried by the request's events."""
        found: set[str] = set()
        for event in self.events or ():
            if isinstance(event, dict):
                for name in ("user_id", "device_id"):
                    value = event.get(name)
                    if isinstance(value, str) and value:
                        found.add(value)
        return frozenset(found)


@dataclass(slots=True)
class RuleProgress:
    """How many requests a rule has seen (matched route and ids) and how often it fired."""

    seen: int = 0
    fired: int = 0

    def remaining(self, rule: FaultRule) -> int | None:
        return None if rule.times is None else max(rule.times - self.fired, 0)


def select_fault(
    rules: Sequence[FaultRule],
    progress: Sequence[RuleProgress],
    facts: RequestFacts,
    rng: random.Random,
) -> int | None:
    """The index of the rule that fires for this request, or None.

    Pure but for the ``progress`` records and the ``rng`` it is handed, which it advances:
    every rule that is not spent and whose route and ids match counts the request (``seen``)
    and, once past ``after`` and on its ``every`` beat, draws from ``rng`` if it has a
    ``probability``. The first rule that matched fires and has its ``fired`` incremented.
    """
    chosen: int | None = None
    for index, rule in enumerate(rules):
        state = progress[index]
        if rule.times is not None and state.fired >= rule.times:
            continue
        if rule.route is not None and rule.route != facts.route:
            continue
        if rule.ids is not None and rule.ids.isdisjoint(facts.ids):
            continue
        state.seen += 1
        beat = state.seen - rule.after
        if beat <= 0:
            continue
        if rule.every is not None and beat % rule.every:
            continue
        if rule.probability is not None and not rng.random() < rule.probability:
            continue
        if chosen is None:
            chosen = index
    if chosen is not None:
        progress[chosen].fired += 1
    return chosen


# ---------------------------------------------------------------------------------------------
# Replies
# ---------------------------------------------------------------------------------------------


def fault_reply(
    rule: FaultRule, facts: RequestFacts, eps_threshold: int, *, batch_shape: bool
) -> Reply:
    """The answer of a ``"status"`` rule (``batch_shape`` adds the daily-quota maps to 429s)."""
    status = rule.status
    if status is None:
        raise ValueError(f"A {rule.action!r} fault has no status reply")
    error = FAULT_STATUS_ERRORS[status]
    if rule.body == "html":
        page = (
            f"<html><head><title>{status} {error}</title></head><body>"
            f"<center><h1>{status} {error}</h1></center><hr><center>nginx</center>"
            "</body></html>\n"
        )
        return Reply(status, {}, raw=page.encode(), content_type="text/html")
    if rule.body == "empty":
        return Reply(status, {}, raw=b"")
    if status == 429 and rule.ids is not None and rule.indexes:
        return _throttled_ids_reply(rule.ids, facts, eps_threshold, batch_shape)
    return error_reply(status, error)


NOT_AMPLITUDE_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in to the network</title></head><body>"
    b"<h1>Welcome</h1><p>Please accept the terms of use to continue.</p>"
    b'<form method="post" action="/login"><button>Connect</button></form>'
    b"</body></html>\n"
)


def fake_success_reply(
    rule: FaultRule, facts: RequestFacts, *, payload_size: int, now_ms: int
) -> Reply:
    """The 200 of a ``"not_amplitude"`` or ``"wrong_count"`` rule (nothing is stored).

    ``"not_amplitude"``: an HTML page. ``"wrong_count"``: Amplitude's 200 body, but
    ``events_ingested`` is the rule's ``events_ingested`` (default 0), or the number of events
    sent (0 when the body has no ``events`` list) plus ``ingested_offset``, floored at 0.
    """
    if rule.action == "not_amplitude":
        return Reply(200, {}, raw=NOT_AMPLITUDE_PAGE, content_type="text/html")
    if rule.action != "wrong_count":
        raise ValueError(f"A {rule.action!r} fault has no 200 reply")
    if rule.ingested_offset is not None:
        sent = len(facts.events or ())
        ingested = max(sent + rule.ingested_offset, 0)
    else:
        ingested = rule.events_ingested or 0
    body = {
        "code": 200,
        "events_ingested": ingested,
        "payload_size_bytes": payload_size,
        "server_upload_time": now_ms,
    }
    return Reply(200, body)


def _throttled_ids_reply(
    ids: frozenset[str], facts: RequestFacts, eps_threshold: int, batch_shape: bool
) -> Reply:
    """Amplitude's per-id 429 (``throttled_users``/``throttled_devices``) for the rule's ids
    found in the request.

    The reported rate of each id is ``eps_threshold + 1`` (any value over the threshold).
    """
    rate = eps_threshold + 1
    users: dict[str, int] = {}
    devices: dict[str, int] = {}
    indexes: list[int] = []
    for index, event in enumerate(facts.events or ()):
        if not isinstance(event, dict):
            continue
        user_id, device_id = event.get("user_id"), event.get("device_id")
        hit = False
        if isinstance(user_id, str) and user_id in ids:
            users[user_id] = rate
            hit = True
        if isinstance(device_id, str) and device_id in ids:
            devices[device_id] = rate
            hit = True
        if hit:
            indexes.append(index)
    extra: JSONDict = {}
    if batch_shape:
        extra = {"exceeded_daily_quota_users": {}, "exceeded_daily_quota_devices": {}}
    return error_reply(
        429,
        ERR_THROTTLED,
        eps_threshold=eps_threshold,
        throttled_devices=devices,
        throttled_users=users,
        throttled_events=indexes,
        **extra,
    )


def fault_record(index: int, rule: FaultRule) -> JSONDict:
    """The ``fault`` entry of the request log."""
    return {"rule": index, "action": rule.action, "status": rule.status}
