"""Correctness checks: a failed one stops the benchmark with a non-zero exit status."""

from __future__ import annotations


class CheckFailed(Exception):
    """A measurement whose result is wrong (lost events, unbalanced summary, crashed child)."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`CheckFailed` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailed(message)
