"""The API key from the environment, Secrets Manager or SSM (moto's server), cached."""

from __future__ import annotations

import json
from functools import partial

import boto3
import pytest

from currents_export.errors import ApiKeyError
from currents_export.settings.keys import ApiKeyProvider, ApiKeySource


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def provider(aws: str, env: dict[str, str], clock: Clock | None = None) -> ApiKeyProvider:
    return ApiKeyProvider(ApiKeySource.from_env(env), env,
                          client_factory=partial(boto3.client, endpoint_url=aws),
                          clock=clock or Clock())


def test_secret_plain_or_json_and_ssm_secure_string(aws: str) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    plain = secrets.create_secret(Name="plain", SecretString="key-plain-123")["ARN"]
    as_json = secrets.create_secret(Name="json", SecretString=json.dumps({"api_key": "key-j"}))
    boto3.client("ssm", endpoint_url=aws).put_parameter(
        Name="/amplitude/key", Value="key-ssm-9", Type="SecureString")
    assert provider(aws, {"AMPLITUDE_API_KEY_SECRET": plain}).get() == "key-plain-123"
    assert provider(aws, {"AMPLITUDE_API_KEY_SECRET": as_json["Name"]}).get() == "key-j"
    assert provider(aws, {"AMPLITUDE_API_KEY_PARAMETER": "/amplitude/key"}).get() == "key-ssm-9"
    assert provider(aws, {"AMPLITUDE_API_KEY": "key-env"}).get() == "key-env"


def test_the_key_is_cached_and_re_read_on_request(aws: str) -> None:
    secrets = boto3.client("secretsmanager", endpoint_url=aws)
    secrets.create_secret(Name="rotating", SecretString="old-key-1")
    clock = Clock()
    keys = provider(aws, {"AMPLITUDE_API_KEY_SECRET": "rotating"}, clock)
    assert keys.get() == "old-key-1"
    secrets.put_secret_value(SecretId="rotating", SecretString="new-key-2")
    assert keys.get() == "old-key-1"  # cached
    assert keys.get(refresh=True) == "new-key-2"  # after Amplitude refused the old one
    secrets.put_secret_value(SecretId="rotating", SecretString="newer-key-3")
    clock.now += 301
    assert keys.get() == "newer-key-3"  # the cache expires
    assert "newer-key-3" not in repr(keys) and "rotating" in repr(keys)


def test_errors_name_the_setting_never_a_value(aws: str) -> None:
    with pytest.raises(ApiKeyError, match="AMPLITUDE_API_KEY_SECRET"):
        ApiKeySource.from_env({})
    with pytest.raises(ApiKeyError, match="'missing'") as info:
        provider(aws, {"AMPLITUDE_API_KEY_SECRET": "missing"}).get()
    assert "ResourceNotFoundException" in str(info.value)
    boto3.client("secretsmanager", endpoint_url=aws).create_secret(
        Name="wrong-json", SecretString=json.dumps({"password": "hunter2-secret"}))
    with pytest.raises(ApiKeyError) as info:
        provider(aws, {"AMPLITUDE_API_KEY_SECRET": "wrong-json"}).get()
    assert "hunter2-secret" not in str(info.value) and "api_key" in str(info.value)


def test_the_secret_key_comes_the_same_way_and_a_missing_one_is_named() -> None:
    from currents_export.settings import load_settings

    settings = load_settings("lambda", environ={"AMPLITUDE_SECRET_KEY": "s-SECRET-3"})
    provider = ApiKeyProvider.from_settings(settings, "secret_key")
    assert provider.get() == "s-SECRET-3" and "s-SECRET-3" not in repr(provider)
    with pytest.raises(ApiKeyError, match="no Amplitude secret key configured: set "
                                          "CURRENTS_EXPORT_SECRET_KEY_SECRET"):
        ApiKeyProvider.from_settings(load_settings("lambda", environ={}), "secret_key")
