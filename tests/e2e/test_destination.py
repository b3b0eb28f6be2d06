"""A ledger knows where its objects went: the emulator first, then another Amplitude with
the same --state, is refused (exit 2, both named, the ways out) before anything is read;
another --state delivers everything; a rotated key is rebound on purpose. Through the
command line, against emulators on loopback and real SQLite files."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures
from currents_export.ledger.destination import destination_host, key_fingerprint
from tests.support.emulator import is_probe
from tests.support.runs import read_all

# Amplitude API keys are 32 hex digits.
KEY_A = "0123456789abcdef0123456789abcdef"
KEY_B = "fedcba9876543210fedcba9876543210"
CUSTOM, OPEN = "users.behaviors.CustomEvent", "users.messages.email.Open"


@pytest.fixture
def other() -> Iterator[Emulator]:
    """A second Amplitude: another host (port) on loopback."""
    with Emulator() as server:
        yield server


def fixtures(root: Path, event_type: str = CUSTOM, seed: int = 61) -> list[FixtureFile]:
    return generate_fixtures(root / "bucket", events_per_type=30, seed=seed, files_per_type=2,
                             event_types=[event_type])


def replay(root: Path, url: str, key: str, *extra: str, state: str = "state.sqlite",
           env: dict[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    summary_path = root / "summary.json"
    summary_path.unlink(missing_ok=True)
    result = CliRunner().invoke(main, [
        "replay", str(root / "bucket"), "--amplitude-url", url,
        "--state", str(root / state), "--dead-letter", str(root / "dead-letter"),
        "--summary-json", str(summary_path), "--retry-horizon", "0", *extra,
    ], env={"AMPLITUDE_API_KEY": key, **(env or {})}, catch_exceptions=False)
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    return result, summary


def uploads(server: Emulator) -> list[dict[str, Any]]:
    """The uploads a server saw, without the probe every run sends before reading."""
    return [entry for entry in server.requests_log() if not is_probe(entry)]


def status(root: Path, *extra: str, state: str = "state.sqlite") -> Result:
    return CliRunner().invoke(main, ["status", "--state", str(root / state), *extra],
                              catch_exceptions=False)


def bound(root: Path, state: str = "state.sqlite") -> dict[str, Any] | None:
    result = status(root, "--json", state=state)
    assert result.exit_code == 0, result.output
    destination: dict[str, Any] | None = orjson.loads(result.stdout)["destination"]
    return destination


def dump(path: Path) -> list[str]:
    """Every table and row of a SQLite file."""
    with sqlite3.connect(path) as db:
        return list(db.iterdump())


def named(url: str, key: str) -> str:
    return f"{destination_host(url)} (API key fingerprint {key_fingerprint(key)})"


def insert_ids(server: Emulator) -> list[str]:
    return sorted(event["insert_id"] for event in server.events())


def expected_ids(files: list[FixtureFile]) -> list[str]:
    first: dict[str, dict[str, Any]] = {}
    for _, record in read_all(files):
        first.setdefault(record["id"], record)
    return sorted(i for i, r in first.items() if r.get("external_user_id") or r.get("device_id"))


def test_the_first_run_binds_the_ledger_and_the_same_destination_passes(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path)
    result, summary = replay(tmp_path, emulator.url, KEY_A)
    assert result.exit_code == 0, result.output
    assert summary["objects_done"] == len(files)
    assert bound(tmp_path) == {
        "host": destination_host(emulator.url), "key_fingerprint": key_fingerprint(KEY_A),
        "bound_at": pytest.approx(bound(tmp_path)["bound_at"]),  # type: ignore[index]
        "previous": None, "recorded": True}
    text = status(tmp_path).output
    assert f"destination             {named(emulator.url, KEY_A)}, since " in text
    requests = len(uploads(emulator))

    again, summary = replay(tmp_path, emulator.url, KEY_A)
    assert again.exit_code == 0, again.output
    assert summary["objects_already_done"] == len(files) and summary["objects_done"] == 0
    assert len(uploads(emulator)) == requests

    # The key is in no file of the ledger, no output and no status.
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("state.sqlite*"))
    assert KEY_A.encode() not in stored and key_fingerprint(KEY_A).encode() in stored
    for shown in (result.output, again.output, text, status(tmp_path, "--json").output):
        assert KEY_A not in shown


@pytest.mark.parametrize("workers", ["1", "2"])
def test_another_host_with_the_same_state_is_refused_before_anything_is_read(
    emulator: Emulator, other: Emulator, tmp_path: Path, workers: str
) -> None:
    fixtures(tmp_path)
    first, _ = replay(tmp_path, emulator.url, KEY_A)
    assert first.exit_code == 0, first.output
    fixtures(tmp_path, OPEN, seed=62)  # new objects: they would be claimed if anything ran
    before = dump(tmp_path / "state.sqlite")
    requests = len(uploads(emulator))

    result, summary = replay(tmp_path, other.url, KEY_A, "--workers", workers)
    assert result.exit_code == 2
    message = result.output
    assert named(emulator.url, KEY_A) in message and named(other.url, KEY_A) in message
    assert "another host" in message
    assert "another --state" in message  # a destination of its own...
    assert "--rebind-destination" in message and "rotated" in message  # ...or a rotated key
    assert KEY_A not in message
    assert uploads(other) == [] and len(uploads(emulator)) == requests
    assert dump(tmp_path / "state.sqlite") == before  # nothing claimed, nothing bound
    assert summary == {}  # it never started


def test_another_api_key_on_the_same_host_is_refused(emulator: Emulator, tmp_path: Path) -> None:
    fixtures(tmp_path)
    assert replay(tmp_path, emulator.url, KEY_A)[0].exit_code == 0
    before = dump(tmp_path / "state.sqlite")
    requests = len(uploads(emulator))
    result, _ = replay(tmp_path, emulator.url, KEY_B)
    assert result.exit_code == 2
    assert "another API key" in result.output
    assert key_fingerprint(KEY_A) in result.output and key_fingerprint(KEY_B) in result.output
    assert KEY_A not in result.output and KEY_B not in result.output
    assert len(uploads(emulator)) == requests
    assert dump(tmp_path / "state.sqlite") == before


def test_a_rotated_key_is_rebound_on_purpose_and_objects_done_stay_done(
    emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = fixtures(tmp_path)
    assert replay(tmp_path, emulator.url, KEY_A)[0].exit_code == 0
    requests = len(uploads(emulator))

    with caplog.at_level(logging.WARNING, logger="currents_export.compose"):
        rotated, summary = replay(tmp_path, emulator.url, KEY_B, "--rebind-destination")
    assert rotated.exit_code == 0, rotated.output
    assert summary["objects_already_done"] == len(files) and summary["objects_done"] == 0
    assert len(uploads(emulator)) == requests  # nothing sent again under the new key
    assert any("rebound from" in r.getMessage() and key_fingerprint(KEY_B) in r.getMessage()
               for r in caplog.records)
    destination = bound(tmp_path)
    assert destination is not None
    assert destination["key_fingerprint"] == key_fingerprint(KEY_B)
    assert destination["previous"] == named(emulator.url, KEY_A)
    assert "rebound from            " + named(emulator.url, KEY_A) in status(tmp_path).output

    new = fixtures(tmp_path, OPEN, seed=63)
    after, summary = replay(tmp_path, emulator.url, KEY_B)  # no flag needed any more
    assert after.exit_code == 0, after.output
    assert summary["objects_done"] == len(new)
    assert summary["objects_already_done"] == len(files)
    assert insert_ids(emulator) == expected_ids(files + new)
    assert replay(tmp_path, emulator.url, KEY_A)[0].exit_code == 2  # the old key: refused


def test_another_host_with_the_flag_is_rebound_and_logged_loudly(
    emulator: Emulator, other: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fixtures(tmp_path)
    assert replay(tmp_path, emulator.url, KEY_A)[0].exit_code == 0
    with caplog.at_level(logging.WARNING, logger="currents_export.compose"):
        result, _ = replay(tmp_path, other.url, KEY_A, "--rebind-destination")
    assert result.exit_code == 0, result.output
    loud = [r for r in caplog.records if "REBOUND TO ANOTHER HOST" in r.getMessage()]
    assert len(loud) == 1 and loud[0].levelno == logging.WARNING
    assert destination_host(emulator.url) in loud[0].getMessage()
    assert destination_host(other.url) in loud[0].getMessage()
    destination = bound(tmp_path)
    assert destination is not None and destination["host"] == destination_host(other.url)


def test_another_state_for_another_destination_delivers_every_event(
    emulator: Emulator, other: Emulator, tmp_path: Path
) -> None:
    """The README's trial: the emulator first, then "production" with its own ledger."""
    files = fixtures(tmp_path)
    trial, _ = replay(tmp_path, emulator.url, KEY_A)
    assert trial.exit_code == 0, trial.output
    result, summary = replay(tmp_path, other.url, KEY_B, state="production.sqlite")
    assert result.exit_code == 0, result.output
    assert summary["objects_done"] == len(files) and summary["objects_already_done"] == 0
    assert insert_ids(other) == insert_ids(emulator) == expected_ids(files)
    assert summary["delivered"] == len(insert_ids(other))
    production = bound(tmp_path, "production.sqlite")
    assert production is not None and production["host"] == destination_host(other.url)
    trial_ledger = bound(tmp_path)
    assert trial_ledger is not None and trial_ledger["host"] == destination_host(emulator.url)


def test_a_ledger_from_before_destinations_is_bound_by_its_first_run(
    emulator: Emulator, other: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = fixtures(tmp_path)
    assert replay(tmp_path, emulator.url, KEY_A)[0].exit_code == 0
    with sqlite3.connect(tmp_path / "state.sqlite") as db:  # as an earlier version left it
        db.execute("DROP TABLE destination")
    assert bound(tmp_path) is None
    assert "none recorded yet" in status(tmp_path).output

    with caplog.at_level(logging.WARNING, logger="currents_export.compose"):
        upgraded, summary = replay(tmp_path, emulator.url, KEY_A)
    assert upgraded.exit_code == 0, upgraded.output
    assert summary["objects_already_done"] == len(files)
    destination = bound(tmp_path)
    assert destination is not None and destination["recorded"] is True
    assert destination["host"] == destination_host(emulator.url)
    # It says that objects done before might have gone elsewhere.
    assert any("objects done before" in r.getMessage() for r in caplog.records)
    assert replay(tmp_path, other.url, KEY_A)[0].exit_code == 2
    assert uploads(other) == []


def test_a_run_that_fails_at_once_leaves_the_ledger_unbound(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = fixtures(tmp_path)
    httpx.patch(f"{emulator.url}/_emulator/config",
                json={"valid_api_keys": [KEY_B]}).raise_for_status()
    try:
        wrong, _ = replay(tmp_path, emulator.url, KEY_A)
        assert wrong.exit_code == 2 and "rejected the API key" in wrong.output
        # Refused at the first answer (the probe before reading): no ledger was even made.
        assert not (tmp_path / "state.sqlite").exists()
        right, summary = replay(tmp_path, emulator.url, KEY_B)
    finally:
        httpx.patch(f"{emulator.url}/_emulator/config", json={"valid_api_keys": None})
    assert right.exit_code == 0, right.output
    assert summary["objects_done"] == len(files)
    destination = bound(tmp_path)
    assert destination is not None and destination["key_fingerprint"] == key_fingerprint(KEY_B)


def test_a_dry_run_neither_reads_nor_binds_the_ledger(
    emulator: Emulator, other: Emulator, tmp_path: Path
) -> None:
    fixtures(tmp_path)
    fresh, summary = replay(tmp_path, other.url, KEY_B, "--dry-run", state="fresh.sqlite")
    assert fresh.exit_code == 0, fresh.output
    assert summary["records"] > 0 and uploads(other) == []
    assert not (tmp_path / "fresh.sqlite").exists()

    assert replay(tmp_path, emulator.url, KEY_A)[0].exit_code == 0
    before = dump(tmp_path / "state.sqlite")
    dry, summary = replay(tmp_path, other.url, KEY_B, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert summary["objects_already_done"] == 0  # the ledger was not read
    assert dump(tmp_path / "state.sqlite") == before


def test_deletions_submit_follows_the_binding_of_the_api_key(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The identity map and tombstones live in the ledger; deletions go to the User Privacy
    API of the same project (its own host): the API key must be the ledger's."""
    config = tmp_path / "currents-export.toml"
    config.write_text('[deletions]\nrequester = "privacy-team"\n')
    env = {"CURRENTS_EXPORT_CONFIG": str(config), "AMPLITUDE_SECRET_KEY": "secret-0123456789",
           "CURRENTS_EXPORT_PRIVACY_URL": emulator.url}
    fixtures(tmp_path)
    assert replay(tmp_path, emulator.url, KEY_A, env=env)[0].exit_code == 0

    def submit(key: str, *extra: str) -> Result:
        return CliRunner().invoke(main, [
            "deletions", "submit", "--state", str(tmp_path / "state.sqlite"), *extra,
        ], env={**env, "AMPLITUDE_API_KEY": key}, catch_exceptions=False)

    refused = submit(KEY_B)
    assert refused.exit_code == 2
    assert key_fingerprint(KEY_A) in refused.output and key_fingerprint(KEY_B) in refused.output
    assert "--rebind-destination" in refused.output and KEY_B not in refused.output
    assert submit(KEY_A).exit_code == 0
    rotated = submit(KEY_B, "--rebind-destination")
    assert rotated.exit_code == 0, rotated.output
    destination = bound(tmp_path)
    assert destination is not None and destination["key_fingerprint"] == key_fingerprint(KEY_B)
    assert destination["host"] == destination_host(emulator.url)  # the key only
