"""Fixtures: private InfluxDB 1.x, VictoriaMetrics and a verifying webhook receiver."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from sensord.testing import (
    InfluxServer,
    VictoriaMetricsServer,
    WebhookReceiver,
    start_influxdb_v1,
    start_victoria_metrics,
)


@pytest.fixture
def influxdb_v1(tmp_path: Path) -> Iterator[InfluxServer]:
    server = start_influxdb_v1(tmp_path / "influxdb")
    yield server
    server.stop()


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetricsServer]:
    server = start_victoria_metrics(tmp_path / "vm")
    yield server
    server.stop()


@pytest.fixture
def webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


@pytest.fixture
def webhook_receiver(webhook_secret: str) -> Iterator[WebhookReceiver]:
    with WebhookReceiver(webhook_secret) as receiver:
        yield receiver
