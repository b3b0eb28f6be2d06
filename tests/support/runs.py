"""Runs of the command line against the emulator, and the checks on their summaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastavro
import orjson
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile

API_KEY = "test-key-0123456789"


def run_cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def replay(
    emulator: Emulator, work: Path, *paths: Path | str, extra: tuple[str, ...] = ()
) -> tuple[Result, dict[str, Any]]:
    summary_path = work / "summary.json"
    summary_path.unlink(missing_ok=True)
    result = run_cli(
        "replay", *map(str, paths),
        "--api-key", API_KEY,
        "--amplitude-url", emulator.url,
        "--state", str(work / "state.sqlite"),
        "--dead-letter", str(work / "dead-letter"),
        "--summary-json", str(summary_path),
        "--retry-horizon", "0",
        *extra,
    )
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    return result, summary


def assert_balanced(summary: dict[str, Any]) -> None:
    assert summary["records"] == (
        summary["delivered"]
        + sum(summary["skipped"].values())
        + sum(summary["dead_lettered"].values())
        + summary["duplicates"]
    )
    assert summary["balanced"] is True


def read_all(files: list[FixtureFile]) -> list[tuple[str, dict[str, Any]]]:
    """Every record of the fixture files, decoded independently of the tool."""
    out = []
    for fixture in files:
        with fixture.path.open("rb") as fo:
            out.extend((fixture.event_type, record) for record in fastavro.reader(fo))
    return out
