"""The Lambda's logs and metrics, through Powertools for AWS Lambda (Python).

Logs: one JSON line per record (CloudWatch Logs keeps one line per entry) from Powertools'
formatter, with its keys (``level``, ``location``, ``message``, ``timestamp``,
``service``, and, once ``logger.inject_lambda_context`` has run, ``cold_start``,
``function_name``, ``function_request_id``, ``function_arn``, ``function_memory_size``,
``xray_trace_id``) and ours (``name``: the logger; the fields passed as
``extra={"fields": {...}}``, merged at the top level; the item and object being processed,
see ``aws_lambda``). Every line is shown text (``support.redact``): the
:class:`~currents_export.support.logs.ShownFilter` cleans the record on the handler, and
:class:`JsonFormatter` cleans what Powertools adds itself (exception text, values at any
depth): no URL credentials, control characters escaped (JSON escapes C0 itself, not C1,
U+2028/2029 or the bidirectional overrides, which CloudWatch would show raw). Third-party
wire logs stay at WARNING at every level.

Metrics: CloudWatch embedded metric format (EMF) written by Powertools' Metrics on stdout,
in the namespace ``CurrentsExport`` (``POWERTOOLS_METRICS_NAMESPACE``). :data:`METRICS` is
the registry of every metric the code emits, with its unit and dimension sets: the emitting
code below takes names and units from it, and the tests compare the stack's alarms and
dashboard with it. No metric carries Powertools' ``service`` dimension: the alarms watch
the dimensionless series.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from currents_export.counts import ObjectReport, SendingReport
from currents_export.support.logs import install_filter, quiet_wire_logs
from currents_export.support.redact import shown, shown_lines

NAMESPACE = "CurrentsExport"  # the stack's alarms and dashboard watch this namespace
SERVICE = "currents-export"  # the logs' "service" key
ENV_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
ENV_SERVICE = "POWERTOOLS_SERVICE_NAME"
# What infra/template.yaml sets for Powertools (checked with aws_lambda.ENVIRONMENT_VARIABLES).
POWERTOOLS_VARIABLES = frozenset({ENV_NAMESPACE, ENV_SERVICE})
# Powertools adds a "service" dimension to every metric when it knows a service: an empty
# one keeps the series the alarms watch (no dimension, or EventType) as they were.
_NO_SERVICE_DIMENSION = ""


# ---- the registry of metrics ------------------------------------------------------------------

Dimensions = tuple[str, ...]
BY_EVENT_TYPE: tuple[Dimensions, ...] = ((), ("EventType",))  # all types, and per type
NO_DIMENSIONS: tuple[Dimensions, ...] = ((),)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric the Lambda emits: its name, unit and the dimension sets it is published
    with (``()``: no dimension)."""

    name: str
    unit: MetricUnit
    dimensions: tuple[Dimensions, ...]
    doc: str


def _specs(dimensions: tuple[Dimensions, ...], unit: MetricUnit,
           **docs: str) -> dict[str, MetricSpec]:
    return {name: MetricSpec(name, unit, dimensions, doc) for name, doc in docs.items()}


_COUNT, _SECONDS, _RATE = MetricUnit.Count, MetricUnit.Seconds, MetricUnit.CountPerSecond
# One EMF document per object processed (not for one already done).
OBJECT_METRICS: dict[str, MetricSpec] = {
    **_specs(BY_EVENT_TYPE, _COUNT,
             Records="records accounted for",
             EventsDelivered="events Amplitude accepted",
             EventsSkipped="records skipped by policy (no identity, dry run...)",
             EventsDeadLettered="events Amplitude refused, written to the dead letter",
             EventsDuplicate="event ids repeated within the run",
             ObjectsFailed="1 when the object failed",
             ObjectsFailedPermanently="1 when it failed and retrying cannot help",
             # [deletions] on: only when they happen
             DeletionsRequested="Braze deletion requests recorded",
             EventsSkippedDeletedUser="events of users deleted before"),
    **_specs(BY_EVENT_TYPE, _SECONDS,
             DeliveryLagSeconds="from the object's newest event to its delivery"),
}
# One EMF document per invocation that processed objects: its sending.
SENDING_METRICS: dict[str, MetricSpec] = {
    **_specs(NO_DIMENSIONS, _COUNT,
             ProjectThrottles="429s without indexes: the project's limit",
             IdThrottles="429s naming users or devices"),
    **_specs(NO_DIMENSIONS, _SECONDS,
             BudgetWaitSeconds="time waiting for the rate budget (set or found)",
             AmplitudeWaitSeconds="time waiting on Amplitude (pauses after 429s, backoff)"),
    **_specs(NO_DIMENSIONS, _RATE,
             EventsPerSecond="events delivered / the invocation's time",
             BudgetEventsPerSecond="the invocation's budget in force (set or found; 0: none)"),
}
# One EMF document per deletions schedule.
DELETION_METRICS: dict[str, MetricSpec] = _specs(
    NO_DIMENSIONS, _COUNT,
    DeletionsDue="deletions due", DeletionsSubmitted="deletion requests submitted",
    DeletionUserIdsSubmitted="user ids submitted",
    DeletionsUnresolved="deletions with no Amplitude user id",
    DeletionsUnresolvedDeviceOnly="... of users known by a device only",
    DeletionsUnresolvedNeverSeen="... of users never seen",
    DeletionsFailed="1 when the submit failed")
# Named and shaped as Powertools' own (log_metrics(capture_cold_start_metric=True)), which
# would add a "service" dimension as soon as POWERTOOLS_SERVICE_NAME is set.
COLD_START = MetricSpec("ColdStart", _COUNT, (("function_name",),),
                        "1 per new execution environment (its runtime built)")
METRICS: dict[str, MetricSpec] = {
    **OBJECT_METRICS, **SENDING_METRICS, **DELETION_METRICS, COLD_START.name: COLD_START}
_DELETION_SKIPS = {"deletion_request": OBJECT_METRICS["DeletionsRequested"],
                   "deleted_user": OBJECT_METRICS["EventsSkippedDeletedUser"]}


def metrics_namespace() -> str:
    """``POWERTOOLS_METRICS_NAMESPACE`` (the stack sets it), else ``CurrentsExport``."""
    return os.environ.get(ENV_NAMESPACE) or NAMESPACE


# Per-invocation metrics, flushed when the handler returns (``metrics.log_metrics``).
metrics = Metrics(namespace=metrics_namespace(), service=_NO_SERVICE_DIMENSION)
# An invocation that fails before it has figures (a configuration error) has nothing to
# publish: Powertools would say so on stderr every time (Lambda's Errors metric counts it).
warnings.filterwarnings("ignore", message="No application metrics to publish",
                        category=UserWarning)


def _emit(values: Mapping[MetricSpec, float], dimensions: Mapping[str, str] | None = None,
          now_ms: int | None = None) -> None:
    """One EMF document on stdout now (not at the end of the invocation), the metrics
    ``values`` holds published with their dimension sets (the same for every one of them);
    ``dimensions`` gives the values of the named dimensions."""
    [sets] = {spec.dimensions for spec in values}
    provider = AmazonCloudWatchEMFProvider(namespace=metrics_namespace(),
                                           service=_NO_SERVICE_DIMENSION)
    for spec, value in values.items():
        provider.add_metric(name=spec.name, unit=spec.unit, value=value)
    first, *more = sets
    dimensions = dimensions or {}
    for name in first:
        provider.add_dimension(name=name, value=dimensions[name])
    for names in more:
        provider.add_dimensions(**{name: dimensions[name] for name in names})
    if now_ms is not None:
        provider.set_timestamp(now_ms)
    provider.flush_metrics(raise_on_empty_metrics=True)


def emit_object_metrics(report: ObjectReport, now_ms: int | None = None) -> None:
    """The object's EMF document: counts per event type and over all types, and the lag.

    ``ObjectsFailed`` is 1 when the object failed, ``ObjectsFailedPermanently`` 1 when it
    failed and retrying cannot help (``report.retryable`` is False); both are 0 otherwise.
    Every metric is published per ``EventType`` and without dimensions, so one alarm on the
    dimensionless metric covers every event type.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    failed = report.status == "failed"
    spec = OBJECT_METRICS
    values: dict[MetricSpec, float] = {
        spec["Records"]: report.records,
        spec["EventsDelivered"]: report.delivered,
        spec["EventsSkipped"]: sum(report.skipped.values()),
        spec["EventsDeadLettered"]: sum(report.dead_lettered.values()),
        spec["EventsDuplicate"]: report.duplicates,
        spec["ObjectsFailed"]: 1 if failed else 0,
        spec["ObjectsFailedPermanently"]: 1 if failed and not report.retryable else 0,
    }
    for reason, metric in _DELETION_SKIPS.items():  # [deletions] on: only when they happen
        if report.skipped.get(reason):
            values[metric] = report.skipped[reason]
    lag = delivery_lag_s(report, now_ms)
    if lag is not None:
        values[spec["DeliveryLagSeconds"]] = lag
    _emit(values, {"EventType": report.event_type or "unknown"}, now_ms)


def emit_cold_start(function_name: str) -> None:
    """``ColdStart`` for the function: a new execution environment built its runtime."""
    _emit({COLD_START: 1}, {"function_name": function_name})


def add_sending_metrics(sending: SendingReport, delivered: int, elapsed_s: float) -> None:
    """The invocation's sending, published when it ends: 429s (``ProjectThrottles``: the
    project's limit, which the stack's throttling alarm watches), waits, the rate and the
    budget in force (set, or found after a refusal; 0 when neither)."""
    spec = SENDING_METRICS
    _add({
        spec["ProjectThrottles"]: sending.refused,
        spec["IdThrottles"]: sending.throttled,
        spec["BudgetWaitSeconds"]: round(sending.waited_on_budget_s, 3),
        spec["AmplitudeWaitSeconds"]: round(sending.waited_on_amplitude_s, 3),
        spec["EventsPerSecond"]: round(delivered / elapsed_s, 1) if elapsed_s > 0 else 0.0,
        spec["BudgetEventsPerSecond"]: round(sending.budget_in_force or 0.0, 1),
    })


def add_deletion_metrics(figures: Mapping[str, Any]) -> None:
    """One deletions submit (``SubmitReport.to_json()``, or ``{"error": ...}``), published
    when the invocation ends."""
    unresolved = figures.get("unresolved") or {}
    spec = DELETION_METRICS
    _add({
        spec["DeletionsDue"]: figures.get("due", 0),
        spec["DeletionsSubmitted"]: figures.get("submitted", 0),
        spec["DeletionUserIdsSubmitted"]: figures.get("user_ids", 0),
        spec["DeletionsUnresolved"]: sum(unresolved.values()),
        spec["DeletionsUnresolvedDeviceOnly"]: unresolved.get("device_only", 0),
        spec["DeletionsUnresolvedNeverSeen"]: unresolved.get("never_seen", 0),
        spec["DeletionsFailed"]: 1 if figures.get("error") else 0,
    })


def _add(values: Mapping[MetricSpec, float]) -> None:
    for spec, value in values.items():
        assert spec.dimensions == NO_DIMENSIONS, spec  # the invocation's document has no dimension
        metrics.add_metric(name=spec.name, unit=spec.unit, value=value)


def object_fields(report: ObjectReport, now_ms: int | None = None) -> dict[str, Any]:
    """Per-object figures for a log line (no record contents, no secrets)."""
    fields: dict[str, Any] = {
        "object": report.object,
        "event_type": report.event_type,
        "status": report.status,
        **report.tally_json(),
        "pending": report.pending,
        "resumed": report.resumed,
    }
    lag = delivery_lag_s(report, now_ms)
    if lag is not None:
        fields["delivery_lag_s"] = lag
    if report.error:
        fields["error"] = report.error
    if report.status == "failed":
        fields["permanent"] = not report.retryable
    return fields


def delivery_lag_s(report: ObjectReport, now_ms: int | None = None) -> float | None:
    """Seconds between the newest event of the object and now (its delivery)."""
    if report.newest_event_ms is None:
        return None
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return round(max(0, now_ms - report.newest_event_ms) / 1000, 3)


# ---- logs -------------------------------------------------------------------------------------

_MAX_FIELD_DEPTH = 8  # deeper than any field we log: shown as text below that


class JsonFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON line, shown: fields passed as ``extra={"fields": {...}}`` are merged
    at the top level, the logger's name is ``name``, the time is RFC 3339 in UTC, and every
    text in the line (the message, values at any depth, the exception) is ``shown``.
    Private record attributes (``_...``, such as the ShownFilter's mark) are left out; the
    traceback is the ``exception`` text only (no structured ``stack_trace`` beside it)."""

    def __init__(self, **keys: Any) -> None:
        super().__init__(utc=True, use_rfc3339=True, serialize_stacktrace=False,
                         log_record_order=["timestamp", "level", "name", "message"],
                         name="%(name)s", **keys)

    def formatException(self, ei: Any) -> str:
        return shown_lines(super().formatException(ei))

    def serialize(self, log: Mapping[str, Any]) -> str:
        line: dict[str, Any] = {}
        for key, value in log.items():
            if key == "fields" and isinstance(value, dict):
                line.update(value)
            elif not key.startswith("_"):
                line[key] = value
        cleaned = {shown(str(key)): (shown_lines(value) if key == "exception"
                                     and isinstance(value, str) else _shown_fields(value))
                   for key, value in line.items()}
        return orjson.dumps(cleaned, default=_shown_default).decode()


def _shown_fields(value: Any, depth: int = 0) -> Any:
    """``value`` (a field of a log line) with every text in it ``shown``."""
    if isinstance(value, str):
        return shown(value)
    if depth >= _MAX_FIELD_DEPTH:
        return shown(str(value))
    if isinstance(value, dict):
        return {shown(str(key)): _shown_fields(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_shown_fields(item, depth + 1) for item in value]
    return value


def _shown_default(value: Any) -> str:
    return shown(str(value))


class _StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is at the time of each line."""

    @property
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


_handler = _StdoutHandler()
install_filter(_handler)  # no URL credentials, no raw control characters, tracebacks too
# The Lambda's Powertools Logger: its handler is also the root's (setup_json_logging), so
# every logger's lines (ours, the libraries') get its keys and its cleaning.
logger = Logger(service=os.environ.get(ENV_SERVICE) or SERVICE, logger_handler=_handler,
                logger_formatter=JsonFormatter())
logging.getLogger(logger.name).propagate = False  # its lines go to the handler once


def setup_json_logging(level: int = logging.INFO) -> None:
    """Route every log line to stdout through the Powertools handler, cleaned; third-party
    wire logs stay at WARNING, even at DEBUG."""
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level)
    logger.setLevel(level)
    quiet_wire_logs()
