"""The API key from the environment, Secrets Manager or SSM (moto's server), read through
Powertools' Parameters and cached; our rules on top: JSON fields, trimming, messages that
name the setting and the AWS error code, never a value."""

from __future__ import annotations

import json
from functools import partial

import boto3
import pytest

from currents_export.aws.secrets import SecretReader, fetch_secret
from currents_export.errors import ApiKeyError, SecretError
from currents_export.settings.keys import ApiKeyProvider, ApiKeySource


def provider(aws: str, env: dict[str, str], max_age_s: int | None = None) -> ApiKeyProvider:
    return ApiKeyProvider(ApiKeySource.from_env(env), env,
                          client_factory=partial(boto3.client, endpoint_url=aws),
                          max_age_s=max_age_s)


def test_secret_plain_or_json_and_ssm_secure_string(aws: str) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    plain = secrets.create_secret(Name="plain", SecretString="key-plain-123\n")["ARN"]
    as_json = secrets.create_secret(Name="json", SecretString=json.dumps({"api_key": "key-j"}))
    boto3.client("ssm", endpoint_url=aws).put_parameter(
        Name="/amplitude/key", Value="key-ssm-9\n", Type="SecureString")
    assert provider(aws, {"AMPLITUDE_API_KEY_SECRET": plain}).get() == "key-plain-123"
    assert provider(aws, {"AMPLITUDE_API_KEY_SECRET": as_json["Name"]}).get() == "key-j"
    assert provider(aws, {"AMPLITUDE_API_KEY_PARAMETER": "/amplitude/key"}).get() == "key-ssm-9"
    assert provider(aws, {"AMPLITUDE_API_KEY": "key-env"}).get() == "key-env"


def test_the_key_is_cached_and_re_read_on_request(aws: str) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    secrets.create_secret(Name="rotating", SecretString="old-key-1")
    keys = provider(aws, {"AMPLITUDE_API_KEY_SECRET": "rotating"})
    assert keys.get() == "old-key-1"
    secrets.put_secret_value(SecretId="rotating", SecretString="new-key-2")
    assert keys.get() == "old-key-1"  # cached (Powertools' default: 300 s)
    assert keys.get(refresh=True) == "new-key-2"  # after Amplitude refused the old one
    assert keys.get() == "new-key-2"  # the value read again is the one cached
    assert "new-key-2" not in repr(keys) and "rotating" in repr(keys)


def test_the_cache_lasts_max_age(aws: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value older than ``max_age`` is read again: 0 s here, so every read goes to AWS
    (its own argument, or Powertools' POWERTOOLS_PARAMETERS_MAX_AGE)."""
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    secrets.create_secret(Name="rotating", SecretString="old-key-1")
    given = provider(aws, {"AMPLITUDE_API_KEY_SECRET": "rotating"}, max_age_s=0)
    monkeypatch.setenv("POWERTOOLS_PARAMETERS_MAX_AGE", "0")
    from_env = provider(aws, {"AMPLITUDE_API_KEY_SECRET": "rotating"})
    assert given.get() == from_env.get() == "old-key-1"
    secrets.put_secret_value(SecretId="rotating", SecretString="newer-key-3")
    assert given.get() == from_env.get() == "newer-key-3"


def test_errors_name_the_setting_never_a_value(aws: str) -> None:
    with pytest.raises(ApiKeyError, match="AMPLITUDE_API_KEY_SECRET"):
        ApiKeySource.from_env({})
    with pytest.raises(ApiKeyError, match="'missing'") as info:
        provider(aws, {"AMPLITUDE_API_KEY_SECRET": "missing"}).get()
    assert str(info.value) == ("cannot read the Amplitude API key from secret 'missing': "
                               "ResourceNotFoundException")
    with pytest.raises(ApiKeyError, match="ParameterNotFound"):
        provider(aws, {"AMPLITUDE_API_KEY_PARAMETER": "/missing"}).get()
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    secrets.create_secret(Name="wrong-json",
                          SecretString=json.dumps({"password": "hunter2-secret"}))
    with pytest.raises(ApiKeyError) as info:
        provider(aws, {"AMPLITUDE_API_KEY_SECRET": "wrong-json"}).get()
    assert "hunter2-secret" not in str(info.value) and "api_key" in str(info.value)
    secrets.create_secret(Name="broken-json", SecretString='{"api_key": "hunter2-secret"')
    with pytest.raises(ApiKeyError, match="looks like JSON but is not valid") as info:
        provider(aws, {"AMPLITUDE_API_KEY_SECRET": "broken-json"}).get()
    assert "hunter2-secret" not in str(info.value)
    secrets.create_secret(Name="blank", SecretString="  \n")
    with pytest.raises(ApiKeyError, match="the secret 'blank' is empty"):
        provider(aws, {"AMPLITUDE_API_KEY_SECRET": "blank"}).get()


def test_a_binary_secret_is_read_as_text_and_the_salt_is_read_once(aws: str) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    secrets.create_secret(Name="binary", SecretBinary=json.dumps({"salt": "s-1"}).encode())
    secrets.create_secret(Name="not-text", SecretBinary=b"\xff\xfe")
    factory = partial(boto3.client, endpoint_url=aws)
    assert fetch_secret("secret", "binary", what="the hashing salt", json_fields=("salt",),
                        client_factory=factory) == "s-1"
    with pytest.raises(SecretError, match="binary, not text"):
        fetch_secret("secret", "not-text", what="the hashing salt", json_fields=("salt",),
                     client_factory=factory)
    reader = SecretReader("secret", "binary", what="the hashing salt", json_fields=("salt",),
                          client_factory=factory)
    assert repr(reader) == "SecretReader(secret:binary)"


def test_the_secret_key_comes_the_same_way_and_a_missing_one_is_named() -> None:
    from currents_export.settings import load_settings

    settings = load_settings("lambda", environ={"AMPLITUDE_SECRET_KEY": "s-SECRET-3"})
    provider = ApiKeyProvider.from_settings(settings, "secret_key")
    assert provider.get() == "s-SECRET-3" and "s-SECRET-3" not in repr(provider)
    with pytest.raises(ApiKeyError, match="no Amplitude secret key configured: set "
                                          "CURRENTS_EXPORT_SECRET_KEY_SECRET"):
        ApiKeyProvider.from_settings(load_settings("lambda", environ={}), "secret_key")
