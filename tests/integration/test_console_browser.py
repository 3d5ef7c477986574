"""The operator console in a real browser (Debian's chromium, driven by Playwright) against
the daemon as a process: a duty officer logs in with the desk's token, finds the SOS above
the older full bin, accepts it, and the elder-care desk's own webhook is told, signed, who
accepted it."""

from __future__ import annotations

import base64
import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import expect, sync_playwright

from sensord.api._auth import COOKIE
from sensord.testing import MosquittoServer, WebhookReceiver, free_port

from ._helpers import publish, ready, start_daemon, stop_daemon, topic, wait_for, write_config

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

TOKEN = "duty-office-token-" + secrets.token_hex(8)
REGISTRY: dict[str, Any] = {
    "devices": {
        "wb-001": {"family": "wristband", "community": "maple", "grid": "g1", "building": "3"},
        "bin-1": {"family": "bin", "community": "maple", "grid": "g1", "building": "1"},
    }
}


def configure(tmp: Path, config: Path, desk: WebhookReceiver) -> int:
    """Dispatch (the desk's signed webhook, told of work-order changes; sanitation) and the
    API with one act client, into the daemon's config. Returns the API's port."""
    (tmp / "desk.whsec").write_text(desk.secret)
    (tmp / "duty-office.token").write_text(TOKEN)
    webhook = {"type": "webhook", "url": desk.url, "secret": {"file": str(tmp / "desk.whsec")}}
    office = {"name": "duty_office", "role": "act", "token": {"file": str(tmp / "duty-office.token")}}
    spec = {
        "receivers": [
            {
                "name": "elder_care_desk", "work_order_updates": True,
                "channels": [webhook],
            },
            {"name": "sanitation"},
        ],
        "route": {
            "receiver": "sanitation",
            "routes": [{"matchers": ['family="wristband"'], "receiver": "elder_care_desk"}],
        },
    }  # fmt: skip
    (tmp / "dispatch.yaml").write_text(yaml.safe_dump(spec))
    port = free_port()
    cfg = yaml.safe_load(config.read_text())
    cfg["dispatch"] = "dispatch.yaml"
    cfg["api"] = {
        "enabled": True, "port": port,
        "clients": [office],
    }  # fmt: skip
    config.write_text(yaml.safe_dump(cfg))
    return port


def open_orders(base: str) -> list[str]:
    """The work order ids on /console, in order ([] until the API answers)."""
    try:
        html = httpx.get(f"{base}/console", cookies={COOKIE: TOKEN}, timeout=2).text
    except httpx.HTTPError:
        return []
    return re.findall(r'data-id="(WO-[0-9A-F]+)"', html)


def test_duty_officer_accepts_the_sos_in_the_browser(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """Log in, the SOS is the first row (life-safety above the older bin), accept it: the
    page shows it accepted and the desk's webhook gets a signed update, accepted by the
    duty office from the console."""
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with WebhookReceiver(secret) as desk:
        config, mport = write_config(tmp_path, broker_port=mosquitto.port, registry=REGISTRY)
        base = f"http://127.0.0.1:{configure(tmp_path, config, desk)}"
        proc = start_daemon(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            t0 = time.time() - 120
            publish(mosquitto.port, [(topic("bin", "bin-1"), {"fill_pct": 93.0, "ts": t0})])
            publish(mosquitto.port, [(topic("wristband", "wb-001"), {"sos": True, "ts": t0 + 60})])
            wait_for(lambda: len(open_orders(base)) == 2, 20, "two work orders on the console")
            sos_id = open_orders(base)[0]

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
                try:
                    page = browser.new_page()
                    page.goto(f"{base}/console/login")
                    page.fill("input[name=token]", TOKEN)
                    page.click("button[type=submit]")
                    page.wait_for_url(f"{base}/console")
                    first = page.locator("tr.wo").first
                    expect(first).to_have_attribute("data-id", sos_id)
                    expect(first).to_contain_text("SOS")
                    expect(first).to_contain_text("wb-001")
                    expect(page.locator("tr.wo").nth(1)).to_contain_text("bin-1")
                    first.locator("button.accept").click()
                    page.wait_for_url(re.compile(r"/console\?ok="))
                    row = page.locator(f'tr.wo[data-id="{sos_id}"]')
                    expect(row.locator("td.state")).to_have_text("已接单")
                    expect(row).to_contain_text("duty_office")
                    expect(row.locator("button.accept")).to_have_count(0)
                finally:
                    browser.close()

            def told() -> list[dict[str, Any]]:
                return [r.body["data"] for r in desk.delivered() if r.body.get("data", {}).get("action")]

            wait_for(lambda: any(d["action"] == "accepted" for d in told()), 20, "the accepted update")
        finally:
            stop_daemon(proc)
    [update] = [d for d in told() if d["action"] == "accepted"]
    assert (update["workOrder"], update["by"], update["source"]) == (sos_id, "duty_office", "console")
    assert update["state"] == "accepted"
