"""Brokers for the client conformance suite: Mosquitto with the settings the project
ships (config/mosquitto.conf) and nats-server's MQTT listener, each private, on free
ports in the test's temp dir. Messages are published with `mosquitto_pub`, a client we
did not write."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings, ReconnectSettings
from sensord._types import RawMessage
from sensord.ingest import MqttSource
from sensord.testing import MosquittoServer, NatsServer, start_mosquitto, start_nats

SHIPPED_CONF = Path(__file__).resolve().parents[2] / "config" / "mosquitto.conf"
# Deployment-specific lines of the shipped file that a private test broker replaces.
_LOCAL = (
    "listener",
    "persistence_location",
    "password_file",
    "acl_file",
    "allow_anonymous",
    "log_",
    "connection_",
)


def shipped_settings() -> str:
    """The shipped Mosquitto settings that shape sessions, queues and packets."""
    lines = [ln.strip() for ln in SHIPPED_CONF.read_text().splitlines()]
    return "\n".join(ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith(_LOCAL))


@dataclass
class Broker:
    """A started broker under test, with what the tests need of it."""

    name: str
    server: MosquittoServer | NatsServer

    @property
    def port(self) -> int:
        return self.server.port

    def restart(self, *, lose_sessions: bool = False) -> None:
        """Stop and start on the same port; `lose_sessions` wipes what it kept on disk."""
        self.server.stop()
        if lose_sessions:
            for p in (*self.server.workdir.glob("*.db"), self.server.workdir / "js"):
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
        self.server.start()

    def publish(self, topic: str, payloads: list[bytes], *, qos: int = 1, client_id: str = "pub") -> None:
        """Publish each payload (one line each) with mosquitto_pub, in order."""
        subprocess.run(
            ["mosquitto_pub", "-p", str(self.port), "-i", client_id, "-t", topic, "-q", str(qos), "-l"],
            input=b"\n".join(payloads) + b"\n",
            check=True,
            timeout=60,
        )


def mosquitto_broker(workdir: Path, extra: str = "") -> Broker:
    return Broker("mosquitto", start_mosquitto(workdir, extra_conf=shipped_settings() + "\n" + extra))


@pytest.fixture(params=["mosquitto", "nats"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """Each conformance test against both brokers."""
    if request.param == "mosquitto":
        b = mosquitto_broker(tmp_path / "mosquitto")
    else:
        b = Broker("nats", start_nats(tmp_path / "nats"))
    yield b
    b.server.stop()


def make_source(port: int, *, client_id: str = "sensord-conf", **kw: object) -> MqttSource:
    """A source as the daemon builds it (persistent session, QoS 1 on conf/#); `kw`
    overrides broker settings, `high_water` the source's pause threshold."""
    high_water = cast("int | None", kw.pop("high_water", None))
    session_file = cast("Path | None", kw.pop("session_file", None))
    fields: dict[str, object] = {
        "port": port,
        "client_id": client_id,
        "subscriptions": ("conf/#",),
        "keepalive_s": 10,
        "reconnect": ReconnectSettings(initial_s=0.1, max_s=0.5),
        **kw,
    }
    settings = BrokerSettings.model_validate(fields)
    batch = BatchSettings(max_size=500, max_wait_ms=20)
    return MqttSource(
        settings,
        None,
        Metrics(),
        batch,
        high_water=high_water,
        session_file=session_file,
    )


@contextlib.asynccontextmanager
async def running(src: MqttSource, *, connected: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    """The source's connection loop as a task, stopped cleanly after."""
    task = asyncio.create_task(src.run())
    try:
        if connected:
            await asyncio.wait_for(src.connected.wait(), 20)
        yield task
    finally:
        await src.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def take(src: MqttSource, n: int, *, ack: bool = True, limit_s: float = 30) -> list[RawMessage]:
    """Receive n messages from the source (acknowledging each batch, or not)."""
    got: list[RawMessage] = []

    async def loop() -> None:
        async for batch in src.batches():
            got.extend(batch)
            if ack:
                src.ack([m.token for m in batch if m.token is not None])
            if len(got) >= n:
                return

    await asyncio.wait_for(loop(), limit_s)
    return got


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"m{i}".encode() for i in range(start, start + n)]
