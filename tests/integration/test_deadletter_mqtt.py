"""Dead letters are also published to an MQTT topic when one is configured."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
import yaml

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord.ingest import MqttSource
from sensord.testing import MosquittoServer
from tests.integration._helpers import (
    publish,
    ready,
    start_daemon,
    stop_daemon,
    topic,
    wait_for,
    wristbands,
    write_config,
)

pytestmark = pytest.mark.integration


def test_rejects_reach_the_deadletter_topic(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A malformed payload is in deadletter.jsonl and on `deadletter.mqtt_topic`, with its reason."""
    config, mport = write_config(tmp_path, broker_port=mosquitto.port, registry=wristbands(2))
    cfg = yaml.safe_load(config.read_text())
    cfg["deadletter"] = {"mqtt_topic": "sensord-ops/deadletter"}
    config.write_text(yaml.safe_dump(cfg))
    proc = start_daemon(config, tmp_path / "daemon.log")
    got: list[dict[str, object]] = []

    async def watch() -> None:
        settings = BrokerSettings(
            port=mosquitto.port, client_id="it-dl-watch", clean_session=True, subscriptions=("sensord-ops/#",)
        )
        source = MqttSource(settings, None, Metrics(), BatchSettings(max_wait_ms=10))
        runner = asyncio.create_task(source.run())
        try:
            async with asyncio.timeout(20):
                await source.connected.wait()
                await asyncio.to_thread(
                    publish,
                    mosquitto.port,
                    [
                        (topic("wristband", "wb-001"), b"{broken"),
                        (topic("wristband", "wb-001"), {"heart_rate": 900, "ts": time.time()}),
                    ],
                )
                async for batch in source.batches():
                    got.extend(orjson.loads(m.payload) for m in batch)
                    source.ack([m.token for m in batch if m.token is not None])
                    if len(got) >= 2:
                        break
        finally:
            await source.aclose()
            runner.cancel()

    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        asyncio.run(watch())
        assert sorted(str(r["reason"]) for r in got) == ["invalid_json", "out_of_range"]
        lines = (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()
        assert len(lines) == 2
    finally:
        stop_daemon(proc)
