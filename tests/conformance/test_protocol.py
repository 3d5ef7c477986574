"""Protocol corners against real brokers: a QoS 2 subscription inherited from another
tool, a SUBACK that refuses or downgrades, a packet over our cap, TLS (good CA, wrong
CA, plain port) and bad credentials."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from pathlib import Path

import pytest

from sensord._errors import IngestError
from sensord._settings import TlsSettings
from sensord._types import RawMessage
from sensord.ingest import MqttSource
from sensord.testing import start_nats
from tests.conformance.conftest import (
    BROKERS,
    Broker,
    SharedRabbit,
    make_certs,
    make_source,
    mosquitto_broker,
    payloads,
    running,
    take,
)

pytestmark = pytest.mark.integration


def sub_once(port: int, *args: str) -> str:
    """Another MQTT tool (mosquitto_sub) connecting briefly with the given options; its
    debug output."""
    done = subprocess.run(
        ["mosquitto_sub", "-p", str(port), *args, "-W", "1", "-d"],
        check=False,
        timeout=20,
        capture_output=True,
        text=True,
    )
    return done.stdout


# The QoS each broker grants a QoS 2 subscription. nats-server and RabbitMQ 3.10 support
# QoS 0 and 1 only and document a QoS 2 subscription as downgraded to QoS 1.
QOS2_GRANTED = {"mosquitto": 2, "nats": 1, "rabbitmq": 1}


class TestQos2:
    def test_inherited_qos2_subscription_is_received_once(self, broker: Broker) -> None:
        """Another tool left a QoS 2 subscription in our persistent session (same client
        id). Mosquitto grants it: the QoS 2 messages queued for it are each processed
        once, answered with PUBREC/PUBCOMP. nats-server and RabbitMQ grant QoS 1: the
        messages come at QoS 1, each processed once. On all three the connection stays
        up (no protocol-error loop)."""
        session = broker.client_id("sensord-conf")
        out = sub_once(broker.port, "-i", session, "-c", "-q", "2", "-t", broker.topic("conf/#"))
        assert f"Subscribed (mid: 1): {QOS2_GRANTED[broker.name]}" in out
        # Neither takes a QoS 2 PUBLISH either (nats-server closes the connection on one).
        broker.publish("conf/q2", payloads(3), qos=2 if broker.name == "mosquitto" else 1)

        async def body() -> tuple[int, list[bytes]]:
            src = broker.source()
            async with running(src):
                got = await take(src, 3)
                await asyncio.sleep(1)  # a redelivery loop would show here
                got += [m for batch in _drain(src) for m in batch]
                return src._generation, [m.payload for m in got]

        generation, got = asyncio.run(body())
        assert generation == 1
        assert got == payloads(3)


def _drain(src: MqttSource) -> list[list[RawMessage]]:
    """Whatever arrived after the expected messages (a redelivery loop would)."""
    q = src._queue
    out = [list(q)]
    q.clear()
    return out


class TestSuback:
    def test_downgraded_subscription_is_reported(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A broker that grants QoS 0 for our QoS 1 filter (max_qos 0) is reported at
        ERROR (at-least-once is gone), and messages still flow."""
        broker = mosquitto_broker(tmp_path / "m", "max_qos 0")
        try:

            async def body() -> set[bytes]:
                src = make_source(broker.port)
                async with running(src):
                    await asyncio.to_thread(broker.publish, "conf/a", payloads(10), qos=0)
                    return {m.payload for m in await take(src, 10)}

            with caplog.at_level(logging.ERROR, "sensord.ingest"):
                got = asyncio.run(body())
        finally:
            broker.server.stop()
        assert got == set(payloads(10))
        assert any("lower QoS than asked" in r.getMessage() for r in caplog.records)


class TestOversized:
    def test_packet_over_the_cap_keeps_its_start_and_the_stream_goes_on(self, broker: Broker) -> None:
        """A 40 KB PUBLISH with a 16 KB cap arrives cut to 16 KB (for a too_large
        reject), is counted, and the connection carries on with the next message."""

        async def body() -> tuple[list[tuple[str, int]], float, int]:
            src = broker.source(max_packet_bytes=16_384)
            async with running(src):
                await asyncio.to_thread(broker.publish, "conf/big", [b"x" * 40_000])
                await asyncio.to_thread(broker.publish, "conf/small", [b"{}"])
                got = await take(src, 2)
                oversized = src._metrics.oversized_packets._value.get()
                return [(m.topic, len(m.payload)) for m in got], oversized, src._generation

        got, oversized, generation = asyncio.run(body())
        assert got == [(broker.topic("conf/big"), 16_384), (broker.topic("conf/small"), 2)]
        assert oversized == 1
        assert generation == 1


@pytest.fixture(params=BROKERS)
def tls_broker(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """A broker with a TLS listener (port) beside its plain one (plain_port)."""
    if request.param == "rabbitmq":
        shared: SharedRabbit = request.getfixturevalue("rabbitmq")
        yield shared.certs, shared.node.tls_port, shared.node.port
        return
    c = make_certs(tmp_path / "certs")
    if request.param == "mosquitto":
        from sensord.testing import free_port  # noqa: PLC0415

        tls_port = free_port()
        b = mosquitto_broker(
            tmp_path / "m",
            f"listener {tls_port} 127.0.0.1\ncafile {c['ca']}\ncertfile {c['server']}\nkeyfile {c['key']}\n",
        )
        yield c, tls_port, b.port
        b.server.stop()
    else:
        n = start_nats(
            tmp_path / "n", mqtt_conf=f'  tls {{ cert_file: "{c["server"]}", key_file: "{c["key"]}" }}'
        )
        yield c, n.port, None
        n.stop()


class TestTls:
    def test_good_ca_connects(self, tls_broker: tuple[dict[str, Path], int, int | None]) -> None:
        """With the CA that signed the broker's certificate, the client connects over TLS."""
        certs, port, _ = tls_broker

        async def body() -> bool:
            src = make_source(port, tls=TlsSettings(ca_file=certs["ca"]))
            async with running(src):
                return src.connected.is_set()

        assert asyncio.run(body())

    def test_wrong_ca_says_what_to_check(self, tls_broker: tuple[dict[str, Path], int, int | None]) -> None:
        """With an unrelated CA the connection fails with a reason naming ca_file."""
        certs, port, _ = tls_broker

        async def body() -> str:
            src = make_source(port, tls=TlsSettings(ca_file=certs["other-ca"]))
            try:
                await src._connect()
            except IngestError as exc:
                return str(exc)
            return "connected"

        assert "broker.tls.ca_file" in asyncio.run(body())

    def test_tls_to_a_plain_port_says_so(self, tls_broker: tuple[dict[str, Path], int, int | None]) -> None:
        """TLS against the plain listener fails with 'the port may not speak TLS'."""
        certs, _, plain = tls_broker
        if plain is None:
            pytest.skip("nats-server's MQTT listener is either TLS or plain")

        async def body() -> str:
            src = make_source(plain, tls=TlsSettings(ca_file=certs["ca"]))
            try:
                await src._connect()
            except (IngestError, OSError) as exc:
                return str(exc)
            return "connected"

        assert "may not speak TLS" in asyncio.run(body())
