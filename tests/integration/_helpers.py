"""Helpers for integration tests: run the real daemon as a process, publish, wait."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord.ingest import MqttSource
from sensord.testing import free_port


def wristbands(n: int) -> dict[str, Any]:
    """A registry of n wristbands and two bins."""
    devices: dict[str, Any] = {
        f"wb-{i:03d}": {"family": "wristband", "community": "maple", "grid": f"g{i % 3}", "building": "1"}
        for i in range(n)
    }
    devices["bin-1"] = {"family": "bin", "community": "maple", "grid": "g1"}
    devices["bin-2"] = {"family": "bin", "community": "maple", "grid": "g1"}
    return {"devices": devices}


def write_config(
    tmp: Path,
    *,
    broker_port: int,
    registry: dict[str, Any],
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    influx: dict[str, Any] | None = None,
    rules_dir: Path | None = None,
) -> tuple[Path, int]:
    """A daemon config in tmp; returns (path, metrics port)."""
    (tmp / "devices.yaml").write_text(yaml.safe_dump(registry))
    http_port = free_port()
    sinks: dict[str, Any] = {}
    if webhook_url is not None:
        assert webhook_secret is not None
        (tmp / "webhook-secret").write_text(webhook_secret)
        sinks["webhook"] = {
            "url": webhook_url,
            "secret": {"file": str(tmp / "webhook-secret")},
            "timeout_s": 5,
        }
    if influx is not None:
        sinks["influx"] = influx
    cfg = {
        "broker": {"host": "127.0.0.1", "port": broker_port, "client_id": "sensord-it", "keepalive_s": 10},
        "registry": "devices.yaml",
        "rules_dir": str(rules_dir or Path(__file__).resolve().parents[2] / "rules"),
        "state_dir": str(tmp / "state"),
        "sinks": sinks,
        "delivery": {"initial_backoff_s": 0.1, "max_backoff_s": 1.0},
        "http": {"host": "127.0.0.1", "port": http_port},
        "log": {"format": "json", "level": "INFO"},
    }
    path = tmp / "sensord.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, http_port


def start_daemon(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`sensord run -c config` as a real process, logging to `log`."""
    with log.open("ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "sensord", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it has not stopped within 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def metrics(port: int) -> dict[str, float]:
    """The daemon's /metrics as {sample name with labels: value}; {} if not up yet."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for ln in text.splitlines():
        if ln.startswith("sensord_"):
            name, value = ln.rsplit(" ", 1)
            out[name] = float(value)
    return out


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def publish(
    port: int, messages: Sequence[tuple[str, dict[str, Any] | bytes]], *, qos: int = 1, pace_s: float = 0.0
) -> None:
    """Publish (topic, payload) pairs in order (optionally `pace_s` apart), waiting for each PUBACK."""

    async def go() -> None:
        settings = BrokerSettings(port=port, client_id=f"it-pub-{time.monotonic_ns()}", subscriptions=())
        client = MqttSource(settings, None, Metrics(), BatchSettings())
        runner = asyncio.create_task(client.run())
        await asyncio.wait_for(client.connected.wait(), 10)
        for topic, payload in messages:
            body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
            await client.publish(topic, body, qos)
            if pace_s:
                await asyncio.sleep(pace_s)
        await client.aclose()
        runner.cancel()

    asyncio.run(go())


def topic(family: str, device: str) -> str:
    return f"sensord/maple/{family}/{device}/telemetry"
