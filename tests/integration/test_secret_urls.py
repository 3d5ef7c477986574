"""A webhook URL carrying a token, against the real daemon: the token reaches the receiver
and nothing else (not the journal, not dead-letter, not /metrics)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

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
T0 = time.time() - 60
PRESS_RULES = """\
family: wristband
rules:
  - name: button_pressed
    when: sos
    severity: critical
    life_safety: true
    summary: "button on {device_id}"
"""
TOKEN = "Zm9yLXRoZS1yb2JvdC1vbmx5LTQy"
PASSWORD = "cGFzc3dvcmQtb2YtdGhlLWJvdA"


def failing_logs(log: Path) -> int:
    return log.read_text().count('"msg":"sink is failing')


class TestTokenedWebhook:
    def test_refused_then_unreachable_webhook_leaves_no_token_behind(
        self, tmp_path: Path, mosquitto: MosquittoServer, webhook_secret: str
    ) -> None:
        """A webhook whose URL carries a token (query) and a password (userinfo) refuses one
        event for good (400), then fails (500), each answer quoting the request URL as error
        pages do, then is unreachable across a daemon restart: the token and the password
        appear neither in the daemon's log, nor in the dead-letter file, nor on /metrics."""
        receiver = WebhookReceiver(webhook_secret, echo_errors=True).start()
        url = f"http://bot:{PASSWORD}@127.0.0.1:{receiver.port}/robot/send?access_token={TOKEN}"
        rules = tmp_path / "rules"
        rules.mkdir()
        (rules / "wristband.yaml").write_text(PRESS_RULES)
        config, mport = write_config(
            tmp_path,
            broker_port=mosquitto.port,
            registry=wristbands(2),
            webhook_url=url,
            webhook_secret=webhook_secret,
            rules_dir=rules,
        )
        log = tmp_path / "daemon.log"
        metrics_text = ""
        receiver.script(400, *[500] * 1000)
        proc = start_daemon(config, log)
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            publish(
                mosquitto.port,
                [
                    (topic("wristband", "wb-000"), {"sos": True, "ts": T0}),
                    (topic("wristband", "wb-001"), {"sos": True, "ts": T0 + 1}),
                ],
            )
            wait_for(lambda: [r.answered for r in receiver.received][:2] == [400, 500], 20, "a 400 and a 500")
            wait_for(lambda: failing_logs(log) == 1, 20, "the sink's failure logged")
            receiver.stop()  # unreachable from now on
            stop_daemon(proc)
            proc = start_daemon(config, log)
            wait_for(lambda: ready(mport), 20, "daemon ready again")
            wait_for(lambda: failing_logs(log) == 2, 20, "the unreachable sink logged after the restart")
            metrics_text = httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=5).text
        finally:
            stop_daemon(proc)
            receiver.stop()
        deadletter = (tmp_path / "state" / "deadletter.jsonl").read_text()
        records = [orjson.loads(line) for line in deadletter.splitlines()]
        assert [(r["kind"], r["event"]["device_id"]) for r in records] == [("undeliverable", "wb-000")]
        assert records[0]["reason"].startswith("HTTP 400: no route for POST /robot/send?access_token=***")
        journal = log.read_text()
        assert "HTTP 500: no route for POST /robot/send?access_token=***" in journal
        assert "connection failed" in journal
        for secret in (TOKEN, PASSWORD):
            assert secret not in journal
            assert secret not in deadletter
            assert secret not in metrics_text
