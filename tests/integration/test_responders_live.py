"""Simulated responders against the daemon's real API (issue 10, point 6): `sensord
simulate --responders` accepts, reports done and rates the work orders it matches, and
leaves the ones it does not match to escalation."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sensord.testing import MosquittoServer, WebhookReceiver

from ._helpers import publish, ready, start_daemon, stop_daemon, topic, wait_for
from .test_api_live import REGISTRY, TOKEN, Http, configure

pytestmark = pytest.mark.integration


def test_responders_answer_matching_work_orders_through_the_api(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_secret: str
) -> None:
    """wb-001 (grid g1) matches the responder: accepted, done and rated by the family,
    so closed; wb-002 matches nobody and stays dispatched."""
    (tmp_path / "token").write_text(TOKEN)
    spec = {"responders": [{
        "name": "张伟", "token": {"file": "token"}, "match": {"family": "wristband", "grid": "g1"},
        "accept_after": ["1s", "2s"], "done_after": ["1s", "2s"], "no_show": 0, "rating": [4, 4],
        "feedback_after": ["0s", "1s"],
    }]}  # fmt: skip
    (tmp_path / "responders.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    with WebhookReceiver(webhook_secret) as hook:
        config, mport, api_port = configure(tmp_path, mosquitto.port, hook)
        registry = copy.deepcopy(REGISTRY)
        registry["devices"]["wb-002"]["grid"] = "g2"  # a grid no responder answers
        (tmp_path / "devices.yaml").write_text(yaml.safe_dump(registry, allow_unicode=True))
        proc = start_daemon(config, tmp_path / "daemon.log")
        api = Http(api_port)
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            now = time.time()
            sos = [(topic("wristband", d), {"sos": True, "ts": now}) for d in ("wb-001", "wb-002")]
            publish(mosquitto.port, sos)
            wait_for(lambda: len(api.orders()) == 2, 20, "two work orders")
            run = subprocess.run(
                [sys.executable, "-m", "sensord", "simulate", "--responders",
                 str(tmp_path / "responders.yaml"), "--api", f"http://127.0.0.1:{api_port}",
                 "--duration", "8", "--poll", "0.3"],
                capture_output=True, text=True, check=False, timeout=60,
            )  # fmt: skip
            orders = {o["device_id"]: o for o in api.orders()}
        finally:
            stop_daemon(proc)
    assert run.returncode == 0, run.stderr
    answered, left = orders["wb-001"], orders["wb-002"]
    assert (answered["state"], answered["accepted_by"], answered["rating"]) == ("closed", "张伟", 4)
    assert left["state"] == "dispatched"
