"""Replays with a ``--config`` file: the example configurations, the salt, the raw store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from click.testing import Result

from currents_export.kit.emulator import Emulator
from tests.support import REPO_ROOT
from tests.support.runs import API_KEY, run_cli

EXAMPLES = REPO_ROOT / "examples"
SALT = "test-salt-0123456789abcdef"
ENV = {"CURRENTS_EXPORT_PII_SALT": SALT}


def replay_config(
    emulator: Emulator, work: Path, paths: list[Path], config: Path | None,
    *extra: str, env: dict[str, str] | None = None,
) -> tuple[Result, dict[str, Any]]:
    summary_path = work / "summary.json"
    work.mkdir(parents=True, exist_ok=True)
    args = [
        "replay", *map(str, paths), "--api-key", API_KEY, "--amplitude-url", emulator.url,
        "--state", str(work / "state.sqlite"), "--dead-letter", str(work / "dead-letter"),
        "--summary-json", str(summary_path), "--retry-horizon", "0", *extra,
    ]
    if config is not None:
        args += ["--config", str(config)]
    result = run_cli(*args, env=ENV if env is None else env)
    summary = orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    return result, summary


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "currents-export.toml"
    path.write_text(text)
    return path
