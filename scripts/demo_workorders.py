"""The closed loop, third part of the neighbourhood demo: live alerts become work orders,
simulated people answer them through the HTTP API (`sensord simulate --responders`),
the ones nobody takes escalate, and the demo ends with the KPI table (`sensord kpi`).

A compact dispatch file (timeouts in seconds, so it fits in a minute; the shipped
config/dispatch.yaml has the same shape in minutes and hours):

- four SOS presses: grid g1's two are accepted by the elder-care desk within seconds;
  grid g2's two have no one at the desk, so the community doctor is told 10 s later
  (escalation step 2) and accepts them;
- the resident's daughter (a webhook with `work_order_updates`) hears who accepted;
- four full bins: grid workers accept, report done, and residents rate the work.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from demo_dispatch import publish  # scripts/demo_dispatch.py, beside this file

from sensord.testing import WebhookReceiver, free_port

GREEN, RED, BOLD, DIM, OFF = "\033[32m", "\033[31m", "\033[1m", "\033[2m", "\033[0m"
C = "maple-court"
TOKEN = "demo-duty-desk-token-5f1c0a"
RUN_S = 32.0  # how long the responders answer


def registry() -> dict[str, Any]:
    devices: dict[str, Any] = {
        f"wb-{i}": {"family": "wristband", "community": C, "grid": "g1" if i <= 2 else "g2",
                    "building": str(i), "contacts": {"女儿": f"+86 139 0000 000{i}"}}
        for i in range(1, 5)
    }  # fmt: skip
    devices |= {f"bin-{i}": {"family": "bin", "community": C, "grid": "g1", "building": "1"} for i in range(1, 5)}
    return {"devices": devices}


def dispatch(tmp: Path, hooks: dict[str, WebhookReceiver]) -> dict[str, Any]:
    receivers = []
    for name, hook in hooks.items():
        (tmp / f"{name}.whsec").write_text(hook.secret)
        channel = {"type": "webhook", "url": hook.url, "secret": {"file": str(tmp / f"{name}.whsec")}}
        receivers.append({"name": name, "sensitive": True, "channels": [channel],
                          "recipients": "contacts" if name == "family_contact" else "none",
                          "work_order_updates": name == "family_contact"})  # fmt: skip
    return {
        "receivers": receivers,
        "escalations": {
            "elder_sos": {"steps": [{"notify": ["elder_care_desk", "family_contact"], "ack_timeout": "10s"},
                                    {"notify": ["community_doctor"], "ack_timeout": "10s"},
                                    {"notify": ["operator"]}]},
            "bins": {"steps": [{"ack_timeout": "30s"}, {"notify": ["operator"]}]},
        },
        "sla": {"wristband": {"accept": "8s", "done": "30s"}, "bin": {"accept": "20s", "done": "60s"}},
        "route": {"receiver": "operator", "routes": [
            {"matchers": ['family="wristband"'], "receiver": "elder_care_desk", "escalation": "elder_sos"},
            {"matchers": ['family="bin"'], "receiver": "sanitation", "escalation": "bins", "group_wait": "1s"},
        ]},
        "rule_dispatch": False,
    }  # fmt: skip


def responders(tmp: Path) -> Path:
    (tmp / "token-duty").write_text(TOKEN)
    spec = {"responders": [
        {"name": "养老服务台值班", "token": {"file": "token-duty"}, "match": {"family": "wristband", "grid": "g1"},
         "accept_after": ["2s", "4s"], "done_after": ["3s", "5s"], "no_show": 0, "rating": [4, 5],
         "feedback_after": ["1s", "2s"]},
        {"name": "社区卫生服务站", "token": {"file": "token-duty"}, "match": {"family": "wristband"},
         "accept_after": ["12s", "14s"], "done_after": ["3s", "6s"], "no_show": 0, "rating": [3, 5],
         "feedback_after": ["1s", "2s"]},
        {"name": "张伟", "token": {"file": "token-duty"}, "match": {"family": "bin"},
         "accept_after": ["2s", "6s"], "done_after": ["3s", "8s"], "no_show": 0, "rating": [3, 5],
         "feedback_by": "居民", "feedback_after": ["1s", "3s"]},
    ]}  # fmt: skip
    path = tmp / "responders.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def readings(now: float) -> list[tuple[str, bytes]]:
    out = []
    for i in range(1, 5):
        body = {"heart_rate": 72, "spo2": 97, "sos": True, "fall": False, "worn": True, "steps": 10, "ts": now}
        out.append((f"sensord/{C}/wristband/wb-{i}/telemetry", orjson.dumps(body)))
        out.append((f"sensord/{C}/bin/bin-{i}/telemetry", orjson.dumps({"fill_pct": 95.0, "temp_c": 12, "ts": now})))
    return out


async def run(tmp: Path, broker_port: int) -> bool:
    """Phase three of the demo; True when the loop closed as described."""
    print(f"\n{BOLD}Work orders: live alerts answered through the API, escalation, KPIs{OFF}")
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "devices.yaml").write_text(yaml.safe_dump(registry(), allow_unicode=True))
    names = ("elder_care_desk", "family_contact", "community_doctor", "operator", "sanitation")
    hooks = {n: WebhookReceiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()).start() for n in names}
    api_port, http_port = free_port(), free_port()
    (tmp / "dispatch.yaml").write_text(yaml.safe_dump(dispatch(tmp, hooks), allow_unicode=True))
    (tmp / "duty.token").write_text(TOKEN)
    cfg = {
        "broker": {"port": broker_port, "client_id": "sensord-demo-workorders"},
        "registry": "devices.yaml", "rules_dir": str(Path(__file__).resolve().parent.parent / "rules"),
        "state_dir": str(tmp / "state"), "dispatch": "dispatch.yaml",
        "alerts": {"idle_tick_s": 0.2, "clock_grace_s": 0.5},
        "api": {"enabled": True, "port": api_port,
                "clients": [{"name": "duty", "role": "act", "token": {"file": str(tmp / "duty.token")}}]},
        "http": {"port": http_port}, "log": {"level": "WARNING"},
    }  # fmt: skip
    config = tmp / "sensord.yaml"
    config.write_text(yaml.safe_dump(cfg))
    sensord = str(Path(sys.executable).parent / "sensord")
    daemon = subprocess.Popen([sensord, "run", "-c", str(config)])
    api = f"http://127.0.0.1:{api_port}"
    try:
        await _wait_up(f"{api}/api/v1/openapi.json")
        await publish(broker_port, readings(time.time()))
        print(f"  {DIM}$ sensord simulate --responders responders.yaml --api {api} --duration {RUN_S:g}{OFF}")
        sim = [sensord, "simulate", "--responders", str(responders(tmp)), "--api", api, "--seed", "7",
               "--duration", str(RUN_S)]  # fmt: skip
        answered = await asyncio.to_thread(subprocess.run, sim, capture_output=True, text=True, check=False)
        print(f"  {answered.stdout.strip().splitlines()[-1] if answered.stdout.strip() else answered.stderr[-300:]}")
        orders = httpx.get(f"{api}/api/v1/work-orders", params={"limit": 100},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()["items"]  # fmt: skip
    finally:
        daemon.terminate()
        daemon.wait(15)
        for h in hooks.values():
            h.stop()
    print(f"\n  {BOLD}$ sensord kpi -c sensord.yaml --since 1d --by team{OFF}")
    kpi = subprocess.run([sensord, "kpi", "-c", str(config), "--since", "1d", "--by", "team"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    print("\n".join(f"  {ln}" for ln in kpi.stdout.splitlines()))
    return report(orders, hooks, kpi.returncode)


async def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the daemon's API did not come up in 20 s")


def report(orders: list[dict[str, Any]], hooks: dict[str, WebhookReceiver], kpi_rc: int) -> bool:
    sos = [o for o in orders if o["family"] == "wristband"]
    bins = [o for o in orders if o["family"] == "bin"]
    by_grid = {g: {o["accepted_by"] for o in sos if o["grid"] == g} for g in ("g1", "g2")}
    doctor = [r.body["title"] for r in hooks["community_doctor"].delivered()]
    family = [r.body["data"] for r in hooks["family_contact"].delivered() if r.body.get("data")]
    for o in sorted(orders, key=lambda o: (not o["life_safety"], o["id"])):
        who = o["accepted_by"] or "-"
        print(f"  {DIM}{o['id']}{OFF} {o['device_id']:<6} {o['state']:<9} accepted by {who}")
    checks = [
        ("four SOS and four bins opened eight work orders", (len(sos), len(bins)) == (4, 4)),
        ("grid g1's SOS accepted by the elder-care desk", by_grid["g1"] == {"养老服务台值班"}),
        ("grid g2's SOS escalated to the doctor (step 2) and accepted there",
         sum("升级·第2级" in t for t in doctor) == 2 and by_grid["g2"] == {"社区卫生服务站"}),
        ("the daughter was told who accepted", sum(d["action"] == "accepted" for d in family) == 4),
        ("the bins done and rated by residents", all(o["rating"] for o in bins)),
        ("sensord kpi printed the table", kpi_rc == 0),
    ]  # fmt: skip
    for what, ok in checks:
        print(f"  {GREEN + 'ok      ' if ok else RED + 'FAILED  '}{OFF}{what}")
    return all(ok for _, ok in checks)
