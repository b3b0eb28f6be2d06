"""Logging shared by every entry point.

Every handler that ``setup_logging`` (the command line, the worker processes) or the Lambda's
JSON logging sets up carries a :class:`ShownFilter`: the record's message (with its
arguments), its exception text and its stack are scrubbed of URL credentials and their
control characters escaped (``support.redact``), so no ``user:password@`` from a URL option
and no file or S3 key name holding a newline or an escape sequence reaches a log line as it
is. A log line stays one line (a traceback keeps its own line breaks).
"""

from __future__ import annotations

import logging

from currents_export.support.redact import shown, shown_lines

# Libraries whose debug logs show the wire: request headers (AWS session tokens, signed
# Authorization), response bodies (GetSecretValue's secret) and URLs.
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "h11",
                "h2", "hpack", "awscrt")

_CLEANED = "_currents_export_shown"  # set on a record once its text is cleaned
_TRACEBACKS = logging.Formatter()  # formats exceptions the way every handler of ours does


class ShownFilter(logging.Filter):
    """Scrubs URL credentials from a record's message, arguments, exception and stack, and
    escapes the message's control characters. It rewrites the record (``msg`` becomes the
    cleaned message, ``args`` None), so every later handler sees the clean text; it never
    drops a record, and a message whose arguments do not fit it is still shown (scrubbed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _CLEANED, False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a format string and arguments that do not fit: shown apart
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = shown(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = shown_lines(record.exc_text)
        if record.stack_info:
            record.stack_info = shown_lines(record.stack_info)
        setattr(record, _CLEANED, True)
        return True


def install_filter(handler: logging.Handler) -> None:
    """Put a :class:`ShownFilter` on ``handler`` (once)."""
    if not any(isinstance(existing, ShownFilter) for existing in handler.filters):
        handler.addFilter(ShownFilter())


def quiet_wire_logs() -> None:
    """Keep third-party wire logs at WARNING whatever the root level (-vv, DEBUG)."""
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging(verbose: int) -> None:
    """The command line's logging: WARNING, INFO with -v, DEBUG with -vv, on stderr; every
    root handler cleans what it shows (:class:`ShownFilter`)."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        install_filter(handler)
    quiet_wire_logs()  # headers, AWS session tokens, secrets: quiet at -vv too
