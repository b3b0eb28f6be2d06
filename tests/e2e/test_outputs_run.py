"""What a run's outputs say, for people and for programs: the dead-letter files as a list,
a dry run's counts named "would", `--fail-on-dead-letter` (exit 3), the README's table
regenerated. Through the command line against the emulator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from tests.support.runs import read_all

KEY = "0123456789abcdef0123456789abcdef"
SESSION = "users.behaviors.app.SessionStart"


def fixtures(root: Path) -> list[FixtureFile]:
    return generate_fixtures(root / "bucket", events_per_type=90, seed=12, files_per_type=3,
                             event_types=[SESSION])


def replay(emulator: Emulator, root: Path, *extra: str) -> tuple[Result, dict[str, Any]]:
    summary = root / "summary.json"
    summary.unlink(missing_ok=True)
    result = CliRunner().invoke(main, [
        "replay", str(root / "bucket"), "--amplitude-url", emulator.url,
        "--state", str(root / "state.sqlite"), "--dead-letter", str(root / "dead-letter"),
        "--summary-json", str(summary), *extra,
    ], env={"AMPLITUDE_API_KEY": KEY}, catch_exceptions=False)
    return result, orjson.loads(summary.read_bytes()) if summary.exists() else {}


def silence_a_device(emulator: Emulator, files: list[FixtureFile]) -> None:
    devices = Counter(r["device_id"] for _, r in read_all(files) if r.get("device_id"))
    httpx.patch(f"{emulator.url}/_emulator/config", json={
        "silenced_device_ids": [devices.most_common(1)[0][0]]}).raise_for_status()


def test_dead_lettered_events_exit_3_only_when_asked_and_the_files_are_listed(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path)
    silence_a_device(emulator, files)
    strict, summary = replay(emulator, tmp_path, "--fail-on-dead-letter")
    assert strict.exit_code == 3
    dead = summary["dead_lettered"]["amplitude_silenced_device"]
    assert f"{dead} events were dead-lettered (--fail-on-dead-letter)" in strict.output
    # The files this run wrote, as a list of paths (not a pattern), and nothing else.
    written = sorted(str(p) for p in (tmp_path / "dead-letter").glob("*.jsonl"))
    assert sorted(summary["dead_letter_files"]) == written and written
    assert sum(len(Path(p).read_bytes().splitlines()) for p in written) == dead
    assert f"dead letter: {len(written)} file" in strict.output
    # Without the flag the same outcome is a success (everything is accounted for).
    lenient, _ = replay(emulator, tmp_path, "--force")
    assert lenient.exit_code == 0, lenient.output
    # With it, a run that dead-letters nothing still exits 0.
    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": []})
    clean, summary = replay(emulator, tmp_path, "--force", "--fail-on-dead-letter")
    assert clean.exit_code == 0 and summary["dead_letter_files"] == []


def test_a_dry_run_says_what_it_would_do_and_marks_nothing_done(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path)
    dry, summary = replay(emulator, tmp_path, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert summary["objects_done"] == 0 and summary["delivered"] == 0
    assert summary["objects_would_be_done"] == len(files)
    assert summary["would_deliver"] == summary["skipped"]["dry_run"] > 0
    assert "would deliver" in dry.output
    real, summary = replay(emulator, tmp_path)
    assert real.exit_code == 0 and summary["objects_done"] == len(files)
    assert summary["objects_would_be_done"] is None and summary["would_deliver"] is None
