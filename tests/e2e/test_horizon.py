"""``--retry-horizon`` end to end: the command line against the emulator, which answers the
first requests and then fails every one. The run keeps trying for the whole horizon (the
last attempt at it), then gives up with exit 1, says how long Amplitude failed, counts
every attempt it made, and leaves the objects pending for the next run. A stop that leaves
a request in flight still counts every attempt its send made."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import generate_fixtures
from tests.support.emulator import stored_events
from tests.support.runs import API_KEY, assert_balanced, replay

HORIZON_S = 3
FILES = 10
FAILED_FOR = re.compile(r"every request failed for (\d+) s")


def request_log(emulator: Emulator) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = httpx.get(f"{emulator.url}/_emulator/requests").json()[
        "requests"]
    return entries


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"action": "status", "status": 503}, id="503"),
        pytest.param({"action": "reset"}, id="connection-reset"),
    ],
)
def test_an_outage_is_retried_for_the_whole_horizon_and_every_attempt_is_counted(
    emulator: Emulator, tmp_path: Path, fault: dict[str, Any]
) -> None:
    generate_fixtures(tmp_path / "bucket", events_per_type=2_000, files_per_type=FILES,
                      event_types=["users.behaviors.CustomEvent"], seed=24)
    # Two requests answered (the reachability probe before the run is one), then every
    # request fails. One lane: one request in flight, so which attempts are retries does
    # not depend on how the requests of several lanes interleave (with several, the last
    # probe at the horizon may as well be another request's first attempt).
    emulator.set_faults([{**fault, "after": 2}], seed=1)
    result, summary = replay(emulator, tmp_path, tmp_path / "bucket",
                             extra=("--retry-horizon", str(HORIZON_S), "--lanes", "1"))
    assert result.exit_code == 1, result.output
    assert_balanced(summary)

    # It says how long Amplitude failed: the whole horizon, not the moment it gave up early.
    said = FAILED_FOR.findall(orjson.dumps(summary).decode() + result.output)
    assert said and all(int(seconds) >= HORIZON_S for seconds in said), said

    # Every attempt counts: the requests the emulator saw but the probe; each after the one
    # answered and the failed request's first attempt is a retry (the last one at the
    # horizon).
    log = request_log(emulator)
    failed = [entry for entry in log if entry["fault"]]
    assert summary["requests"] == len(log) - 1
    assert len(failed) == len(log) - 2 >= 2
    assert summary["retries"] == summary["requests"] - 2

    # Nothing was marked done: with Amplitude back, the next run finishes every object.
    emulator.clear_faults()
    result, again = replay(emulator, tmp_path, tmp_path / "bucket")
    assert result.exit_code == 0, result.output
    assert again["objects_done"] + again["objects_already_done"] == FILES
    assert again["objects_done"] > 0 and again["delivered"] > 0
    assert_balanced(again)
    assert len({event["insert_id"] for event in stored_events(emulator)}) >= again["delivered"]


@pytest.fixture
def own_emulator() -> Iterator[Emulator]:
    """An emulator of the test's own: the request left sleeping in a "delay" fault is
    dropped when it stops, instead of being stored later in the shared one."""
    with Emulator() as server:
        yield server


def test_a_stop_while_a_retried_request_hangs_counts_every_attempt_it_made(
    own_emulator: Emulator, tmp_path: Path
) -> None:
    """One lane: a request fails three times, then its next attempt hangs; Ctrl-C. The lane
    is left behind in flight (its events stay pending), and the summary still counts the
    four attempts of its send: they are counted as they are sent, not when a send ends."""
    emulator = own_emulator
    generate_fixtures(tmp_path / "bucket", events_per_type=2_000, files_per_type=1,
                      event_types=["users.behaviors.CustomEvent"], seed=24)
    # The first request is answered (a probe before the run, if any, or the first upload);
    # the next three fail, the one after hangs.
    emulator.set_faults([{"action": "status", "status": 503, "after": 1, "times": 3},
                         {"action": "delay", "delay_s": 30, "after": 4}], seed=1)
    process = subprocess.Popen(
        [sys.executable, "-m", "currents_export", "replay", str(tmp_path / "bucket"),
         "--amplitude-url", emulator.url, "--state", str(tmp_path / "state.sqlite"),
         "--dead-letter", str(tmp_path / "dead-letter"), "--lanes", "1", "--workers", "1",
         "--summary-json", str(tmp_path / "summary.json"), "--retry-horizon", "900"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "AMPLITUDE_API_KEY": API_KEY},
    )
    for _ in range(600):  # until the hanging attempt is in flight (bounded: about a minute)
        fired = httpx.get(f"{emulator.url}/_emulator/stats").json()["faults_fired"]
        if fired >= 4 or process.poll() is not None:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)  # a guard against a hang, not a timing check
    assert process.returncode == 1, stderr.decode()
    summary = orjson.loads((tmp_path / "summary.json").read_bytes())
    assert summary["interrupted"] is True and summary["pending_records"] > 0
    assert_balanced(summary)
    failed = [entry for entry in request_log(emulator) if entry["fault"]]
    assert len(failed) == 3  # answered 503; the fourth attempt never got an answer
    assert summary["requests"] >= len(failed) + 1  # the attempt in flight included
    assert summary["retries"] >= len(failed)  # the three after the first
