"""End-to-end tests of the daemon process against real Mosquitto, InfluxDB and a webhook receiver."""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from pathlib import Path

import orjson
import pytest

from sensord.testing import InfluxServer, MosquittoServer, WebhookReceiver
from tests.integration._helpers import (
    metrics,
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
# Recent enough that no default no-data rule (10 min and more) fires while a test runs.
T0 = time.time() - 60
# The crash test is about delivery, not about the default rules: a plain state rule whose
# every firing has exactly one resolved event.
PRESS_RULES = """\
family: wristband
rules:
  - name: button_pressed
    when: sos
    severity: critical
    life_safety: true
    summary: "button on {device_id}"
"""


class TestEndToEnd:
    def test_alert_reaches_influxdb_and_signed_webhook(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        influxdb_v1: InfluxServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """(a) A published SOS and a full bin become alerts in InfluxDB and at the webhook, validly signed."""
        config, mport = write_config(
            tmp_path,
            broker_port=mosquitto.port,
            registry=wristbands(3),
            webhook_url=webhook_receiver.url,
            webhook_secret=webhook_secret,
            influx={"url": influxdb_v1.url, "api": "v1", "database": "sensord"},
        )
        proc = start_daemon(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            publish(
                mosquitto.port,
                [
                    (topic("wristband", "wb-001"), {"sos": True, "ts": T0}),
                    (topic("bin", "bin-1"), {"fill_pct": 85.0, "ts": T0 + 1}),
                ],
            )
            wait_for(lambda: len(webhook_receiver.delivered()) >= 2, 20, "two webhook deliveries")
            bodies = {r.body["rule"]: r for r in webhook_receiver.delivered()}
            sos = bodies["wristband_sos"]
            assert sos.valid
            assert sos.body["status"] == "firing"
            assert sos.body["lifeSafety"] is True
            assert sos.body["device"] == "wb-001"
            assert sos.body["readings"]["sos"] is True
            assert sos.headers["webhook-signature"].startswith("v1,")
            assert bodies["bin_full"].body["readings"]["fill_pct"] == 85.0

            def in_influx() -> bool:
                rows = influxdb_v1.rows('SELECT "fingerprint", "rule", "status" FROM "sensord_alert"')
                return {r["rule"] for r in rows} >= {"wristband_sos", "bin_full"}

            wait_for(in_influx, 20, "alerts in InfluxDB")
            row = influxdb_v1.rows('SELECT * FROM "sensord_alert" WHERE "rule" = \'wristband_sos\'')[0]
            assert row["fingerprint"] == sos.body["fingerprint"]
            assert row["life_safety"] == "true"
        finally:
            stop_daemon(proc)

    def test_sigkill_mid_stream_loses_nothing(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """(b) SIGKILL mid-stream, restart: every alert arrives, each event under one webhook id only."""
        n = 300
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "wristband.yaml").write_text(PRESS_RULES)
        config, mport = write_config(
            tmp_path,
            broker_port=mosquitto.port,
            registry=wristbands(n),
            webhook_url=webhook_receiver.url,
            webhook_secret=webhook_secret,
            rules_dir=rules,
        )
        log = tmp_path / "daemon.log"
        proc = start_daemon(config, log)
        wait_for(lambda: ready(mport), 20, "daemon ready")
        messages: list[tuple[str, dict[str, object] | bytes]] = []
        for i in range(n):
            dev = f"wb-{i:03d}"
            messages.append((topic("wristband", dev), {"sos": True, "ts": T0 + i}))
            messages.append((topic("wristband", dev), {"sos": False, "ts": T0 + i + 0.5}))
        # Publish from another thread while the daemon works; kill it hard mid-stream.
        publisher = threading.Thread(
            target=publish, args=(mosquitto.port, messages), kwargs={"pace_s": 0.002}
        )
        publisher.start()
        wait_for(lambda: len(webhook_receiver.delivered()) >= 20, 20, "some deliveries before the kill")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at = len(webhook_receiver.delivered())
        publisher.join(60)
        assert killed_at < 2 * n, "the kill came after everything was delivered; the test proves nothing"
        proc = start_daemon(config, log)
        try:
            expected = 2 * n  # one firing and one resolved per wristband

            def all_arrived() -> bool:
                keys = {
                    (r.body["fingerprint"], r.body["status"], r.body["startsAt"])
                    for r in webhook_receiver.delivered()
                }
                return len(keys) >= expected

            wait_for(all_arrived, 60, f"{expected} distinct alert events at the webhook")
            ids_per_event: dict[tuple[str, str, str], set[str]] = collections.defaultdict(set)
            for r in webhook_receiver.delivered():
                ids_per_event[(r.body["fingerprint"], r.body["status"], r.body["startsAt"])].add(
                    r.headers["webhook-id"]
                )
            assert len(ids_per_event) == expected
            assert all(len(ids) == 1 for ids in ids_per_event.values())
            per_device = collections.Counter(
                r.body["device"] for r in webhook_receiver.delivered() if r.body["status"] == "firing"
            )
            assert set(per_device) == {f"wb-{i:03d}" for i in range(n)}
        finally:
            stop_daemon(proc)

    def test_mixed_good_and_malformed_batch(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """(c) Good payloads alert; bad ones go to dead-letter with reasons; counters match."""
        config, mport = write_config(
            tmp_path,
            broker_port=mosquitto.port,
            registry=wristbands(5),
            webhook_url=webhook_receiver.url,
            webhook_secret=webhook_secret,
        )
        proc = start_daemon(config, tmp_path / "daemon.log")
        bad: list[tuple[str, dict[str, object] | bytes, str]] = [
            (topic("wristband", "wb-001"), b"{oops", "invalid_json"),
            (topic("wristband", "wb-001"), {"heart_rate": 900, "ts": T0}, "out_of_range"),
            (topic("bin", "bin-1"), {"fill_pct": "full", "ts": T0}, "wrong_type"),
            (topic("bin", "bin-2"), b'{"fill_pct": NaN}', "non_finite"),
            (topic("bin", "bin-2"), {"temp_c": 20, "ts": T0}, "missing_field"),
            ("sensord/maple/toaster/t-1/telemetry", {"x": 1}, "unknown_family"),
            (topic("wristband", "wb-002"), b"[1, 2, 3]", "not_object"),
            (topic("bin", "bin-404"), {"fill_pct": 99.0, "ts": T0}, "unknown_device"),
        ]
        good: list[tuple[str, dict[str, object] | bytes]] = [
            (topic("wristband", f"wb-00{i}"), {"sos": True, "ts": T0 + i}) for i in range(5)
        ]
        stream: list[tuple[str, dict[str, object] | bytes]] = []
        for i, g in enumerate(good):
            stream.append(g)
            if i < len(bad):
                stream.append(bad[i][:2])
        stream += [b[:2] for b in bad[len(good) :]]
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            publish(
                mosquitto.port, [(t, p if not isinstance(p, list) else orjson.dumps(p)) for t, p in stream]
            )
            wait_for(lambda: len(webhook_receiver.delivered()) >= len(good), 20, "good payloads alerting")
            assert {r.body["device"] for r in webhook_receiver.delivered()} == {f"wb-00{i}" for i in range(5)}
            dl = tmp_path / "state" / "deadletter.jsonl"
            wait_for(
                lambda: dl.exists() and len(dl.read_text().splitlines()) >= len(bad),
                10,
                "dead-letter records",
            )
            records = [orjson.loads(x) for x in dl.read_text().splitlines()]
            assert sorted(r["reason"] for r in records) == sorted(b[2] for b in bad)
            assert all(r["detail"] and r["topic"] for r in records)
            m = metrics(mport)
            for _, _, reason in bad:
                assert m[f'sensord_rejects_total{{reason="{reason}"}}'] == 1.0
            assert m['sensord_unknown_device_messages_total{family="bin"}'] == 1.0
            assert m['sensord_messages_in_total{family="wristband"}'] == 5.0
        finally:
            stop_daemon(proc)
