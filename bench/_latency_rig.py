"""The latency benchmark's rig (bench/latency.py): the publisher process, the signed
webhook receiver, a slow InfluxDB stand-in, and `sensord run` as a real process with a
registry of wristbands.

The publisher sends QoS 1 wristband readings at a steady rate. A chosen share of them
press SOS, each on a wristband that has not alerted yet (`wristband_sos` is an event that
stays open 30 min, so a wristband alerts once per run): message k (from 1) is an SOS when
floor(k * share) > floor((k - 1) * share), so exactly floor(n * share) of the first n
messages are, evenly spaced. The others cycle over the ordinary wristbands.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from sensord.sinks import verify
from sensord.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
SLOW_SINK_S = 0.2


# -- which messages are an SOS ---------------------------------------------------------------
def share_fraction(percent: float) -> Fraction:
    """`percent` % as an exact fraction of what was typed (0.02 → 1/5000, not a float's
    binary neighbour, so the count below never falls one short)."""
    if not 0 <= percent <= 100:
        raise ValueError(f"an alert share is a percentage from 0 to 100, not {percent:g}")
    return Fraction(str(percent)) / 100


def sos_count(n: int, share: Fraction) -> int:
    """How many of the first n messages are an SOS: floor(n * share)."""
    return n * share.numerator // share.denominator


def is_sos(k: int, share: Fraction) -> bool:
    """Whether message k (counted from 1) is an SOS."""
    return sos_count(k, share) > sos_count(k - 1, share)


@dataclass(frozen=True)
class Plan:
    """One publisher run: `rate` msg/s for `seconds`; SOS on `share` of them, on fresh
    wristbands from id `first_sos` on; the other readings cycle over ids [0, ordinary)."""

    rate: int
    seconds: float
    share: Fraction
    ordinary: int
    first_sos: int


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


def device_id(device: int) -> str:
    return f"wb-{device:05d}"


def _reading(device: int, *, sos: bool) -> tuple[str, bytes]:
    body = {
        "heart_rate": 72, "spo2": 97.5, "systolic": 120, "diastolic": 78, "skin_temp_c": 33.1,
        "worn": True, "steps": 100, "fall": False, "sos": sos, "battery_pct": 80.0, "ts": time.time(),
    }  # fmt: skip
    return f"sensord/c{device % 4}/wristband/{device_id(device)}/telemetry", orjson.dumps(body)


async def _publish(port: int, plan: Plan, counts: Any) -> None:
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
    while (elapsed := time.perf_counter() - t0) < plan.seconds:
        due = int(plan.rate * elapsed)
        out = []
        while sent < due and sent - acked < 60_000:  # packet ids are 16-bit
            sent += 1
            if is_sos(sent, plan.share):
                topic, payload = _reading(plan.first_sos + alerts, sos=True)
                alerts += 1
            else:
                topic, payload = _reading(sent % plan.ordinary, sos=False)
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


def publisher(port: int, plan: Plan, counts: Any) -> None:
    """The publisher process' body; counts[0] = sent, [1] = acknowledged, [2] = SOS sent."""
    asyncio.run(_publish(port, plan, counts))


# -- the sinks -----------------------------------------------------------------------------
class Receiver:
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


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A daemon stopped at the end of a stage resets its connections: not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _serve(port: int, answer: Any, name: str, delay_s: float = 0.0) -> http.server.ThreadingHTTPServer:
    """A keep-alive HTTP server answering each POST with `answer(headers, body)` (a
    status), after `delay_s`."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            raw = self.rfile.read(length)
            if len(raw) < length:  # the daemon stopped mid-request: nothing to verify or answer
                self.close_connection = True
                return
            if delay_s:
                time.sleep(delay_s)
            self.send_response(answer({k.lower(): v for k, v in self.headers.items()}, raw))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - quiet
            return

    server = _QuietServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name=name, daemon=True).start()
    return server


def slow_influx() -> http.server.ThreadingHTTPServer:
    """An InfluxDB stand-in that takes every write, after SLOW_SINK_S."""
    return _serve(free_port(), lambda _h, _b: 204, "slow-influx", SLOW_SINK_S)


# -- the daemon ----------------------------------------------------------------------------
def write_registry(path: Path, devices: int) -> None:
    """wb-00000 … as yaml.dump writes them, line by line: at 100,000 devices libyaml's
    dumper takes several seconds for what this writes in a fraction of one."""
    with path.open("w", encoding="utf-8") as out:
        out.write("devices:\n")
        out.writelines(
            f"  {device_id(i)}:\n    community: c{i % 4}\n    family: wristband\n    grid: g{i % 2}\n"
            for i in range(devices)
        )


def config(
    work: Path, broker: int, webhook: Receiver, influx_url: str | None, devices: int
) -> tuple[Path, int]:
    """sensord.yaml for the daemon under test (and its registry of `devices` wristbands)."""
    write_registry(work / "devices.yaml", devices)
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


class Daemon:
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


def baseline_src(rev: str, work: Path) -> Path:
    """src/ of a git revision, exported to a folder (the repository is not touched)."""
    archive = work / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work / "baseline", filter="data")
    return work / "baseline" / "src"
