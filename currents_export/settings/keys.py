"""The Amplitude API key (and the project's secret key, for the User Privacy API): from
the environment, Secrets Manager or SSM.

Configuration names where the key lives, never the key itself:
``AMPLITUDE_API_KEY`` (the key, for local runs), ``AMPLITUDE_API_KEY_SECRET`` (a Secrets
Manager id or ARN; the secret is the key, or JSON with ``api_key`` /
``AMPLITUDE_API_KEY``), or ``AMPLITUDE_API_KEY_PARAMETER`` (an SSM SecureString name).
A key kept in AWS is read through Powertools' Parameters (``aws.secrets.SecretReader``),
cached per process (a Lambda container) for ``max_age_s``, and read again at once when
Amplitude rejects it (``get(refresh=True)``); it is never logged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from currents_export.aws.secrets import ClientFactory, SecretReader, boto3_client
from currents_export.errors import ApiKeyError

if TYPE_CHECKING:
    from currents_export.settings import Settings

ENV_KEY = "AMPLITUDE_API_KEY"
ENV_SECRET = "AMPLITUDE_API_KEY_SECRET"
ENV_PARAMETER = "AMPLITUDE_API_KEY_PARAMETER"
_JSON_FIELDS = ("api_key", "AMPLITUDE_API_KEY", "apiKey")
# What each key is called, and the fields a Secrets Manager JSON secret may hold it under.
_KEYS = {"api_key": ("the Amplitude API key", _JSON_FIELDS),
         "secret_key": ("the Amplitude secret key", ("secret_key",))}


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
    """The key where ``source`` says: given (``env``), or read from AWS through a
    :class:`~currents_export.aws.secrets.SecretReader` (cached for ``max_age_s``; None:
    ``POWERTOOLS_PARAMETERS_MAX_AGE``, else 300 s). ``get(refresh=True)`` re-reads
    (key rotation)."""

    def __init__(
        self,
        source: ApiKeySource,
        env: Mapping[str, str],
        *,
        client_factory: ClientFactory = boto3_client,
        max_age_s: int | None = None,
        what: str = "the Amplitude API key",
        json_fields: tuple[str, ...] = _JSON_FIELDS,
    ) -> None:
        self.source = source
        self._given = env[source.name] if source.kind == "env" else None
        self._reader = None if source.kind == "env" else SecretReader(
            "secret" if source.kind == "secret" else "parameter", source.name, what=what,
            json_fields=json_fields, client_factory=client_factory, max_age_s=max_age_s,
            error=ApiKeyError)

    @classmethod
    def from_settings(
        cls, settings: Settings, key: str = "api_key", *,
        client_factory: ClientFactory = boto3_client,
    ) -> ApiKeyProvider:
        """The ``key`` (``api_key`` or ``secret_key``) the settings point to: given (from
        its variable or file), or in Secrets Manager (``<key>_secret``) or SSM
        (``<key>_parameter``)."""
        from currents_export.settings import OPTION

        what, fields = _KEYS[key]
        given = getattr(settings, key)
        secret = getattr(settings, f"{key}_secret")
        parameter = getattr(settings, f"{key}_parameter")
        if given:
            where = settings.origin(key)
            source, env = ApiKeySource("env", where), {where: given}
        elif secret:
            source, env = ApiKeySource("secret", secret), {}
        elif parameter:
            source, env = ApiKeySource("parameter", parameter), {}
        else:
            # the names the documentation uses: the last alias of each
            secret_var, parameter_var, given_var = (
                OPTION[name].variables[-1] for name in (f"{key}_secret", f"{key}_parameter", key))
            raise ApiKeyError(f"no {what.removeprefix('the ')} configured: set {secret_var} (a "
                              f"Secrets Manager secret), {parameter_var} (an SSM SecureString) "
                              f"or {given_var}")
        return cls(source, env, client_factory=client_factory, what=what, json_fields=fields)

    def __repr__(self) -> str:
        return f"ApiKeyProvider({self.source.kind}:{self.source.name})"

    def get(self, *, refresh: bool = False) -> str:
        if self._reader is None:
            assert self._given is not None
            return self._given
        return self._reader.get(refresh=refresh)
