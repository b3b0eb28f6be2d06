"""What a run writes beside its data is the owner's only, whatever the umask: the summary
file, and the ledger's SQLite side files when --state is a symlink."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from currents_export.cli import main
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import SqliteLedger


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_the_summary_file_is_the_owners_only(
    emulator: Emulator, tmp_path: Path, umask: int
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=5,
                      event_types=["users.messages.email.Open"], files_per_type=1, seed=3)
    summary = tmp_path / "summary.json"
    summary.write_text("{}")
    os.chmod(summary, 0o644)  # an earlier one, readable by others: rewritten private
    result = CliRunner().invoke(main, [
        "replay", str(tmp_path / "bucket"), "--api-key", "test-key-0123456789",
        "--amplitude-url", emulator.url, "--state", str(tmp_path / "state.sqlite"),
        "--dead-letter", str(tmp_path / "dl"), "--summary-json", str(summary)])
    assert result.exit_code == 0, result.output
    assert mode(summary) == 0o600 and summary.read_bytes().startswith(b"{\n")


def test_a_symlinked_state_keeps_its_side_files_private(tmp_path: Path, umask: int) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = elsewhere / "ledger.sqlite"
    link = tmp_path / "state.sqlite"
    link.symlink_to(target)

    ledger = SqliteLedger(link)
    try:
        ledger.begin("s3://bucket/key.avro")  # a write: SQLite makes -wal and -shm
        side_files = [Path(f"{target}{suffix}") for suffix in ("-wal", "-shm")]
        assert all(path.exists() for path in side_files)  # beside the target, not the link
        assert [mode(path) for path in [target, *side_files]] == [0o600] * 3
    finally:
        ledger.close()


def test_names_and_credentials_never_reach_the_summary_or_status_raw() -> None:
    from currents_export.counts import ObjectReport, RunSummary
    from currents_export.ledger.base import ObjectState
    from currents_export.ledger.status import render_text
    from currents_export.settings import load_settings

    forged = "s3://b/a.avro\n2026-12-07 INFO all good\x1b[31m"
    summary = RunSummary()
    summary.add(ObjectReport(object=forged, status="failed",
                             error="https://user:hunter2@s3.internal:9000 refused"))
    summary.configuration_error = "--privacy-url https://u:hunter2@privacy.example: no"
    text, data = summary.render(), str(summary.to_json())
    assert "hunter2" not in text and "hunter2" not in data
    assert "\x1b" not in text and "\nINFO" not in text and "\\n2026-12-07" in text

    state = ObjectState(object_id=forged, status="failed", attempts=1, next_index=0,
                        updated_at=0.0, error="boom\x1b[2J", permanent=True,
                        location=forged, started_at=0.0, finished_at=None)
    table = render_text([state], source="state.sqlite", now=10.0)
    assert "\x1b" not in table and "\\x1b[2J" in table and "\\n2026-12-07" in table

    settings = load_settings("backfill", environ={}, flags={
        "s3_endpoint_url": "http://minio:s3cr3t@127.0.0.1:9000",
        "amplitude_url": "http://k:pw1234@127.0.0.1:8787"})
    assert "s3cr3t" not in repr(settings) and "pw1234" not in repr(settings)
    assert "127.0.0.1:9000" in repr(settings)
