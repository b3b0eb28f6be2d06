"""botocore's exceptions turned into answers: what is wrong and what to do about it.

An endpoint URL is named without the ``user:password@`` it may hold, and botocore's own text
is scrubbed of URL credentials (``support.redact``)."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from currents_export.errors import AwsSetupError
from currents_export.support.redact import shown, without_credentials

_CLIENT_ERRORS = {
    "NoSuchBucket": "the bucket does not exist: check its name (and the region/endpoint)",
    "AccessDenied": "access denied: the credentials in use lack the permission",
    "AllAccessDisabled": "access denied: the credentials in use lack the permission",
    "InvalidAccessKeyId": "AWS does not know this access key: check the credentials",
    "SignatureDoesNotMatch": "the secret access key is wrong: check the credentials",
    "ExpiredToken": "the AWS session token expired: refresh the credentials",
    "ExpiredTokenException": "the AWS session token expired: refresh the credentials",
    "UnrecognizedClientException": "AWS does not know these credentials: check them",
    "ResourceNotFoundException": "the DynamoDB table does not exist: create it or fix --state",
}


def explain(exc: BaseException, what: str) -> AwsSetupError | None:
    """An ``AwsSetupError`` saying what to fix when ``exc`` is a set-up problem, else None.

    ``what`` names the resource being used (``s3://bucket/prefix``, ``dynamodb://table``).
    """
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return AwsSetupError(
            f"{what}: no AWS credentials found; set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or run where an IAM role is available"
        )
    if isinstance(exc, NoRegionError):
        return AwsSetupError(f"{what}: no AWS region; set AWS_DEFAULT_REGION (or a region in "
                              "the AWS profile)")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        endpoint = getattr(exc, "kwargs", {}).get("endpoint_url")
        url = without_credentials(str(endpoint)) if endpoint else "the endpoint"
        return AwsSetupError(
            f"{what}: cannot reach {url}; check --s3-endpoint-url (or AWS_ENDPOINT_URL), the "
            "region and the network"
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _CLIENT_ERRORS:
            return AwsSetupError(f"{what}: {_CLIENT_ERRORS[code]} ({code})")
    if isinstance(exc, BotoCoreError) and "credential" in type(exc).__name__.lower():
        return AwsSetupError(f"{what}: the AWS credentials cannot be used ({shown(str(exc))})")
    return None
