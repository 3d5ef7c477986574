"""The work-order API on the daemon as a process (issue 10): an SOS opens a work order,
a client accepts it and marks it done over HTTP, the receiver that asked for updates
gets each change on its own signed webhook, and the audit log names the client; an MQTT
ack from the dispatch side accepts a work order as the person it names."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sensord.testing import MosquittoServer, WebhookReceiver, free_port

from ._helpers import publish, ready, start_daemon, stop_daemon, topic, wait_for, write_config

pytestmark = pytest.mark.integration

T0 = time.time() - 60
TOKEN = "tok-duty-desk-0123456789"
REGISTRY: dict[str, Any] = {
    "devices": {
        "wb-001": {"family": "wristband", "community": "maple", "grid": "g1", "building": "3"},
        "wb-002": {"family": "wristband", "community": "maple", "grid": "g1", "building": "5"},
    },
    "grids": {"g1": {"workers": [{"name": "张伟", "phone": "+86 138 0000 0001"}]}},
}


def configure(tmp: Path, broker: int, family_hook: WebhookReceiver) -> tuple[Path, int, int]:
    """Config, dispatch file and secrets: the family's webhook wants work-order updates,
    the duty desk is an `act` client. Returns (config, metrics port, API port)."""
    config, mport = write_config(tmp, broker_port=broker, registry=REGISTRY)
    secret = tmp / "family.whsec"
    secret.write_text(family_hook.secret)
    (tmp / "desk.token").write_text(TOKEN)
    spec = {
        "receivers": [
            {
                "name": "family_contact", "sensitive": True, "work_order_updates": True,
                "channels": [{"type": "webhook", "url": family_hook.url, "secret": {"file": str(secret)}}],
            },
        ],
        "route": {"receiver": "family_contact"},
    }  # fmt: skip
    (tmp / "dispatch.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    api_port = free_port()
    cfg = yaml.safe_load(config.read_text())
    cfg["dispatch"] = "dispatch.yaml"
    cfg["api"] = {
        "enabled": True, "port": api_port,
        "clients": [{"name": "duty-desk", "role": "act", "token": {"file": str(tmp / "desk.token")}}],
    }  # fmt: skip
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return config, mport, api_port


class Http:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}/api/v1"
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def orders(self, **params: Any) -> list[dict[str, Any]]:
        got = httpx.get(f"{self.base}/work-orders", params=params, headers=self.auth, timeout=5)
        got.raise_for_status()
        items: list[dict[str, Any]] = got.json()["items"]
        return items

    def act(self, wo: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
        got = httpx.post(f"{self.base}/work-orders/{wo}/{action}", json=body, headers=self.auth, timeout=5)
        assert got.status_code == 200, got.text
        order: dict[str, Any] = got.json()
        return order

    def order(self, wo: str) -> dict[str, Any]:
        got = httpx.get(f"{self.base}/work-orders/{wo}", headers=self.auth, timeout=5)
        order: dict[str, Any] = got.json()
        return order


def changes(hook: WebhookReceiver, action: str) -> list[dict[str, Any]]:
    """The work-order changes with this action the receiver got, signature checked."""
    return [r.body["data"] for r in hook.delivered() if r.body.get("data", {}).get("action") == action]


def test_accept_and_done_over_http_reach_the_family_and_the_audit(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_secret: str
) -> None:
    """The SOS's work order is listed; accepting it (by the grid worker, on the desk's
    token) reaches the family's webhook as an `accepted` change naming him, signed; done
    with a note follows; `sensord audit` shows both with the client's name."""
    with WebhookReceiver(webhook_secret) as hook:
        config, mport, api_port = configure(tmp_path, mosquitto.port, hook)
        proc = start_daemon(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            api = Http(api_port)
            publish(mosquitto.port, [(topic("wristband", "wb-001"), {"sos": True, "ts": T0})])
            wait_for(lambda: bool(api.orders()), 20, "the SOS's work order")
            [order] = api.orders(state="dispatched")
            wo = order["id"]
            assert (order["device_id"], order["life_safety"]) == ("wb-001", True)

            assert api.act(wo, "accept", {"by": "张伟"})["state"] == "accepted"
            wait_for(lambda: bool(changes(hook, "accepted")), 20, "the accepted change at the webhook")
            assert api.act(wo, "done", {"note": "老人摔倒已送医"})["state"] == "done"
            wait_for(lambda: bool(changes(hook, "done")), 20, "the done change at the webhook")
        finally:
            stop_daemon(proc)
        [accepted], [done] = changes(hook, "accepted"), changes(hook, "done")
        assert (accepted["workOrder"], accepted["state"], accepted["by"], accepted["source"]) == (
            wo, "accepted", "张伟", "api"
        )  # fmt: skip
        assert (done["state"], done["note"]) == ("done", "老人摔倒已送医")
        audit = subprocess.run(
            [sys.executable, "-m", "sensord", "audit", "-c", str(config)],
            capture_output=True, text=True, check=True, timeout=30,
        )  # fmt: skip
        lines = [ln.split("\t") for ln in audit.stdout.splitlines()]
        assert [ln[1:5] for ln in lines] == [
            ["duty-desk", "act", "accept", wo],
            ["duty-desk", "act", "done", wo],
        ]
        assert '"by":"张伟"' in lines[0][6]


def test_mqtt_ack_accepts_as_the_person_named(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_secret: str
) -> None:
    """An ack on the dispatch ack topic shows over the API as acceptance by the person in
    its `by`, from MQTT, and reaches the family's webhook as an `accepted` change."""
    with WebhookReceiver(webhook_secret) as hook:
        config, mport, api_port = configure(tmp_path, mosquitto.port, hook)
        proc = start_daemon(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            api = Http(api_port)
            publish(mosquitto.port, [(topic("wristband", "wb-002"), {"sos": True, "ts": T0})])
            wait_for(lambda: bool(api.orders()), 20, "the SOS's work order")
            ack = {"rule": "wristband_sos", "by": "王芳"}
            publish(mosquitto.port, [("sensord-dispatch/ack/maple/wristband/wb-002", ack)])
            wait_for(lambda: bool(api.orders(state="accepted")), 20, "the work order accepted")
            [order] = api.orders(state="accepted")
            wait_for(lambda: bool(changes(hook, "accepted")), 20, "the accepted change at the webhook")
            history = api.order(order["id"])["history"]
        finally:
            stop_daemon(proc)
        assert order["accepted_by"] == "王芳"
        # The ack also closes the SOS (the condition clears after it).
        assert [(h["action"], h["by"], h["source"]) for h in history if h["action"] == "accepted"] == [
            ("accepted", "王芳", "mqtt")
        ]
        assert changes(hook, "accepted")[0]["by"] == "王芳"
