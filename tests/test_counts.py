"""Reports and the run summary: per-type totals are tallies, and the summary's JSON keeps
its contract (``by_event_type``: five integers per type)."""

from __future__ import annotations

import pickle
from collections import Counter

import orjson

from currents_export.counts import ObjectReport, RunSummary, SendingReport, Tally

OPEN = "users.messages.email.Open"
PURCHASE = "users.behaviors.Purchase"
FIVE = ["records", "delivered", "skipped", "dead_lettered", "duplicates"]


def report(event_type: str | None, **figures: int) -> ObjectReport:
    """A done object: ``figures`` are delivered, duplicates, and skipped_<reason> /
    dead_<reason> counts; records are their sum."""
    out = ObjectReport(object=f"/data/{event_type}.avro", event_type=event_type)
    for name, count in figures.items():
        if name.startswith("skipped_"):
            out.skipped[name.removeprefix("skipped_")] += count
        elif name.startswith("dead_"):
            out.dead_lettered[name.removeprefix("dead_")] += count
        else:
            setattr(out, name, count)
    out.records = out.delivered + out.skipped_total + out.dead_lettered_total + out.duplicates
    out.warnings["properties_not_json"] = 1
    out.requests = 2
    return out


def summary_of(*reports: ObjectReport) -> RunSummary:
    summary = RunSummary()
    for each in reports:
        summary.add(each)
    return summary


def three_reports() -> list[ObjectReport]:
    return [
        report(OPEN, delivered=7, skipped_no_identity=2, skipped_dry_run=2,
               dead_invalid_id=1, duplicates=1),
        report(OPEN, delivered=3, dead_invalid_time=2),
        report(PURCHASE, delivered=5),
    ]


def test_by_event_type_keeps_five_integers_per_type() -> None:
    failed = ObjectReport(object="/data/x.avro", event_type=OPEN, status="failed",
                          not_started=True, error="not started")
    data = orjson.loads(orjson.dumps(summary_of(*three_reports(), failed).to_json()))
    assert data["by_event_type"] == {
        OPEN: {"records": 18, "delivered": 10, "skipped": 4, "dead_lettered": 3,
               "duplicates": 1},
        PURCHASE: {"records": 5, "delivered": 5, "skipped": 0, "dead_lettered": 0,
                   "duplicates": 0},
    }
    for totals in data["by_event_type"].values():
        assert list(totals) == FIVE and all(type(v) is int for v in totals.values())


def test_per_type_totals_are_tallies_that_balance_and_add_up_to_the_run() -> None:
    summary = summary_of(*three_reports())
    opens = summary.by_event_type[OPEN]
    assert type(opens) is Tally and opens.balanced
    assert opens.skipped == Counter({"no_identity": 2, "dry_run": 2})
    assert opens.dead_lettered == Counter({"invalid_id": 1, "invalid_time": 2})
    whole = Tally()
    for totals in summary.by_event_type.values():
        whole.add_tally(totals)
    assert whole.tally_json() == summary.tally_json()


def test_an_object_without_an_event_type_is_counted_as_unknown() -> None:
    summary = summary_of(report(None, delivered=4))
    assert summary.to_json()["by_event_type"] == {
        "(unknown)": {"records": 4, "delivered": 4, "skipped": 0, "dead_lettered": 0,
                      "duplicates": 0}}


def test_merging_summaries_adds_their_per_type_tallies() -> None:
    first, second, third = three_reports()
    merged = summary_of(first)
    merged.merge(summary_of(second, third))
    assert merged.to_json() == summary_of(first, second, third).to_json()
    assert merged.by_event_type[OPEN].dead_lettered == Counter(
        {"invalid_id": 1, "invalid_time": 2})


def test_the_table_has_a_row_of_sums_per_type_and_the_totals() -> None:
    rows = {line.split()[0]: line.split()[1:]
            for line in summary_of(*three_reports()).render().splitlines() if line}
    assert rows[OPEN] == ["18", "10", "4", "3", "1"]
    assert rows[PURCHASE] == ["5", "5", "0", "0", "0"]
    assert rows["TOTAL"] == ["23", "15", "4", "3", "1"]


def test_reports_and_summaries_cross_a_pipe_whole() -> None:
    reports = three_reports()
    summary = summary_of(*reports)
    assert pickle.loads(pickle.dumps(summary)) == summary
    assert [pickle.loads(pickle.dumps(r)) for r in reports] == reports


def sending(**changes: object) -> SendingReport:
    figures: dict[str, object] = {
        "events_per_second": None, "requests_per_second": None,
        "found_events_per_second": None, "refused": 0, "throttled": 0,
        "waited_on_budget_s": 0.0, "waited_on_amplitude_s": 0.0}
    figures.update(changes)
    return SendingReport(**figures)  # type: ignore[arg-type]


def test_the_summary_says_what_sending_met_and_suggests_the_rate_found() -> None:
    summary = summary_of(report(OPEN, delivered=1_800))
    summary.elapsed_s = 2.0
    summary.sending = sending(found_events_per_second=733.4, refused=3, throttled=1,
                              waited_on_amplitude_s=60.04, waited_on_budget_s=1.26)

    figures = orjson.loads(orjson.dumps(summary.to_json()))["sending"]
    text = summary.render()

    assert figures == {
        "events_per_second": 900.0, "budget_events_per_second": None,
        "budget_requests_per_second": None, "found_events_per_second": 733.4,
        "requests_refused_429": 3, "requests_throttled_429": 1,
        "waited_on_budget_s": 1.3, "waited_on_amplitude_s": 60.0}
    assert ("sending: 900 events/s, found 733 events/s, 429s: 3 project, 1 users/devices, "
            "waited: Amplitude 60 s, "
            "budget 1 s") in text
    assert "--max-events-per-second 733 keeps the next run under it" in text


def test_a_budget_is_shown_and_no_rate_is_suggested_when_one_was_set() -> None:
    summary = summary_of(report(OPEN, delivered=10))
    summary.sending = sending(events_per_second=475.0, requests_per_second=47.5,
                              found_events_per_second=400.0)

    text = summary.render()

    assert "budget 475 events/s, 48 requests/s, found 400 events/s" in text
    assert "keeps the next run under it" not in text
    assert summary.to_json()["sending"]["budget_requests_per_second"] == 47.5


def test_a_run_that_sent_nothing_has_no_sending_figures() -> None:
    summary = summary_of(report(OPEN, delivered=10))  # a dry run's: nothing was sent

    assert summary.to_json()["sending"] is None  # the key stays: one contract
    assert "sending:" not in summary.render()


def test_a_requests_budget_alone_reads_as_a_budget() -> None:
    words = sending(requests_per_second=95.0).describe()

    assert words.startswith("budget 95 requests/s, 429s: 0 project")
    assert sending(events_per_second=75.0, found_events_per_second=60.0).budget_in_force == 60
    assert sending(found_events_per_second=800.0).budget_in_force == 800
    assert sending().budget_in_force is None


# ---- repeats Amplitude dropped ------------------------------------------------------------


def test_repeats_dropped_are_delivered_events_not_a_bucket() -> None:
    """Amplitude has them: they stay in ``delivered``, and the invariant is unchanged."""
    first = report(OPEN, delivered=10, duplicates=1)
    first.repeats_dropped = 4
    second = report(PURCHASE, delivered=5)
    second.repeats_dropped = 5  # every event of the object was a repeat
    summary = summary_of(first, second)
    assert summary.repeats_dropped == 9 and summary.delivered == 15
    assert first.balanced and second.balanced and summary.balanced
    data = orjson.loads(orjson.dumps(summary.to_json()))
    assert data["repeats_dropped"] == 9 and data["balanced"] is True
    assert first.figures()["repeats_dropped"] == 4  # the object's figure, in the ledger's
    assert Tally.from_json(first.tally_json()).repeats_dropped == 4
    assert Tally.from_json({"records": 1}).repeats_dropped == 0  # figures from before it


def test_workers_summaries_merge_their_repeats() -> None:
    first, second, third = three_reports()
    first.repeats_dropped, third.repeats_dropped = 2, 3
    merged = summary_of(first)
    other = summary_of(second, third)
    merged.merge(other)
    assert merged.repeats_dropped == 5
    assert merged.to_json() == summary_of(first, second, third).to_json()
    assert pickle.loads(pickle.dumps(merged)).repeats_dropped == 5


def test_the_text_says_repeats_only_when_there_were_some() -> None:
    summary = summary_of(report(OPEN, delivered=10))
    assert "repeats Amplitude dropped" not in summary.render()
    assert summary.to_json()["repeats_dropped"] == 0  # the key stays: one contract
    summary.repeats_dropped = 7
    line = next(line for line in summary.render().splitlines() if "repeats" in line)
    assert line.startswith("repeats Amplitude dropped: 7 ")
    assert "counted as delivered" in line


def test_a_dry_runs_summary_has_the_same_keys_as_a_real_runs() -> None:
    real = summary_of(report(OPEN, delivered=10))
    real.repeats_dropped = 2
    dry = RunSummary(dry_run=True)
    dry.add(report(OPEN, skipped_dry_run=10))
    assert dry.to_json().keys() == real.to_json().keys()
    assert "repeats_dropped" in dry.to_json()
