"""What the emulator remembers, behind one lock: events, dedup index, rate and quota windows,
fault rules, request log, counters, and the clock they all read.

Ingestion = an optional fault pick, the stateless verdict (``validate_ingest``), then under
the lock the stateful checks (daily quota, per-id rates, project caps) and the commit.

Per-id windows (daily quota, rates) are keyed by ``(api_key, "device_id"|"user_id", id)`` with
the ids **as sent**: an event without a device_id counts only against its user_id (the device
id derived from the user_id at storage maps one-to-one to that user, so counting it as well
would add nothing), and throttled/exceeded maps only ever name ids the client sent. Counted
events are every validated event of an accepted request, insert_id duplicates included (they
are "ingested" in the reply too, unless ``ingested_counts_repeats`` is off: then the reply's
``events_ingested`` counts only the events newly stored). A window only fills while its
check is turned on.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from .config import EmulatorConfig, EndpointLimits, JSONDict, apply_config_patch
from .deletions import (
    DELETIONS_PATH,
    ERR_IN_FLIGHT,
    ERR_INVALID_IDS,
    ERR_JOB_PATH,
    ERR_RATE,
    DeletionJobs,
    DeletionRequest,
    ScheduledId,
    check_basic_auth,
    day_of,
    parse_day_range,
    parse_deletion_request,
    parse_job_path,
)
from .faults import (
    FaultRule,
    RequestFacts,
    RuleProgress,
    fake_success_reply,
    fault_record,
    fault_reply,
    select_fault,
)
from .validation import (
    ERR_PATH,
    ERR_PROJECT_THROTTLED,
    ERR_THROTTLED,
    Reply,
    ValidBatch,
    derive_device_id,
    error_reply,
    first_values,
    too_large_reply,
    truncate_event,
    validate_identify,
    validate_ingest,
    with_facts,
)
from .windows import BucketCounts, SlidingWindows

REQUEST_LOG_LIMIT = 100_000
EVENT_FILTERS = ("api_key", "user_id", "device_id", "event_type", "insert_id")
IDENTIFY_FILTERS = ("api_key", "kind", "user_id", "device_id")
COUNT_KEYS = ("event_type", "user_id", "device_id")  # what GET /_emulator/counts counts by

# A stored event is a flat tuple of atomic values: the filterable fields (EVENT_FILTERS order),
# then where the event is: its request (an index into the stored request bodies) and its
# position in that request. Millions of them then cost the garbage collector nothing, and
# ingestion never re-encodes an event: GET /_emulator/events rebuilds the stored form.
StoredEvent = tuple[str, str | None, str, str, str | None, int, int]
_BATCH = len(EVENT_FILTERS)


@dataclass(frozen=True, slots=True)
class _StoredBatch:
    """One accepted request: its body and what storage adds to each of its events."""

    body: bytes
    upload_ms: int
    truncate_at: int | None  # string limit to apply, None when no string can be too long

    def events(self) -> list[JSONDict]:
        events: list[JSONDict] = orjson.loads(self.body)["events"]
        return events

    def stored_form(self, event: JSONDict) -> bytes:
        """The event as Amplitude would keep it: device_id filled, strings cut, upload time."""
        event["device_id"] = event.get("device_id") or derive_device_id(event["user_id"])
        if self.truncate_at is not None:
            truncate_event(event, self.truncate_at)
        event["server_upload_time"] = self.upload_ms
        return orjson.dumps(event)

QUOTA_BUCKET_S = 3_600  # the daily quota counts in 1-hour buckets …
QUOTA_BUCKETS = 24  # … over the current hour and the 23 before it
PROJECT_WINDOW_S = 1.0  # the project caps (events/s, requests/s) are sliding 1-second windows
DELETION_WINDOW_S = 1.0  # deletion_requests_per_second counts over a sliding 1-second window
FIRST_AMPLITUDE_ID = 100_000_001  # amplitude ids are given from here, in order of first event

IdKey = tuple[str, str]  # ("device_id" | "user_id", id)


def key_fingerprint(api_key: str | None) -> str | None:
    """A short, non-secret stand-in for an API key in logs."""
    return None if api_key is None else api_key[:4] + "…"


@dataclass(frozen=True, slots=True)
class FiredFault:
    """A fault rule that fired for one request, with what it knows of that request."""

    index: int
    rule: FaultRule
    facts: RequestFacts


class EmulatorState:
    """Everything the emulator remembers, behind one lock.

    ``clock()`` (seconds since the epoch) is the real clock given at construction until
    ``advance_clock`` switches to a virtual one (starting at the real time of that moment);
    ``use_real_clock`` switches back, and so does ``reset``. Rate windows, the daily quota,
    the project caps, the dedup window and every timestamp read it.
    """

    def __init__(self, config: EmulatorConfig, clock: Callable[[], float] = time.time) -> None:
        self._initial_config = copy.deepcopy(config)
        self.config = copy.deepcopy(config)
        self._real_clock = clock
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._virtual_now: float | None = None
        self._events: list[StoredEvent] = []
        self._batches: list[_StoredBatch] = []
        self._identifies: list[tuple[str, JSONDict]] = []
        self._dedup: dict[tuple[str, str, str], float] = {}
        self._windows = SlidingWindows()
        self._quota = BucketCounts(QUOTA_BUCKET_S, QUOTA_BUCKETS)
        self._project = SlidingWindows()  # events per api_key (project_eps_cap)
        self._project_requests = SlidingWindows()  # requests per api_key (project_rps_cap)
        self._log: deque[JSONDict] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._status_counts: Counter[int] = Counter()
        self._requests = 0
        self._duplicates = 0
        self._connections = 0
        self._faults_fired = 0
        self._install_faults((), 0)
        self._deletion_jobs = DeletionJobs()
        self._deletion_log: deque[JSONDict] = deque(maxlen=REQUEST_LOG_LIMIT)
        self._deletion_window = SlidingWindows()
        self._deletions_in_flight: Counter[str] = Counter()
        # amplitude ids: (api_key, "user_id"|"device_id", id) → id, and back; the stored
        # events are indexed lazily (up to _amplitude_indexed) when a deletion needs them
        self._amplitude_ids: dict[tuple[str, str, str], int] = {}
        self._amplitude_owners: dict[int, tuple[str, str | None]] = {}  # → (api_key, user_id)
        self._amplitude_indexed = 0

    def reset(self) -> None:
        """Forget everything stored, counted and scripted (faults), return to the real clock
        and restore the configuration given at start."""
        with self._lock:
            self._clear()
            self.config = copy.deepcopy(self._initial_config)

    # -- clock ----------------------------------------------------------------------------

    def clock(self) -> float:
        """Now, in seconds since the epoch (virtual once ``advance_clock`` was used)."""
        virtual = self._virtual_now
        return self._real_clock() if virtual is None else virtual

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def advance_clock(self, seconds: float) -> float:
        """Switch to the virtual clock (if not yet) and move it ``seconds`` forward; → now."""
        if seconds < 0:
            raise ValueError("The clock only moves forward")
        with self._lock:
            start = self._real_clock() if self._virtual_now is None else self._virtual_now
            self._virtual_now = start + seconds
            return self._virtual_now

    def use_real_clock(self) -> None:
        """Switch back to the real clock."""
        with self._lock:
            self._virtual_now = None

    def clock_info(self) -> JSONDict:
        mode = "real" if self._virtual_now is None else "virtual"
        return {"mode": mode, "now": self.clock()}

    # -- faults ---------------------------------------------------------------------------

    def set_faults(self, rules: Iterable[Mapping[str, Any] | FaultRule], seed: int = 0) -> None:
        """Replace the fault rules (validated first; raises FaultRuleError) and reseed the RNG."""
        parsed = tuple(
            rule if isinstance(rule, FaultRule) else FaultRule.from_dict(rule, i)
            for i, rule in enumerate(rules)
        )
        with self._lock:
            self._install_faults(parsed, seed)

    def clear_faults(self) -> None:
        with self._lock:
            self._install_faults((), 0)

    def _install_faults(self, rules: tuple[FaultRule, ...], seed: int) -> None:
        self._fault_progress = [RuleProgress() for _ in rules]
        self._fault_seed = seed
        self._fault_rng = random.Random(seed)
        self._faults_need_ids = any(rule.ids is not None for rule in rules)
        self._faults = rules  # last: the lock-free "any rules?" check reads it

    def faults_info(self) -> JSONDict:
        """The rules as JSON data with their counters (``seen``, ``fired``, ``remaining``)."""
        with self._lock:
            rules = [
                {
                    **rule.to_dict(),
                    "seen": progress.seen,
                    "fired": progress.fired,
                    "remaining": progress.remaining(rule),
                }
                for rule, progress in zip(self._faults, self._fault_progress, strict=True)
            ]
            return {"seed": self._fault_seed, "rules": rules, "faults_fired": self._faults_fired}

    def pick_fault(self, route: str, body: bytes | None) -> FiredFault | None:
        """The fault to apply to an ingestion request, if a rule fires (nearly free when
        there are no rules). ``body`` is None when it was too large to read."""
        if not self._faults:
            return None
        facts = RequestFacts(route, body)
        if self._faults_need_ids:
            _ = facts.ids  # parse outside the lock
        with self._lock:
            index = select_fault(self._faults, self._fault_progress, facts, self._fault_rng)
            if index is None:
                return None
            self._faults_fired += 1
            return FiredFault(index, self._faults[index], facts)

    # -- ingestion ------------------------------------------------------------------------

    def ingest(
        self,
        endpoint: str,
        path: str,
        body: bytes | None,
        size: int,
        fault: FiredFault | None = None,
    ) -> Reply:
        """Handle a ``/2/httpapi`` or ``/batch`` body; ``body`` is None when it was too large.

        ``fault`` is a ``"delay"`` fault already waited for (recorded in the log), if any.
        """
        reply = self._process(endpoint, body)
        self._record_reply(path, size, reply, fault)
        return reply

    def ingest_faulted(
        self, endpoint: str, path: str, body: bytes | None, size: int, fault: FiredFault
    ) -> Reply | None:
        """Apply a ``"status"``, ``"reset"``, ``"not_amplitude"`` or ``"wrong_count"`` fault
        from ``pick_fault`` to a request.

        A ``"status"`` fault answers its reply, after handling the request normally for
        500/502/504; a ``"reset"`` fault returns None (answer nothing), after handling the
        request normally when it has ``store``; ``"not_amplitude"`` and ``"wrong_count"``
        answer a 200 that is not Amplitude's success, storing nothing.
        """
        if fault.rule.action == "delay":
            return self.ingest(endpoint, path, body, size, fault)
        rule = fault.rule
        underlying = self._process(endpoint, body) if rule.stores_first else None
        if underlying is not None:
            api_key, count = underlying.api_key, underlying.event_count
        else:
            events = fault.facts.events
            api_key, count = fault.facts.api_key, None if events is None else len(events)
        if rule.action == "reset":
            self._record("POST", path, size, None, None, api_key, count, fault)
            return None
        if rule.action in ("not_amplitude", "wrong_count"):
            reply = fake_success_reply(rule, fault.facts, payload_size=size, now_ms=self.now_ms())
        else:
            limits = self.config.limits_for(endpoint)
            reply = fault_reply(
                rule, fault.facts, limits.eps_threshold, batch_shape=endpoint == "batch"
            )
        reply = with_facts(reply, api_key, count)
        self._record_reply(path, size, reply, fault)
        return reply

    def _process(self, endpoint: str, body: bytes | None) -> Reply:
        """Validate, check quota/rates/cap, store."""
        config = self.config
        limits = config.limits_for(endpoint)
        verdict = too_large_reply() if body is None else validate_ingest(body, limits, config)
        if isinstance(verdict, Reply):
            return verdict
        return self._accept(verdict, config, limits, endpoint)

    def _accept(
        self, batch: ValidBatch, config: EmulatorConfig, limits: EndpointLimits, endpoint: str
    ) -> Reply:
        """The daily quota, per-id rates, project caps, then store — atomically."""
        per_id = config.rate_limits or config.daily_quota is not None
        counts = _id_counts(batch.events) if per_id else None
        api_key, n = batch.api_key, len(batch.events)
        with self._lock:
            now = self.clock()
            if counts:
                rejection = self._check_ids(batch, counts, config, limits, endpoint, now)
                if rejection is not None:
                    return rejection
            if self._over_project_caps(api_key, n, config, now):
                return with_facts(error_reply(429, ERR_PROJECT_THROTTLED), api_key, n)
            if counts:
                for key, k in counts.items():
                    if config.rate_limits:
                        self._windows.add((api_key, *key), now, k)
                    if config.daily_quota is not None:
                        self._quota.add((api_key, *key), now, k)
            stored = self._store(batch, config, now)
        body = {
            "code": 200,
            "events_ingested": n if config.ingested_counts_repeats else stored,
            "payload_size_bytes": batch.payload_size,
            "server_upload_time": int(now * 1000),
        }
        return Reply(200, body, api_key, n)

    def _over_project_caps(self, api_key: str, n: int, config: EmulatorConfig, now: float) -> bool:
        """Whether a request of ``n`` events is over ``project_eps_cap`` or
        ``project_rps_cap``; when it is not, count it in the windows of the caps turned on.

        Both caps are checked before either window is filled, so a request refused by one cap
        uses nothing of the other. A refused request counts in neither window: like refused
        events for ``project_eps_cap``, a refused request does not use a request slot (whether
        Amplitude counts refused requests is not documented; this is the simplest honest
        model, and a client that retries after a 429 gets in as soon as the window frees).
        Every request that gets here counts as one request, whatever its size (an empty
        ``events`` list included). Caller holds the lock.
        """
        eps_cap, rps_cap = config.project_eps_cap, config.project_rps_cap
        if eps_cap is not None:
            self._project.sweep(now, PROJECT_WINDOW_S)
            events = self._project.count(api_key, now, PROJECT_WINDOW_S, PROJECT_WINDOW_S)
            if events + n > eps_cap:
                return True
        if rps_cap is not None:
            self._project_requests.sweep(now, PROJECT_WINDOW_S)
            requests = self._project_requests.count(
                api_key, now, PROJECT_WINDOW_S, PROJECT_WINDOW_S
            )
            if requests + 1 > rps_cap:
                return True
        if eps_cap is not None and n:
            self._project.add(api_key, now, n)
        if rps_cap is not None:
            self._project_requests.add(api_key, now, 1)
        return False

    def _check_ids(
        self,
        batch: ValidBatch,
        counts: Counter[IdKey],
        config: EmulatorConfig,
        limits: EndpointLimits,
        endpoint: str,
        now: float,
    ) -> Reply | None:
        """The 429 of the daily quota and the per-id rates, or None.

        An id is over its quota when ``counted_in_24h + its events in the request > quota``
        (reported as that sum), over its rate when ``(accepted_in_window + its events in the
        request) / window_s > eps_threshold`` (reported as that rate, rounded). Both checks
        run, and one 429 reports both; ``throttled_events`` lists the indexes whose user or
        device is in any map. Caller holds the lock.
        """
        api_key = batch.api_key
        quota = config.daily_quota
        exceeded: dict[str, dict[str, int]] = {"device_id": {}, "user_id": {}}
        throttled: dict[str, dict[str, int]] = {"device_id": {}, "user_id": {}}
        if quota is not None:
            self._quota.expire(now)
            for (kind, ident), n in counts.items():
                total = self._quota.count((api_key, kind, ident)) + n
                if total > quota:
                    exceeded[kind][ident] = total
        if config.rate_limits:
            window = limits.eps_window_s
            retain = max(config.v2.eps_window_s, config.batch.eps_window_s)
            self._windows.sweep(now, retain)
            for (kind, ident), n in counts.items():
                accepted = self._windows.count((api_key, kind, ident), now, window, retain)
                rate = (accepted + n) / window
                if rate > limits.eps_threshold:
                    throttled[kind][ident] = round(rate)
        if not any((*exceeded.values(), *throttled.values())):
            return None
        devices = throttled["device_id"].keys() | exceeded["device_id"].keys()
        users = throttled["user_id"].keys() | exceeded["user_id"].keys()
        indexes = [
            i
            for i, event in enumerate(batch.events)
            if event.get("device_id") in devices or event.get("user_id") in users
        ]
        extra: JSONDict = {}
        if endpoint == "batch" or quota is not None:
            extra = {
                "exceeded_daily_quota_users": exceeded["user_id"],
                "exceeded_daily_quota_devices": exceeded["device_id"],
            }
        reply = error_reply(
            429,
            ERR_THROTTLED,
            eps_threshold=limits.eps_threshold,
            throttled_devices=throttled["device_id"],
            throttled_users=throttled["user_id"],
            throttled_events=indexes,
            **extra,
        )
        return with_facts(reply, api_key, len(batch.events))

    def _store(self, batch: ValidBatch, config: EmulatorConfig, now: float) -> int:
        """Fill device_id, drop insert_id duplicates, truncate, store; → how many events were
        stored (the duplicates dropped not counted). Caller holds the lock."""
        window = config.dedup_window_s
        body = batch.body
        if body is None:  # the events were changed (short ids stripped): keep them as they are
            body = orjson.dumps({"events": batch.events})
        batch_index = len(self._batches)
        self._batches.append(_StoredBatch(
            body,
            int(now * 1000),
            config.truncate_strings_at if batch.may_need_truncation else None,
        ))
        api_key, dedup, stored = batch.api_key, self._dedup, self._events
        before = len(stored)
        for position, event in enumerate(batch.events):
            device_id = event.get("device_id") or derive_device_id(event["user_id"])
            insert_id = event.get("insert_id")
            if insert_id is not None:
                key = (api_key, device_id, insert_id)
                stored_at = dedup.get(key)
                if stored_at is not None and now - stored_at < window:
                    self._duplicates += 1
                    continue
                dedup[key] = now
            stored.append((api_key, event.get("user_id"), device_id, event["event_type"],
                           insert_id, batch_index, position))
        return len(stored) - before

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
        self._record_reply(path, size, reply, method=method)
        return reply

    def not_found(self, method: str, path: str, size: int) -> Reply:
        reply = error_reply(404, ERR_PATH)
        self._record_reply(path, size, reply, method=method)
        return reply

    def _record_reply(
        self,
        path: str,
        size: int,
        reply: Reply,
        fault: FiredFault | None = None,
        method: str = "POST",
    ) -> None:
        response = _redacted(reply) if reply.raw is None else reply.raw.decode("utf-8", "replace")
        self._record(
            method, path, size, reply.status, response, reply.api_key, reply.event_count, fault
        )

    def _record(
        self,
        method: str,
        path: str,
        size: int,
        status: int | None,
        response: Any,
        api_key: str | None,
        event_count: int | None,
        fault: FiredFault | None,
    ) -> None:
        """Append to the request log and counters, with the API key reduced to a fingerprint.

        ``status`` is None when the connection was reset without an answer.
        """
        entry = {
            "time": self.now_ms(),
            "method": method,
            "route": path,
            "api_key": key_fingerprint(api_key),
            "body_bytes": size,
            "event_count": event_count,
            "status": status,
            "response": response,
            "fault": None if fault is None else fault_record(fault.index, fault.rule),
        }
        with self._lock:
            self._log.append(entry)
            if status is not None:
                self._status_counts[status] += 1
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
        return self.event_page(0, None, **filters)[0]

    def event_page(
        self, offset: int, limit: int | None, **filters: str
    ) -> tuple[list[bytes], int]:
        """JSON of the events from ``offset`` (at most ``limit``; None: all) of those
        matching every filter, in arrival order, and how many match in all. Events are only
        ever appended (until ``reset``): an offset stays a stable cursor."""
        wanted = [(_filter_index(name), value) for name, value in filters.items()]
        end = None if limit is None else offset + limit
        with self._lock:
            batches = list(self._batches)
            if wanted:
                records = self._matching(wanted)
                total = len(records)
                records = records[offset:end]
            else:  # no filter: no copy of every record
                total = len(self._events)
                records = self._events[offset:end]
        return self._stored_forms(records, batches), total

    def event_counts(self, by: str, **filters: str) -> tuple[Counter[str], int, int]:
        """How many stored events matching every filter have each value of ``by`` (one of
        COUNT_KEYS), how many have none, and how many match in all."""
        if by not in COUNT_KEYS:
            raise ValueError(f"Unknown count key: {by}")
        column = _filter_index(by)
        wanted = [(_filter_index(name), value) for name, value in filters.items()]
        with self._lock:
            records = self._matching(wanted) if wanted else self._events
            found = Counter(record[column] for record in records)
        without = found.pop(None, 0)
        return Counter({str(value): n for value, n in found.items()}), without, len(records)

    def _matching(self, wanted: list[tuple[int, str]]) -> list[StoredEvent]:
        """The stored events whose fields have the wanted values. Caller holds the lock."""
        return [record for record in self._events
                if all(record[index] == value for index, value in wanted)]

    @staticmethod
    def _stored_forms(records: list[StoredEvent], batches: list[_StoredBatch]) -> list[bytes]:
        parsed: dict[int, list[JSONDict]] = {}
        raws = []
        for record in records:
            *_, batch_index, position = record
            events = parsed.get(batch_index)
            if events is None:
                events = parsed[batch_index] = batches[batch_index].events()
            raws.append(batches[batch_index].stored_form(events[position]))
        return raws

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
            current_eps = [
                {"api_key": key_fingerprint(api_key), kind: ident, "eps": eps}
                for (api_key, kind, ident), eps in self._windows.rates(now, window)
            ]
            return {
                "requests": self._requests,
                "by_status": {str(k): v for k, v in sorted(self._status_counts.items())},
                "events_stored": len(self._events),
                "duplicates_dropped": self._duplicates,
                "identifies_stored": len(self._identifies),
                "connections_opened": self._connections,
                "faults_fired": self._faults_fired,
                "current_eps": current_eps,
                "clock": self.clock_info(),
            }

    # -- User Privacy API (deletions) -----------------------------------------------------

    def deletion_request(
        self, method: str, path: str, query: str, authorization: str | None, body: bytes | None,
        size: int,
    ) -> tuple[Reply, str | None]:
        """Handle a request under ``/api/2/deletions/users`` (``body`` None: too large).

        → the reply, and the API key whose in-flight slot the caller releases with
        ``deletion_finished`` once the answer is sent (None when no slot was taken).
        Checks: route (404), auth (401), in-flight and rate limits (429), then the request.
        """
        user_ids, amplitude_ids = _sent_ids(method, path, body)
        api_key: str | None = None
        slot: str | None = None
        job_path = parse_job_path(path) if path != DELETIONS_PATH else None
        routed = (method in ("GET", "POST") and path == DELETIONS_PATH) or (
            method == "DELETE" and path.startswith(DELETIONS_PATH + "/")
        )
        if not routed:
            reply = error_reply(404, ERR_PATH)
        else:
            config = self.config
            verdict = check_basic_auth(authorization, config)
            if isinstance(verdict, Reply):
                reply = verdict
            else:
                api_key = verdict
                reply = self._admit_deletion(api_key, config) or self._deletion_reply(
                    method, api_key, query, body, job_path
                )
                if reply.status != 429:
                    slot = api_key
        self._record_deletion(method, path, size, api_key, reply, user_ids, amplitude_ids)
        return reply, slot

    def _admit_deletion(self, api_key: str, config: EmulatorConfig) -> Reply | None:
        """A 429 when the project has too many requests in flight or in the last second;
        otherwise None, and the request counts (and holds an in-flight slot)."""
        rps = config.deletion_requests_per_second
        with self._lock:
            if self._deletions_in_flight[api_key] >= config.deletion_max_in_flight:
                return error_reply(429, ERR_IN_FLIGHT)
            now = self.clock()
            if rps is not None:
                window = self._deletion_window
                window.sweep(now, DELETION_WINDOW_S)
                if window.count(api_key, now, DELETION_WINDOW_S, DELETION_WINDOW_S) >= rps:
                    return error_reply(429, ERR_RATE)
                window.add(api_key, now, 1)
            self._deletions_in_flight[api_key] += 1
        return None

    def deletion_finished(self, api_key: str) -> None:
        """Release the in-flight slot ``deletion_request`` returned."""
        with self._lock:
            if self._deletions_in_flight[api_key] > 1:
                self._deletions_in_flight[api_key] -= 1
            else:
                del self._deletions_in_flight[api_key]  # also after a reset in between

    def _deletion_reply(
        self,
        method: str,
        api_key: str,
        query: str,
        body: bytes | None,
        job_path: tuple[int, dt.date] | None,
    ) -> Reply:
        if method == "GET":
            days = parse_day_range(first_values(parse_qs(query, keep_blank_values=True)))
            if isinstance(days, Reply):
                return days
            with self._lock:
                today = day_of(self.clock())
                jobs = [job.to_dict(today) for job in self._deletion_jobs.in_range(api_key, *days)]
            return Reply(200, {}, api_key, raw=orjson.dumps(jobs))  # a JSON array
        if method == "DELETE":
            if job_path is None:
                return error_reply(400, ERR_JOB_PATH)
            with self._lock:
                today = day_of(self.clock())
                removed = self._deletion_jobs.remove(api_key, *job_path, today)
            if isinstance(removed, Reply):
                return with_facts(removed, api_key)
            entry = removed.to_dict()
            del entry["user_id"]
            return Reply(200, entry, api_key)
        if body is None:
            return too_large_reply()
        request = parse_deletion_request(body)
        if isinstance(request, Reply):
            return with_facts(request, api_key)
        return self._schedule_deletions(api_key, request)

    def _schedule_deletions(self, api_key: str, request: DeletionRequest) -> Reply:
        """Resolve the ids against the stored events, then schedule the known ones."""
        with self._lock:
            self._index_amplitude_ids()
            today = day_of(self.clock())
            known: dict[int, ScheduledId] = {}
            invalid: list[str | int] = []
            ids = self._amplitude_ids
            resolved: list[tuple[str | int, int | None]] = [
                (user_id, ids.get((api_key, "user_id", user_id))) for user_id in request.user_ids
            ]
            for sent_id in request.amplitude_ids:
                owner = self._amplitude_owners.get(sent_id)
                resolved.append((sent_id, sent_id if owner and owner[0] == api_key else None))
            for sent, amplitude_id in resolved:
                if amplitude_id is None:
                    invalid.append(sent)
                elif amplitude_id not in known:
                    user_id = self._amplitude_owners[amplitude_id][1]
                    known[amplitude_id] = ScheduledId(
                        amplitude_id, user_id, request.requester, today
                    )
            if invalid and not request.ignore_invalid_id:
                return error_reply(400, ERR_INVALID_IDS, invalid_ids=invalid)
            job = self._deletion_jobs.schedule(api_key, today, list(known.values()))
            body: JSONDict = {
                "day": job.day.isoformat(),
                "status": job.status(today),
                "amplitude_ids": [job.entries[a].to_dict() for a in known],
            }
        if request.ignore_invalid_id:
            body["invalid_ids"] = invalid
        return Reply(200, body, api_key)

    def _index_amplitude_ids(self) -> None:
        """Give an amplitude id to each user (user_id, else device_id) of the events stored
        since the last call, in arrival order. Caller holds the lock."""
        ids, owners = self._amplitude_ids, self._amplitude_owners
        for record in self._events[self._amplitude_indexed :]:
            api_key, user_id, device_id = record[0], record[1], record[2]
            key = (api_key, "user_id", user_id) if user_id else (api_key, "device_id", device_id)
            if key not in ids:
                amplitude_id = FIRST_AMPLITUDE_ID + len(ids)
                ids[key] = amplitude_id
                owners[amplitude_id] = (api_key, user_id)
        self._amplitude_indexed = len(self._events)

    def _record_deletion(
        self,
        method: str,
        path: str,
        size: int,
        api_key: str | None,
        reply: Reply,
        user_ids: list[str],
        amplitude_ids: list[int],
    ) -> None:
        """Log a deletion request in the request log and in the deletion requests."""
        entry: JSONDict = {
            "at": self.clock(),
            "method": method,
            "route": path,
            "api_key": key_fingerprint(api_key),
            "ids": len(user_ids) + len(amplitude_ids),
            "user_ids": user_ids,
            "amplitude_ids": amplitude_ids,
            "status": reply.status,
        }
        with self._lock:
            self._deletion_log.append(entry)
        response = _redacted(reply) if reply.raw is None else reply.raw.decode("utf-8", "replace")
        self._record(method, path, size, reply.status, response, api_key, None, None)

    def amplitude_id(self, user_id: str, api_key: str | None = None) -> int | None:
        """The amplitude id the emulator gave ``user_id`` (in ``api_key``'s project, or the
        first project that sent it), or None when no event was stored for it."""
        with self._lock:
            self._index_amplitude_ids()
            for (key, kind, ident), amplitude_id in self._amplitude_ids.items():
                if kind == "user_id" and ident == user_id and api_key in (None, key):
                    return amplitude_id
        return None

    def deletion_jobs(self) -> list[JSONDict]:
        """Every project's deletion jobs, by day (API keys fingerprinted)."""
        with self._lock:
            today = day_of(self.clock())
            return [
                {"api_key": key_fingerprint(job.api_key), **job.to_dict(today)}
                for job in self._deletion_jobs.all()
            ]

    def deletion_requests(self) -> list[JSONDict]:
        """Every request to the User Privacy API: ``at`` (clock seconds), method, route,
        API key fingerprint, ``ids`` (how many were sent), the ids, and the status."""
        with self._lock:
            return [copy.deepcopy(entry) for entry in self._deletion_log]

    def patch_config(self, patch: Mapping[str, Any]) -> EmulatorConfig:
        """Apply a partial config atomically; raises ConfigError."""
        with self._lock:
            self.config = apply_config_patch(self.config, patch)
            return self.config


def _sent_ids(method: str, path: str, body: bytes | None) -> tuple[list[str], list[int]]:
    """The ids a deletion request carries, as far as they can be read (for the log)."""
    if method == "DELETE":
        job = parse_job_path(path)
        return [], [] if job is None else [job[0]]
    if method != "POST" or not body:
        return [], []
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return [], []
    if not isinstance(data, dict):
        return [], []
    user_ids, amplitude_ids = data.get("user_ids"), data.get("amplitude_ids")
    return (
        [u for u in user_ids if isinstance(u, str)] if isinstance(user_ids, list) else [],
        [a for a in amplitude_ids if type(a) is int] if isinstance(amplitude_ids, list) else [],
    )


def _id_counts(events: Iterable[JSONDict]) -> Counter[IdKey]:
    """Events per ``("device_id"|"user_id", id)`` as sent in a request."""
    counts: Counter[IdKey] = Counter()
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
