"""Where a ledger's objects went: the host and key fingerprint it records, and its SQLite
binding (compare-and-set, recorded by the first delivery, released by a run that delivered
nothing). The DynamoDB binding: tests/ledger/test_dynamodb.py; the commands:
tests/e2e/test_destination.py."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from currents_export.ledger import SqliteLedger
from currents_export.ledger.base import Destination
from currents_export.ledger.destination import destination_host, key_fingerprint

# Amplitude API keys are 32 hex digits; the others are what people paste by mistake.
KEYS = ["0123456789abcdef0123456789abcdef", "f" * 32, "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
        "test-key-0123456789", "demo-api-key", "секрет-ключ-1234567890"]
X = Destination("https://api2.amplitude.com", "aaaaaaaaaaaa")
Y = Destination("https://api2.amplitude.com", "bbbbbbbbbbbb")
Z = Destination("http://127.0.0.1:8787", "cccccccccccc")


@pytest.mark.parametrize("key", KEYS)
def test_the_fingerprint_tells_keys_apart_and_never_shows_one(key: str) -> None:
    fingerprint = key_fingerprint(key)
    assert re.fullmatch(r"[0-9a-f]{12}", fingerprint)
    assert fingerprint != key and key not in fingerprint
    assert key[:8] not in fingerprint  # not even a prefix of it
    assert key_fingerprint(key) == fingerprint  # the same key, the same fingerprint
    assert key_fingerprint(key + "x") != fingerprint
    assert key_fingerprint(key.upper()) != fingerprint or key.upper() == key


def test_every_key_has_its_own_fingerprint() -> None:
    assert len({key_fingerprint(key) for key in KEYS}) == len(KEYS)


@pytest.mark.parametrize(("url", "host"), [
    ("https://api2.amplitude.com/batch", "https://api2.amplitude.com"),
    ("https://api2.amplitude.com/2/httpapi", "https://api2.amplitude.com"),  # http or batch
    ("https://API.EU.Amplitude.com:443/batch", "https://api.eu.amplitude.com"),
    ("https://user:pass@proxy.example:8443/amp/batch", "https://proxy.example:8443"),
    ("http://127.0.0.1:8787/2/httpapi", "http://127.0.0.1:8787"),
    ("http://localhost:80/batch", "http://localhost"),
    ("http://[::1]:9000/batch", "http://[::1]:9000"),
])
def test_the_host_is_scheme_host_and_port_without_user_or_path(url: str, host: str) -> None:
    assert destination_host(url) == host
    assert "pass" not in destination_host(url)


def test_a_destination_reads_as_host_and_fingerprint() -> None:
    assert str(X) == "https://api2.amplitude.com (API key fingerprint aaaaaaaaaaaa)"
    # when and from what it was bound are shown, not compared
    assert Destination(X.host, X.key_fingerprint, bound_at=5.0, previous=str(Z),
                       recorded=True) == X
    assert X != Y and X != Z


def test_sqlite_binding_is_compare_and_set(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "state.sqlite")
    assert ledger.destination() is None
    assert ledger.bind_destination(X, replacing=None) == X
    # A second first run (another destination) finds the first one's binding.
    found = ledger.bind_destination(Y, replacing=None)
    assert found == X and found is not None and found.bound_at is not None
    assert ledger.bind_destination(Y, replacing=Z) == X  # not what it replaces: nothing
    rebound = ledger.bind_destination(Y, replacing=X)
    assert rebound == Y and rebound is not None and rebound.previous == str(X)
    assert ledger.destination() == Y


def test_sqlite_the_first_delivery_records_the_binding_which_then_stays(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    ledger = SqliteLedger(path)
    ledger.bind_destination(X, replacing=None)
    ledger.begin("sha256:01")
    ledger.save_progress("sha256:01", 10, {"records": 10, "delivered": 0})  # all skipped
    bound = ledger.destination()
    assert bound is not None and not bound.recorded
    ledger.save_progress("sha256:01", 20, {"records": 20, "delivered": 4})
    bound = ledger.destination()
    assert bound is not None and bound.recorded
    ledger.close()
    again = SqliteLedger(path)
    assert again.destination() == X
    rebound = again.bind_destination(Y, replacing=X)  # a rotated key: still recorded
    assert rebound is not None and rebound.recorded
    again.close()
    assert SqliteLedger(path).destination() == Y


def test_sqlite_a_run_that_delivered_nothing_releases_its_binding(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    failed_at_once = SqliteLedger(path)
    failed_at_once.bind_destination(Z, replacing=None)
    failed_at_once.begin("sha256:01")
    failed_at_once.fail("sha256:01", "Amplitude rejected the API key")
    failed_at_once.close()
    fresh = SqliteLedger(path)
    assert fresh.destination() is None  # the next run binds it anew
    assert fresh.bind_destination(X, replacing=None) == X
    fresh.close()


def test_sqlite_a_binding_a_worker_recorded_under_stays_when_the_parent_closes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite"
    parent = SqliteLedger(path)
    parent.bind_destination(X, replacing=None)
    worker = SqliteLedger(path)  # a worker process's own connection
    worker.begin("sha256:01")
    worker.complete("sha256:01", {"records": 3, "delivered": 3})
    worker.close()
    parent.close()
    bound = SqliteLedger(path).destination()
    assert bound == X and bound is not None and bound.recorded


def test_sqlite_an_old_file_is_bound_as_recorded_when_it_holds_objects_done(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute("""CREATE TABLE objects (object_id TEXT PRIMARY KEY, status TEXT NOT NULL,
                   attempts INTEGER NOT NULL DEFAULT 0, next_index INTEGER NOT NULL DEFAULT 0,
                   figures TEXT, error TEXT, started_at REAL, updated_at REAL NOT NULL)""")
    old.execute("INSERT INTO objects VALUES ('sha256:01', 'done', 1, 0, '{}', NULL, 1, 2)")
    old.commit()
    old.close()
    ledger = SqliteLedger(path)
    assert ledger.destination() is None
    bound = ledger.bind_destination(X, replacing=None)
    assert bound == X and bound is not None and bound.recorded
    ledger.close()
    assert SqliteLedger(path).destination() == X  # recorded: not released
