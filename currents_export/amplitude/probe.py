"""Is the upload URL Amplitude, and does it take the key? Asked in seconds, before a run
reads anything, with a request Amplitude can only refuse.

The probe sends one event without ``event_type`` (a user id and an ``insert_id``, nothing
else), to the run's endpoint with the run's key. Amplitude refuses such an event at
validation, so nothing is stored, whatever the key. What the answer proves:

* 400 with ``events_with_missing_fields`` naming that event (or any 400 shaped as Amplitude
  answers: a JSON ``code`` 400), or a project 429 in Amplitude's JSON: the host answers as
  Amplitude does, and it did not refuse the key (in the documented check order the key is
  checked before the events; Amplitude's real order is not published);
* 400 ``Invalid API key``: the key is wrong for this endpoint (or its region);
* no connection, no name, no answer in time, a 5xx every time: a wrong URL or an outage —
  nothing was read, nothing was delivered, so the run stops with exit 2 rather than waiting
  out the retry horizon;
* anything else (HTML, a 404, a 200 for an event Amplitude refuses): not Amplitude.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from currents_export.amplitude.client import json_body
from currents_export.errors import AmplitudeSetupError, EndpointUnreachable

PROBE_ID = "currents-export-check"
PROBE_BODY_EVENT = {"user_id": PROBE_ID, "device_id": PROBE_ID, "insert_id": PROBE_ID}
DEADLINE_S = 8.0  # every attempt, wait and answer of one probe, together
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
_PAUSES_S = (0.5, 1.5)  # between attempts (a blip at start is not an outage)


@dataclass(frozen=True, slots=True)
class ProbeAnswer:
    """What the upload endpoint answered (it answers as Amplitude and took the key)."""

    host: str
    status: int
    elapsed_s: float
    detail: str


def probe_upload(
    url: str,
    api_key: str,
    *,
    flag: str = "--amplitude-url",
    deadline_s: float = DEADLINE_S,
    transport: httpx.BaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> ProbeAnswer:
    """Probe the upload endpoint ``url``; raise ``AmplitudeSetupError`` (key refused) or
    ``EndpointUnreachable`` (wrong URL, outage, not Amplitude). ``flag``: the option that
    set the URL, for the messages."""
    parsed = httpx.URL(url)
    host = f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host
    body = orjson.dumps({"api_key": api_key, "events": [PROBE_BODY_EVENT]})
    started = clock()
    problem = "no answer"
    with httpx.Client(transport=transport,
                      headers={"Content-Type": "application/json",
                               "User-Agent": "currents-export (check)"}) as http:
        for attempt in range(len(_PAUSES_S) + 1):
            left = deadline_s - (clock() - started)
            if attempt:
                pause = _PAUSES_S[attempt - 1]
                if left <= pause + 0.5:
                    break
                sleep(pause)
                left -= pause
            timeout = httpx.Timeout(min(READ_TIMEOUT_S, max(left, 0.5)),
                                    connect=min(CONNECT_TIMEOUT_S, max(left, 0.5)))
            try:
                reply = http.post(url, content=body, timeout=timeout)
            except httpx.ConnectError as exc:
                problem = _connect_problem(exc)
                continue
            except httpx.TimeoutException:
                problem = "no answer in time"
                continue
            except httpx.HTTPError as exc:  # a reset, a broken answer
                problem = f"{type(exc).__name__}"
                continue
            status, answer = reply.status_code, json_body(reply)
            elapsed = clock() - started
            if status == 400 and str(answer.get("error", "")).startswith("Invalid API key"):
                raise AmplitudeSetupError(
                    f"Amplitude ({host}) rejected the API key: check AMPLITUDE_API_KEY (or "
                    "--api-key-file, CURRENTS_EXPORT_API_KEY_SECRET) and that --region (or "
                    f"{flag}) is the project's data centre; nothing was read")
            if status in (400, 429) and answer.get("code") == status:
                return ProbeAnswer(host, status, elapsed, _detail(status, answer))
            if status >= 500:
                problem = f"HTTP {status} every time"
                continue
            kind = reply.headers.get("content-type", "no content type").split(";")[0]
            raise EndpointUnreachable(
                f"{host} does not answer as Amplitude's upload API (HTTP {status}, {kind}, to "
                f"an event Amplitude refuses): check {flag} (the base URL, e.g. "
                "https://api2.amplitude.com, or --region); nothing was read")
    raise EndpointUnreachable(
        f"cannot reach Amplitude at {host} ({problem}): a wrong "
        f"{flag} or --region, a network that blocks it, or an outage; nothing was read or "
        "sent; check the URL, then run again")


def _connect_problem(exc: httpx.ConnectError) -> str:
    text = str(exc).lower()
    if "name or service" in text or "nodename" in text or "getaddrinfo" in text \
            or "no address" in text or "temporary failure in name" in text:
        return "the host name does not resolve"
    if "refused" in text:
        return "connection refused"
    return f"cannot connect: {type(exc).__name__}"


def _detail(status: int, answer: dict[str, Any]) -> str:
    if status == 429:
        return "answers as Amplitude (the project is being throttled right now)"
    missing = answer.get("events_with_missing_fields")
    if isinstance(missing, dict) and missing.get("event_type") == [0]:
        return "answers as Amplitude and took the key (it refused the probe's event, as it must)"
    return f"answers as Amplitude ({str(answer.get('error', ''))[:80]!r})"
