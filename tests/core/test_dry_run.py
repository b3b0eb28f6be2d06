"""A dry run over many tiny objects: the outbox holds events back in batches, so the
reader must hand them over before it waits for room (else it waits forever)."""

from __future__ import annotations

import threading
from pathlib import Path

from currents_export.core.dryrun import DRY_RUN, DryRunOutbox
from currents_export.core.pipeline import Pipeline
from currents_export.counts import RunSummary
from currents_export.deadletter import DeadLetterDirectory
from currents_export.kit.fixtures import generate_fixtures
from currents_export.ledger import NoLedger
from currents_export.sources import find_local_objects
from currents_export.stopping import Stop


def test_more_tiny_objects_than_may_be_open_all_finish(tmp_path: Path) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=2, files_per_type=1, seed=3,
                      event_types=["users.behaviors.CustomEvent", "users.messages.email.Send",
                                   "users.behaviors.app.SessionStart",
                                   "users.messages.pushnotification.Send",
                                   "users.behaviors.Purchase", "users.messages.email.Open"])
    objects = find_local_objects([tmp_path / "bucket"])
    assert len(objects) == 6
    stop = Stop()
    pipeline = Pipeline(open_outbox=DryRunOutbox, dry_run=True, stop=stop, ledger=NoLedger(),
                        dead_letter=DeadLetterDirectory(tmp_path / "dl"), max_open_objects=2)
    summaries: list[RunSummary] = []
    runner = threading.Thread(target=lambda: summaries.append(pipeline.run(objects)),
                              daemon=True)
    runner.start()
    runner.join(30)
    if runner.is_alive():
        stop.request("the test gave up")
        runner.join(10)
    assert summaries, "the run never finished"
    [summary] = summaries
    assert not summary.interrupted
    assert summary.objects_done == 6 and summary.balanced
    assert summary.skipped[DRY_RUN] > 0
