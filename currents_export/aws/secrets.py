"""Read one secret value from Secrets Manager or an SSM SecureString: never logged, and
never in an error message (messages name the secret, the setting and the AWS error code).

Shared by the Amplitude API key (``settings.keys``) and the Lambda's hashing salt
(``aws_lambda``). A Secrets Manager secret holds the value itself, or JSON with one of
the fields the caller names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from currents_export.errors import SecretError

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_ssm import SSMClient

Kind = Literal["secret", "parameter"]


class ClientFactory(Protocol):
    """Makes the client for a service name, as ``boto3.client`` does (tests pass fakes)."""

    @overload
    def __call__(self, service_name: Literal["secretsmanager"]) -> SecretsManagerClient: ...
    @overload
    def __call__(self, service_name: Literal["ssm"]) -> SSMClient: ...


def boto3_client(service_name: str) -> Any:
    """``boto3.client(service_name)``, importing boto3 only when a client is made (it is a
    sixth of a second of every process's start, and a local replay needs none)."""
    import boto3

    return boto3.client(service_name)  # type: ignore[call-overload]


def fetch_secret(
    kind: Kind,
    name: str,
    *,
    what: str,
    json_fields: tuple[str, ...],
    client_factory: ClientFactory,
    error: type[SecretError] = SecretError,
) -> str:
    """The value of the Secrets Manager secret (``kind="secret"``) or SSM parameter
    (``kind="parameter"``, decrypted) ``name``; ``what`` ("the Amplitude API key") serves
    messages, and ``error`` is the exception raised (a subclass of ``SecretError``)."""
    try:
        if kind == "secret":
            raw = client_factory("secretsmanager").get_secret_value(SecretId=name)
            return value_from_secret_string(raw.get("SecretString") or "", name,
                                            json_fields=json_fields, error=error)
        reply = client_factory("ssm").get_parameter(Name=name, WithDecryption=True)
        # Trimmed as secrets are: a parameter written from a file ends in a newline.
        value = str(reply["Parameter"]["Value"]).strip()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise error(f"cannot read {what} from {kind} {name!r}: {code}") from None
    except BotoCoreError as exc:
        raise error(f"cannot read {what} from {kind} {name!r}: {type(exc).__name__}") from None
    if not value:
        raise error(f"the {kind} {name!r} is empty")
    return str(value)


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
