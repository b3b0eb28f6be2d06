"""The benchmark harness runs end to end at smoke sizes and its counts add up.

A correctness test of ``python -m bench --smoke``, not a timing: no speed or ratio is
asserted, only that every row is reported and every event is where it should be.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke(tmp_path: Path) -> None:
    report_path, json_path = tmp_path / "results.md", tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke",
         "--output", str(report_path), "--json", str(json_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = report_path.read_text()
    results = json.loads(json_path.read_text())
    types = results["mix"]["event_types"]

    rows = [
        "| command | ",
        "| CPU | ",
        "| cores | ",
        "| Python | ",
        *(f"| {name} | " for name in ("fastavro", "orjson", "httpx", "amplitude-analytics",
                                      "currents-export")),
        "| CustomEvent × 400 | ",  # (a), (b), (c), b/a, b/c
        f"| all {types} types × 3 | ",  # the mix: (a), (b), b/a
        "| CustomEvent × 200 | ",  # peak RSS, small
        "| ratio 400 / 200 | ",  # peak RSS ratio
        "| emulator alone: /batch",
    ]
    for row in rows:
        assert any(line.startswith(row) for line in report.splitlines()), row
    assert "-m bench --smoke" in report
    assert types > 1

    replays = results["replays"]
    assert len(replays) == 3  # large, small, mix: one repeat each
    for run in replays:
        assert run["stored"] == run["delivered"] > 0, run
        accounted = run["delivered"] + run["skipped"] + run["dead_lettered"] + run["duplicates"]
        assert run["records"] == accounted, run
        assert run["peak_rss_mb"] > 0
    assert results["large"]["replays"][0]["records"] == 400
    assert results["mix"]["records"] == 3 * types

    sdk = results["sdk"]
    assert sdk["records"] == 400
    assert sdk["stored"] == sdk["tracked"] > 0, sdk

    memory = results["memory"]
    assert memory["small_mb"] > 0 and memory["large_mb"] > 0
    assert results["emulator_alone"]["stored"] == results["emulator_alone"]["events"] > 0
