"""`fixtures` says why it writes more files than --files-per-type: a file holds at most
--max-events-per-file records (Braze closes a file at 15,000 events), one queue hour each."""

from __future__ import annotations

from pathlib import Path

import fastavro
from click.testing import CliRunner

from currents_export.cli import main
from currents_export.currents.keys import parse_key

TYPE = "users.messages.email.Open"


def records_by_hour(root: Path) -> dict[str, int]:
    counts = {}
    for path in sorted(root.rglob("*.avro")):
        hour = parse_key(path.relative_to(root).as_posix()).queue_hour_label
        assert hour is not None
        with path.open("rb") as fileobj:
            counts[hour] = sum(1 for _ in fastavro.reader(fileobj))
    return counts


def fixtures(root: Path, events: int, files_per_type: int, *more: str) -> str:
    """``currents-export fixtures`` of ``events`` records of one type into ``root``; its
    output (it must succeed)."""
    result = CliRunner().invoke(main, [
        "fixtures", str(root), "--events", str(events), "--event-type", TYPE,
        "--files-per-type", str(files_per_type), *more])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_help_says_why_there_can_be_more_files() -> None:
    text = " ".join(CliRunner().invoke(main, ["fixtures", "--help"]).output.split())
    assert "--max-events-per-file" in text and "15,000" in text
    assert "each in the next queue hour" in text
    assert "--events 100000: 7 files" in text


def test_files_split_at_the_most_a_file_holds_and_the_output_says_so(tmp_path: Path) -> None:
    output = fixtures(tmp_path, 31, 1, "--max-events-per-file", "10")
    assert "wrote 4 files, 31 records" in output
    assert ("(4 files per type, not --files-per-type 1: a file holds at most "
            "--max-events-per-file 10 records)") in output
    hours = records_by_hour(tmp_path)
    assert list(hours.values()) == [8, 8, 8, 7]  # spread evenly, one queue hour each
    assert sorted(hours) == list(hours) and len(set(hours)) == 4


def test_files_per_type_is_kept_when_the_records_fit(tmp_path: Path) -> None:
    output = fixtures(tmp_path, 30, 3, "--max-events-per-file", "10")
    assert "wrote 3 files, 30 records" in output and "files per type" not in output
    assert list(records_by_hour(tmp_path).values()) == [10, 10, 10]


def test_a_large_file_when_asked(tmp_path: Path) -> None:
    """Braze writes up to 100,000 events a file under load: one file of 20,000 records."""
    assert "wrote 1 files, 20000 records" in fixtures(
        tmp_path, 20_000, 1, "--max-events-per-file", "100000")
    default = fixtures(tmp_path / "default", 20_000, 1)
    assert "wrote 2 files, 20000 records" in default
    assert "a file holds at most --max-events-per-file 15,000 records" in default
