"""Dispatch benchmark (issue 9): life-safety first on a channel with a backlog, and the
cost of routing.

1. SOS behind a backlog. The real daemon, a private Mosquitto, and one slow WeCom robot
   stand-in (each request takes `--delay` seconds) that every receiver's messages go to.
   `--backlog` full bins, each its own group (group_by [device], group_wait 0s), queue
   that many ordinary messages on the channel; then `--tries` SOS presses, one at a time,
   are timed from publish to the robot's acceptance. The baseline, measured in the same
   run, is how long the same SOS would have waited in first-in-first-out order: the
   messages still queued ahead of it times the receiver's time per message.
2. Routing cost. The dispatch stage alone (route, people, words, messages) on alerts of
   every shipped rule over the sample dispatch file, per alert, beside the cost of
   encoding the same events for the outbox (work the daemon already does per event).

    .venv/bin/python bench/dispatch.py                 # 10,000 messages queued, 20 SOS
    .venv/bin/python bench/dispatch.py --backlog 2000 --tries 5 --delay 0.02
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from sensord._metrics import Metrics
from sensord._registry import parse_registry
from sensord._settings import BatchSettings, BrokerSettings
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.dispatch import Dispatcher, spec_from
from sensord.ingest import MqttSource
from sensord.outbox import encode_event
from sensord.rules import load_rules
from sensord.testing import WeComRobotServer, free_port, start_mosquitto

ROOT = Path(__file__).resolve().parent.parent


def _publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    async def go() -> None:
        settings = BrokerSettings(port=port, client_id=f"bench-pub-{time.monotonic_ns()}", subscriptions=())
        pub = MqttSource(settings, None, Metrics(), BatchSettings())
        runner = asyncio.create_task(pub.run())
        await asyncio.wait_for(pub.connected.wait(), 10)
        for i in range(0, len(msgs), 2000):
            await asyncio.gather(*(pub.publish(t, p, 1) for t, p in msgs[i : i + 2000]))
        await pub.aclose()
        runner.cancel()

    asyncio.run(go())


def _depth(http_port: int, sink: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return -1.0
    key = f'sensord_outbox_depth{{sink="{sink}"}}'
    return next((float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(key)), 0.0)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def sos_behind_backlog(args: argparse.Namespace, work: Path) -> dict[str, float]:
    broker = start_mosquitto(work / "mosquitto")
    robot = WeComRobotServer(key="bench", delay_s=args.delay).start()
    devices: dict[str, Any] = {
        f"bin-{i:05d}": {"family": "bin", "community": "c", "grid": "g"} for i in range(args.backlog)
    }
    devices |= {
        f"wb-{i:03d}": {"family": "wristband", "community": "c", "grid": "g"} for i in range(args.tries)
    }
    (work / "devices.yaml").write_text(yaml.safe_dump({"devices": devices}))
    spec = {
        "receivers": [{"name": "all", "channels": [{"type": "wecom", "url": robot.url}]}],
        "route": {"receiver": "all", "group_by": ["device"], "group_wait": "0s"},
        "rule_dispatch": False,
    }
    (work / "dispatch.yaml").write_text(yaml.safe_dump(spec))
    http_port = free_port()
    cfg = {
        "broker": {"port": broker.port, "client_id": "bench-dispatch"},
        "registry": "devices.yaml",
        "rules_dir": str(ROOT / "rules"),
        "state_dir": str(work / "state"),
        "dispatch": "dispatch.yaml",
        "http": {"port": http_port},
        "log": {"level": "WARNING"},
    }
    (work / "sensord.yaml").write_text(yaml.safe_dump(cfg))
    daemon = subprocess.Popen([sys.executable, "-m", "sensord", "run", "-c", str(work / "sensord.yaml")])
    latencies: list[float] = []
    fifo: list[float] = []
    try:
        _wait(lambda: _depth(http_port, "all/wecom") >= 0, 60, "the daemon")
        now = time.time()
        _publish(
            broker.port,
            [
                (f"sensord/c/bin/{d}/t", b'{"fill_pct": 95, "ts": %f}' % now)
                for d in devices
                if d.startswith("bin")
            ],
        )
        _wait(lambda: _depth(http_port, "all/wecom") >= args.backlog * 0.9, 300, "the backlog queued")
        for i in range(args.tries):
            ahead = _depth(http_port, "all/wecom")
            seen = len(robot.accepted)
            t0 = time.time()
            _publish(broker.port, [(f"sensord/c/wristband/wb-{i:03d}/t", b'{"sos": true, "ts": %f}' % t0)])
            _wait(
                lambda i=i, seen=seen: any(f"wb-{i:03d}" in a.text for a in robot.accepted[seen:]),
                60,
                "the SOS",
            )
            got = next(a for a in robot.accepted[seen:] if f"wb-{i:03d}" in a.text)
            latencies.append(got.at - t0)
            fifo.append(ahead * args.delay)
    finally:
        daemon.terminate()
        daemon.wait(20)
        robot.stop()
        broker.stop()
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]
    return {
        "sos_p50_s": statistics.median(lat),
        "sos_p99_s": p99,
        "sos_max_s": lat[-1],
        "fifo_wait_median_s": statistics.median(fifo),
    }


def routing_cost(n: int) -> dict[str, float]:
    """Per-alert cost of the dispatch stage over the sample file, beside encode_event."""
    reg_doc = yaml.safe_load((ROOT / "config" / "devices.yaml").read_text())
    registry = parse_registry(reg_doc, source="devices.yaml")
    rules = load_rules(ROOT / "rules", registry)
    # The sample dispatch file, with a chat robot for every receiver (it ships without).
    sample = yaml.safe_load((ROOT / "config" / "dispatch.yaml").read_text())
    for r in sample["receivers"]:
        r["channels"] = [{"type": "wecom", "url": "http://chat.example/r?key=k"}]
    spec = spec_from(sample)
    devices = [d for f in rules.by_family for d in registry.devices(f)]
    events: list[AlertEvent] = []
    t0 = 1_796_090_400.0
    for i in range(n):
        d = devices[i % len(devices)]
        rule = rules.by_family[d.family].rules[i % len(rules.by_family[d.family].rules)]
        events.append(
            AlertEvent(
                event_id=f"ev-{i}",
                fingerprint=f"fp-{i}",
                status=AlertStatus.FIRING,
                rule=rule.name,
                severity=Severity(rule.severity.value),
                life_safety=rule.life_safety,
                family=d.family.value,
                device_id=d.device_id,
                community=d.entry.community,
                grid=d.entry.grid,
                location=d.place(),
                labels=dict(rule.labels),
                summary=f"{rule.name} on {d.device_id}",
                description="",
                readings={"x": 1.0},
                dispatch=rule.dispatch,
                starts_at=t0 + i * 0.001,
                ends_at=None,
                event_time=t0 + i * 0.001,
            )
        )
    dispatcher = Dispatcher(spec, registry, Metrics(), per_recipient={})
    t = time.perf_counter()
    for i in range(0, n, 100):
        dispatcher.notices(events[i : i + 100], t0 + i * 0.001)
    routing = (time.perf_counter() - t) / n
    t = time.perf_counter()
    for ev in events:
        encode_event(ev)
    encoding = (time.perf_counter() - t) / n
    return {
        "routing_us_per_alert": routing * 1e6,
        "encode_us_per_event": encoding * 1e6,
        "alerts_per_s": 1 / routing,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=10_000, help="ordinary messages queued on the channel")
    ap.add_argument("--tries", type=int, default=20, help="SOS presses timed")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds the receiver takes per message")
    ap.add_argument("--alerts", type=int, default=20_000, help="alerts for the routing cost")
    args = ap.parse_args()
    cost = routing_cost(args.alerts)
    per_alert, per_event = cost["routing_us_per_alert"], cost["encode_us_per_event"]
    print(
        f"routing: {per_alert:.1f} us per alert ({cost['alerts_per_s']:,.0f} alerts/s on one core, "
        f"{cost['alerts_per_s'] / 1000:.0f}x the goal of 1,000/s); encode_event {per_event:.1f} us per event "
        f"(routing / encoding: {per_alert / per_event:.1f}x)"
    )
    with tempfile.TemporaryDirectory(prefix="sensord-bench-dispatch-") as d:
        r = sos_behind_backlog(args, Path(d))
    p50, p99, top, fifo = (r[k] for k in ("sos_p50_s", "sos_p99_s", "sos_max_s", "fifo_wait_median_s"))
    print(
        f"SOS behind {args.backlog:,} queued messages, receiver {args.delay * 1000:.0f} ms/message, "
        f"{args.tries} tries: publish -> received p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {top * 1000:.0f} ms (goal p99 < 1 s); in first-in-first-out order it would have waited "
        f"{fifo:.0f} s (median), {fifo / p50:,.0f}x longer"
    )


if __name__ == "__main__":
    main()
