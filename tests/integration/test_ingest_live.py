"""The MQTT source against a real Mosquitto: persistent session, acknowledgement, reconnect."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from sensord._errors import ConnectRefused
from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings, ReconnectSettings
from sensord._types import RawMessage
from sensord.ingest import MqttSource
from sensord.testing import MosquittoServer, start_mosquitto
from tests.integration._helpers import publish

pytestmark = pytest.mark.integration


def source(port: int, client_id: str = "sub-1", **kw: object) -> MqttSource:
    settings = BrokerSettings(
        port=port,
        client_id=client_id,
        subscriptions=("sensord/#",),
        reconnect=ReconnectSettings(initial_s=0.05, max_s=0.2),
        **kw,  # type: ignore[arg-type]
    )
    return MqttSource(settings, kw.get("_pw"), Metrics(), BatchSettings(max_size=1000, max_wait_ms=20))  # type: ignore[arg-type]


async def take(src: MqttSource, n: int, *, ack: bool, limit_s: float = 10) -> list[RawMessage]:
    """Receive n messages (acknowledging each batch or not)."""
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


async def with_source(src: MqttSource, body: object) -> object:
    runner = asyncio.create_task(src.run())
    try:
        await asyncio.wait_for(src.connected.wait(), 10)
        return await body  # type: ignore[misc]
    finally:
        await src.aclose()
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


def msgs(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    return [(f"sensord/c/bin/b{i}/telemetry", f'{{"i": {i}}}'.encode()) for i in range(start, start + n)]


class TestMqttSource:
    def test_receives_in_batches_with_tokens(self, mosquitto: MosquittoServer) -> None:
        """QoS 1 messages arrive in order, batched, each with an acknowledgement token."""

        async def body() -> list[RawMessage]:
            src = source(mosquitto.port)

            async def inner() -> list[RawMessage]:
                await asyncio.to_thread(publish, mosquitto.port, msgs(500))
                return await take(src, 500, ack=True)

            return await with_source(src, inner())  # type: ignore[return-value]

        got = asyncio.run(body())
        assert [m.payload for m in got] == [p for _, p in msgs(500)]
        assert all(m.token is not None for m in got)

    def test_unacknowledged_messages_are_redelivered(self, mosquitto: MosquittoServer) -> None:
        """Messages received but not acknowledged come again after reconnecting; acknowledged ones do not."""

        async def first_session(ack: bool) -> list[RawMessage]:
            src = source(mosquitto.port, client_id="persist")
            return await with_source(src, take(src, 100, ack=ack))  # type: ignore[return-value]

        async def run() -> tuple[int, int, int]:
            # Create the persistent session, then queue messages while we are away.
            src = source(mosquitto.port, client_id="persist")
            await with_source(src, asyncio.sleep(0.1))
            await asyncio.to_thread(publish, mosquitto.port, msgs(100))
            a = await first_session(ack=False)
            b = await first_session(ack=True)
            await asyncio.to_thread(publish, mosquitto.port, msgs(1, start=100))
            c = await first_session_one()
            return len(a), len(b), len(c)

        async def first_session_one() -> list[RawMessage]:
            src = source(mosquitto.port, client_id="persist")
            return await with_source(src, take(src, 1, ack=True))  # type: ignore[return-value]

        a, b, c = asyncio.run(run())
        assert (a, b, c) == (100, 100, 1)

    def test_reconnects_after_broker_restart(self, tmp_path: Path, mosquitto: MosquittoServer) -> None:
        """When the broker dies and returns on the same port, the source reconnects and continues."""

        async def run() -> list[RawMessage]:
            src = source(mosquitto.port)

            async def inner() -> list[RawMessage]:
                mosquitto.kill()
                await asyncio.sleep(0.3)
                assert not src.connected.is_set()
                mosquitto.restart()
                await asyncio.wait_for(src.connected.wait(), 10)
                await asyncio.to_thread(publish, mosquitto.port, msgs(5))
                return await take(src, 5, ack=True)

            return await with_source(src, inner())  # type: ignore[return-value]

        assert len(asyncio.run(run())) == 5

    def test_bad_password_is_refused_with_reason(self, tmp_path: Path) -> None:
        """A broker that refuses our credentials gives ConnectRefused saying why."""
        pwfile = tmp_path / "passwd"
        pwfile.write_text("sensord:secret\n")
        subprocess.run(["mosquitto_passwd", "-U", str(pwfile)], check=True)
        broker = start_mosquitto(
            tmp_path / "m", extra_conf=f"allow_anonymous false\npassword_file {pwfile}\n"
        )
        try:
            settings = BrokerSettings(port=broker.port, client_id="x", username="sensord")
            src = MqttSource(settings, SecretStr("wrong"), Metrics(), BatchSettings())
            with pytest.raises(ConnectRefused, match=r"bad username or password|not authorised"):
                asyncio.run(src._connect())
        finally:
            broker.stop()

    def test_publish_with_bounded_inflight(self, mosquitto: MosquittoServer) -> None:
        """Publishing many QoS 1 messages completes with every PUBACK received."""

        async def run() -> float:
            settings = BrokerSettings(port=mosquitto.port, client_id="pub", subscriptions=())
            pub = MqttSource(settings, None, Metrics(), BatchSettings())
            t = time.monotonic()

            async def inner() -> None:
                await asyncio.gather(*(pub.publish(f"x/{i}", b"p") for i in range(5000)))

            await with_source(pub, inner())
            return time.monotonic() - t

        assert asyncio.run(run()) < 30
