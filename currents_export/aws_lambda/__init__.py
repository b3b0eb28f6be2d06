"""AWS Lambda entry point: ``currents_export.aws_lambda.handler``.

Configured by environment variables (README, "The Lambda", and the option table). The API
key is read through Powertools' Parameters and cached per container (``settings.keys``),
the hashing salt read at cold start; neither is ever logged, and at every level, DEBUG
included, the wire logs of botocore, urllib3, httpx stay at WARNING (they would print
session tokens and secrets).

Logs and metrics go through Powertools (``observability``): every line carries the request
id, ``cold_start`` and the function's name; the lines written while an SQS message (or a
Batch Operations task) is handled carry its id (``sqs_message_id``, ``batch_task_id``), and
those written while an object is processed its ``s3_bucket`` and ``s3_key``. Per object:
one log line (its figures; the only line about it at ERROR when it fails for good) and one
EMF document; per invocation, one EMF document of its sending (and ``ColdStart``). Each
object is delivered in its own run, so its figures (requests, retries) are its own.

The deadline is hard: the time left bounds every timeout and backoff sleep, AWS calls
included (:func:`aws_call_limits`); at the margin progress is saved and the object reported
failed, so it is delivered again and resumes from its checkpoint. An object that can never
be read is recorded permanently failed and reported handled (SQS does not redeliver it);
one that ends early (``IncompleteObject``) is retried until the queue's redrive policy
moves it aside (an S3 object is written whole: a truncated one stays truncated).

The ledger delivers to one destination (``compose.check_destination``): each invocation
checks the key it sends with against the table's binding (binding a table that has none)
before reading any object. A table bound elsewhere is a configuration error, logged once
per container; the objects are not read, and fail retryable (the queue keeps them until the
configuration is fixed). A mismatch reads the key again first: a container can hold a key
rotated since (``CURRENTS_EXPORT_REBIND_DESTINATION`` would otherwise rebind the table back).
"""

from __future__ import annotations

import logging
import os
import time
import tomllib
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import boto3

from currents_export.amplitude.pacing import Pacer, PaceState
from currents_export.aws.secrets import ClientFactory, fetch_secret
from currents_export.aws_lambda.observability import (
    POWERTOOLS_VARIABLES,
    add_deletion_metrics,
    add_sending_metrics,
    emit_cold_start,
    emit_object_metrics,
    logger,
    metrics,
    object_fields,
    setup_json_logging,
)
from currents_export.compose import (
    AwsCallLimits,
    build_pacer,
    build_pipeline,
    build_privacy_client,
    check_amplitude,
    check_destination,
    open_deletion_store,
    open_destinations,
)
from currents_export.counts import ObjectReport, RunSummary
from currents_export.deletions.submit import submit_deletions
from currents_export.errors import (
    AmplitudeSetupError,
    ConfigurationError,
    DestinationMismatch,
    LambdaConfigError,
    SecretError,
    SettingsError,
)
from currents_export.settings import (
    CONFIG_VARIABLE,
    LAMBDA,
    OPTION,
    Settings,
    load_settings,
    options_for,
)
from currents_export.settings.keys import ApiKeyProvider
from currents_export.settings.mapping import DEFAULT_SALT_ENV
from currents_export.sources import SourceObject
from currents_export.sources.events import (
    Invocation,
    ObjectRef,
    WorkItem,
    batch_operations_response,
    parse_invocation,
    sqs_response,
)
from currents_export.sources.s3 import s3_object
from currents_export.stopping import Stop

log = logging.getLogger("currents_export.lambda")

# What the deployed function needs; infra/template.yaml is checked against these by a test.
ENVIRONMENT_VARIABLES = frozenset(
    {variable for option in options_for(LAMBDA) for variable in option.variables}
    | {CONFIG_VARIABLE, DEFAULT_SALT_ENV}
    | POWERTOOLS_VARIABLES
)
IAM_ACTIONS = frozenset({
    "s3:GetObject",  # sources.s3: streaming reads
    "s3:PutObject",  # deadletter.S3DeadLetter
    "dynamodb:GetItem", "dynamodb:UpdateItem",  # ledger.dynamodb
    "dynamodb:PutItem", "dynamodb:DeleteItem",  # deletions.store: deletions, forgetting
    "dynamodb:Query", "dynamodb:DescribeTable",  # its sparse index (and why it is missing)
    "secretsmanager:GetSecretValue",  # the API key, the secret key, the salt's secret
    "ssm:GetParameter",  # the salt, with CURRENTS_EXPORT_PII_SALT_PARAMETER
    "kms:GenerateDataKey", "kms:Decrypt",  # SSE-KMS dead letter (…_DEAD_LETTER_KMS_KEY)
})
ENV_SALT_SECRET = "CURRENTS_EXPORT_PII_SALT_SECRET"
ENV_SALT_PARAMETER = "CURRENTS_EXPORT_PII_SALT_PARAMETER"
ENV_LOG_LEVEL = "CURRENTS_EXPORT_LOG_LEVEL"
_LOG_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
               "ERROR": logging.ERROR}
# AWS_LAMBDA_LOG_LEVEL (Lambda's advanced logging controls) names levels its own way.
_LAMBDA_LOG_LEVELS = {**_LOG_LEVELS, "TRACE": logging.DEBUG, "WARN": logging.WARNING,
                      "FATAL": logging.CRITICAL}

_AWS_ATTEMPTS = 3



def aws_call_limits(deadline_margin_s: float) -> AwsCallLimits:
    """Timeouts and attempts for the Lambda's S3 and DynamoDB clients, so that one call and
    its retries end well within the deadline margin.

    3 attempts, connect ``min(5, margin / 20)`` s, read (a wait for bytes) ``min(30, margin
    / 10)`` s, each at least 1 s: at most ``3 * (connect + read) + 3`` s with botocore's
    backoff, half the default 60 s margin. The CLI keeps longer defaults (S3: connect 10 s,
    read 120 s, 10 retries; DynamoDB: botocore's 60 s, 10 retries).
    """
    return AwsCallLimits(
        connect_timeout=max(1.0, min(5.0, deadline_margin_s / 20)),
        read_timeout=max(1.0, min(30.0, deadline_margin_s / 10)),
        max_attempts=_AWS_ATTEMPTS,
    )


def lambda_settings(
    env: Mapping[str, str], *, client_factory: ClientFactory = boto3.client
) -> Settings:
    """The settings the variables give (the same table as the command line's:
    ``currents_export.settings``); ``client_factory`` makes the Secrets Manager or SSM
    client that reads the hashing salt (when it is kept there)."""
    try:
        secret = _variable(env, "pii_salt_secret")
        parameter = _variable(env, "pii_salt_parameter")
        config = env.get(CONFIG_VARIABLE)
        mapping_env = env
        if config:
            mapping_env = _with_salt(env, config, secret, parameter, client_factory)
        elif secret or parameter:
            log.warning("a hashing salt is configured (%s) but no %s: nothing is hashed",
                        ENV_SALT_SECRET if secret else ENV_SALT_PARAMETER, CONFIG_VARIABLE)
        settings = load_settings(LAMBDA, environ=env, environ_for_mapping=mapping_env)
    except SettingsError as exc:
        raise LambdaConfigError(str(exc)) from None
    if not settings.state.startswith("dynamodb://") or not settings.given("state"):
        raise LambdaConfigError(
            "set CURRENTS_EXPORT_STATE=dynamodb://TABLE (or LEDGER_TABLE=TABLE)")
    if not settings.dead_letter.startswith("s3://") or not settings.given("dead_letter"):
        raise LambdaConfigError(
            "set CURRENTS_EXPORT_DEAD_LETTER=s3://BUCKET/PREFIX (a Lambda's disk is not kept)")
    return settings


def _variable(env: Mapping[str, str], name: str) -> str | None:
    """The first of the option's variables that is set (its own name, then aliases)."""
    return next((env[v] for v in OPTION[name].variables if env.get(v)), None)


def _with_salt(
    env: Mapping[str, str], config_path: str, secret: str | None, parameter: str | None,
    client_factory: ClientFactory,
) -> Mapping[str, str]:
    """``env``, plus the salt read from Secrets Manager or SSM (when one of them is
    configured) as the value of the variable the file's ``pii.salt_env`` names."""
    if not secret and not parameter:
        return env
    if secret and parameter:
        raise LambdaConfigError(f"set {ENV_SALT_SECRET} or {ENV_SALT_PARAMETER}, not both")
    variable = _salt_variable(config_path)
    setting = ENV_SALT_SECRET if secret else ENV_SALT_PARAMETER
    if env.get(variable):
        raise LambdaConfigError(f"the salt is set twice: in {variable} and by {setting}; "
                                f"keep only {setting}")
    try:
        salt = fetch_secret("secret" if secret else "parameter", secret or parameter or "",
                            what="the hashing salt", json_fields=("salt", variable),
                            client_factory=client_factory)
    except SecretError as exc:
        raise LambdaConfigError(f"{setting}: {exc}") from None
    return {**env, variable: salt}


def _salt_variable(config_path: str) -> str:
    """The variable ``[mapping.pii] salt_env`` names (its default when the file does not
    say, or cannot be read: loading it then reports the problem)."""
    try:
        data = tomllib.loads(Path(config_path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return DEFAULT_SALT_ENV
    pii = data.get("mapping", {}).get("pii", {}) if isinstance(data.get("mapping"), dict) \
        else {}
    name = pii.get("salt_env") if isinstance(pii, dict) else None
    return name if isinstance(name, str) and name else DEFAULT_SALT_ENV


def log_level(env: Mapping[str, str]) -> int:
    """``CURRENTS_EXPORT_LOG_LEVEL``, else Lambda's ``AWS_LAMBDA_LOG_LEVEL``, else INFO."""
    value = env.get(ENV_LOG_LEVEL)
    if value:
        if value.upper() not in _LOG_LEVELS:
            raise LambdaConfigError(f"{ENV_LOG_LEVEL}={value!r}: use one of "
                                    f"{', '.join(_LOG_LEVELS)}")
        return _LOG_LEVELS[value.upper()]
    return _LAMBDA_LOG_LEVELS.get(env.get("AWS_LAMBDA_LOG_LEVEL", "").upper(), logging.INFO)


class Runtime:
    """What one execution environment keeps between invocations: the settings, the
    ledger, the dead letter, the S3 client and the key (``settings.keys``)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.settings = lambda_settings(env)
        limits = aws_call_limits(self.settings.deadline_margin_s)
        self._resources = ExitStack()  # open for the life of the container
        self.destinations = open_destinations(self.settings, self._resources, aws=limits,
                                              check=False)
        s3 = self.destinations.s3
        assert s3 is not None  # the dead letter is s3:// (lambda_settings)
        self.s3 = s3
        self.api_key = ApiKeyProvider.from_settings(self.settings)
        self._secret_key: ApiKeyProvider | None = None
        self._errors_logged: set[str] = set()  # configuration errors: once per container
        self._probed: str | None = None  # the key Amplitude answered and took (its check)
        # The rate Amplitude allowed an earlier invocation without a budget: later ones
        # start there instead of finding it again (a 429 and a pause each).
        self.found_rate: float | None = None
        settings = self.settings
        if settings.rebind_destination:
            log.warning("CURRENTS_EXPORT_REBIND_DESTINATION is on: the ledger is rebound to "
                        "this function's Amplitude host and API key if it records another",
                        extra={"fields": {"hint": "turn it off once the ledger is rebound"}})
        if settings.deletions.enabled and not (settings.secret_key or settings.secret_key_secret
                                               or settings.secret_key_parameter):
            log.warning("deletions are recorded but cannot be submitted: no secret key",
                        extra={"fields": {"hint": "set CURRENTS_EXPORT_SECRET_KEY_SECRET "
                                                  "(the stack's AmplitudeSecretKeySecretArn)"}})

    def secret_key(self) -> str:
        """The project's secret key (User Privacy API), read once per container (only by
        the deletions schedule: a function without deletions needs none)."""
        try:
            if self._secret_key is None:
                self._secret_key = ApiKeyProvider.from_settings(self.settings, "secret_key")
            return self._secret_key.get()
        except SecretError as exc:
            raise LambdaConfigError(str(exc)) from None

    def checked_api_key(self, *, key_only: bool = False) -> str:
        """The API key, once the ledger is known to deliver with it (bound to it now, if
        the table has no binding). A mismatch reads the key again before it counts: the
        container may hold a key rotated since. Before the first object, Amplitude is
        checked once per container and key (:meth:`reachable`). Raises ConfigurationError."""
        key = self.api_key.get()
        if not key_only:
            key = self.reachable(key)
        ledger = self.destinations.ledger
        try:
            check_destination(self.settings, ledger, key, key_only=key_only, rebind=False)
        except DestinationMismatch:
            key = self.api_key.get(refresh=True)
            check_destination(self.settings, ledger, key, key_only=key_only)
        return key

    def reachable(self, key: str) -> str:
        """The key, once Amplitude answers as Amplitude and takes it (``compose.
        check_amplitude``: seconds, not the retry horizon, for a wrong URL or an outage
        before anything was delivered); asked once per container and key. A refused key is
        read again first (it may have been rotated). Raises ConfigurationError: the
        caller logs it once and returns the items for retry."""
        if key == self._probed:
            return key
        try:
            check_amplitude(self.settings, key)
        except AmplitudeSetupError:
            key = self.api_key.get(refresh=True)
            check_amplitude(self.settings, key)
        self._probed = key
        return key

    def log_configuration_error(self, error: str) -> None:
        """An ERROR line the first time this container meets ``error``; later ones at
        DEBUG (every invocation would otherwise repeat it)."""
        first = error not in self._errors_logged
        self._errors_logged.add(error)
        log.log(logging.ERROR if first else logging.DEBUG, "configuration error",
                extra={"fields": {"error": error}})

    def __repr__(self) -> str:  # never the key (nor the salt, in settings.mapping)
        return (f"Runtime(state={self.settings.state!r}, "
                f"dead_letter={self.settings.dead_letter!r}, api_key={self.api_key!r})")


_runtime: Runtime | None = None


def runtime(context: Any = None) -> Runtime:
    """The per-container runtime, built on first use (cold start: the ``ColdStart`` metric
    of the function ``context`` names)."""
    global _runtime
    if _runtime is None:
        setup_json_logging(log_level(os.environ))
        _runtime = Runtime(os.environ)
        function_name = getattr(context, "function_name", None)
        if isinstance(function_name, str) and function_name:
            emit_cold_start(function_name)
    return _runtime


def reset_runtime() -> None:
    """Forget the cached runtime (a new execution environment; used by tests)."""
    global _runtime
    _runtime = None


SUBMIT_DELETIONS = {"currents_export": "submit_deletions"}  # the schedule's input


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any] | None:
    """Process the objects an event names; report failures the way the trigger expects.
    The schedule's event (:data:`SUBMIT_DELETIONS`) submits the due deletions instead."""
    current = runtime(context)
    if dict(event) == SUBMIT_DELETIONS:
        return _submit_deletions(current, context)
    invocation = parse_invocation(event)
    started = time.monotonic()
    stop = Stop.after(_remaining_s(context) - current.settings.deadline_margin_s)
    # One schedule for the invocation (its share of the stack's budget), from the rate an
    # earlier invocation of this container found, if any.
    pacer = build_pacer(current.settings, stop, PaceState.local(current.found_rate))
    outcomes = {}
    for item in invocation.items:
        with logger.append_context_keys(**_item_keys(invocation, item)):
            for reason in item.ignored:
                log.info("ignored", extra={"fields": {"reason": reason, "item": item.item_id}})
            outcomes[item.item_id] = _process_item(current, item, stop, pacer)
    sending = pacer.report()
    current.found_rate = sending.found_events_per_second or current.found_rate
    delivered = sum(report.delivered for reports in outcomes.values() for report in reports)
    add_sending_metrics(sending, delivered, time.monotonic() - started)
    return _response(invocation, outcomes)


def _item_keys(invocation: Invocation, item: WorkItem) -> dict[str, str]:
    """The log keys of the lines written while ``item`` is handled: its SQS message id or
    its Batch Operations task id."""
    if item.item_id is None:
        return {}
    if invocation.kind == "sqs":
        return {"sqs_message_id": item.item_id}
    if invocation.kind == "batch_operations":
        return {"batch_task_id": item.item_id}
    return {}


def _submit_deletions(current: Runtime, context: Any) -> dict[str, Any]:
    """Resolve and submit the due deletions, within the deadline (the rest waits for the
    next schedule); one log line, and the deletion metrics."""
    settings = current.settings
    if not settings.deletions.enabled:
        log.warning("deletions submit scheduled but deletions are off",
                    extra={"fields": {"hint": "add [deletions] to CURRENTS_EXPORT_CONFIG"}})
        return {"deletions": "off"}
    stop = Stop.after(_remaining_s(context) - settings.deadline_margin_s)
    with ExitStack() as stack:
        try:
            # the same project as the runs that recorded the deletions (its own host)
            api_key = current.checked_api_key(key_only=True)
            store = open_deletion_store(settings, current.destinations.ledger)
            client = build_privacy_client(settings, api_key, current.secret_key(), stack,
                                          stop=stop)
            report = submit_deletions(store, client, grace_s=settings.deletions.grace_period_s,
                                      now=time.time(), stopped=lambda: stop.stopped)
        except ConfigurationError as exc:  # a wrong or missing secret key: alarm, then raise
            add_deletion_metrics({"error": str(exc)})
            log.error("deletions not submitted", extra={"fields": {"error": str(exc)}})
            raise
    figures = report.to_json()
    log.log(logging.ERROR if report.error else logging.INFO, "deletions submitted",
            extra={"fields": figures})
    add_deletion_metrics(figures)
    if report.error and "deadline" not in report.error:
        raise RuntimeError(f"deletions not all submitted: {report.error}")
    return {"deletions": figures}


def _remaining_s(context: Any) -> float:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    return remaining() / 1000 if callable(remaining) else 900.0


def _process_item(
    current: Runtime, item: WorkItem, stop: Stop, pacer: Pacer
) -> list[ObjectReport]:
    """Run the item's objects, each in its own run; a report per object (failed ones say
    if a retry can help), and one log line and one EMF document each."""
    sources = [(ref, s3_object(current.s3, ref.bucket, ref.key, size=ref.size, etag=ref.etag,
                               version_id=ref.version_id)) for ref in item.objects]
    if not sources:
        return []
    if stop.stopped:
        return [_not_started(source.uri) for _, source in sources]
    try:
        api_key = current.checked_api_key()  # before any object is read
    except ConfigurationError as exc:  # bound elsewhere; or the table cannot be the ledger
        current.log_configuration_error(str(exc))
        return [_not_started(source.uri, f"not started: {exc}") for _, source in sources]
    reports = []
    refused: str | None = None  # a configuration error that reading the key again left
    for ref, source in sources:
        with logger.append_context_keys(**_object_keys(ref)):
            if refused is None:
                report, refused, api_key = _deliver(current, api_key, source, stop, pacer)
            else:  # the same key would be refused again: the queue keeps the object
                report = _not_started(source.uri, f"not started: {refused}")
            _log_object(report)
        reports.append(report)
    return reports


def _object_keys(ref: ObjectRef) -> dict[str, str]:
    """The log keys of the lines written while the object is processed."""
    return {"s3_bucket": ref.bucket, "s3_key": ref.key}


def _deliver(
    current: Runtime, api_key: str, source: SourceObject, stop: Stop, pacer: Pacer
) -> tuple[ObjectReport, str | None, str]:
    """Deliver one object: its report, the configuration error that stopped it (None), and
    the API key to go on with. Amplitude refusing the key reads it again, once (it may have
    been rotated; the ledger must deliver with it), and runs again."""
    report, summary = _run(current, api_key, source, stop, pacer)
    if summary.configuration_error is None:
        return report, None, api_key
    current.api_key.get(refresh=True)
    try:
        api_key = current.checked_api_key()
    except ConfigurationError as exc:
        current.log_configuration_error(str(exc))
        return report, str(exc), api_key
    report, summary = _run(current, api_key, source, stop, pacer)
    if summary.configuration_error is not None:
        log.error("configuration error", extra={"fields": {"error": summary.configuration_error}})
    return report, summary.configuration_error, api_key


def _run(
    current: Runtime, api_key: str, source: SourceObject, stop: Stop, pacer: Pacer
) -> tuple[ObjectReport, RunSummary]:
    """One run over one object: its own client and pipeline, over the container's ledger
    and dead letter. The retry horizon never outlives the deadline; every wait is bounded
    by ``stop``. The run's requests and retries are the object's (the delivery core's
    per-object report does not count them)."""
    reports: list[ObjectReport] = []
    horizon = max(1.0, min(current.settings.retry_horizon, stop.remaining() or 1.0))
    with ExitStack() as stack:
        pipeline = build_pipeline(current.settings, current.destinations, stack, stop=stop,
                                  api_key=api_key, on_object=reports.append,
                                  retry_horizon_s=horizon, pacer=pacer, log_failures=False)
        summary = pipeline.run([source])
    report = reports[0] if reports else _not_started(source.uri, "not reported by the run")
    report.requests, report.retries = summary.requests, summary.retries
    return report, summary


def _not_started(uri: str, error: str = "not started: the deadline was too close") -> ObjectReport:
    return ObjectReport(object=uri, status="failed", error=error)


def _log_object(report: ObjectReport) -> None:
    level = logging.INFO
    if report.status == "failed":
        level = logging.WARNING if report.retryable else logging.ERROR
    log.log(level, "object " + report.status, extra={"fields": object_fields(report)})
    if report.status != "already_done":
        emit_object_metrics(report)  # CloudWatch reads EMF from stdout


def _response(invocation: Invocation, outcomes: dict[str | None, list[ObjectReport]]
              ) -> dict[str, Any] | None:
    def failed(reports: list[ObjectReport]) -> bool:
        """Worth delivering again: a permanent failure is handled (recorded, dead-lettered)."""
        return any(r.status == "failed" and r.retryable for r in reports)

    if invocation.kind == "sqs":
        return sqs_response([item_id for item_id, reports in outcomes.items()
                             if item_id is not None and failed(reports)])
    if invocation.kind == "batch_operations":
        results = {}
        for item_id, reports in outcomes.items():
            if item_id is None:
                continue
            results[item_id] = _task_result(reports)
        return batch_operations_response(invocation, results)
    if any(failed(reports) for reports in outcomes.values()):
        # Direct, SNS and EventBridge invocations are asynchronous: raising makes Lambda retry.
        raise RuntimeError("some objects are not finished; they resume on the retry")
    return {"objects": sum(len(reports) for reports in outcomes.values())}


def _task_result(reports: list[ObjectReport]) -> tuple[str, str]:
    if not reports:
        return "PermanentFailure", "not a Currents object"
    failed = [r for r in reports if r.status == "failed"]
    if not failed:
        report = reports[0]
        return "Succeeded", (f"{report.status} records={report.records} "
                             f"delivered={report.delivered} skipped={sum(report.skipped.values())} "
                             f"dead_lettered={sum(report.dead_lettered.values())}")
    first = failed[0]
    code = "TemporaryFailure" if first.retryable else "PermanentFailure"
    return code, (first.error or "failed")[:1000]
