"""Upload events to Amplitude's HTTP API v2 or Batch API and classify every response.

The status-code policy lives here; connection handling is httpx's; whether Amplitude is
up at all is the ``Circuit``'s. A 200 counts only when its body is Amplitude's own
acknowledgement (a JSON object, ``code`` 200, an integer ``events_ingested`` from 0 to the
events sent); then every event sent is delivered, and a shortfall is counted as repeats
Amplitude dropped (``SendOutcome.repeats_dropped``), never retried. Every wait (request
timeouts, backoff) is bounded by the run's ``Stop`` (a Lambda deadline, a Ctrl-C). Sleep,
clock and jitter are injectable so tests can run the retry logic without waiting.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import orjson

from currents_export.amplitude.api import RetryPolicy
from currents_export.amplitude.batching import Envelope, PendingEvent
from currents_export.amplitude.circuit import REACHED_S, Circuit
from currents_export.amplitude.pacing import Pacer, Turn
from currents_export.errors import (
    AmplitudeSetupError,
    DeliveryFailed,
    SendError,
)
from currents_export.stopping import Stop

log = logging.getLogger(__name__)

Ref = TypeVar("Ref")

# Dead-letter reasons for events Amplitude refused.
TOO_LARGE = "amplitude_payload_too_large"
BAD_REQUEST = "amplitude_bad_request"
SILENCED = "amplitude_silenced_device"
_INDEX_MAPS = {
    "events_with_missing_fields": "amplitude_missing_field",
    "events_with_invalid_fields": "amplitude_invalid_field",
    "events_with_invalid_id_lengths": "amplitude_invalid_id",
}


__all__ = ["AmplitudeClient", "SendOutcome"]


@dataclass(slots=True)
class SendOutcome(Generic[Ref]):
    """Where each event of a ``send`` ended.

    ``throttled`` events were refused with a 429 naming their user or device: the caller
    must hold them (and every later event of the same ids) for the given seconds.

    ``requests``: the attempts sent; ``retries``: those after a request's first (counted
    when sent, never when only announced).

    ``repeats_dropped``: of the ``delivered`` events, how many Amplitude said it did not
    ingest (its 200's ``events_ingested`` below the events sent). They are delivered all the
    same: Amplitude answers that way for ``insert_id``s it already has (a retry after an
    answer was lost, a copy two workers both send), and re-sending them would get the same
    answer forever. Amplitude gives a number, not which events.
    """

    delivered: list[PendingEvent[Ref]] = field(default_factory=list)
    rejected: list[tuple[PendingEvent[Ref], str, str]] = field(default_factory=list)
    throttled: list[tuple[PendingEvent[Ref], float]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    repeats_dropped: int = 0


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    body: dict[str, Any]
    ingested: int = 0  # a 200's events_ingested (checked: from 0 to the events sent)


class AmplitudeClient:
    """Sends lists of serialised events; one instance reuses one connection pool."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        min_id_length: int | None = None,
        retry: RetryPolicy | None = None,
        throttle_pause_s: float = 15.0,
        timeout: httpx.Timeout | None = None,
        transport: httpx.BaseTransport | None = None,
        stop: Stop | None = None,
        sleep: Callable[[float], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
        pacer: Pacer | None = None,
    ) -> None:
        self.url = url
        parsed = httpx.URL(url)  # the host for messages: never user:password@ from the URL
        self.host = f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
        options = {"min_id_length": min_id_length} if min_id_length is not None else None
        self.envelope = Envelope.build(api_key, options)
        self.throttle_pause_s = throttle_pause_s
        self._clock = clock
        self._timeout = timeout or httpx.Timeout(60.0, connect=10.0)
        self.stop = stop or Stop(clock=clock)
        self.circuit = Circuit(retry or RetryPolicy(), stop=self.stop, host=self.host,
                               clock=clock, sleep=sleep, jitter=jitter)
        # When requests may leave (the run's budget, or the rate found after a refusal).
        self.pacer = pacer or Pacer(pause_s=self.circuit.policy.project_pause_s,
                                    clock=clock, sleep=sleep)
        self.pacer.bind(self.stop)
        self._attempts_lock = threading.Lock()
        self._attempts = self._retried = 0  # since the last ``take_attempts``
        self._http = httpx.Client(
            timeout=self._timeout,
            transport=transport,
            headers={"Content-Type": "application/json", "User-Agent": "currents-export"},
        )

    def __repr__(self) -> str:  # never the API key, nor user:password@ from the URL
        shown = str(httpx.URL(self.url).copy_with(userinfo=b""))
        return f"AmplitudeClient(url={shown!r})"

    @property
    def retry(self) -> RetryPolicy:
        return self.circuit.policy

    def close(self) -> None:
        self._http.close()

    def take_attempts(self) -> tuple[int, int]:
        """Requests and retries among them sent since the last call, every send's counted
        as it goes: those of a send that failed, or is still going, included."""
        with self._attempts_lock:
            taken = self._attempts, self._retried
            self._attempts = self._retried = 0
        return taken

    def send(self, events: list[PendingEvent[Ref]]) -> SendOutcome[Ref]:
        """Deliver ``events`` (one request's worth) or say why each one was refused.

        413 splits the request in halves; a 400 that lists event indexes refuses exactly
        those events and re-sends the others at once; a 429 that names users or devices
        hands their events back as throttled and re-sends the others at once. Raises
        ConfigurationError or DeliveryFailed; then the caller must not mark anything done.
        Safe to call from several threads.
        """
        outcome: SendOutcome[Ref] = SendOutcome()
        try:
            self._send_all(events, outcome)
        except SendError as exc:
            exc.partial = outcome
            raise
        return outcome

    def _send_all(self, events: list[PendingEvent[Ref]], outcome: SendOutcome[Ref]) -> None:
        work: deque[list[PendingEvent[Ref]]] = deque([events])
        while work:
            chunk = self._behind_throttled(work.popleft(), outcome)
            size = self.pacer.request_size()
            if size is not None and len(chunk) > size:  # the budget wants smaller requests
                work.extendleft(reversed([chunk[i:i + size]
                                          for i in range(size, len(chunk), size)]))
                chunk = chunk[:size]
            if not chunk:
                continue
            response = self._post(chunk, outcome)
            if response is None:  # refused: re-sent in pieces the rate found allows
                work.appendleft(chunk)
                continue
            if response.status == 200:
                outcome.delivered.extend(chunk)
                shortfall = len(chunk) - response.ingested
                if shortfall:
                    outcome.repeats_dropped += shortfall
                    log.debug("Amplitude ingested %d of %d events: %d repeats dropped",
                              response.ingested, len(chunk), shortfall)
            elif response.status == 413:
                if len(chunk) == 1:
                    outcome.rejected.append((chunk[0], TOO_LARGE, "Payload too large"))
                else:
                    middle = len(chunk) // 2
                    work.extendleft([chunk[middle:], chunk[:middle]])
            else:  # 400, or 429 naming users/devices
                remaining = self._set_aside_listed(chunk, response, outcome)
                if remaining:
                    work.appendleft(remaining)

    @staticmethod
    def _behind_throttled(
        chunk: list[PendingEvent[Ref]], outcome: SendOutcome[Ref]
    ) -> list[PendingEvent[Ref]]:
        """The chunk without the events that share an id with an event already throttled
        in this send (a 413 split the request, and an earlier part got a 429): those wait
        as long, behind it, or they would overtake it."""
        if not outcome.throttled:
            return chunk
        blocked: dict[str, float] = {}
        for event, pause in outcome.throttled:
            for identifier in event.ids:
                blocked[identifier] = max(blocked.get(identifier, 0.0), pause)
        kept = []
        for event in chunk:
            shared = [blocked[i] for i in event.ids if i in blocked]
            if not shared:
                kept.append(event)
                continue
            pause = max(shared)
            outcome.throttled.append((event, pause))
            for identifier in event.ids:
                blocked[identifier] = max(blocked.get(identifier, 0.0), pause)
        return kept

    def _set_aside_listed(
        self, chunk: list[PendingEvent[Ref]], response: _Response, outcome: SendOutcome[Ref]
    ) -> list[PendingEvent[Ref]]:
        """Apply a 400 or an indexed 429; return the events to send again at once.

        Refused events go to ``outcome.rejected``, throttled ones to ``outcome.throttled``.
        """
        body = response.body
        if response.status == 400:
            _raise_for_configuration(body)
        pauses = self._throttle_pauses(chunk, body)
        reasons = _listed_reasons(body, len(chunk)) if response.status == 400 else {}
        if response.status == 400 and not reasons and not pauses:
            error = str(body.get("error", "")) or "400 without details"
            outcome.rejected.extend((event, BAD_REQUEST, error) for event in chunk)
            return []
        error = str(body.get("error", ""))
        remaining = []
        for index, event in enumerate(chunk):
            if index in reasons:
                outcome.rejected.append((event, reasons[index], error))
            elif index in pauses:
                outcome.throttled.append((event, pauses[index]))
            else:
                remaining.append(event)
        return remaining

    def _throttle_pauses(
        self, chunk: list[PendingEvent[Ref]], body: dict[str, Any]
    ) -> dict[int, float]:
        """Event index → seconds to hold it, for the events a 429 (or 400) says are throttled.

        Events of ids over Amplitude's daily quota are held much longer than the others.
        """
        listed = body.get("throttled_events")
        if not isinstance(listed, list):
            return {}
        over_quota: set[str] = set()
        for key in ("exceeded_daily_quota_users", "exceeded_daily_quota_devices"):
            if isinstance(body.get(key), dict):
                over_quota |= set(body[key])
        pauses: dict[int, float] = {}
        for index in listed:
            if isinstance(index, int) and 0 <= index < len(chunk):
                quota = over_quota and not over_quota.isdisjoint(chunk[index].ids)
                pauses[index] = (
                    self.retry.daily_quota_pause_s if quota else self.throttle_pause_s
                )
        # Amplitude names the throttled user *or* device; a later event that shares the
        # other id must wait too, or that id's events would arrive out of order.
        blocked: dict[str, float] = {}
        for index, event in enumerate(chunk):
            pause = pauses.get(index)
            if pause is None:
                shared = [blocked[i] for i in event.ids if i in blocked]
                if not shared:
                    continue
                pause = pauses[index] = max(shared)
            for identifier in event.ids:
                blocked[identifier] = max(blocked.get(identifier, 0.0), pause)
        return pauses

    def _post(
        self, chunk: list[PendingEvent[Ref]], outcome: SendOutcome[Ref]
    ) -> _Response | None:
        """POST until the answer is final (200, 400, 413, an indexed 429); back off on the rest.
        None: sending paused while it waited (a project-level 429) and resumed at a rate this
        request no longer fits (the caller sends it again in pieces).

        Raises DeliveryFailed once this request has failed for the horizon, AmplitudeUnavailable
        once the run's circuit gave up, SendInterrupted when the run is stopping. A backoff
        that would pass the horizon is cut to what is left: the last attempt goes at the
        horizon (or when Amplitude's pause after a project-wide 429 ends: the pause counts
        toward the horizon; waiting for the budget, pacing, does not).
        """
        body = self.envelope.body(chunk)
        circuit, policy, pacer, clock = self.circuit, self.circuit.policy, self.pacer, self._clock
        started = clock()
        paced = 0.0
        attempt = 0
        forbidden = 0
        while True:
            admitting = clock()
            circuit.admit()
            pacer.waited_on_amplitude(admitting, clock())
            try:
                turn = pacer.turn(len(chunk))
            except BaseException:
                circuit.abandon()  # (a probe's turn: let another probe go)
                raise
            if turn is None:  # paused meanwhile; the rate found wants smaller requests
                circuit.abandon()
                return None
            paced += turn.paced_s
            outcome.requests += 1
            if attempt:  # every attempt after the first is a retry (counted when it goes)
                outcome.retries += 1
            with self._attempts_lock:
                self._attempts += 1
                if attempt:
                    self._retried += 1
            try:
                response, problem = self._attempt(body, len(chunk))
            except BaseException:
                circuit.abandon()  # a probe that raised must not block the others
                raise
            if response is not None:
                circuit.succeeded()
                self._tell_pacer(turn, response, len(chunk))
                return response
            attempt += 1
            if problem.startswith("HTTP 403"):
                forbidden += 1
                if forbidden >= policy.max_forbidden_attempts:
                    circuit.succeeded()  # Amplitude's firewall answered: not an outage
                    raise DeliveryFailed(
                        "Amplitude answered 403 Forbidden (its firewall blocked the request) "
                        f"{forbidden} times; check the network path to {self.host}"
                    )
            if problem.startswith("HTTP 429"):  # the project's limit: everyone pauses
                pacer.refused(turn, len(chunk))
            backoff = circuit.failed(problem, attempt)  # raises once the run gave up
            waited = clock() - started - paced
            left = policy.horizon_s - waited
            if left < REACHED_S:
                raise DeliveryFailed(
                    f"gave up on {self.host} after {attempt} attempts over {waited:.0f} s "
                    f"(last: {problem}); the object stays pending for the next run"
                )
            backoff = min(backoff, left)  # the last attempt goes at the horizon
            delay = max(backoff, pacer.pause_left())
            log.warning("upload failed (%s); retry %d in %.1fs", problem, attempt, delay)
            backing_off = clock()
            circuit.wait_before_retry(backoff)  # then the pacer's turn waits out a pause
            pacer.waited_on_amplitude(backing_off, clock())

    def _tell_pacer(self, turn: Turn, response: _Response, sent: int) -> None:
        if response.status == 200:
            self.pacer.accepted(turn, sent)
        elif response.status == 429:
            self.pacer.throttled()

    def _attempt(self, body: bytes, sent: int) -> tuple[_Response | None, str]:
        """One POST: the final answer, or None and what went wrong (worth a retry)."""
        left = self.stop.remaining()
        timeout = self._timeout
        if left is not None:  # no request outlives the deadline
            bound = max(0.1, left)
            timeout = httpx.Timeout(
                connect=min(self._timeout.connect or bound, bound),
                read=min(self._timeout.read or bound, bound),
                write=min(self._timeout.write or bound, bound),
                pool=min(self._timeout.pool or bound, bound),
            )
        try:
            reply = self._http.post(self.url, content=body, timeout=timeout)
        except httpx.HTTPError as exc:  # timeouts, resets, refused connections, bad encodings
            return None, f"{type(exc).__name__} from {self.host}"
        status = reply.status_code
        body_json = json_body(reply)
        if status == 200:
            ingested = _ingested(body_json, sent)
            if ingested is not None:
                return _Response(200, body_json, ingested), ""
            problem = _acknowledgement_problem(reply, body_json, sent)
            return None, (f"HTTP 200 from {self.host} that is not Amplitude's answer ({problem});"
                          " check --amplitude-url: it does not look like Amplitude")
        response = _Response(status, body_json)
        if status in (400, 413) or (status == 429 and _names_events(body_json, sent)):
            return response, ""
        return None, f"HTTP {status} from {self.host}"


def _ingested(body: dict[str, Any], sent: int) -> int | None:
    """``events_ingested`` of Amplitude's acknowledgement of a request of ``sent`` events, or
    None when the body is not one: a JSON object whose ``code`` is 200 and whose
    ``events_ingested`` is an integer (not a bool, not a float) from 0 to ``sent``.

    Fewer than sent is still Amplitude's answer: whether it counts ``insert_id`` repeats in
    ``events_ingested`` is not documented, so the shortfall is taken for repeats it dropped.
    More than sent cannot be an answer to this request.
    """
    code, ingested = body.get("code"), body.get("events_ingested")
    if type(code) is not int or code != 200 or type(ingested) is not int:
        return None
    return ingested if 0 <= ingested <= sent else None


def _acknowledgement_problem(reply: httpx.Response, body: dict[str, Any], sent: int) -> str:
    """Why a 200 is not Amplitude acknowledging a request of ``sent`` events."""
    code = body.get("code")
    if type(code) is not int or code != 200 or "events_ingested" not in body:
        kind = reply.headers.get("content-type", "no content type").split(";")[0]
        return f"{kind} body, not Amplitude's JSON"
    return f"events_ingested {body['events_ingested']!r}, {sent} sent"


def _names_events(body: dict[str, Any], size: int) -> bool:
    """A 429 that names events of this request (else it throttles the whole project)."""
    listed = body.get("throttled_events")
    return isinstance(listed, list) and any(
        isinstance(index, int) and 0 <= index < size for index in listed
    )


def json_body(reply: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object; {} when it is not one (HTML, empty, a list)."""
    try:
        body = orjson.loads(reply.content)
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


def _raise_for_configuration(body: dict[str, Any]) -> None:
    """A 400 about the API key or the request's shape: nothing will work, stop the run."""
    error = str(body.get("error", ""))
    if error.startswith("Invalid API key"):
        raise AmplitudeSetupError(
            "Amplitude rejected the API key: check --api-key / AMPLITUDE_API_KEY and that "
            "--region (or --amplitude-url) matches the Amplitude project"
        )
    if "missing_field" in body:
        raise AmplitudeSetupError(
            f"Amplitude says the request is missing {body['missing_field']!r}; "
            "this is a bug in currents-export, please report it"
        )


def _listed_reasons(body: dict[str, Any], size: int) -> dict[int, str]:
    """Event index → dead-letter reason, from the index maps of a 400 body."""
    reasons: dict[int, str] = {}
    for map_name, reason in _INDEX_MAPS.items():
        listed = body.get(map_name)
        if not isinstance(listed, dict):
            continue
        for field_name, indexes in listed.items():
            for index in indexes if isinstance(indexes, list) else []:
                if isinstance(index, int) and 0 <= index < size:
                    reasons.setdefault(index, f"{reason}:{field_name}")
    for index in body.get("silenced_events") or []:
        if isinstance(index, int) and 0 <= index < size:
            reasons.setdefault(index, SILENCED)
    return reasons
