"""A restart (SIGTERM, start again) neither forgets a pending timer nor re-sends a firing alert."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from sensord.testing import MosquittoServer, WebhookReceiver
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

RULES = """\
family: wristband
params: {hr_high: 120}
rules:
  - name: hr_sustained
    when: heart_rate > hr_high
    for: 30s
    summary: "HR {heart_rate}"
  - name: sos
    kind: event
    when: sos
    summary: SOS
"""


def test_timers_and_firing_alerts_survive_restart(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_receiver: WebhookReceiver, webhook_secret: str
) -> None:
    """Pending at the stop, the heart-rate alert fires after the restart with its original
    start; the SOS firing before the stop is not sent again for a reading after it."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "wristband.yaml").write_text(RULES)
    config, mport = write_config(
        tmp_path,
        broker_port=mosquitto.port,
        registry=wristbands(2),
        webhook_url=webhook_receiver.url,
        webhook_secret=webhook_secret,
        rules_dir=rules,
    )
    # The wall-clock tick of a quiet stream must not fire the timer before the stop.
    cfg = yaml.safe_load(config.read_text())
    cfg["alerts"] = {"clock_grace_s": 3600}
    config.write_text(yaml.safe_dump(cfg))
    t0 = time.time() - 50
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        publish(
            mosquitto.port,
            [
                (topic("wristband", "wb-000"), {"heart_rate": 130, "ts": t0}),
                (topic("wristband", "wb-000"), {"heart_rate": 131, "ts": t0 + 10}),
                (topic("wristband", "wb-001"), {"sos": True, "ts": t0 + 10}),
            ],
        )
        wait_for(lambda: len(webhook_receiver.delivered()) >= 1, 20, "the SOS delivery")
    finally:
        stop_daemon(proc)
    assert [r.body["rule"] for r in webhook_receiver.delivered()] == ["sos"]
    proc = start_daemon(config, log)
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready again")
        publish(
            mosquitto.port,
            [
                (topic("wristband", "wb-001"), {"sos": True, "ts": t0 + 35}),
                (topic("wristband", "wb-000"), {"heart_rate": 132, "ts": t0 + 40}),
            ],
        )
        wait_for(lambda: len(webhook_receiver.delivered()) >= 2, 20, "the heart-rate alert")
        time.sleep(1.0)  # a wrongly repeated SOS would have arrived by now
        got = [(r.body["rule"], r.body["status"], r.body["startsAt"]) for r in webhook_receiver.delivered()]
        assert [g[:2] for g in got] == [("sos", "firing"), ("hr_sustained", "firing")]
        starts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0))
        assert got[1][2].startswith(starts), "the timer restarted instead of continuing"
        assert "engine state restored" in log.read_text()
    finally:
        stop_daemon(proc)
