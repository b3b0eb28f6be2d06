"""`currents-export status` against a SQLite ledger and against DynamoDB (moto's server):
one line per object that fits the terminal, --wide for everything, --json for programs."""

from __future__ import annotations

import os
import pty
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import boto3
import orjson
import pytest
from click.testing import CliRunner, Result

from currents_export.cli import main
from currents_export.ledger import DynamoDbLedger, Ledger, ObjectState, SqliteLedger
from currents_export.ledger.status import age_text, counts, render_text, short_name

HOUR, DAY = 3_600, 86_400
TABLE = "ledger"

DONE = "currents:event_type=users.messages.email.Send/date=2026-01-01-00/1/a/f+0+1.avro"
LEGACY_DONE = "/old/place/event_type=users.messages.email.Send/date=2026-01-01-00/1/a/g.avro"
BROKEN = "sha256:" + "ab" * 32
THROTTLED = "currents:event_type=users.behaviors.CustomEvent/date=2026-01-02-05/1/a/h+0+9.avro"
RUNNING = "currents:event_type=users.behaviors.Purchase/date=2026-01-03-00/1/a/i+0+2.avro"
# A key as Braze writes it: a long event type, its integration in the file name too.
INTEGRATION = "dataexport.prod-01.S3.integration.5f3a1b2c3d4e5f6a7b8c9d0e"
LONG = (f"currents:event_type=users.messages.pushnotification.InfluencedOpen/"
        f"date=2026-01-02-05/123/b/{INTEGRATION}+11+0001234567.avro")
LONG_ERROR = "Amplitude (api2.amplitude.com) is unavailable since 2026-01-02 05:00 UTC: " + \
    "503 Service Unavailable, " * 20
WIDE_HINT = "--wide: whole keys"


def fill(ledger: Ledger) -> None:
    """Five objects: two done (one under an old-style path), a permanent failure, a
    retryable one and one in progress."""
    ledger.begin(DONE, location="/data/f+0+1.avro")
    ledger.complete(DONE, {"records": 10})
    ledger.begin(LEGACY_DONE)
    ledger.complete(LEGACY_DONE, {"records": 3})
    ledger.begin(BROKEN, location="s3://bucket/exports/broken.avro")
    ledger.fail(BROKEN, "not an Avro file:\nbad magic", permanent=True)
    ledger.begin(THROTTLED, location="s3://bucket/currents/h+0+9.avro")
    ledger.begin(THROTTLED, location="s3://bucket/currents/h+0+9.avro")
    ledger.fail(THROTTLED, "Amplitude unreachable for 600 s")
    ledger.begin(RUNNING, location="/data/i+0+2.avro")
    ledger.save_progress(RUNNING, 5_000, {"records": 5_000})


def status(*arguments: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["status", *arguments], env=env, catch_exceptions=False)


def table_rows(output: str) -> dict[str, str]:
    """The wide table's lines, by the object they start with."""
    return {line.split()[0]: line for line in output.splitlines()
            if line.startswith(("currents:", "sha256:", "/"))}


def narrow_rows(output: str) -> list[str]:
    """The narrow table's lines, in order (from its header to the blank line after it)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("OBJECT"))
    end = lines.index("", start)
    return lines[start + 1 : end]


def check_table(output: str) -> None:
    """The wide table (today's full lines)."""
    assert "5 objects" in output
    assert "  done                           2" in output
    assert "  in progress or pending         1" in output
    assert "  failed                         2  (1 permanent, 1 retryable)" in output
    rows = table_rows(output)
    assert set(rows) == {BROKEN, THROTTLED, RUNNING}
    broken = rows[BROKEN].split()
    assert broken[1:5] == ["failed", "permanent", "1", "2"] and broken[5:8] == ["d", "ago",
                                                                                 "s3://bucket/exports/broken.avro"]
    assert rows[BROKEN].endswith("not an Avro file: bad magic")
    assert " retryable  2 " in rows[THROTTLED] and "3 h ago" in rows[THROTTLED]
    assert rows[THROTTLED].endswith("Amplitude unreachable for 600 s")
    assert "s3://bucket/currents/h+0+9.avro" in rows[THROTTLED]
    assert " in progress  retryable  1 " in rows[RUNNING] and "5 min ago" in rows[RUNNING]
    assert "/data/i+0+2.avro" in rows[RUNNING]
    lines = output.splitlines()
    order = [line.split()[0] for line in lines if line.split() and line.split()[0] in rows]
    assert order == [BROKEN, THROTTLED, RUNNING]  # permanent first, then retryable, then running
    header = next(line for line in lines if line.startswith("OBJECT"))
    assert header.split() == ["OBJECT", "STATUS", "RETRY", "ATTEMPTS", "CHANGED", "LAST",
                              "READ", "FROM", "REASON"]
    # the columns line up: every row's status starts under STATUS
    column = header.index("STATUS")
    assert all(rows[name][column - 2 : column] == "  " for name in rows)


def check_narrow(output: str) -> None:
    """The default table: one line per object within 100 columns, short names, the figures
    and the reason; no place (--wide has it)."""
    assert all(len(line) <= 100 for line in narrow_rows(output)), output
    assert "  failed                         2  (1 permanent, 1 retryable)" in output
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("OBJECT"))
    assert header.split() == ["OBJECT", "STATUS", "TRIES", "CHANGED", "REASON"]
    broken, throttled, running = narrow_rows(output)  # permanent, retryable, running
    assert broken.startswith("sha256:abab") and "…" in broken.split()[0]
    assert broken.split()[1:5] == ["permanent", "1", "2", "d"]
    assert "not an Avro file: bad" in broken
    assert throttled.startswith("users.behaviors.CustomEvent/…/h+0+9.avro  ")
    assert throttled.split()[1:3] == ["retryable", "2"] and "3 h ago" in throttled
    assert throttled.split("  ")[-1].startswith("Amplitude unreachable for")
    assert running.startswith("users.behaviors.Purchase/…/i+0+2.avro  ")
    assert running.split()[1:4] == ["in", "progress", "1"] and "5 min ago" in running
    assert running.endswith(" -")
    column = header.index("STATUS")  # the columns line up
    assert all(row[column - 2 : column] == "  " and row[column] != " "
               for row in (broken, throttled, running))
    assert "s3://bucket/" not in output and "/data/" not in output
    assert lines[-1].startswith(WIDE_HINT)


def check_json(output: str) -> None:
    report = orjson.loads(output)
    assert report["counts"] == {"objects": 5, "done": 2, "in_progress": 1, "failed": 2,
                                "permanent": 1, "retryable": 1}
    objects = {o["object_id"]: o for o in report["objects"]}
    assert set(objects) == {BROKEN, THROTTLED, RUNNING}
    broken = objects[BROKEN]
    assert broken["status"] == "failed" and broken["permanent"] and not broken["retryable"]
    assert broken["error"] == "not an Avro file:\nbad magic"
    assert broken["location"] == "s3://bucket/exports/broken.avro"
    assert broken["age"] == "2 d ago" and 2 * DAY <= broken["age_s"] < 2 * DAY + 600
    assert broken["finished_at"] is not None and broken["attempts"] == 1
    throttled = objects[THROTTLED]
    assert throttled["retryable"] and not throttled["permanent"] and throttled["attempts"] == 2
    assert throttled["age"] == "3 h ago"
    running = objects[RUNNING]
    assert running["status"] == "in_progress" and running["next_index"] == 5_000
    assert running["finished_at"] is None and running["age"] == "5 min ago"


# ---- SQLite -------------------------------------------------------------------------------

@pytest.fixture
def sqlite_ledger(tmp_path: Path) -> Path:
    path = tmp_path / "state.sqlite"
    ledger = SqliteLedger(path)
    fill(ledger)
    ledger.close()
    now = time.time()
    with sqlite3.connect(path) as db:  # age the rows as if written a while ago
        for object_id, age in [(BROKEN, 2 * DAY + 60), (THROTTLED, 3 * HOUR + 60),
                               (RUNNING, 5 * 60 + 10), (DONE, 10 * DAY), (LEGACY_DONE, 400)]:
            db.execute("UPDATE objects SET updated_at = ? WHERE object_id = ?",
                       (now - age, object_id))
    return path


def test_status_lists_what_is_not_done_with_reasons_and_ages(sqlite_ledger: Path) -> None:
    result = status("--state", str(sqlite_ledger))
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Ledger {sqlite_ledger}: 5 objects")
    check_narrow(result.output)


def test_status_wide_shows_whole_keys_places_and_reasons(sqlite_ledger: Path) -> None:
    result = status("--state", str(sqlite_ledger), "--wide")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Ledger {sqlite_ledger}: 5 objects")
    check_table(result.output)
    assert WIDE_HINT not in result.output


def test_status_all_lists_the_done_objects_too(sqlite_ledger: Path) -> None:
    narrow = narrow_rows(status("--state", str(sqlite_ledger), "--all").output)
    assert len(narrow) == 5
    assert {row.split()[0] for row in narrow[3:]} == {"users.messages.email.Send/…/f+0+1.avro",
                                                      "users.messages.email.Send/…/g.avro"}
    done = next(row for row in narrow if "f+0+1.avro" in row)
    assert done.split()[1:3] == ["done", "1"] and "10 d ago" in done
    result = status("--state", str(sqlite_ledger), "--all", "--wide")
    rows = table_rows(result.output)
    assert set(rows) == {BROKEN, THROTTLED, RUNNING, DONE, LEGACY_DONE}
    assert rows[DONE].split()[1:3] == ["done", "-"] and "10 d ago" in rows[DONE]
    assert "/data/f+0+1.avro" in rows[DONE]
    assert "6 min ago" in rows[LEGACY_DONE] and rows[LEGACY_DONE].rstrip().endswith("-")
    order = [line.split()[0] for line in result.output.splitlines() if line.split()
             and line.split()[0] in rows]
    assert order[:3] == [BROKEN, THROTTLED, RUNNING] and set(order[3:]) == {DONE, LEGACY_DONE}


def test_status_json(sqlite_ledger: Path) -> None:
    result = status("--state", str(sqlite_ledger), "--json")
    assert result.exit_code == 0
    check_json(result.output)
    assert orjson.loads(result.output)["ledger"] == str(sqlite_ledger)
    every = orjson.loads(status("--state", str(sqlite_ledger), "--json", "--all").output)
    assert len(every["objects"]) == 5
    done = next(o for o in every["objects"] if o["object_id"] == DONE)
    assert done["status"] == "done" and not done["retryable"] and done["age"] == "10 d ago"


def test_the_state_comes_from_the_environment(sqlite_ledger: Path) -> None:
    result = status(env={"CURRENTS_EXPORT_STATE": str(sqlite_ledger)})
    assert result.exit_code == 0 and "5 objects" in result.output


def test_an_old_ledger_file_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("""CREATE TABLE objects (
            object_id TEXT PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('in_progress', 'done', 'failed')),
            attempts INTEGER NOT NULL DEFAULT 0, next_index INTEGER NOT NULL DEFAULT 0,
            figures TEXT, error TEXT, started_at REAL, updated_at REAL NOT NULL)""")
        db.execute("INSERT INTO objects VALUES ('/a.avro', 'done', 1, 0, NULL, NULL, 1, ?)",
                   (time.time(),))
        db.execute("INSERT INTO objects VALUES ('/b.avro', 'failed', 3, 0, NULL, 'boom', 1, ?)",
                   (time.time() - 90,))
    result = status("--state", str(path))
    assert result.exit_code == 0
    assert [row.split() for row in narrow_rows(result.output)] == [
        ["/b.avro", "retryable", "3", "1", "min", "ago", "boom"]]
    rows = table_rows(status("--state", str(path), "--wide").output)
    assert set(rows) == {"/b.avro"}
    assert rows["/b.avro"].split() == ["/b.avro", "failed", "retryable", "3", "1", "min", "ago",
                                       "-", "boom"]


def test_a_ledger_with_nothing_left_says_so(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    ledger = SqliteLedger(path)
    ledger.begin(DONE)
    ledger.complete(DONE, {})
    ledger.close()
    result = status("--state", str(path))
    assert result.exit_code == 0 and "Every object is done." in result.output
    assert table_rows(result.output) == {}


def test_a_missing_sqlite_ledger_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "state.sqlite"
    result = status("--state", str(missing))
    assert result.exit_code == 2
    assert f"there is no ledger at {missing}" in result.stderr
    assert not missing.parent.exists()


# ---- DynamoDB -----------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def test_status_of_a_dynamodb_ledger(aws: str) -> None:
    DynamoDbLedger.create_table(boto3.client("dynamodb", endpoint_url=aws), TABLE)
    clock = Clock()
    ledger = DynamoDbLedger(TABLE, endpoint_url=aws, owner="worker", clock=clock)
    now = clock.now
    steps = {DONE: 10 * DAY, LEGACY_DONE: 400, BROKEN: 2 * DAY + 60,
             THROTTLED: 3 * HOUR + 60, RUNNING: 5 * 60 + 10}

    class Aged:  # each object's writes happen at its own time in the past
        def __getattr__(self, name: str) -> object:
            method = getattr(ledger, name)

            def call(object_id: str, *args: object, **kwargs: object) -> object:
                clock.now = now - steps[object_id]
                return method(object_id, *args, **kwargs)

            return call

    fill(Aged())  # type: ignore[arg-type]
    env = {"AWS_ENDPOINT_URL": aws}
    result = status("--state", f"dynamodb://{TABLE}", env=env)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Ledger dynamodb://{TABLE}: 5 objects")
    check_narrow(result.output)
    check_table(status("--state", f"dynamodb://{TABLE}", "--wide", env=env).output)
    check_json(status("--state", f"dynamodb://{TABLE}", "--json", env=env).output)
    every = orjson.loads(status("--state", f"dynamodb://{TABLE}", "--json", "--all",
                                env=env).output)
    assert {o["object_id"] for o in every["objects"]} == set(steps)


def test_a_missing_dynamodb_table_is_a_configuration_error(aws: str) -> None:
    result = status("--state", "dynamodb://no-such-table", env={"AWS_ENDPOINT_URL": aws})
    assert result.exit_code == 2
    assert "'no-such-table' does not exist" in result.stderr


# ---- rendering ----------------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "text"), [
    (0.2, "just now"), (59, "59 s ago"), (60, "1 min ago"), (3_599, "59 min ago"),
    (3_600, "1 h ago"), (3 * HOUR + 59 * 60, "3 h ago"), (DAY - 1, "23 h ago"),
    (DAY, "1 d ago"), (2 * DAY + 5, "2 d ago"), (400 * DAY, "400 d ago"),
])
def test_ages_read_in_whole_units(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


def test_rendering_is_a_function_of_the_states_and_the_time() -> None:
    state = ObjectState(object_id="sha256:00", status="failed", permanent=False,
                        error="x" * 500, location=None, attempts=4, next_index=0,
                        started_at=None, updated_at=1_000.0, finished_at=1_000.0)
    text = render_text([state], source="mem", now=1_000.0 + 2 * HOUR, wide=True)
    assert counts([state])["retryable"] == 1
    line = table_rows(text)["sha256:00"]
    assert "2 h ago" in line and line.endswith("x" * 159 + "…")
    [narrow] = narrow_rows(render_text([state], source="mem", now=1_000.0 + 2 * HOUR))
    assert len(narrow) == 100 and narrow.startswith("sha256:00  retryable")
    assert narrow.endswith("xxx…")
    assert render_text([], source="mem", now=0).endswith("The ledger is empty.")


# ---- fitting a terminal ---------------------------------------------------------------------

def test_short_names_keep_the_event_type_and_the_file_name() -> None:
    assert short_name(THROTTLED) == "users.behaviors.CustomEvent/…/h+0+9.avro"
    assert short_name(LEGACY_DONE) == "users.messages.email.Send/…/g.avro"
    # Braze's file names repeat the integration of the folder: partition and offset stay
    assert short_name(LONG) == "users.messages.pushnotification.InfluencedOpen/…+11+0001234567.avro"
    assert short_name(BROKEN) == BROKEN and short_name("s3etag:0a1b") == "s3etag:0a1b"
    assert short_name("/x/\x1b[2Jy.avro") == "/x/\\x1b[2Jy.avro"  # no terminal control


@pytest.fixture
def long_ledger(sqlite_ledger: Path) -> Path:
    """The five objects, and a Braze-named one that failed with a long reason."""
    ledger = SqliteLedger(sqlite_ledger)
    ledger.begin(LONG, location=f"s3://bucket/{LONG.removeprefix('currents:')}")
    ledger.fail(LONG, LONG_ERROR)
    ledger.close()
    return sqlite_ledger


def test_a_braze_key_and_a_long_reason_fit_in_100_columns(long_ledger: Path) -> None:
    result = status("--state", str(long_ledger), "--all")
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in narrow_rows(result.output)) == 100
    row = next(row for row in narrow_rows(result.output) if "+11+0001234567.avro" in row)
    name, rest = row.split("  ", 1)
    assert name.startswith("users.") and name.endswith("…+11+0001234567.avro")
    assert rest.split()[:2] == ["retryable", "1"]
    assert "  Amplitude (api2.amplitude" in row and row.endswith("…")
    wide = status("--state", str(long_ledger), "--all", "--wide").output
    assert LONG in wide and max(len(line) for line in wide.splitlines()) > 300
    every = orjson.loads(status("--state", str(long_ledger), "--json").output)
    assert next(o for o in every["objects"] if o["object_id"] == LONG)["error"] == LONG_ERROR


def test_the_narrow_table_fits_the_width_it_is_given(long_ledger: Path) -> None:
    states = SqliteLedger(long_ledger)
    try:
        listed = list(states.objects())
    finally:
        states.close()
    for width in (72, 100, 160):
        text = render_text(listed, source="mem", show_all=True, width=width)
        table = text[text.index("OBJECT"):].splitlines()  # header, rows, hint
        assert max(len(line) for line in table) <= width, text
        assert len(narrow_rows(text)) == 6
    roomy = render_text(listed, source="mem", show_all=True, width=200)
    assert short_name(LONG) in roomy and short_name(BROKEN) in roomy  # nothing to cut


def test_on_a_terminal_status_fits_its_width(long_ledger: Path) -> None:
    """A real terminal (a pseudo-terminal) of 72 columns: every line fits; the same command
    into a pipe writes 100 columns, whatever COLUMNS says."""
    env = {**os.environ, "COLUMNS": "72", "LINES": "40"}
    command = [sys.executable, "-m", "currents_export", "status", "--state", str(long_ledger)]
    controller, terminal = pty.openpty()
    try:
        process = subprocess.run(command, stdout=terminal, stderr=subprocess.PIPE, env=env,
                                 timeout=60, check=False)
        os.close(terminal)
        chunks = []
        while True:
            try:
                chunk = os.read(controller, 65_536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(controller)
    assert process.returncode == 0, process.stderr
    output = b"".join(chunks).decode().replace("\r\n", "\n")
    table = [*narrow_rows(output), *output.split("\n\n")[-1].splitlines()]  # rows, hint
    assert len(table) == 6 and max(len(line) for line in table) <= 72, table
    assert any("0001234567.avro  retryable" in line for line in table)  # still named
    piped = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60,
                           check=True)
    assert max(len(line) for line in narrow_rows(piped.stdout)) == 100


def test_json_keeps_every_key_of_its_contract(long_ledger: Path) -> None:
    report = orjson.loads(status("--state", str(long_ledger), "--json", "--all").output)
    assert set(report) == {"ledger", "destination", "counts", "objects"}
    assert set(report["counts"]) == {"objects", "done", "in_progress", "failed", "permanent",
                                     "retryable"}
    assert all(set(item) == {"object_id", "status", "permanent", "retryable", "attempts",
                             "next_index", "error", "location", "started_at", "updated_at",
                             "finished_at", "age_s", "age"} for item in report["objects"])
    assert {item["object_id"] for item in report["objects"]} == {
        DONE, LEGACY_DONE, BROKEN, THROTTLED, RUNNING, LONG}
