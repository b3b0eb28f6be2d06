"""The Amplitude User Privacy API v1: ``POST /api/2/deletions/users``.

HTTP Basic with the project's API key and secret key (the secret key reads and changes
project data: it is never logged and never in a repr or message). The URL is shown (repr,
messages) without the ``user:password@`` it may hold (``support.redact``). At most 100 ids per
request, one request at a time, paced to the documented rate (1 per second). Unknown ids
never fail a request (``ignore_invalid_id``). 429, 5xx and network errors are retried
with backoff; 401/403 is a configuration error. An answer is trusted only when it
accounts for every id sent (``include_mapped_user_ids`` makes Amplitude list the user id
behind each scheduled Amplitude id; unknown ones come back in ``invalid_ids``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from currents_export.errors import ConfigurationError, PrivacyApiError
from currents_export.support.redact import without_credentials

PRIVACY_BASE_URLS = {"us": "https://amplitude.com", "eu": "https://analytics.eu.amplitude.com"}
PRIVACY_PATH = "/api/2/deletions/users"
MAX_IDS_PER_REQUEST = 100
_ATTEMPTS = 6
_CHECK_ATTEMPTS, _CHECK_TIMEOUT_S = 2, 3.0


@dataclass(frozen=True, slots=True)
class DeletionJob:
    """Amplitude's answer to one request: the job's day and status, and the ids it did not
    know (nothing of theirs to delete)."""

    day: str
    status: str
    invalid_ids: frozenset[str]


def privacy_url(region: str, base_url: str | None = None) -> str:
    return (base_url or PRIVACY_BASE_URLS[region]).rstrip("/") + PRIVACY_PATH


class PrivacyClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        secret_key: str,
        *,
        requests_per_second: float = 1.0,
        requester: str = "currents-export",
        stopped: Callable[[], bool] = lambda: False,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._request_url = url  # as given: requests go there
        self.url = without_credentials(url)  # what reprs and messages show
        self.requester = requester
        # Paced a little slower than the limit: the server's window counts arrivals, which
        # a slower answer to the previous request can bring closer together.
        self._interval = 1.05 / requests_per_second
        self._clock = clock
        self._sleep = sleep
        self._last_request: float | None = None
        self._stopped = stopped
        self.requests = 0
        self._http = httpx.Client(auth=httpx.BasicAuth(api_key, secret_key), timeout=30.0,
                                  transport=transport,
                                  headers={"User-Agent": "currents-export"})

    def __repr__(self) -> str:  # never the keys, nor user:password@ from the URL
        return f"PrivacyClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def delete(self, user_ids: list[str]) -> DeletionJob:
        """Ask Amplitude to delete these users (at most 100); the job they joined."""
        if not 0 < len(user_ids) <= MAX_IDS_PER_REQUEST:
            raise ValueError(f"1 to {MAX_IDS_PER_REQUEST} ids per request, not {len(user_ids)}")
        # Amplitude's page spells the flag both ways; both are sent, meaning the same.
        body = orjson.dumps({"user_ids": user_ids, "requester": self.requester,
                             "ignore_invalid_id": True, "ignore_invalid_ids": True,
                             "include_mapped_user_ids": True})
        response = self._call("POST", f"a request for {len(user_ids)} users", content=body,
                              headers={"Content-Type": "application/json"})
        return _verified(response, user_ids)

    def scheduled(self, start_day: str, end_day: str) -> set[str]:
        """The user ids in the project's deletion jobs of these days (to tell whether a
        request whose answer was lost was taken)."""
        response = self._call("GET", "a list of deletion jobs",
                              params={"start_day": start_day, "end_day": end_day})
        try:
            jobs = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            jobs = None
        if not isinstance(jobs, list):
            raise PrivacyApiError("the User Privacy API answered 200 without a list of jobs "
                                  "(not Amplitude?)")
        return {str(entry["user_id"]) for job in jobs if isinstance(job, dict)
                for entry in job.get("amplitude_ids") or ()
                if isinstance(entry, dict) and entry.get("user_id") is not None}

    def check(self) -> None:
        """The API answers and takes the keys: today's jobs listed (read only), in seconds
        (two attempts, 3 s to connect and to answer): ``check``, and before a submit."""
        today = time.strftime("%Y-%m-%d", time.gmtime())
        self._call("GET", "a list of deletion jobs", attempts=_CHECK_ATTEMPTS,
                   timeout=_CHECK_TIMEOUT_S, params={"start_day": today, "end_day": today})

    def _call(self, method: str, what: str, *, attempts: int = _ATTEMPTS,
              **arguments: Any) -> httpx.Response:
        """One request, retried on 429, 5xx and network errors; a 200, or an error."""
        problem = "no answer"
        for attempt in range(attempts):
            if self._stopped():
                raise PrivacyApiError(f"stopped before {what} was sent")
            if attempt:
                self._sleep(min(60.0, 2.0 ** attempt))
            self._pace()
            try:
                response = self._http.request(method, self._request_url, **arguments)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__} from {self.url}"
                continue
            except httpx.InvalidURL:  # not an HTTPError; its text may quote the password
                raise ConfigurationError(
                    f"the User Privacy API URL ({self.url}) is not a URL httpx can use; a "
                    "user:password in it must be percent-encoded") from None
            self.requests += 1
            if response.status_code in (401, 403):
                raise ConfigurationError(
                    f"the User Privacy API refused the API key and secret key "
                    f"(HTTP {response.status_code}); check the secret key (--secret-key-file, "
                    "AMPLITUDE_SECRET_KEY, CURRENTS_EXPORT_SECRET_KEY_SECRET or _PARAMETER)")
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code != 200:
                raise PrivacyApiError(f"the User Privacy API ({self.url}) answered HTTP "
                                      f"{response.status_code} to {what}", refused=True)
            return response
        raise PrivacyApiError(f"the User Privacy API ({self.url}) did not take {what} after "
                              f"{attempts} attempts ({problem})")

    def _pace(self) -> None:
        now = self._clock()
        if self._last_request is not None:
            wait = self._last_request + self._interval - now
            if wait > 0:
                self._sleep(wait)
                now += wait
        self._last_request = now


def _verified(response: httpx.Response, sent: list[str]) -> DeletionJob:
    """The job, if the answer is Amplitude's and accounts for every id sent."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("day"), str):
        raise PrivacyApiError("the User Privacy API answered 200 without a deletion job "
                              "(not Amplitude?); nothing is marked submitted")
    invalid = frozenset(str(i) for i in body.get("invalid_ids") or ())
    scheduled = {str(entry.get("user_id")) for entry in body.get("amplitude_ids") or ()
                 if isinstance(entry, dict)}
    missing = set(sent) - invalid - scheduled
    if missing:
        raise PrivacyApiError(f"the User Privacy API's answer accounts for "
                              f"{len(sent) - len(missing)} of {len(sent)} users sent; "
                              "nothing is marked submitted")
    return DeletionJob(day=body["day"], status=str(body.get("status", "")), invalid_ids=invalid)
