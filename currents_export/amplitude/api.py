"""Facts of Amplitude's upload API: endpoints, request limits, pauses, retry policy."""

from __future__ import annotations

from dataclasses import dataclass

REGION_BASE_URLS: dict[str, str] = {
    "us": "https://api2.amplitude.com",
    "eu": "https://api.eu.amplitude.com",
}
API_PATHS: dict[str, str] = {"http": "/2/httpapi", "batch": "/batch"}


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one upload request may hold; bytes are measured on the serialised body."""

    max_events: int
    max_body_bytes: int


# Amplitude rejects ≥ 1 MB (v2) / > 20 MB (batch) with 413; we keep headroom.
REQUEST_LIMITS: dict[str, RequestLimits] = {
    "http": RequestLimits(max_events=2_000, max_body_bytes=900_000),
    "batch": RequestLimits(max_events=2_000, max_body_bytes=18_000_000),
}

# How long to hold a throttled user's or device's events after a 429, per API.
THROTTLE_PAUSE_S: dict[str, float] = {"http": 30.0, "batch": 15.0}



def endpoint_url(api: str, region: str = "us", base_url: str | None = None) -> str:
    """The upload URL for ``api`` in ``region``; ``base_url`` overrides the region."""
    if api not in API_PATHS:
        raise ValueError(f"unknown Amplitude API {api!r}; use http or batch")
    if base_url is None:
        if region not in REGION_BASE_URLS:
            raise ValueError(f"unknown Amplitude region {region!r}; use us or eu")
        base_url = REGION_BASE_URLS[region]
    return base_url.rstrip("/") + API_PATHS[api]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter, bounded by a total horizon."""

    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0
    horizon_s: float = 900.0  # give up (object stays pending) after this long without success
    max_forbidden_attempts: int = 3  # 403 (WAF) is retried only a few times
    project_pause_s: float = 60.0  # a 429 without indexes pauses every sender this long
    daily_quota_pause_s: float = 3_600.0  # ids over Amplitude's daily quota wait an hour

    def delay(self, attempt: int, jitter: float) -> float:
        """Delay before retry number ``attempt`` (1-based); ``jitter`` in [0, 1)."""
        ceiling = min(self.max_delay_s, self.initial_delay_s * (2.0 ** (attempt - 1)))
        return ceiling * (0.5 + jitter / 2)
