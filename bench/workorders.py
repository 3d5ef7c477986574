"""Work-order benchmark (issue 10): the API's list and filters over 10,000 open work
orders, and what an operator console polling the API costs the ingest path.

The real daemon (dispatch and the HTTP API on, a read token) runs on a state dir whose
outbox already holds `--orders` open work orders (built with the desk, as dispatch
writes them), with a private Mosquitto.

1. Drain. `--messages` mixed six-family readings are queued (QoS 1) for the daemon's
   persistent session while it is stopped; the daemon is started and its msg/s counted
   from /metrics until all are in. Once with no API client (the baseline) and once with
   a "console open" client polling the work-order list (and /console if the daemon
   serves one) every second; the ratio is console / baseline. `--rounds` repeats the pair,
   alternating which goes first, and reports medians.
2. API latency, with the daemon idle after the drain: `--requests` sequential GETs each
   of the first page, a state filter, a community+grid filter and a since filter; p50 and
   p99 in ms.

    .venv/bin/python bench/workorders.py                      # 10,000 orders, 300,000 readings
    .venv/bin/python bench/workorders.py --orders 2000 --messages 10000 --requests 100
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from _backlog import broker, create_session, messages, publish_backlog, registry_doc, scenario
from sensord._metrics import Metrics
from sensord._settings import OutboxSettings
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.outbox import Outbox
from sensord.simulate import Scenario
from sensord.testing import free_port
from sensord.workorders import Desk

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "bench-workorders"
TOKEN = "bench-console-token"
LIST = "/api/v1/work-orders"
# One alert kind per family, as the default rules name them.
RULES = {
    "bin": "bin_full", "fire": "smoke_alarm", "lift": "lift_trapped_passenger", "water": "water_tds_high",
    "charger": "charger_residual_current", "wristband": "wristband_sos",
}  # fmt: skip
DAY = 86400.0


# -- the state: an outbox with N open work orders --------------------------------------


def build_outbox(path: Path, registry: dict[str, Any], n: int, t0: float) -> None:
    """N open work orders on the scenario's devices, opened over the 10 days before t0:
    60 % waiting (dispatched), 30 % accepted, 10 % sent back (rejected); 1 in 20 life-safety."""
    desk = Desk({}, {}, close_after_s=3 * DAY)
    devices = list(registry["devices"].items())
    for i in range(n):
        device_id, entry = devices[(i * 7919) % len(devices)]  # spread over families and grids
        at = t0 - 10 * DAY + i * (10 * DAY / n)
        wo, _ = desk.open(_event(i, device_id, entry, at), ["desk"], None, {})
        if i % 10 in (6, 7, 8):
            desk.act(wo.id, "accept", by="张伟", at=at + 60, source="api")
        elif i % 10 == 9:
            desk.act(wo.id, "reject", by="张伟", at=at + 60, source="api", note="不在我的网格")
    outbox = Outbox(path, [], OutboxSettings(), Metrics())
    rows = desk.take().rows
    for i in range(0, len(rows), 2000):
        outbox.commit([], work_orders=rows[i : i + 2000])
    outbox.close()


def _event(i: int, device_id: str, entry: dict[str, Any], at: float) -> AlertEvent:
    life_safety = i % 20 == 0
    return AlertEvent(
        event_id=f"ev-{i}", fingerprint=f"fp-{i}", status=AlertStatus.FIRING, rule=RULES[entry["family"]],
        severity=Severity.CRITICAL if life_safety else Severity.WARNING, life_safety=life_safety,
        family=entry["family"], device_id=device_id, community=entry["community"], grid=entry["grid"],
        location={}, labels={}, summary=f"{RULES[entry['family']]} on {device_id}", description="",
        readings={"x": 1.0}, dispatch=(), starts_at=at, ends_at=None, event_time=at,
    )  # fmt: skip


# -- the daemon ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Daemon:
    config: Path
    http_port: int
    api_port: int

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:  # the child keeps its own descriptor
            return subprocess.Popen(
                [sys.executable, "-m", "sensord", "run", "-c", str(self.config)], stdout=out, stderr=out
            )

    def messages_in(self) -> float:
        """Readings the daemon took in so far (sum over families); -1 while it is not up."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return -1.0
        return sum(
            float(ln.rsplit(" ", 1)[1])
            for ln in text.splitlines()
            if ln.startswith("sensord_messages_in_total")
        )


def write_config(work: Path, broker_port: int, registry: dict[str, Any]) -> Daemon:
    (work / "devices.yaml").write_text(yaml.safe_dump(registry))
    (work / "token").write_text(TOKEN)
    spec = {"receivers": [{"name": "desk"}], "route": {"receiver": "desk"}, "rule_dispatch": False}
    (work / "dispatch.yaml").write_text(yaml.safe_dump(spec))
    http_port, api_port = free_port(), free_port()
    cfg = {
        "broker": {"port": broker_port, "client_id": CLIENT_ID},
        "registry": "devices.yaml",
        "rules_dir": str(ROOT / "rules"),
        "state_dir": str(work / "state"),
        "dispatch": "dispatch.yaml",
        "http": {"port": http_port},
        "api": {
            "enabled": True,
            "port": api_port,
            "clients": [{"name": "console", "role": "read", "token": {"file": str(work / "token")}}],
        },
        "log": {"level": "WARNING"},
    }
    (work / "sensord.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return Daemon(work / "sensord.yaml", http_port, api_port)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- 1. the drain, with and without a console polling -------------------------------------


class Console(threading.Thread):
    """An operator console left open: the work-order list (and /console, if served) every second."""

    def __init__(self, api: str, paths: list[str]) -> None:
        super().__init__(daemon=True, name="console")
        self._api, self._paths = api, paths
        self.first_ok: float | None = None
        self.polls = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self._api, headers=_auth(), timeout=5) as client:
            logged_in = False
            while not self.stopped.is_set():
                try:
                    # The console's pages want the log-in cookie, as a browser has it; the
                    # daemon may not be listening yet when the console starts.
                    logged_in = logged_in or _login(client)
                    ok = all(client.get(p).status_code == 200 for p in self._paths)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.polls += 1
                    self.first_ok = self.first_ok or time.perf_counter()
                self.stopped.wait(1.0)


def drain(daemon: Daemon, n: int, log: Path, console: Console | None) -> float:
    """Start the daemon on its queued backlog; msg/s from the first reading taken in (and,
    with a console, its first answered poll) until all n are in (the counter is per process)."""
    proc = daemon.start(log)
    if console is not None:
        console.start()
    try:
        deadline = time.monotonic() + 600
        first: tuple[float, float] | None = None
        while time.monotonic() < deadline:
            count, now = daemon.messages_in(), time.perf_counter()
            if first is None and count > 0 and (console is None or console.first_ok is not None):
                first = (now, count)
            if first is not None and count >= n:
                if count == first[1]:
                    raise SystemExit("drained before the console's first poll: raise --messages")
                return (count - first[1]) / (now - first[0])
            time.sleep(0.05)
        raise SystemExit(f"the daemon did not take in {n} readings in 600 s (see {log})")
    finally:
        if console is not None:
            console.stopped.set()
            console.join()
        stop(proc)


# -- 2. API latency ------------------------------------------------------------------------


def latencies(api: str, queries: dict[str, str], requests: int) -> dict[str, tuple[float, float]]:
    """p50 and p99 (ms) of `requests` sequential GETs per query, on one kept-alive connection."""
    out = {}
    with httpx.Client(base_url=api, headers=_auth(), timeout=10) as client:
        for name, query in queries.items():
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                resp = client.get(query)
                times.append((time.perf_counter() - t) * 1000)
                if resp.status_code != 200:
                    raise SystemExit(f"GET {query}: {resp.status_code} {resp.text[:200]}")
            times.sort()
            out[name] = (statistics.median(times), times[min(len(times) - 1, round(0.99 * (len(times) - 1)))])
    return out


def _login(client: httpx.Client) -> bool:
    """Log in to the console with the token (a 404 when the daemon serves no console)."""
    return client.post("/console/login", data={"token": TOKEN}).status_code in (303, 404)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _api_paths(daemon: Daemon, log: Path) -> list[str]:
    """Start the daemon once (it is idle: nothing queued) to see which console paths it serves."""
    proc = daemon.start(log)
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                with httpx.Client(base_url=daemon.api, headers=_auth(), timeout=2) as client:
                    listed = client.get(LIST + "?limit=1").status_code
                    _login(client)
                    console = client.get("/console").status_code
            except httpx.HTTPError:
                time.sleep(0.1)
                continue
            paths = [LIST + "?state=dispatched&state=rejected&state=reopened&state=accepted&limit=50"]
            return (paths + ["/console"] * (console == 200)) if listed == 200 else []
        raise SystemExit(f"the API did not answer in 60 s (see {log})")
    finally:
        stop(proc)


def drains(args: argparse.Namespace, daemon: Daemon, port: int, paths: list[str], log: Path) -> None:
    """Baseline and console-open drains of fresh backlogs, `--rounds` pairs; print the ratio."""
    sc: Scenario = scenario(devices_per_family=500)
    # Event time of the readings: the day before now, one stream cut into the drains.
    stream = messages(sc, args.messages * 2 * args.rounds, start_ts=time.time() - DAY)
    rates: dict[str, list[float]] = {"baseline": [], "console": []}
    kinds = ["baseline", "console"] if paths else ["baseline"]
    chunk = 0
    for r in range(args.rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            publish_backlog(port, stream[chunk * args.messages : (chunk + 1) * args.messages], 1)
            chunk += 1
            console = Console(daemon.api, paths) if kind == "console" else None
            rates[kind].append(drain(daemon, args.messages, log, console))
            polls = f", {console.polls} console polls" if console else ""
            print(f"drain {kind}: {args.messages:,} readings at {rates[kind][-1]:,.0f} msg/s{polls}")
    base = statistics.median(rates["baseline"])
    if not paths:
        print(f"drain, QoS 1, {args.orders:,} open work orders: baseline {base:,.0f} msg/s")
        return
    opened = statistics.median(rates["console"])
    print(
        f"drain, QoS 1, {args.orders:,} open work orders: baseline {base:,.0f} msg/s, "
        f"console open {opened:,.0f} msg/s, ratio {opened / base:.2f} (console / baseline)"
    )


def api_latency(args: argparse.Namespace, daemon: Daemon, log: Path, t0: float) -> None:
    """The daemon idle on its work orders; p50/p99 of each list query."""
    since = t0 - DAY  # the work orders opened over the 10 days before t0: the last tenth
    queries = {
        "first page": f"{LIST}?limit=50",
        "state filter": f"{LIST}?state=dispatched&state=rejected&limit=50",
        "community+grid": f"{LIST}?community=c1&grid=g2&limit=50",
        "since": f"{LIST}?since={since:.0f}&limit=50",
    }
    proc = daemon.start(log)
    try:
        _wait_api(daemon)
        for name, (p50, p99) in latencies(daemon.api, queries, args.requests).items():
            print(f"GET {name:<15} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({args.requests} requests)")
    finally:
        stop(proc)


def _wait_api(daemon: Daemon) -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            if httpx.get(daemon.api + LIST + "?limit=1", headers=_auth(), timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("the API did not answer in 60 s")


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=10_000, help="open work orders in the outbox")
    # The daemon drains ~60-80 k msg/s: 300,000 keeps it busy for several console polls.
    ap.add_argument("--messages", type=int, default=300_000, help="readings queued per drain")
    ap.add_argument("--requests", type=int, default=500, help="GETs per API query")
    ap.add_argument("--rounds", type=int, default=1, help="drain pairs (baseline, console), alternating")
    ap.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR (new) and keep it (daemon log)")
    args = ap.parse_args()
    registry = registry_doc(scenario(devices_per_family=500))
    t0 = time.time() - DAY
    with tempfile.TemporaryDirectory(prefix="sensord-bench-wo-") as d:
        work = args.keep or Path(d)
        (work / "state").mkdir(parents=True)
        t = time.perf_counter()
        build_outbox(work / "state" / OutboxSettings().path, registry, args.orders, t0)
        print(f"outbox: {args.orders:,} open work orders built in {time.perf_counter() - t:.1f} s")
        server = broker(work / "mosquitto")
        log = work / "daemon.log"
        try:
            daemon = write_config(work, server.port, registry)
            create_session(server.port, CLIENT_ID, 1)
            paths = _api_paths(daemon, log)
            if not paths:
                print(f"the work-order API is not served (GET {LIST} is not 200): the baseline drain only")
            drains(args, daemon, server.port, paths, log)
            if paths:
                api_latency(args, daemon, log, t0)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
