"""Read one secret value from Secrets Manager or an SSM SecureString through Powertools'
Parameters utility (cached for ``max_age`` seconds): never logged, and never in an error
message (messages name the secret, the setting and the AWS error code).

What Powertools does not do is ours: a Secrets Manager secret holds the value itself, or
JSON with one of the fields the caller names (``value_from_secret_string``); values are
trimmed; an empty one is an error. Shared by the Amplitude API key and secret key
(``settings.keys``) and the Lambda's hashing salt (``aws_lambda``). Powertools (the
``lambda`` extra) and boto3 are imported only when a value is first read.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from currents_export.errors import SecretError

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters.base import BaseProvider
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_ssm import SSMClient

Kind = Literal["secret", "parameter"]


class ClientFactory(Protocol):
    """Makes the client for a service name, as ``boto3.client`` does (tests point it at
    moto's server)."""

    @overload
    def __call__(self, service_name: Literal["secretsmanager"]) -> SecretsManagerClient: ...
    @overload
    def __call__(self, service_name: Literal["ssm"]) -> SSMClient: ...


def boto3_client(service_name: str) -> Any:
    """``boto3.client(service_name)``, importing boto3 only when a client is made (it is a
    sixth of a second of every process's start, and a local replay needs none)."""
    import boto3

    return boto3.client(service_name)  # type: ignore[call-overload]


class SecretReader:
    """One Secrets Manager secret or SSM SecureString, read through a Powertools provider
    and cached by it for ``max_age_s`` (None: ``POWERTOOLS_PARAMETERS_MAX_AGE``, else 300 s);
    ``get(refresh=True)`` reads it again at once (a key Amplitude rejected was rotated).
    ``what`` ("the Amplitude API key") serves messages; ``error`` is the exception raised
    (a subclass of ``SecretError``)."""

    def __init__(
        self, kind: Kind, name: str, *, what: str, json_fields: tuple[str, ...],
        client_factory: ClientFactory = boto3_client, max_age_s: int | None = None,
        error: type[SecretError] = SecretError,
    ) -> None:
        self.kind, self.name = kind, name
        self._what = what
        self._json_fields = json_fields
        self._client_factory = client_factory
        self._max_age_s = max_age_s
        self._error = error
        self._lock = threading.Lock()
        self._provider: BaseProvider | None = None  # made at the first read

    def __repr__(self) -> str:  # where it is, never what it holds
        return f"SecretReader({self.kind}:{self.name})"

    def get(self, *, refresh: bool = False) -> str:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError

        kind, name = self.kind, self.name
        with self._lock:
            try:
                provider = self._provider or self._make_provider()
                if kind == "parameter":  # a SecureString, decrypted
                    raw = provider.get(name, max_age=self._max_age_s, force_fetch=refresh,
                                       decrypt=True)
                else:
                    raw = provider.get(name, max_age=self._max_age_s, force_fetch=refresh)
            except GetParameterError as exc:  # Powertools wraps the boto3 error it met
                raise self._error(f"cannot read {self._what} from {kind} {name!r}: "
                                  f"{_aws_error_code(exc)}") from None
            except (ClientError, BotoCoreError) as exc:  # making the client
                raise self._error(f"cannot read {self._what} from {kind} {name!r}: "
                                  f"{_aws_error_code(exc)}") from None
        if isinstance(raw, bytes):  # a SecretBinary
            try:
                raw = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self._error(f"the {kind} {name!r} is binary, not text") from None
        text = raw if isinstance(raw, str) else ""
        if kind == "secret":
            return value_from_secret_string(text, name, json_fields=self._json_fields,
                                            error=self._error)
        # Trimmed as secrets are: a parameter written from a file ends in a newline.
        value = text.strip()
        if not value:
            raise self._error(f"the {kind} {name!r} is empty")
        return value

    def _make_provider(self) -> BaseProvider:
        from aws_lambda_powertools.utilities.parameters import SecretsProvider, SSMProvider

        provider: BaseProvider
        if self.kind == "secret":
            provider = SecretsProvider(boto3_client=self._client_factory("secretsmanager"))
        else:
            provider = SSMProvider(boto3_client=self._client_factory("ssm"))
        self._provider = provider
        return provider


def _aws_error_code(exc: BaseException) -> str:
    """The AWS error code (``ResourceNotFoundException``) or botocore error class behind
    ``exc``: never its message, which could echo a request."""
    seen = 0
    cause: BaseException | None = exc
    while cause is not None and seen < 5:
        if isinstance(cause, ClientError):
            return str(cause.response.get("Error", {}).get("Code", "error"))
        if isinstance(cause, BotoCoreError):
            return type(cause).__name__
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    return type(exc).__name__


def fetch_secret(
    kind: Kind,
    name: str,
    *,
    what: str,
    json_fields: tuple[str, ...],
    client_factory: ClientFactory = boto3_client,
    error: type[SecretError] = SecretError,
) -> str:
    """The value of the Secrets Manager secret (``kind="secret"``) or SSM parameter
    (``kind="parameter"``, decrypted) ``name``, read once (the hashing salt, at cold
    start)."""
    return SecretReader(kind, name, what=what, json_fields=json_fields,
                        client_factory=client_factory, error=error).get()


def value_from_secret_string(
    text: str, name: str, *, json_fields: tuple[str, ...],
    error: type[SecretError] = SecretError,
) -> str:
    """A secret's string: the value itself, or JSON holding it under one of ``json_fields``."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            raise error(f"the secret {name!r} looks like JSON but is not valid") from None
        for field in json_fields:
            if isinstance(data, dict) and data.get(field):
                return str(data[field])
        raise error(
            f"the secret {name!r} is JSON without any of the fields {', '.join(json_fields)}"
        )
    if not stripped:
        raise error(f"the secret {name!r} is empty")
    return stripped
