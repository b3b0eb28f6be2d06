from pathlib import Path

import pytest

from currents_export.ledger import LedgerConfigError, SqliteLedger, open_ledger


def test_an_object_is_done_only_after_complete_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.sqlite"
    ledger = SqliteLedger(path)
    ledger.begin("s3://b/k1")
    assert not ledger.is_done("s3://b/k1")
    ledger.complete("s3://b/k1", {"records": 3})
    ledger.begin("s3://b/k2")
    ledger.fail("s3://b/k2", "boom")
    ledger.close()

    reopened = SqliteLedger(path)
    assert reopened.is_done("s3://b/k1")
    assert not reopened.is_done("s3://b/k2")
    assert not reopened.is_done("never-seen")
    row = reopened.status("s3://b/k2")
    assert row is not None and row["status"] == "failed" and row["error"] == "boom"
    reopened.begin("s3://b/k2")
    row = reopened.status("s3://b/k2")
    assert row is not None and row["attempts"] == 2 and row["status"] == "in_progress"


@pytest.mark.parametrize("uri", ["dynamodb://", "dynamodb://a/b", "redis://x"])
def test_unsupported_state_uris_are_configuration_errors(uri: str) -> None:
    with pytest.raises(LedgerConfigError, match="--state"):
        open_ledger(uri)
