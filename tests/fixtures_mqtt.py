"""Fixtures: a private Mosquitto per test, on a free port in the test's temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sensord.testing import MosquittoServer, start_mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    server = start_mosquitto(tmp_path / "mosquitto")
    yield server
    server.stop()
