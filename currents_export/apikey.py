"""The Amplitude API key: from the environment, Secrets Manager or SSM, fetched once.

Configuration names where the key lives, never the key itself:
``AMPLITUDE_API_KEY`` (the key, for local runs), ``AMPLITUDE_API_KEY_SECRET`` (a Secrets
Manager id or ARN; the secret is the key, or JSON with ``api_key`` /
``AMPLITUDE_API_KEY``), or ``AMPLITUDE_API_KEY_PARAMETER`` (an SSM SecureString name).
The value is cached per process (a Lambda container) for ``ttl_s`` and never logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
import orjson
from botocore.exceptions import BotoCoreError, ClientError

ENV_KEY = "AMPLITUDE_API_KEY"
ENV_SECRET = "AMPLITUDE_API_KEY_SECRET"
ENV_PARAMETER = "AMPLITUDE_API_KEY_PARAMETER"
_JSON_FIELDS = ("api_key", "AMPLITUDE_API_KEY", "apiKey")


class ApiKeyError(ValueError):
    """The key cannot be found; the message names the setting, never a value."""


@dataclass(frozen=True, slots=True)
class ApiKeySource:
    kind: str  # "env" | "secret" | "parameter"
    name: str  # the env var, secret id or parameter name (never the key)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ApiKeySource:
        if env.get(ENV_KEY):
            return cls("env", ENV_KEY)
        if env.get(ENV_SECRET):
            return cls("secret", env[ENV_SECRET])
        if env.get(ENV_PARAMETER):
            return cls("parameter", env[ENV_PARAMETER])
        raise ApiKeyError(
            f"no Amplitude API key configured: set {ENV_SECRET} (a Secrets Manager secret), "
            f"{ENV_PARAMETER} (an SSM SecureString) or {ENV_KEY}"
        )


class ApiKeyProvider:
    """Fetches the key once and caches it; ``get(refresh=True)`` re-reads (key rotation)."""

    def __init__(
        self,
        source: ApiKeySource,
        env: Mapping[str, str],
        *,
        client_factory: Callable[[str], Any] = boto3.client,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._env = env
        self._client_factory = client_factory
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._fetched_at = 0.0

    def __repr__(self) -> str:
        return f"ApiKeyProvider({self.source.kind}:{self.source.name})"

    def get(self, *, refresh: bool = False) -> str:
        with self._lock:
            fresh = self._value is not None and self._clock() - self._fetched_at < self._ttl_s
            if refresh or not fresh:
                self._value = self._fetch()
                self._fetched_at = self._clock()
            assert self._value is not None
            return self._value

    def _fetch(self) -> str:
        kind, name = self.source.kind, self.source.name
        if kind == "env":
            return self._env[ENV_KEY]
        try:
            if kind == "secret":
                raw = self._client_factory("secretsmanager").get_secret_value(SecretId=name)
                return _key_from_secret(raw.get("SecretString") or "", name)
            reply = self._client_factory("ssm").get_parameter(Name=name, WithDecryption=True)
            value = reply["Parameter"]["Value"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise ApiKeyError(f"cannot read the Amplitude API key from {kind} {name!r}: {code}"
                              ) from None
        except BotoCoreError as exc:
            raise ApiKeyError(f"cannot read the Amplitude API key from {kind} {name!r}: "
                              f"{type(exc).__name__}") from None
        if not value:
            raise ApiKeyError(f"the {kind} {name!r} is empty")
        return str(value)


def _key_from_secret(text: str, name: str) -> str:
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            raise ApiKeyError(f"the secret {name!r} looks like JSON but is not valid") from None
        for field in _JSON_FIELDS:
            if isinstance(data, dict) and data.get(field):
                return str(data[field])
        raise ApiKeyError(
            f"the secret {name!r} is JSON without any of the fields {', '.join(_JSON_FIELDS)}"
        )
    if not stripped:
        raise ApiKeyError(f"the secret {name!r} is empty")
    return stripped
