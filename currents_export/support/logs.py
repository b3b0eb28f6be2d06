"""Logging shared by every entry point."""

from __future__ import annotations

import logging

# Libraries whose debug logs show the wire: request headers (AWS session tokens, signed
# Authorization), response bodies (GetSecretValue's secret) and URLs.
WIRE_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "h11",
                "h2", "hpack", "awscrt")


def quiet_wire_logs() -> None:
    """Keep third-party wire logs at WARNING whatever the root level (-vv, DEBUG)."""
    for name in WIRE_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging(verbose: int) -> None:
    """The command line's logging: WARNING, INFO with -v, DEBUG with -vv, on stderr."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    quiet_wire_logs()  # headers, AWS session tokens, secrets: quiet at -vv too
