"""Shared fixtures: a real Amplitude emulator on loopback, and Currents files on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from currents_export.kit.emulator import Emulator
from currents_export.kit.fixtures import FixtureFile, generate_fixtures

# replay and backfill run as many worker processes as there are CPUs unless told otherwise:
# the tests run them in one process (as their figures and timings assume) unless a test
# passes --workers itself (tests/e2e/test_workers.py). Commands they start inherit it.
os.environ.setdefault("CURRENTS_EXPORT_WORKERS", "1")


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    with Emulator() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: Emulator) -> Iterator[Emulator]:
    """The shared emulator, reset (events, logs, configuration) before each test."""
    httpx.post(f"{emulator_server.url}/_emulator/reset").raise_for_status()
    yield emulator_server


@pytest.fixture(scope="session")
def all_types_fixtures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[FixtureFile]]:
    """Fixtures for all 94 types (two files each), generated once per test session."""
    root = tmp_path_factory.mktemp("bucket")
    return root, generate_fixtures(root, events_per_type=60, seed=7)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's server mode on loopback: a real S3/SQS/DynamoDB/SSM/Secrets endpoint for boto3."""
    import os
    import socket

    from moto.server import ThreadedMotoServer

    os.environ.update({
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    })
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint: str) -> Iterator[str]:
    """The moto endpoint, emptied before each test."""
    httpx.post(f"{moto_endpoint}/moto-api/reset").raise_for_status()
    yield moto_endpoint
