"""The neighbourhood demo: a private broker, InfluxDB 1.x and webhook receiver; simulated
devices of all six families with injected incidents; the real daemon in between. Then
dispatch (scripts/demo_dispatch.py): a night and morning replayed through the sample
dispatch file to chat, SMS stand-ins. Last, the closed loop (scripts/demo_workorders.py):
work orders answered by simulated people through the API, escalation, the KPI table.

Run by `bash scripts/demo` (which installs what it needs first).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

import demo_dispatch  # scripts/demo_dispatch.py, beside this file
import demo_workorders  # scripts/demo_workorders.py
from sensord.simulate import load_scenario, publish, registry_for
from sensord.testing import Received, WebhookReceiver, free_port, start_influxdb_v1, start_mosquitto

ROOT = Path(__file__).resolve().parent.parent
RED, GREEN, YELLOW, BOLD, DIM, OFF = "\033[31m", "\033[32m", "\033[33m", "\033[1m", "\033[2m", "\033[0m"


def write_config(tmp: Path, *, broker_port: int, influx_url: str, webhook_url: str, http_port: int) -> Path:
    """A daemon config pointing at the private servers; the webhook key in a file."""
    key = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    (tmp / "webhook-secret").write_text(key + "\n")
    cfg = {
        "broker": {"host": "127.0.0.1", "port": broker_port, "client_id": "sensord-demo"},
        "registry": str(tmp / "devices.yaml"),
        "rules_dir": str(ROOT / "rules"),
        "state_dir": str(tmp / "state"),
        "sinks": {
            "influx": {"url": influx_url, "api": "v1", "database": "sensord", "write_telemetry": True},
            "webhook": {"url": webhook_url, "secret": {"file": str(tmp / "webhook-secret")}},
        },
        "http": {"host": "127.0.0.1", "port": http_port},
        "log": {"format": "text", "level": "WARNING"},
    }
    path = tmp / "sensord.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def show(rec: Received) -> None:
    """Print one alert as the dispatch side received it."""
    b = rec.body
    colour = RED if b.get("lifeSafety") else (YELLOW if b["status"] == "firing" else DIM)
    sig = f"{GREEN}signature ok{OFF}" if rec.valid else f"{RED}BAD SIGNATURE{OFF}"
    print(
        f"  {colour}{b['status']:<9}{b['severity']:<9}{b['rule']:<26}{OFF}{b['device']:<10}"
        f"{b['summary'][:58]:<60}{DIM}{sig}{OFF}",
        flush=True,
    )


async def wait_drained(metrics_url: str, timeout: float) -> dict[str, float]:
    """Wait until the outbox is empty for every sink; return the daemon's counters."""
    deadline = time.monotonic() + timeout
    values: dict[str, float] = {}
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                text = (await client.get(metrics_url)).text
                values = {
                    ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                    for ln in text.splitlines()
                    if ln.startswith("sensord_")
                }
                depth = [v for k, v in values.items() if k.startswith("sensord_outbox_depth{")]
                if depth and not any(depth):
                    return values
            await asyncio.sleep(0.5)
    return values


def summary(
    hook: WebhookReceiver,
    influx: Any,
    counters: dict[str, float],
    expected: list[tuple[str, str]],
    deadletter: Path,
) -> bool:
    print(f"\n{BOLD}Where the alerts landed{OFF}")
    got = hook.delivered()
    ids = collections.Counter(r.headers["webhook-id"] for r in got)
    print(
        f"  webhook receiver: {len(got)} deliveries, {sum(r.valid for r in hook.received)}/{len(hook.received)}"
        f" signatures valid, {len(ids)} distinct webhook ids"
    )
    rows = influx.rows('SELECT count("fingerprint") FROM "sensord_alert" GROUP BY "rule", "status"')
    print(
        f"  InfluxDB (SELECT count(fingerprint) FROM sensord_alert GROUP BY rule, status): {len(rows)} series"
    )
    for r in sorted(rows, key=lambda r: (r["rule"], r["status"])):
        print(f"    {r['rule']:<28}{r['status']:<10}{r['count']}")
    tele = influx.rows('SELECT count("fill_pct") FROM "sensord_telemetry"')
    print(f"  InfluxDB telemetry points (bins): {tele[0]['count'] if tele else 0}")
    rejects = {k: v for k, v in counters.items() if k.startswith("sensord_rejects_total")}
    print("  dead-letter (sensord_rejects_total):")
    for k, v in sorted(rejects.items()):
        reason = k.split("reason=")[1].strip('"}')
        print(f"    {reason:<20}{v:.0f}")
    lines = deadletter.read_text().splitlines() if deadletter.exists() else []
    print(
        f"    {len(lines)} records in {deadletter.name}, e.g. {orjson.loads(lines[0])['detail'] if lines else '-'}"
    )
    unknown = sum(v for k, v in counters.items() if k.startswith("sensord_unknown_device_messages_total"))
    print(f"  messages from unregistered devices (counted, logged, kept in dead-letter): {unknown:.0f}")
    fired = {(r.body["rule"], r.body["device"]) for r in got if r.body["status"] == "firing"}
    print(f"\n{BOLD}Injected incidents{OFF}")
    ok = True
    for device, rule in expected:
        hit = (rule, device) in fired
        ok &= hit
        print(f"  {GREEN + 'alerted ' if hit else RED + 'MISSED  '}{OFF}{rule:<28}{device}")
    ok &= all(r.valid for r in hook.received)
    return ok


async def main(args: argparse.Namespace) -> int:
    scenario = load_scenario(ROOT / "simulators" / "neighbourhood.yaml")
    expected = [(i.device or i.community or "", rule) for i in scenario.incidents for rule in i.expect]
    with tempfile.TemporaryDirectory(prefix="sensord-demo-") as d:
        tmp = Path(d)
        print(f"{BOLD}sensord neighbourhood demo{OFF}  {DIM}(work dir {tmp}){OFF}")
        broker = start_mosquitto(tmp / "mosquitto")
        influx = start_influxdb_v1(tmp / "influxdb")
        print(f"  private Mosquitto on :{broker.port}, InfluxDB 1.x on {influx.url}")
        (tmp / "devices.yaml").write_text(yaml.safe_dump(registry_for(scenario), sort_keys=False))
        http_port = free_port()
        secret_holder: dict[str, str] = {}
        config = write_config(
            tmp, broker_port=broker.port, influx_url=influx.url, webhook_url="", http_port=http_port
        )
        secret_holder["key"] = (tmp / "webhook-secret").read_text().strip()
        hook = WebhookReceiver(secret_holder["key"], on_receive=show).start()
        cfg = yaml.safe_load(config.read_text())
        cfg["sinks"]["webhook"]["url"] = hook.url
        config.write_text(yaml.safe_dump(cfg))
        daemon = subprocess.Popen(  # noqa: S603
            [str(Path(sys.executable).parent / "sensord"), "run", "-c", str(config)]
        )
        try:
            await asyncio.sleep(1.0)
            devices = sum(scenario.devices.values())
            print(
                f"  sensord running (metrics on http://127.0.0.1:{http_port}/metrics); "
                f"simulating {devices} devices, {scenario.duration_s / args.speed:.0f} s at x{args.speed:g}\n"
            )
            print(f"{BOLD}  {'status':<9}{'severity':<9}{'rule':<26}{'device':<10}{'summary':<60}{OFF}")
            sent = await publish(
                scenario, host="127.0.0.1", port=broker.port, speed=args.speed, seed=args.seed
            )
            counters = await wait_drained(f"http://127.0.0.1:{http_port}/metrics", 30)
            print(f"\n  published {sent} messages")
        finally:
            daemon.terminate()
            daemon.wait(10)
            hook.stop()
        ok = summary(hook, influx, counters, expected, tmp / "state" / "deadletter.jsonl")
        ok &= await demo_dispatch.run(tmp / "dispatch", broker.port)
        ok &= await demo_workorders.run(tmp / "workorders", broker.port)
        influx.stop()
        broker.stop()
    print(f"\n{GREEN + 'demo ok' if ok else RED + 'demo found problems'}{OFF}")
    return 0 if ok else 1


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--speed", type=float, default=10.0, help="event time runs this many times the wall clock")
    p.add_argument("--seed", type=int, default=7)
    sys.exit(asyncio.run(main(p.parse_args())))
