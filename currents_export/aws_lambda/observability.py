"""Structured JSON logs and CloudWatch embedded-metric-format (EMF) lines for Lambda."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from currents_export.counts import ObjectReport, SendingReport
from currents_export.support.logs import install_filter, quiet_wire_logs
from currents_export.support.redact import shown, shown_lines

NAMESPACE = "CurrentsExport"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed as ``extra={"fields": {...}}`` are merged.

    Whatever it writes is shown text (``support.redact.shown``): the message, the text
    values of the fields (at any depth) and the exception have no URL credentials, and
    their control characters are escaped (JSON escapes C0 itself, not C1, U+2028/2029 or the
    bidirectional overrides, which CloudWatch would show raw). ``setup_json_logging`` also
    puts the :class:`~currents_export.support.logs.ShownFilter` on the handler."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a format string and arguments that do not fit: shown apart
            message = f"{record.msg} {record.args!r}"
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": shown(message),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(_shown_fields(fields))
        if record.exc_info or record.exc_text:
            text = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
            line["exception"] = shown_lines(text)  # one JSON string: JSON escapes its breaks
        return orjson.dumps(line, default=_shown_default).decode()


_MAX_FIELD_DEPTH = 8  # deeper than any field we log: shown as text below that


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


def setup_json_logging(level: int = logging.INFO) -> None:
    """Route every log line to stdout as JSON (CloudWatch Logs keeps one line per entry),
    cleaned (no URL credentials, control characters escaped); third-party wire logs stay at
    WARNING, even at DEBUG."""
    root = logging.getLogger()
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter())
    install_filter(handler)  # no URL credentials, no raw control characters
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_wire_logs()


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


_DELETION_SKIPS = {"deletion_request": "DeletionsRequested",
                   "deleted_user": "EventsSkippedDeletedUser"}


def emf_line(report: ObjectReport, now_ms: int | None = None) -> str:
    """A CloudWatch EMF document: counts per event type and over all types, and the lag.

    ``ObjectsFailed`` is 1 when the object failed, ``ObjectsFailedPermanently`` 1 when it
    failed and retrying cannot help (``report.retryable`` is False); both are 0 otherwise.
    Every metric is published per ``EventType`` and without dimensions, so one alarm on the
    dimensionless metric covers every event type.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    failed = report.status == "failed"
    metrics: dict[str, float] = {
        "Records": report.records,
        "EventsDelivered": report.delivered,
        "EventsSkipped": sum(report.skipped.values()),
        "EventsDeadLettered": sum(report.dead_lettered.values()),
        "EventsDuplicate": report.duplicates,
        "ObjectsFailed": 1 if failed else 0,
        "ObjectsFailedPermanently": 1 if failed and not report.retryable else 0,
    }
    for reason, name in _DELETION_SKIPS.items():  # [deletions] on: only when they happen
        if report.skipped.get(reason):
            metrics[name] = report.skipped[reason]
    units = dict.fromkeys(metrics, "Count")
    lag = delivery_lag_s(report, now_ms)
    if lag is not None:
        metrics["DeliveryLagSeconds"] = lag
        units["DeliveryLagSeconds"] = "Seconds"
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["EventType"], []],  # per type, and all types together
                "Metrics": [{"Name": name, "Unit": units[name]} for name in metrics],
            }],
        },
        "EventType": report.event_type or "unknown",
        **metrics,
    }
    return orjson.dumps(document).decode()


def deletions_emf_line(figures: dict[str, Any], now_ms: int | None = None) -> str:
    """A CloudWatch EMF document for one deletions submit (``SubmitReport.to_json()``)."""
    unresolved = figures.get("unresolved") or {}
    metrics: dict[str, float] = {
        "DeletionsDue": figures.get("due", 0),
        "DeletionsSubmitted": figures.get("submitted", 0),
        "DeletionUserIdsSubmitted": figures.get("user_ids", 0),
        "DeletionsUnresolved": sum(unresolved.values()),
        "DeletionsUnresolvedDeviceOnly": unresolved.get("device_only", 0),
        "DeletionsUnresolvedNeverSeen": unresolved.get("never_seen", 0),
        "DeletionsFailed": 1 if figures.get("error") else 0,
    }
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if now_ms is None else now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE, "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": "Count"} for name in metrics],
            }],
        },
        **metrics,
    }
    return orjson.dumps(document).decode()


def sending_emf_line(sending: SendingReport, delivered: int, elapsed_s: float,
                     now_ms: int | None = None) -> str:
    """A CloudWatch EMF document for one invocation's sending: 429s (``ProjectThrottles``:
    the project's limit, which the stack's throttling alarm watches), waits, the rate and
    the budget in force (set, or found after a refusal; 0 when neither)."""
    metrics: dict[str, tuple[float, str]] = {
        "ProjectThrottles": (sending.refused, "Count"),
        "IdThrottles": (sending.throttled, "Count"),
        "BudgetWaitSeconds": (round(sending.waited_on_budget_s, 3), "Seconds"),
        "AmplitudeWaitSeconds": (round(sending.waited_on_amplitude_s, 3), "Seconds"),
        "EventsPerSecond": (round(delivered / elapsed_s, 1) if elapsed_s > 0 else 0.0,
                            "Count/Second"),
        "BudgetEventsPerSecond": (round(sending.budget_in_force or 0.0, 1), "Count/Second"),
    }
    document: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if now_ms is None else now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE, "Dimensions": [[]],
                "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
            }],
        },
        **{name: value for name, (value, _) in metrics.items()},
    }
    return orjson.dumps(document).decode()
