"""Offline replay and the live daemon give the same alert events for the same stream."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import pytest
import yaml

from sensord._registry import parse_registry
from sensord._settings import Settings
from sensord.replay import read_recording, replay, write_recording
from sensord.rules import load_rules
from sensord.simulate import generate, load_scenario, registry_for
from sensord.testing import MosquittoServer, WebhookReceiver
from tests.integration._helpers import publish, ready, start_daemon, stop_daemon, wait_for, write_config

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_live_daemon_matches_offline_replay(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_receiver: WebhookReceiver, webhook_secret: str
) -> None:
    """A recording replayed offline and the same recording published to the live daemon
    produce the same alert events (same webhook ids: pending, firing and resolved)."""
    sc = load_scenario(ROOT / "simulators" / "neighbourhood.yaml")
    start = time.time() - sc.duration_s - 5  # the stream ends just before now, as live traffic would
    rec = tmp_path / "neighbourhood.jsonl.gz"
    write_recording(rec, ((ts, t, p) for ts, t, p, _ in generate(sc, seed=3, start_ts=start)))
    registry_doc = registry_for(sc)

    registry = parse_registry(registry_doc, source="scenario")
    settings = Settings.model_validate({"decode": {"max_clock_skew_s": 0}})
    offline = replay(
        read_recording(rec), registry=registry, rules=load_rules(ROOT / "rules", registry), settings=settings
    )
    offline_ids = {e.event_id for e in offline.events}
    assert len(offline_ids) >= 16, "the scenario's incidents should give a few dozen events"

    config, mport = write_config(
        tmp_path,
        broker_port=mosquitto.port,
        registry=registry_doc,
        webhook_url=webhook_receiver.url,
        webhook_secret=webhook_secret,
    )
    cfg = yaml.safe_load(config.read_text())
    cfg["sinks"]["webhook"]["statuses"] = ["pending", "firing", "resolved"]
    # The wall-clock tick of a quiet stream must not run past the recording while we compare.
    cfg["alerts"] = {"clock_grace_s": 3600}
    config.write_text(yaml.safe_dump(cfg))
    proc = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        publish(mosquitto.port, [(m.topic, m.payload) for m in read_recording(rec)])

        def live_ids() -> set[str]:
            return {r.headers["webhook-id"] for r in webhook_receiver.delivered()}

        wait_for(lambda: offline_ids <= live_ids(), 30, "every offline event at the webhook")
        time.sleep(1.0)  # anything extra the daemon would send has arrived by now
        assert live_ids() == offline_ids
        # ... and they are exactly the scenario's expected incidents, once each.
        fired = collections.Counter(
            (r.body["rule"], r.body["device"])
            for r in webhook_receiver.delivered()
            if r.body["status"] == "firing" and not r.body["repeat"]
        )
        assert fired == collections.Counter((rule, inc.device) for inc in sc.incidents for rule in inc.expect)
    finally:
        stop_daemon(proc)
