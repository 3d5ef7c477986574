"""Latency benchmark: publish → signed webhook received, at a steady rate.

A private Mosquitto, `sensord run` as a real process with the default rules and a signed
webhook sink, and a keep-alive receiver that verifies every signature
(sensord.sinks.verify). A publisher process sends QoS 1 wristband readings at a steady
2,000, 5,000 and 10,000 msg/s; 1 % of them press SOS on a wristband that has not alerted
yet, so each of those raises one life-safety alert. Every reading carries its publish
time as `ts`, which the webhook body returns in `readings.ts`: the receiver's clock minus
that is the latency from publish to webhook received (one machine, one clock).

The last stage runs a second daemon at 5,000 msg/s with a slow InfluxDB sink beside the
webhook (a stand-in that answers each write after 200 ms): life-safety alerts must not
wait for it.

    .venv/bin/python bench/latency.py [--seconds 25] [--baseline main]

`--baseline REV` runs the same stages first with the daemon of that git revision (its
src/ exported to a temporary folder), so before and after are measured side by side.
Backlog: messages published minus messages the daemon has processed (/healthz), sampled
every half second; it "grows" when the last third of the stage averages more than the
first third plus a quarter second of traffic. For a plot: `series(measure(default_stages(), 25))`
gives (msg/s, p99 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.server
import multiprocessing as mp
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from sensord.sinks import verify
from sensord.testing import MosquittoServer, free_port, start_mosquitto

ROOT = Path(__file__).resolve().parent.parent
NORMAL_DEVICES = 5000  # wristbands sending ordinary vitals
ALERT_DEVICES = 6000  # wristbands that press SOS once each (a fresh one per alert)
ALERT_EVERY = 100  # 1 % of messages alert
SLOW_SINK_S = 0.2
GOALS = "goals: p99 <= 25 ms and max <= 100 ms up to 5 k msg/s; p99 <= 50 ms at 10 k; no backlog growth; "
GOALS += "life-safety p99 <= 20 ms at 5 k with a slow sink"


@dataclass(frozen=True)
class Stage:
    name: str
    rate: int
    slow_sink: bool = False


@dataclass
class StageResult:
    """One stage's figures: latencies in ms of the alerts published in it."""

    label: str
    stage: Stage
    published: int
    seconds: float
    latencies_ms: list[float]
    expected_alerts: int
    backlog: list[int] = field(default_factory=list)
    ingest_lag_s: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")

    @property
    def backlog_grows(self) -> bool:
        third = max(1, len(self.backlog) // 3)
        first, last = self.backlog[:third], self.backlog[-third:]
        if not first:
            return False
        return statistics.fmean(last) > statistics.fmean(first) + self.stage.rate * 0.25


def series(results: list[StageResult], label: str = "after") -> list[tuple[float, float]]:
    """(msg/s, p99 ms) of the plain stages of one daemon, for a plot."""
    return [(r.stage.rate, r.pct(0.99)) for r in results if r.label == label and not r.stage.slow_sink]


# -- the publisher (its own process, so its CPU does not delay the receiver) ---------------
def _packet(first: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        byte, n = n % 128, n // 128
        length.append(byte | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return len(b).to_bytes(2, "big") + b


def _reading(device: int, *, sos: bool) -> tuple[str, bytes]:
    body = {
        "heart_rate": 72, "spo2": 97.5, "systolic": 120, "diastolic": 78, "skin_temp_c": 33.1,
        "worn": True, "steps": 100, "fall": False, "sos": sos, "battery_pct": 80.0, "ts": time.time(),
    }  # fmt: skip
    return f"sensord/c{device % 4}/wristband/wb-{device:05d}/telemetry", orjson.dumps(body)


async def _publish(port: int, rate: int, seconds: float, first_alert: int, counts: Any) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client = f"latency-pub-{os.getpid()}"
    writer.write(_packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c" + _mqtt_str(client)))
    await reader.readexactly(4)  # CONNACK
    acked = 0

    async def read_acks() -> None:
        nonlocal acked
        got = 0
        while data := await reader.read(65536):
            got += len(data)
            acked = got // 4  # PUBACKs only: 4 bytes each
            counts[1] = acked

    task = asyncio.create_task(read_acks())
    sent, alerts, t0 = 0, 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        due = int(rate * elapsed)
        out = []
        while sent < due and sent - acked < 60_000:  # packet ids are 16-bit
            sent += 1
            if sent % ALERT_EVERY == 0:
                topic, payload = _reading(NORMAL_DEVICES + first_alert + alerts, sos=True)
                alerts += 1
            else:
                topic, payload = _reading(sent % NORMAL_DEVICES, sos=False)
            pid = (sent - 1) % 65535 + 1
            out.append(_packet(0x32, _mqtt_str(topic) + pid.to_bytes(2, "big") + payload))
        if out:
            writer.write(b"".join(out))
            counts[0] = sent
        await asyncio.sleep(0.001)
    counts[2] = alerts
    deadline = time.monotonic() + 30
    while acked < sent and time.monotonic() < deadline:  # noqa: ASYNC110 - a counter, polled
        await asyncio.sleep(0.05)
    writer.write(b"\xe0\x00")
    task.cancel()
    writer.close()


def _publisher(port: int, rate: int, seconds: float, first_alert: int, counts: Any) -> None:
    asyncio.run(_publish(port, rate, seconds, first_alert, counts))


# -- the sinks -----------------------------------------------------------------------------
class _Receiver:
    """The dispatch platform's stand-in: verifies every Standard Webhooks signature
    (sensord.sinks.verify) and records, per SOS device, receive time minus publish time.
    HTTP/1.1 with keep-alive, as a real platform answers (sensord.testing.WebhookReceiver
    closes every connection, which would add a TCP connect to every alert)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.by_device: dict[int, float] = {}
        self.invalid = 0
        self._lock = threading.Lock()
        self._server = _serve(free_port(), self._answer, "latency-receiver")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    def _answer(self, headers: dict[str, str], raw: bytes) -> int:
        now = time.time()
        if not verify(self.secret, headers, raw):
            with self._lock:
                self.invalid += 1
            return 401
        body = orjson.loads(raw)
        if body.get("status") == "firing" and body.get("rule") == "wristband_sos":
            device = int(str(body["device"]).removeprefix("wb-"))
            with self._lock:
                self.by_device[device] = (now - float(body["readings"]["ts"])) * 1000
        return 200

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _serve(port: int, answer: Any, name: str, delay_s: float = 0.0) -> http.server.ThreadingHTTPServer:
    """A keep-alive HTTP server answering each POST with `answer(headers, body)` (a
    status), after `delay_s`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            if delay_s:
                time.sleep(delay_s)
            self.send_response(answer({k.lower(): v for k, v in self.headers.items()}, raw))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - quiet
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def _slow_influx() -> http.server.ThreadingHTTPServer:
    """An InfluxDB stand-in that takes every write, after SLOW_SINK_S."""
    return _serve(free_port(), lambda _h, _b: 204, "slow-influx", SLOW_SINK_S)


# -- the daemon ----------------------------------------------------------------------------
def _config(work: Path, broker: int, webhook: _Receiver, influx_url: str | None) -> tuple[Path, int]:
    devices = {
        f"wb-{i:05d}": {"family": "wristband", "community": f"c{i % 4}", "grid": f"g{i % 2}"}
        for i in range(NORMAL_DEVICES + ALERT_DEVICES)
    }
    (work / "devices.yaml").write_text(yaml.safe_dump({"devices": devices}))
    (work / "webhook-secret").write_text(webhook.secret)
    sinks: dict[str, Any] = {"webhook": {"url": webhook.url, "secret": {"file": "webhook-secret"}}}
    if influx_url is not None:
        sinks["influx"] = {"url": influx_url, "api": "v1", "database": "sensord", "timeout_s": 5}
    http_port = free_port()
    cfg = {
        "broker": {"host": "127.0.0.1", "port": broker, "client_id": "sensord-latency"},
        "registry": "devices.yaml",
        "rules_dir": str(ROOT / "rules"),
        "state_dir": str(work / "state"),
        "sinks": sinks,
        "http": {"host": "127.0.0.1", "port": http_port},
        "log": {"format": "json", "level": "WARNING"},
    }
    path = work / "sensord.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, http_port


class _Daemon:
    def __init__(self, config: Path, http_port: int, src: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        with (config.parent / "daemon.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensord", "run", "-c", str(config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=config.parent,
            )  # fmt: skip
        self.url = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 120
        while self.health().get("broker_connected") is not True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start; see {config.parent / 'daemon.log'}")
            time.sleep(0.2)

    def health(self) -> dict[str, Any]:
        try:
            body: dict[str, Any] = orjson.loads(httpx.get(f"{self.url}/healthz", timeout=2).content)
        except (httpx.HTTPError, orjson.JSONDecodeError):
            return {}
        return body

    def processed(self) -> int:
        return int(self.health().get("messages_processed", 0))

    def ingest_lag(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=2).text
        for line in text.splitlines():
            if line.startswith("sensord_ingest_lag_seconds "):
                return float(line.split()[1])
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- a run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rig:
    """One daemon under test with its broker and the receiver's latencies."""

    label: str
    daemon: _Daemon
    broker: int
    receiver: _Receiver


def _run_stage(rig: _Rig, stage: Stage, seconds: float, first_alert: int) -> StageResult:
    label, daemon, broker, latencies = rig.label, rig.daemon, rig.broker, rig.receiver
    counts = mp.Array("q", 3)
    base = daemon.processed()
    proc = mp.Process(target=_publisher, args=(broker, stage.rate, seconds, first_alert, counts))
    proc.start()
    backlog: list[int] = []
    t0 = time.monotonic()
    while proc.is_alive() and time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        backlog.append(counts[0] - (daemon.processed() - base))
    lag = daemon.ingest_lag()
    load = os.getloadavg()
    proc.join(60)
    published, alerts = counts[0], counts[2]
    deadline = time.monotonic() + 20
    wanted = range(NORMAL_DEVICES + first_alert, NORMAL_DEVICES + first_alert + alerts)
    while time.monotonic() < deadline and sum(d in latencies.by_device for d in wanted) < alerts:
        time.sleep(0.2)
    lat = [latencies.by_device[d] for d in wanted if d in latencies.by_device]
    return StageResult(label, stage, published, seconds, lat, alerts, backlog, lag, load)


def run_daemon(label: str, src: Path, stages: list[Stage], seconds: float, work: Path) -> list[StageResult]:
    """One daemon (from `src`) through the stages; the slow-sink stage gets its own daemon."""
    out: list[StageResult] = []
    groups = [[s for s in stages if not s.slow_sink], [s for s in stages if s.slow_sink]]
    for n, group in enumerate(groups):
        if not group:
            continue
        folder = work / f"{label}-{n}"
        folder.mkdir()
        influx = _slow_influx() if group[0].slow_sink else None
        influx_url = f"http://127.0.0.1:{influx.server_address[1]}" if influx is not None else None
        receiver = _Receiver("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
        mosquitto: MosquittoServer = start_mosquitto(folder)
        try:
            config, http_port = _config(folder, mosquitto.port, receiver, influx_url)
            daemon = _Daemon(config, http_port, src)
            try:
                rig = _Rig(label, daemon, mosquitto.port, receiver)
                _run_stage(rig, Stage("warm-up", 500), 3, 0)
                first = 500 * 3 // ALERT_EVERY + 1
                for stage in group:
                    out.append(_run_stage(rig, stage, seconds, first))
                    print(_row(out[-1]), flush=True)
                    first += stage.rate * int(seconds) // ALERT_EVERY + 1
            finally:
                daemon.stop()
        finally:
            mosquitto.stop()
            receiver.stop()
            if influx is not None:
                influx.shutdown()
                influx.server_close()
            if receiver.invalid:
                print(f"  {receiver.invalid} webhook requests had no valid signature", flush=True)
    return out


def baseline_src(rev: str, work: Path) -> Path:
    """src/ of a git revision, exported to a folder (the repository is not touched)."""
    archive = work / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work / "baseline", filter="data")
    return work / "baseline" / "src"


HEADER = (
    f"{'daemon':<9} {'stage':<18} {'msg/s':>7} {'alerts':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
    f"{'backlog':>15} {'lag s':>6}  load avg"
)


def _row(r: StageResult) -> str:
    got = f"{len(r.latencies_ms)}/{r.expected_alerts}"
    end = r.backlog[-1] if r.backlog else 0
    backlog = f"{max(r.backlog, default=0)}/{end}{' GROWS' if r.backlog_grows else ''}"
    load = " ".join(f"{x:.2f}" for x in r.load)
    return (
        f"{r.label:<9} {r.stage.name:<18} {r.published / r.seconds:>7.0f} {got:>9} {r.pct(0.5):>7.1f} "
        f"{r.pct(0.99):>7.1f} {max(r.latencies_ms, default=float('nan')):>7.1f} {backlog:>15} "
        f"{r.ingest_lag_s:>6.2f}  {load}"
    )


def default_stages(rates: tuple[int, ...] = (2000, 5000, 10000), slow_rate: int = 5000) -> list[Stage]:
    stages = [Stage(f"{r // 1000}k", r) for r in rates]
    if slow_rate:
        stages.append(Stage(f"{slow_rate // 1000}k + slow sink", slow_rate, slow_sink=True))
    return stages


def measure(
    stages: list[Stage], seconds: float, *, baseline: str | None = None, keep: Path | None = None
) -> list[StageResult]:
    """Every stage with this tree's daemon ("after"), and first with the daemon of git
    revision `baseline` ("before") if given. For a plot: `series(measure(...))`."""
    results: list[StageResult] = []
    with tempfile.TemporaryDirectory(prefix="sensord-latency-") as tmp:
        work = keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if baseline:
            results += run_daemon("before", baseline_src(baseline, work), stages, seconds, work)
        results += run_daemon("after", ROOT / "src", stages, seconds, work)
    return results


def main() -> None:
    doc = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=doc)
    parser.add_argument("--seconds", type=float, default=25.0, help="length of each stage")
    parser.add_argument("--rates", default="2000,5000,10000", help="steady rates, msg/s")
    parser.add_argument("--slow-rate", type=int, default=5000, help="rate of the slow-sink stage (0: skip)")
    parser.add_argument("--baseline", help="git revision whose daemon runs first, for before/after")
    parser.add_argument("--keep", type=Path, help="work in this (new) folder and keep it (daemon logs)")
    args = parser.parse_args()
    stages = default_stages(tuple(int(r) for r in args.rates.split(",")), args.slow_rate)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("backlog: max/end of published - processed; alerts: received/expected (all life-safety SOS)")
    print(HEADER, flush=True)
    results = measure(stages, args.seconds, baseline=args.baseline, keep=args.keep)
    print("\n" + HEADER)
    for r in results:
        print(_row(r))
    print(GOALS)
    print("p99 by rate:", {label: series(results, label) for label in ("before", "after")})


if __name__ == "__main__":
    main()
