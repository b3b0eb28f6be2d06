"""Helpers shared by the test modules: hand-made records, scripted servers, the CLI runs and
what the emulator stored. Test modules import from here, never from each other."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
