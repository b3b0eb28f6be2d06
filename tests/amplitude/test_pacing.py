"""The run's sending schedule (``amplitude.pacing``): a budget set, or a rate found.

The pacer's clock is virtual unless a test says otherwise: its sleeps move the clock, so a
test asserts the schedule the pacer computed (the departures it returned) without waiting.
The window checks count events the way Amplitude's project limit (and the emulator's
``project_eps_cap``) does: over the sliding second ``(t - 1, t]`` ending at each departure.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from currents_export.amplitude.api import RetryPolicy
from currents_export.amplitude.batching import PendingEvent
from currents_export.amplitude.client import AmplitudeClient
from currents_export.amplitude.pacing import (
    LATE_S,
    MIN_FOUND_RATE,
    MIN_STEP,
    Pacer,
    PaceState,
    RateBudget,
    Turn,
)
from currents_export.counts import SendingReport
from currents_export.errors import SendInterrupted
from currents_export.stopping import Stop
from tests.support.fake_amplitude import API_KEY, URL, FakeAmplitude, VirtualTime, status

START = 1_000.0  # the virtual clock starts here (a monotonic clock is never near 0)


@pytest.fixture
def clock() -> VirtualTime:
    virtual = VirtualTime()
    virtual.now = START
    return virtual


def go(pacer: Pacer, events: int) -> Turn:
    """Take a turn (never None here: no test below needs a resize)."""
    turn = pacer.turn(events)
    assert turn is not None
    return turn


def pacer_on(clock: VirtualTime, budget: RateBudget | None = None, **kwargs: Any) -> Pacer:
    return Pacer(budget or RateBudget(), clock=clock.clock, sleep=clock.sleep, **kwargs)


def busiest_second(departures: Sequence[tuple[float, int]]) -> int:
    """The most events (the second of each pair) that left in one sliding second
    ``(t - 1, t]``, ``t`` a departure."""
    ordered = sorted(departures)
    most = held = 0
    first = 0
    for at, count in ordered:
        held += count
        while ordered[first][0] <= at - 1.0:
            held -= ordered[first][1]
            first += 1
        most = max(most, held)
    return most


def send_one_second(pacer: Pacer, clock: VirtualTime, *, requests: int, events: int) -> None:
    """``requests`` requests of ``events`` each, evenly over the second from now (no budget:
    the test moves the clock), all acknowledged."""
    start = clock.now
    for k in range(requests):
        clock.now = start + k / requests
        pacer.accepted(go(pacer, events), events)
    clock.now = start + 1.0


# ---- a budget -----------------------------------------------------------------------------


def test_a_budget_paces_one_request_under_it_and_no_second_holds_more(
    clock: VirtualTime,
) -> None:
    pacer = pacer_on(clock, RateBudget(events_per_second=950))
    assert pacer.request_size() == 47  # a twentieth of a second's budget

    tickets = [go(pacer, 47) for _ in range(200)]

    departed = [ticket.departed for ticket in tickets]
    interval = 47 / (950 - 47)  # paced one request (47 events/s) under the budget
    assert [b - a for a, b in pairwise(departed)][1:] == pytest.approx([interval] * 198)
    assert busiest_second([(at, 47) for at in departed]) <= 950
    # Not far under the budget either.
    mean_rate = 47 * (len(tickets) - 1) / (departed[-1] - departed[0])
    assert mean_rate >= 0.9 * 950


def test_a_requests_budget_makes_fewer_fuller_requests_paced_one_under_it(
    clock: VirtualTime,
) -> None:
    assert pacer_on(clock, RateBudget(events_per_second=1_000)).request_size() == 50
    pacer = pacer_on(clock, RateBudget(events_per_second=1_000, requests_per_second=10))
    assert pacer.request_size() == 100  # 10 requests/s carry the 1,000 events/s

    departed = [go(pacer, 100).departed for _ in range(40)]

    gaps = [b - a for a, b in pairwise(departed)]
    assert min(gaps[1:]) >= 1 / 9 - 1e-9  # paced at R - 1
    # The first request after an idle schedule lets the second leave LATE_S sooner.
    assert gaps[0] >= 1 / 9 - LATE_S - 1e-9
    assert busiest_second([(at, 1) for at in departed]) <= 10
    assert busiest_second([(at, 100) for at in departed]) <= 1_000


def test_without_a_budget_turns_never_wait(clock: VirtualTime) -> None:
    pacer = pacer_on(clock)
    assert pacer.request_size() is None

    tickets = [go(pacer, 2_000) for _ in range(100)]

    assert {ticket.paced_s for ticket in tickets} == {0.0}
    assert {ticket.departed for ticket in tickets} == {START}
    assert not any(ticket.held for ticket in tickets)
    assert clock.sleeps == []
    report = pacer.report()
    assert (report.waited_on_budget_s, report.waited_on_amplitude_s) == (0.0, 0.0)
    assert report.events_per_second is None and report.found_events_per_second is None


def test_waiting_for_the_budget_is_counted_as_pacing_not_as_amplitude(
    clock: VirtualTime,
) -> None:
    pacer = pacer_on(clock, RateBudget(events_per_second=100))
    first, second = go(pacer, 5), go(pacer, 5)
    assert first.paced_s == 0.0 and not first.held
    # paced at 100 - 5 events/s (the first interval LATE_S shorter: see above)
    assert second.paced_s == pytest.approx(5 / 95 - LATE_S) and second.held
    after_two = pacer.report().waited_on_budget_s
    assert after_two == pytest.approx(second.paced_s)

    more = [go(pacer, 5) for _ in range(8)]

    report = pacer.report()
    assert all(ticket.paced_s > 0 for ticket in more)
    assert report.waited_on_budget_s > after_two
    assert report.waited_on_budget_s == pytest.approx(
        sum(ticket.paced_s for ticket in [second, *more]))
    assert report.waited_on_amplitude_s == 0.0 and report.refused == 0


def test_with_a_budget_and_a_found_rate_the_lower_one_paces(clock: VirtualTime) -> None:
    found_lower = Pacer(RateBudget(events_per_second=1_000), PaceState.local(found_rate=400),
                        clock=clock.clock, sleep=clock.sleep)
    assert found_lower.request_size() == 20
    departed = [go(found_lower, 20).departed for _ in range(5)]
    assert [b - a for a, b in pairwise(departed)][1:] == pytest.approx([20 / 380] * 3)

    budget_lower = Pacer(RateBudget(events_per_second=300), PaceState.local(found_rate=400),
                         clock=clock.clock, sleep=clock.sleep)
    assert budget_lower.request_size() == 15
    departed = [go(budget_lower, 15).departed for _ in range(5)]
    assert [b - a for a, b in pairwise(departed)][1:] == pytest.approx([15 / 285] * 3)
    report = budget_lower.report()
    assert (report.events_per_second, report.found_events_per_second) == (300, 400)


# ---- a rate found after Amplitude refused -------------------------------------------------


def test_a_refusal_pauses_every_sender_then_resumes_at_three_quarters(
    clock: VirtualTime,
) -> None:
    pacer = pacer_on(clock, pause_s=60.0)
    send_one_second(pacer, clock, requests=10, events=100)  # 1,000 events/s accepted
    assert pacer.report().found_events_per_second is None
    refused = go(pacer, 100)  # 1001.00: over the project's limit
    clock.now = START + 1.02
    in_flight = go(pacer, 100)  # left before the run heard of the refusal
    late = go(pacer, 100)
    clock.now = START + 1.05
    pacer.refused(refused, 100)
    clock.now = START + 1.10
    pacer.refused(in_flight, 100)  # already reacted to: no new pause, no second decrease

    resumed = go(pacer, 37)

    assert resumed.departed == pytest.approx(START + 1.05 + 60.0)  # the first pause only
    assert resumed.paced_s == 0.0  # Amplitude's pause is not the budget's pacing
    report = pacer.report()
    assert report.found_events_per_second == pytest.approx(0.75 * 1_000)
    assert report.waited_on_amplitude_s == pytest.approx(60.0, abs=0.1)
    assert report.waited_on_budget_s == 0.0
    assert report.refused == 2

    # A very late answer of a request sent before the reaction changes nothing either.
    pacer.refused(late, 100)
    assert pacer.report().found_events_per_second == pytest.approx(750.0)
    assert pacer.request_size() == 37
    after = [go(pacer, 37) for _ in range(5)]
    for ticket in after:
        pacer.accepted(ticket, 37)
    assert after[-1].departed < resumed.departed + 1.0  # no second pause
    previous = pacer.report().found_events_per_second
    assert previous is not None and previous >= 750.0

    # A refusal of a request sent after the resumption: lower again, pause again.
    again = go(pacer, 37)
    clock.now = again.departed + 0.05
    pacer.refused(again, 100)
    next_turn = go(pacer, 1)  # (37 events no longer fit the rate lowered again)

    assert next_turn.departed == pytest.approx(again.departed + 0.05 + 60.0)
    report = pacer.report()
    assert report.found_events_per_second is not None
    assert report.found_events_per_second <= 0.75 * previous
    assert report.refused == 4  # every refusal counts, reacted to or not
    assert report.waited_on_amplitude_s == pytest.approx(120.0, abs=0.2)


def test_the_rate_found_is_three_quarters_of_a_steady_rate_accepted_before(
    clock: VirtualTime,
) -> None:
    """A long, steady run at 500 events/s, then a refusal: 375 events/s after the pause."""
    pacer = pacer_on(clock, pause_s=60.0)
    for _ in range(8):
        send_one_second(pacer, clock, requests=10, events=50)
    refused = go(pacer, 50)
    pacer.refused(refused, 100)
    go(pacer, 1)
    assert pacer.report().found_events_per_second == pytest.approx(0.75 * 500, rel=0.05)


def test_a_refusal_soon_after_the_resumption_lowers_from_the_rate_sent_since(
    clock: VirtualTime,
) -> None:
    """Two seconds at the found rate after a pause, then a refusal: three quarters of what
    was accepted in those two seconds, not of that spread over the pause as well."""
    pacer = pacer_on(clock, pause_s=60.0)
    send_one_second(pacer, clock, requests=10, events=100)
    pacer.refused(go(pacer, 100), 100)
    sent: list[Turn] = []
    while not sent or sent[-1].departed - sent[0].departed < 2.0:
        ticket = go(pacer, 37)  # paced at the rate found: 750 events/s
        pacer.accepted(ticket, 37)
        sent.append(ticket)
    rate_sent = 37 * (len(sent) - 1) / (sent[-1].departed - sent[0].departed)
    pacer.refused(go(pacer, 37), 37)
    go(pacer, 1)
    assert pacer.report().found_events_per_second == pytest.approx(0.75 * rate_sent, rel=0.1)


def test_after_a_pause_waiting_requests_leave_one_at_a_time(clock: VirtualTime) -> None:
    pacer = pacer_on(clock, pause_s=60.0)
    send_one_second(pacer, clock, requests=10, events=100)
    pacer.refused(go(pacer, 100), 100)
    paused_until = clock.now + 60.0

    departed = [go(pacer, 37).departed for _ in range(6)]

    assert departed[0] == pytest.approx(paused_until)
    pace = 750 - 37  # the rate found, one request under it
    gaps = [b - a for a, b in pairwise(departed)]
    assert gaps == pytest.approx([37 / pace - LATE_S] + [37 / pace] * 4)


def test_after_a_pause_concurrent_senders_leave_one_at_a_time() -> None:
    """Real clock, real threads all waiting for the pause: they never leave at once."""
    pacer = Pacer(pause_s=0.3)
    for _ in range(10):
        pacer.accepted(go(pacer, 100), 100)  # 1,000 events within the run's first second
    refused = go(pacer, 100)
    before = time.monotonic()
    pacer.refused(refused, 100)
    departed: list[float] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            departed.append(go(pacer, 37).departed)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)  # a guard against a hang, not a timing check
    assert errors == [] and len(departed) == 5

    departed.sort()
    assert departed[0] >= before + 0.3
    assert pacer.report().found_events_per_second == pytest.approx(750.0)
    interval = 37 / (750 - 37)
    assert min(b - a for a, b in pairwise(departed)) >= interval - LATE_S


def test_additive_increase_only_for_requests_that_waited_for_the_rate(
    clock: VirtualTime,
) -> None:
    pacer = Pacer(state=PaceState.local(found_rate=500), clock=clock.clock, sleep=clock.sleep)
    assert pacer.request_size() == 25
    first = go(pacer, 25)
    assert not first.held
    pacer.accepted(first, 25)
    assert pacer.report().found_events_per_second == 500  # it did not wait: no probe

    held = [go(pacer, 25) for _ in range(19)]
    assert all(ticket.held for ticket in held)
    for ticket in held:
        pacer.accepted(ticket, 25)

    # 475 events: 0.95 s of sending at 500 events/s, +1 % of 500 per second of it, at least
    # MIN_STEP (1 % of the smallest plan's limit): 10 events/s per second.
    found = pacer.report().found_events_per_second
    assert found == pytest.approx(500 + MIN_STEP * 0.95, rel=1e-3)

    clock.now += 10.0  # the schedule is free again: the next turns do not wait
    free = [go(pacer, 25)]
    clock.now += 10.0
    free.append(go(pacer, 25))
    assert not any(ticket.held for ticket in free)
    for ticket in free:
        pacer.accepted(ticket, 25)
    assert pacer.report().found_events_per_second == found


def test_throttled_ids_are_counted_and_pause_nobody(clock: VirtualTime) -> None:
    pacer = pacer_on(clock)
    for _ in range(3):
        pacer.throttled()
    ticket = go(pacer, 100)
    report = pacer.report()
    assert (report.throttled, report.refused) == (3, 0)
    assert ticket.departed == START and report.found_events_per_second is None


# ---- sharing one schedule -----------------------------------------------------------------


def take_turns(state: PaceState, out: Any) -> None:
    """A spawned process's sending: 30 requests of 50 events under the shared budget."""
    pacer = Pacer(RateBudget(events_per_second=1_000), state)
    out.put([go(pacer, 50).departed for _ in range(30)])


def test_a_local_state_stays_in_its_process() -> None:
    with pytest.raises(TypeError, match="local cells stay in their process"):
        pickle.dumps(PaceState.local())


def test_processes_sharing_a_state_share_one_budget(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    state = PaceState.shared(tmp_path)
    out = context.Queue()
    processes = [context.Process(target=take_turns, args=(state, out)) for _ in range(2)]
    for process in processes:
        process.start()
    try:
        batches = [out.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
    assert [process.exitcode for process in processes] == [0, 0]

    departed = sorted(at for batch in batches for at in batch)
    assert [len(batch) for batch in batches] == [30, 30]
    assert busiest_second([(at, 50) for at in departed]) <= 1_000  # one budget, not two
    total_rate = 50 * (len(departed) - 1) / (departed[-1] - departed[0])
    assert total_rate <= 1_000
    # Both processes wrote to the same cells: the schedule is theirs together.
    report = Pacer(RateBudget(events_per_second=1_000), state).report()
    assert report.waited_on_budget_s > 0


def die_holding_the_lock(state: PaceState) -> None:
    """A worker killed (SIGKILL, the OOM killer) while it holds the schedule's lock."""
    with state.cells.lock:
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_process_killed_holding_the_lock_never_stalls_the_others(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    state = PaceState.shared(tmp_path)
    victim = context.Process(target=die_holding_the_lock, args=(state,))
    victim.start()
    victim.join(30)
    assert victim.exitcode == -signal.SIGKILL
    reports: list[SendingReport] = []
    survivor = threading.Thread(
        target=lambda: reports.append(Pacer(RateBudget(100), state).report()), daemon=True)
    survivor.start()
    survivor.join(10)  # a guard against a hang, not a timing check
    assert not survivor.is_alive() and len(reports) == 1  # the kernel let go of the lock


def test_a_stop_ends_a_long_wait_for_the_budget() -> None:
    stop = Stop()
    pacer = Pacer(RateBudget(events_per_second=1), stop=stop)  # real clock
    go(pacer, 1_000)  # the next turn is half an hour away
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            go(pacer, 1)
        except BaseException as exc:
            raised.append(exc)

    waiting = threading.Thread(target=wait)
    waiting.start()
    time.sleep(0.05)
    stop.request("test")
    waiting.join(30)  # a guard against a hang, not a timing check
    assert not waiting.is_alive()
    assert len(raised) == 1 and isinstance(raised[0], SendInterrupted)
    assert "test" in str(raised[0])


# ---- the budget's share, the report -------------------------------------------------------


def test_a_share_of_the_budget_and_what_the_report_says() -> None:
    assert RateBudget.share(950, 95, 2) == RateBudget(475.0, 47.5, shares=2)
    assert RateBudget.share(None, 100, 4) == RateBudget(None, 25.0, shares=4)
    assert RateBudget.share(1_000, None) == RateBudget(1_000, None)

    report = SendingReport(events_per_second=475.0, requests_per_second=47.5,
                           found_events_per_second=412.34, refused=3, throttled=2,
                           waited_on_budget_s=12.34, waited_on_amplitude_s=60.04)
    assert report.to_json(delivered=1_000, elapsed_s=4.0) == {
        "events_per_second": 250.0,
        "budget_events_per_second": 475.0,
        "budget_requests_per_second": 47.5,
        "found_events_per_second": 412.3,
        "requests_refused_429": 3,
        "requests_throttled_429": 2,
        "waited_on_budget_s": 12.3,
        "waited_on_amplitude_s": 60.0,
    }
    words = report.describe()
    for part in ("budget 475 events/s", "found 412 events/s", "429s: 3 project, 2 users/devices",
                 "Amplitude 60 s", "budget 12 s"):
        assert part in words, words


# ---- the client sends on the pacer's schedule -----------------------------------------------


def pending(n: int) -> list[PendingEvent[int]]:
    return [PendingEvent(orjson.dumps({"event_type": "e", "user_id": f"user-{i:04d}",
                                       "insert_id": f"i-{i}"}), i, (f"user-{i:04d}",))
            for i in range(n)]


@pytest.fixture
def clients() -> Iterator[list[AmplitudeClient]]:
    made: list[AmplitudeClient] = []
    yield made
    for client in made:
        client.close()


def client_on(clients: list[AmplitudeClient], clock: VirtualTime, amplitude: FakeAmplitude,
              **kwargs: Any) -> AmplitudeClient:
    client = AmplitudeClient(URL, API_KEY, transport=httpx.MockTransport(amplitude),
                             sleep=clock.sleep, clock=clock.clock, jitter=lambda: 0.5,
                             **kwargs)
    clients.append(client)
    return client


def test_the_client_sends_requests_of_the_budget_size_in_order(
    clock: VirtualTime, clients: list[AmplitudeClient]
) -> None:
    amplitude = FakeAmplitude()
    pacer = pacer_on(clock, RateBudget(events_per_second=100))
    assert pacer.request_size() == 5
    client = client_on(clients, clock, amplitude, pacer=pacer)

    outcome = client.send(pending(20))

    assert [[e["insert_id"] for e in request] for request in amplitude.requests] == [
        [f"i-{i}" for i in range(start, start + 5)] for start in range(0, 20, 5)]
    assert [e.ref for e in outcome.delivered] == list(range(20))
    assert outcome.requests == 4 and outcome.retries == 0
    assert pacer.report().waited_on_budget_s == pytest.approx(3 * 5 / 95 - LATE_S)


def test_pacing_is_not_failure_it_never_counts_toward_the_horizon(
    clock: VirtualTime, clients: list[AmplitudeClient]
) -> None:
    answered = 0

    def fail_the_third(events: list[dict[str, Any]]) -> httpx.Response | None:
        nonlocal answered
        answered += 1
        return status(503) if answered == 3 else None

    amplitude = FakeAmplitude(fail_the_third)
    pacer = pacer_on(clock, RateBudget(events_per_second=1))  # a request every 2 s
    client = client_on(clients, clock, amplitude, pacer=pacer,
                       retry=RetryPolicy(horizon_s=1.0, initial_delay_s=0.2))

    outcome = client.send(pending(4))  # the third request waited 2 s, then failed once

    assert [e.ref for e in outcome.delivered] == [0, 1, 2, 3]
    assert outcome.retries == 1 and len(amplitude.requests) == 5
    assert sorted(amplitude.stored_ids()) == ["i-0", "i-1", "i-2", "i-3"]
    assert clock.now - START > 5 * 1.0  # far longer than the horizon, all of it pacing
    assert pacer.report().waited_on_budget_s > 1.0


def test_a_429_without_indexes_pauses_for_the_project_then_delivers(
    clock: VirtualTime, clients: list[AmplitudeClient]
) -> None:
    sent_at: list[float] = []

    def refuse_the_first(events: list[dict[str, Any]]) -> httpx.Response | None:
        return status(429, error="Too many requests") if len(sent_at) == 1 else None

    amplitude = FakeAmplitude(refuse_the_first, on_request=lambda _: sent_at.append(clock.now))
    client = client_on(clients, clock, amplitude, retry=RetryPolicy(project_pause_s=60.0))

    outcome = client.send(pending(20))

    assert [e.ref for e in outcome.delivered] == list(range(20)) and outcome.throttled == []
    # After the pause the refused request goes again, in pieces the rate found allows
    # (nothing was accepted before: three quarters of its 20 events in a second, at least
    # the floor: 100 events/s, 5 events per request), one after another, in order.
    assert len(sent_at) == 5 and all(later - sent_at[0] >= 60.0 for later in sent_at[1:])
    assert [len(request) for request in amplitude.requests] == [20, 5, 5, 5, 5]
    assert amplitude.stored_ids() == [f"i-{n}" for n in range(20)]
    report = client.pacer.report()
    assert (report.refused, report.throttled) == (1, 0)
    assert report.waited_on_amplitude_s >= 60.0 - 1e-9
    assert report.found_events_per_second is not None
    assert report.found_events_per_second >= MIN_FOUND_RATE


def test_the_floor_and_the_step_are_divided_among_the_shares(clock: VirtualTime) -> None:
    """A fleet of ten, each at 75 events/s: a refusal still slows each one down (the floor
    is a tenth of one run's), and the rate found never climbs past the budget."""
    pacer = Pacer(RateBudget.share(750, None, 10), clock=clock.clock, sleep=clock.sleep,
                  pause_s=60.0)
    send_one_second(pacer, clock, requests=15, events=5)  # 75 events/s accepted
    pacer.refused(go(pacer, 3), 3)
    go(pacer, 1)  # after the pause

    found = pacer.report().found_events_per_second
    assert found == pytest.approx(0.75 * 75, rel=0.05)  # not the floor of one run: 100
    assert found > MIN_FOUND_RATE / 10
    for _ in range(10_000):  # held by the rate found, accepted: it climbs ...
        pacer.accepted(go(pacer, 2), 2)
    assert pacer.report().found_events_per_second == pytest.approx(75.0)  # ... to the budget


def test_near_the_rate_refused_before_the_rate_climbs_slowly(clock: VirtualTime) -> None:
    pacer = pacer_on(clock, pause_s=60.0)
    send_one_second(pacer, clock, requests=10, events=100)  # 1,000 events/s accepted
    pacer.refused(go(pacer, 100), 100)
    go(pacer, 1)
    assert pacer.report().found_events_per_second == pytest.approx(750.0)

    def climb_for(seconds: float) -> float:
        """Send held requests for ``seconds`` of the virtual clock; the rate found after."""
        until = clock.now + seconds
        while clock.now < until:
            pacer.accepted(go(pacer, 37), 37)
        found = pacer.report().found_events_per_second
        assert found is not None
        return found

    below = climb_for(10.0)  # 1 % of 750 a second: about 7.5 events/s more each second
    assert below == pytest.approx(750 + 10 * 7.5, rel=0.1)
    near = climb_for(40.0)  # past 950 (95 % of the 1,000 refused at): twenty times slower
    assert 950 <= near < 950 + 40 * 7.5 / 10
