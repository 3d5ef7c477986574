"""Sinks against real servers: InfluxDB 1.x over v1, VictoriaMetrics over the v2 write API,
and the webhook receiver over HTTP."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from sensord import SecretUrl
from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._metrics import Metrics
from sensord._settings import DeliverySettings, InfluxSettings, OutboxSettings, SecretRef, WebhookSettings
from sensord.outbox import Outbox
from sensord.sinks import DeadLetter, InfluxSink, WebhookSink, deliver_forever
from sensord.testing import InfluxServer, VictoriaMetricsServer, WebhookReceiver
from tests.unit.test_sinks import event

pytestmark = pytest.mark.integration


def send_once(sink: InfluxSink, events: list[object]) -> None:
    """Send, then close the sink's HTTP client (a leaked connection fails the run)."""

    async def go() -> None:
        try:
            await sink.send(events)  # type: ignore[arg-type]
        finally:
            await sink.aclose()

    asyncio.run(go())


def recent(n: int, **kw: object) -> object:
    """An event stamped now (VictoriaMetrics drops samples older than its retention)."""
    now = time.time()
    return replace(event(n, **kw), event_time=now, starts_at=now)  # type: ignore[arg-type]


class TestInflux:
    def test_v1_write_and_read_back(self, influxdb_v1: InfluxServer) -> None:
        """api v1 writes alert points that InfluxQL reads back with tags and fields."""
        sink = InfluxSink(InfluxSettings(url=SecretUrl(influxdb_v1.url), api="v1", database="sensord"))
        send_once(sink, [event(1), event(2, life_safety=True)])
        rows = influxdb_v1.rows(
            'SELECT "fingerprint", "r_fill_pct" FROM "sensord_alert" GROUP BY "device_id"'
        )
        assert sorted((r["device_id"], r["fingerprint"], r["r_fill_pct"]) for r in rows) == [
            ("bin-1", "fp-1", 90.0),
            ("bin-2", "fp-2", 90.0),
        ]

    def test_v1_unknown_database_is_permanent(self, influxdb_v1: InfluxServer) -> None:
        """Writing to a database that does not exist is a permanent error naming it."""
        sink = InfluxSink(InfluxSettings(url=SecretUrl(influxdb_v1.url), api="v1", database="nope"))
        with pytest.raises(PermanentSinkError, match="nope"):
            send_once(sink, [event(1)])

    def test_v2_write_to_victoria_metrics(self, victoria_metrics: VictoriaMetricsServer) -> None:
        """api v2 (/api/v2/write, org/bucket/token) lands in a server that speaks it."""
        settings = InfluxSettings(
            url=SecretUrl(victoria_metrics.url), api="v2", org="community", bucket="sensord"
        )
        sink = InfluxSink(settings, token=SecretStr("token"))
        send_once(sink, [recent(7)])
        for _ in range(100):
            series = victoria_metrics.export('{__name__="sensord_alert_r_fill_pct"}')
            if series:
                break
            time.sleep(0.1)
        assert series[0]["metric"]["device_id"] == "bin-7"
        assert series[0]["values"] == [90]

    def test_dead_server_is_retryable(self, tmp_path: Path) -> None:
        """Nothing listening is a retryable error, not a crash."""
        sink = InfluxSink(InfluxSettings(url=SecretUrl("http://127.0.0.1:9"), api="v1", timeout_s=1))
        with pytest.raises(RetryableSinkError):
            send_once(sink, [event(1)])


class TestWebhookLive:
    def test_retry_keeps_webhook_id_and_4xx_goes_to_dead_letter(
        self, tmp_path: Path, webhook_receiver: WebhookReceiver, webhook_secret: str
    ) -> None:
        """500 then 429 are retried under the same webhook-id; a 400 is dead-lettered, not retried."""
        webhook_receiver.script(500, 429)
        ob = Outbox(tmp_path / "o.sqlite3", ["webhook"], OutboxSettings(), Metrics())
        ob.commit([event(1)])
        sink = WebhookSink(
            WebhookSettings(url=SecretUrl(webhook_receiver.url), secret=SecretRef(file=Path("x"))),
            secret=SecretStr(webhook_secret),
        )
        dl = DeadLetter(tmp_path / "dl.jsonl")

        async def run_until(cond: object) -> None:
            wake = asyncio.Event()
            settings = DeliverySettings(initial_backoff_s=0.05, max_backoff_s=0.1)
            task = asyncio.create_task(deliver_forever(ob, sink, settings, Metrics(), dl, wake=wake))
            for _ in range(200):
                if cond():  # type: ignore[operator]
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(run_until(lambda: ob.depth("webhook") == 0))
        got = webhook_receiver.received
        assert [r.answered for r in got] == [500, 429, 200]
        assert {r.headers["webhook-id"] for r in got} == {"id-1"}
        assert all(r.valid for r in got)

        webhook_receiver.script(400)
        ob.commit([event(2)])
        sink = WebhookSink(
            WebhookSettings(url=SecretUrl(webhook_receiver.url), secret=SecretRef(file=Path("x"))),
            secret=SecretStr(webhook_secret),
        )
        asyncio.run(run_until(lambda: ob.depth("webhook") == 0))
        dl.close()
        records = [orjson.loads(x) for x in (tmp_path / "dl.jsonl").read_text().splitlines()]
        assert [(r["kind"], r["event"]["event_id"]) for r in records] == [("undeliverable", "id-2")]
        assert "HTTP 400" in records[0]["reason"]
        assert [r.answered for r in webhook_receiver.received if r.headers["webhook-id"] == "id-2"] == [400]
