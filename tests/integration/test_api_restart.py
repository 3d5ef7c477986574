"""The work-order API across a kill, and one-tap links end to end (issue 10, points 1 and
2 and the restart acceptance): an action answered 200 is durable — work order and audit
entry — even if the daemon is SIGKILLed at once; a message carries a signed link that
accepts the work order with one tap, once."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from sensord.testing import MosquittoServer, WebhookReceiver, self_signed_certificate

from ._helpers import publish, ready, start_daemon, stop_daemon, topic, wait_for
from .test_api_live import T0, TOKEN, Http, configure

pytestmark = pytest.mark.integration


def test_an_accept_answered_200_survives_sigkill_with_its_audit_entry(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_secret: str
) -> None:
    """SIGKILL right after the API answered the accept: after a restart the work order is
    accepted by the same person and `sensord audit` has the entry."""
    with WebhookReceiver(webhook_secret) as hook:
        config, mport, api_port = configure(tmp_path, mosquitto.port, hook)
        proc = start_daemon(config, tmp_path / "daemon.log")
        api = Http(api_port)
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            publish(mosquitto.port, [(topic("wristband", "wb-001"), {"sos": True, "ts": T0})])
            wait_for(lambda: bool(api.orders()), 20, "the SOS's work order")
            wo = api.orders()[0]["id"]
            api.act(wo, "accept", {"by": "张伟"})
            proc.kill()
            proc.wait()
            proc = start_daemon(config, tmp_path / "daemon.log")
            wait_for(lambda: ready(mport), 20, "daemon ready again")
            wait_for(lambda: _up(api), 20, "the API again")
            order = api.order(wo)
        finally:
            stop_daemon(proc)
    assert (order["state"], order["accepted_by"]) == ("accepted", "张伟")
    audit = subprocess.run(
        [sys.executable, "-m", "sensord", "audit", "-c", str(config)],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert [ln.split("\t")[3:5] for ln in audit.stdout.splitlines()] == [["accept", wo]]


def _up(api: Http) -> bool:
    try:
        api.orders()
    except httpx.HTTPError:
        return False
    return True


def test_the_link_in_a_message_accepts_with_one_tap_once(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_secret: str
) -> None:
    """With link_secret and public_url set, the SOS message's `ack` is a signed link: a GET
    shows a button and changes nothing, a POST accepts, a second POST is refused."""
    with WebhookReceiver(webhook_secret) as hook:
        config, mport, api_port = configure(tmp_path, mosquitto.port, hook)
        (tmp_path / "link.secret").write_text("a-long-random-link-secret-for-tests")
        cfg = yaml.safe_load(config.read_text())
        cfg["api"] |= {"link_secret": {"file": str(tmp_path / "link.secret")},
                       "public_url": f"http://127.0.0.1:{api_port}"}  # fmt: skip
        config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        proc = start_daemon(config, tmp_path / "daemon.log")
        api = Http(api_port)
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            publish(mosquitto.port, [(topic("wristband", "wb-001"), {"sos": True, "ts": T0})])
            wait_for(lambda: bool(hook.delivered()), 20, "the SOS message")
            link = hook.delivered()[0].body["ack"]
            assert link.startswith(f"http://127.0.0.1:{api_port}/l/")
            page = httpx.get(link, timeout=5)
            wo = api.orders()[0]["id"]
            state_after_get = api.order(wo)["state"]
            first = httpx.post(link, timeout=5)
            second = httpx.post(link, timeout=5)
            order = api.order(wo)
        finally:
            stop_daemon(proc)
    assert page.status_code == 200
    assert "<form" in page.text
    assert state_after_get == "dispatched"
    assert first.status_code == 200
    assert order["state"] == "accepted"
    assert [h["source"] for h in order["history"] if h["action"] == "accepted"] == ["link"]
    assert second.status_code == 409


def test_the_api_speaks_tls_when_configured(
    tmp_path: Path, mosquitto: MosquittoServer, webhook_secret: str
) -> None:
    """With tls_cert and tls_key the API answers over HTTPS (the certificate checked
    against itself as the CA) and not over plain HTTP."""
    cert, key = self_signed_certificate(tmp_path / "tls")
    with WebhookReceiver(webhook_secret) as hook:
        config, mport, api_port = configure(tmp_path, mosquitto.port, hook)
        cfg = yaml.safe_load(config.read_text())
        cfg["api"] |= {"tls_cert": str(cert), "tls_key": str(key)}
        config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        proc = start_daemon(config, tmp_path / "daemon.log")
        url = f"https://127.0.0.1:{api_port}/api/v1/work-orders"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            wait_for(lambda: _answers(url, cert), 20, "the API over TLS")
            got = httpx.get(url, headers=auth, verify=ssl.create_default_context(cafile=str(cert)), timeout=5)
            with pytest.raises(httpx.HTTPError):
                httpx.get(url.replace("https://", "http://"), headers=auth, timeout=5)
        finally:
            stop_daemon(proc)
    assert got.status_code == 200
    assert got.json() == {"items": [], "total": 0}


def _answers(url: str, cert: Path) -> bool:
    try:
        httpx.get(url, verify=ssl.create_default_context(cafile=str(cert)), timeout=2)
    except httpx.HTTPError:
        return False
    return True
