"""The dispatch part of the neighbourhood demo: one night and morning of a small
neighbourhood, replayed fast through the real daemon with the sample dispatch file
(config/dispatch.yaml) and the chat, SMS stand-ins in front of each receiver.

Event time is a fixed night in the past (2026-11-30 22:50 to 2026-12-01 09:30, Asia/
Shanghai), so what happens does not depend on when the demo runs:

- 23:00 a bin fills up: sanitation's quiet hours (22:00-07:00) defer it to the morning;
- 23:30 a lift door fault, under a silence for the lift maintenance window: nobody told;
- 08:00 an SOS: the elder-care desk (WeCom) and the grid worker (DingTalk) are told in
  Chinese, the daughter by SMS;
- 09:00 twelve bins fill up in one grid: sanitation gets one message listing them, with
  no wristband reading in it.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import yaml

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord.ingest import MqttSource
from sensord.testing import DingTalkRobotServer, FeishuBotServer, SmsGateway, WeComRobotServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TZ = ZoneInfo("Asia/Shanghai")
GREEN, RED, BOLD, DIM, OFF = "\033[32m", "\033[31m", "\033[1m", "\033[2m", "\033[0m"
C = "maple-court"


def at(day: int, hh: int, mm: int) -> float:
    return datetime(2026, 11 + (day > 30), day if day <= 30 else day - 30, hh, mm, tzinfo=TZ).timestamp()


def registry() -> dict[str, Any]:
    devices: dict[str, Any] = {
        "wb-n01": {"family": "wristband", "community": C, "grid": "g1", "building": "3", "unit": "3-402",
                   "floor": 4, "contacts": {"女儿": "+86 139 0000 0009"}},
        "lift-n01": {"family": "lift", "community": C, "grid": "g1", "building": "3"},
        "bin-n00": {"family": "bin", "community": C, "grid": "g1", "building": "1"},
    }  # fmt: skip
    devices |= {f"bin-n{i:02d}": {"family": "bin", "community": C, "grid": "g2", "building": "2"} for i in range(1, 13)}
    grids = {
        "g1": {"workers": [{"name": "张伟", "phone": "+86 138 0000 0001"}]},
        "g2": {"workers": [{"name": "李娜", "phone": "+86 138 0000 0002"}]},
    }
    return {"devices": devices, "grids": grids}


def normal(device: str, t: float) -> dict[str, Any]:
    if device.startswith("wb"):
        # A few steps every ten minutes, night included (a restless sleeper): no welfare check.
        steps = int((t - at(30, 22, 50)) // 600) * 12
        return {"heart_rate": 72, "spo2": 97, "sos": False, "fall": False, "worn": True, "steps": steps}
    if device.startswith("lift"):
        return {"state": "idle", "door_open": False, "in_levelling_zone": True, "occupied": False,
                "door_fault": False, "speed_mps": 0.0, "vibration_rms": 0.1}  # fmt: skip
    return {"fill_pct": 30.0, "temp_c": 12.0}


def stream() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(the night until 06:50, the morning from 07:00): every device every 10 minutes,
    with the incidents."""
    night: list[tuple[str, bytes]] = []
    morning: list[tuple[str, bytes]] = []
    devices = list(registry()["devices"])
    t, end = at(30, 22, 50), at(31, 9, 30)
    while t <= end:
        for d in devices:
            body = normal(d, t)
            if d == "bin-n00" and t >= at(30, 23, 0):
                body["fill_pct"] = 95.0
            if d == "lift-n01" and at(30, 23, 30) <= t < at(31, 0, 30):
                body["door_fault"] = True
            if d == "wb-n01" and at(31, 8, 0) <= t < at(31, 8, 10):
                body["sos"] = True
            if d.startswith("bin-n") and d != "bin-n00" and t >= at(31, 9, 0):
                body["fill_pct"] = 96.0
            family = {"wb": "wristband", "li": "lift", "bi": "bin"}[d[:2]]
            msg = (f"sensord/{C}/{family}/{d}/telemetry", orjson.dumps({**body, "ts": t}))
            (night if t < at(31, 7, 0) else morning).append(msg)
        t += 600
    return night, morning


async def publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    settings = BrokerSettings(port=port, client_id=f"demo-pub-{time.monotonic_ns()}", subscriptions=())
    pub = MqttSource(settings, None, Metrics(), BatchSettings())
    runner = asyncio.create_task(pub.run())
    await asyncio.wait_for(pub.connected.wait(), 10)
    for topic, payload in msgs:  # in order: each device's readings in time order
        await pub.publish(topic, payload, 1)
    await pub.aclose()
    runner.cancel()


def dispatch_file(tmp: Path, desk: WeComRobotServer, grid: DingTalkRobotServer, sanitation: FeishuBotServer,
                  lifts: WeComRobotServer, sms: SmsGateway) -> None:  # fmt: skip
    """The sample dispatch file, with a stand-in channel in front of five receivers."""
    spec = yaml.safe_load((ROOT / "config" / "dispatch.yaml").read_text())
    (tmp / "ding-secret").write_text(grid.secret or "")
    (tmp / "feishu-secret").write_text(sanitation.secret or "")
    (tmp / "sms-apikey").write_text(sms.credential)
    channels: dict[str, list[dict[str, Any]]] = {
        "elder_care_desk": [{"type": "wecom", "url": desk.url}],
        "grid_worker": [{"type": "dingtalk", "url": grid.url, "secret": {"file": str(tmp / "ding-secret")}}],
        "sanitation": [{"type": "feishu", "url": sanitation.url, "secret": {"file": str(tmp / "feishu-secret")}}],
        "lift_maintenance": [{"type": "wecom", "url": lifts.url}],
        "property_management": [{"type": "wecom", "url": lifts.url}],
        "family_contact": [{
            "type": "sms", "url": sms.url, "body_format": "form",
            "body": {"mobile": "{phone}", "text": "【枫林苑】{text}", "uid": "{id}"},
            "secret_fields": {"apikey": {"file": str(tmp / "sms-apikey")}},
            "max_chars": 64, "success_field": "code", "success_value": 0,
        }],
    }  # fmt: skip
    for r in spec["receivers"]:
        r["channels"] = channels.get(r["name"], [])
    (tmp / "dispatch.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False))


async def run(tmp: Path, broker_port: int) -> bool:
    """Phase two of the demo; True when every scene behaved."""
    print(f"\n{BOLD}Dispatch: one night and morning in {C} (event time 2026-11-30 22:50 .. 12-01 09:30){OFF}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "devices.yaml").write_text(yaml.safe_dump(registry(), allow_unicode=True))
    with (
        WeComRobotServer(key="desk") as desk,
        DingTalkRobotServer(access_token="grid", secret="SEC0f3d2a9b8c7e6d5c4b3a2") as grid,
        FeishuBotServer(token="sanitation", secret="feishu-demo-secret") as sanitation,
        WeComRobotServer(key="lifts") as lifts,
        SmsGateway("yunpian", credential="5d7c2b1e9a8f4c3b6e0d1a2f3b4c5d6e") as sms,
    ):
        dispatch_file(tmp, desk, grid, sanitation, lifts, sms)
        http_port = free_port()
        cfg = {
            "broker": {"port": broker_port, "client_id": "sensord-demo-dispatch"},
            "registry": "devices.yaml",
            "rules_dir": str(ROOT / "rules"),
            "state_dir": str(tmp / "state"),
            "dispatch": "dispatch.yaml",
            # The stream is a past night: the wall clock must not move event time.
            "alerts": {"idle_tick_s": 86400, "clock_grace_s": 86400},
            "http": {"port": http_port},
            "log": {"level": "WARNING"},
        }
        config = tmp / "sensord.yaml"
        config.write_text(yaml.safe_dump(cfg))
        silence = [sys.executable, "-m", "sensord", "silence", "add", "-c", str(config), "--match", "family=lift",
                   "--from", "2026-11-30T23:00+08:00", "--for", "9h", "--by", "物业 王工",
                   "--comment", "电梯年检 (annual lift inspection)"]  # fmt: skip
        made = subprocess.run(silence, capture_output=True, text=True, check=True)  # noqa: S603
        print(f"  {DIM}$ sensord silence add --match family=lift --from 2026-11-30T23:00+08:00 --for 9h ...{OFF}")
        print(f"  {made.stdout.strip()}")
        daemon = subprocess.Popen([sys.executable, "-m", "sensord", "run", "-c", str(config)])  # noqa: S603
        try:
            await asyncio.sleep(1.5)
            night, morning = stream()
            await publish(broker_port, night)
            await asyncio.sleep(2.0)
            bin_at_night = [a for a in sanitation.accepted if "bin-n00" in a.text]
            await publish(broker_port, morning)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (
                any("bin-n12" in a.text for a in sanitation.accepted) and sms.texts() and desk.accepted
            ):
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
        finally:
            daemon.terminate()
            daemon.wait(15)
    return report(desk, grid, sanitation, lifts, sms, bin_at_night)


def report(desk: WeComRobotServer, grid: DingTalkRobotServer, sanitation: FeishuBotServer,
           lifts: WeComRobotServer, sms: SmsGateway, night: list[Any]) -> bool:  # fmt: skip
    def show(who: str, texts: list[str]) -> None:
        for t in texts:
            print(f"  {BOLD}{who:<22}{OFF}{t.splitlines()[0][:90]}")

    show("elder_care_desk/wecom", [a.text for a in desk.accepted])
    show("grid_worker/dingtalk", [a.title or a.text for a in grid.accepted])
    show("family_contact/sms", [t.text or "" for t in sms.texts()])
    show("sanitation/feishu", [a.text for a in sanitation.accepted])
    show("lift_maintenance", [a.text for a in lifts.accepted])
    checks = [
        ("SOS told to the desk, the grid worker and the daughter, in Chinese",
         any("手环SOS" in a.text for a in desk.accepted) and any("SOS" in (a.title or a.text) for a in grid.accepted)
         and any("SOS" in (t.text or "") for t in sms.texts())),
        ("twelve full bins of one grid in one sanitation message",
         sum("bin-n" in a.text and "12" in a.text.splitlines()[0] for a in sanitation.accepted) == 1),
        ("the bin full at 23:00 waited for the morning (quiet hours)",
         not night and any("bin-n00" in a.text for a in sanitation.accepted)),
        ("the lift under a silence told nobody", not lifts.accepted),
        ("no wristband reading in any sanitation message",
         not any(w in a.text for a in sanitation.accepted for w in ("wb-", "heart_rate", "sos"))),
    ]  # fmt: skip
    for what, ok in checks:
        print(f"  {GREEN + 'ok      ' if ok else RED + 'FAILED  '}{OFF}{what}")
    return all(ok for _, ok in checks)
