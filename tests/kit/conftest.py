"""The kit's tests: one emulator per module, and a client on it reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from currents_export.kit.emulator import Emulator


@pytest.fixture(scope="module")
def amp() -> Iterator[Emulator]:
    """One emulator for the module (named apart from the shared ``emulator``)."""
    with Emulator() as server:
        yield server


@pytest.fixture
def client(amp: Emulator) -> Iterator[httpx.Client]:
    """A client on a freshly reset emulator (state cleared, default config restored)."""
    with httpx.Client(base_url=amp.url, timeout=30) as http:
        assert http.post("/_emulator/reset").status_code == 200
        yield http
