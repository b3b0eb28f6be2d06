"""Redrive: dead-lettered events re-sent; what is delivered leaves the dead letter."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import httpx
import orjson
from conftest import stored_events
from test_replay import API_KEY, assert_balanced, read_all, replay, run_cli

from currents_export.amplitude.emulator import Emulator
from currents_export.currents.fixtures import generate_fixtures


def redrive(emulator: Emulator, directory: Path, *extra: str) -> tuple[int, dict]:
    summary_path = directory.parent / "redrive-summary.json"
    result = run_cli("redrive", str(directory), "--api-key", API_KEY, "--amplitude-url",
                     emulator.url, "--summary-json", str(summary_path), "--retry-horizon", "0",
                     *extra)
    return result.exit_code, orjson.loads(summary_path.read_bytes())


def dead_letter_lines(directory: Path) -> list[dict]:
    return [orjson.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_bytes().splitlines()]


def test_redrive_after_fixing_the_cause_delivers_and_empties_the_dead_letter(
    emulator: Emulator, tmp_path: Path
) -> None:
    files = generate_fixtures(tmp_path / "bucket", events_per_type=80, seed=21,
                              event_types=["users.behaviors.app.SessionEnd"])
    devices = Counter(r["device_id"] for _, r in read_all(files) if r.get("device_id"))
    silenced = [device for device, _ in devices.most_common(2)]
    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": silenced})
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0
    refused = summary["dead_lettered"]["amplitude_silenced_device"]
    dead_letter = tmp_path / "dead-letter"
    assert len(dead_letter_lines(dead_letter)) == refused > 0

    # Still silenced: nothing delivered, the lines stay (and say so).
    code, again = redrive(emulator, dead_letter)
    assert code == 0
    assert again["delivered"] == 0 and again["records"] == refused
    assert again["dead_lettered"] == {"amplitude_silenced_device": refused}
    assert len(dead_letter_lines(dead_letter)) == refused

    httpx.patch(f"{emulator.url}/_emulator/config", json={"silenced_device_ids": []})
    before = len(stored_events(emulator))
    code, fixed = redrive(emulator, dead_letter)
    assert code == 0
    assert fixed["delivered"] == refused and fixed["dead_lettered"] == {}
    assert_balanced(fixed)
    assert len(stored_events(emulator)) == before + refused
    assert {e["device_id"] for e in stored_events(emulator)} >= set(silenced)
    assert dead_letter_lines(dead_letter) == []


def test_redrive_keeps_what_is_still_invalid_and_unreadable_lines(
    emulator: Emulator, tmp_path: Path
) -> None:
    dead_letter = tmp_path / "dl"
    dead_letter.mkdir()
    good = {"event_type": "e", "user_id": "user-0001", "insert_id": "ok-1", "time": 1}
    short = {"event_type": "e", "user_id": "abc", "insert_id": "short-1", "time": 1}
    lines = [
        {"reason": "amplitude_silenced_device", "detail": "", "object": "o", "record_index": 0,
         "event_type": "t", "record": {"id": "ok-1"}, "event": good},
        {"reason": "invalid_id", "detail": "", "object": "o", "record_index": 1,
         "event_type": "t", "record": {"id": "short-1"}, "event": short},
        {"reason": "no_time", "detail": "", "object": "o", "record_index": 2,
         "event_type": "t", "record": {"id": "x"}, "event": None},
        {"reason": "amplitude_silenced_device", "detail": "", "object": "o2", "record_index": 0,
         "event_type": "t", "record": {"id": "ok-1"}, "event": good},  # written twice
    ]
    (dead_letter / "dead-letter-1.jsonl").write_bytes(
        b"".join(orjson.dumps(line) + b"\n" for line in lines) + b'{"torn": '
    )
    code, summary = redrive(emulator, dead_letter)
    assert code == 0
    assert summary["delivered"] == 1 and summary["duplicates"] == 1
    assert summary["dead_lettered"] == {
        "invalid_id": 1, "no_time": 1, "dead_letter_line_not_json": 1
    }
    assert_balanced(summary)
    left = (dead_letter / "dead-letter-1.jsonl").read_bytes().splitlines()
    assert len(left) == 3 and left[-1] == b'{"torn": '
    assert [e["insert_id"] for e in stored_events(emulator)] == ["ok-1"]

    # With a shorter minimum id length the short id goes through too.
    code, summary = redrive(emulator, dead_letter, "--min-id-length", "3",
                            "--reason", "invalid_id")
    assert code == 0 and summary["delivered"] == 1 and summary["records"] == 2
    assert sorted(e["insert_id"] for e in stored_events(emulator)) == ["ok-1", "short-1"]
