"""Broker failover against real brokers: two private Mosquittos as `broker.hosts`, one
stopped while sensord's MQTT source is connected to it."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerHost, BrokerSettings, ReconnectSettings, TlsSettings
from sensord.ingest import MqttSource
from sensord.testing import MosquittoServer, free_port, start_mosquitto

pytestmark = pytest.mark.integration


def _source(nodes: list[BrokerHost], tls: TlsSettings | None = None) -> tuple[MqttSource, Metrics]:
    metrics = Metrics()
    settings = BrokerSettings(
        hosts=tuple(nodes),
        client_id="sensord-failover",
        subscriptions=("fo/#",),
        ack_topic_template=None,
        keepalive_s=5,
        tls=tls,
        reconnect=ReconnectSettings(initial_s=0.1, max_s=0.5),
    )
    return MqttSource(settings, None, metrics, BatchSettings(max_wait_ms=5)), metrics


@contextlib.asynccontextmanager
async def _running(src: MqttSource) -> AsyncIterator[None]:
    task = asyncio.create_task(src.run())
    try:
        async with asyncio.timeout(20):
            await src.connected.wait()
        yield
    finally:
        await src.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _publish(port: int, payload: str, *, tls: list[str] | None = None) -> None:
    subprocess.run(
        ["mosquitto_pub", "-p", str(port), "-t", "fo/x", "-q", "1", "-m", payload, *(tls or [])],
        check=True,
        timeout=20,
    )


async def _wait_reconnected(src: MqttSource, away_from: int) -> None:
    def moved() -> bool:
        return src.connected.is_set() and src.node is not None and src.node.port != away_from

    async with asyncio.timeout(20):
        while not moved():  # noqa: ASYNC110 - polling the state of the code under test
            await asyncio.sleep(0.05)


async def _first_message(src: MqttSource) -> bytes:
    async with asyncio.timeout(20):
        async for batch in src.batches():
            src.ack([m.token for m in batch if m.token is not None])
            return batch[0].payload
    raise AssertionError("no batch")


def test_stopped_broker_fails_over_to_the_next_and_says_which(tmp_path: Path) -> None:
    """Connected to the first of two brokers, which then stops: the source connects to
    the second, receives what is published there, and its metrics name the node in use
    (`sensord_broker_node{broker}`) and count one failover."""
    first = start_mosquitto(tmp_path / "a")
    second = start_mosquitto(tmp_path / "b")
    nodes = [BrokerHost(host="127.0.0.1", port=first.port), BrokerHost(host="127.0.0.1", port=second.port)]

    async def body() -> tuple[bytes, Metrics, str | None]:
        src, metrics = _source(nodes)
        async with _running(src):
            assert src.node == nodes[0]
            await asyncio.to_thread(first.stop)
            await _wait_reconnected(src, first.port)
            await asyncio.to_thread(_publish, second.port, "after-failover")
            got = await _first_message(src)
            return got, metrics, src.node.label if src.node else None

    try:
        got, metrics, label = asyncio.run(body())
    finally:
        first.stop()
        second.stop()
    assert got == b"after-failover"
    assert label == f"127.0.0.1:{second.port}"
    r = metrics.registry
    assert r.get_sample_value("sensord_broker_node", {"broker": f"127.0.0.1:{second.port}"}) == 1
    assert r.get_sample_value("sensord_broker_node", {"broker": f"127.0.0.1:{first.port}"}) == 0
    assert r.get_sample_value("sensord_broker_failovers_total") == 1


def _certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for the DNS name `name` only (not for 127.0.0.1)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-days", "2", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _tls_mosquitto(work: Path, cert: Path, key: Path) -> tuple[MosquittoServer, int]:
    port = free_port()
    conf = f"listener {port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
    return start_mosquitto(work, extra_conf=conf), port


def test_tls_server_name_is_checked_per_node(tmp_path: Path) -> None:
    """Two TLS brokers reached by address, whose certificates carry different names
    (`tls_server_name` per node): the source connects to the first, and after it stops,
    to the second, each certificate checked against its own node's name."""
    a_cert, a_key = _certificate(tmp_path / "certs", "node-a.test")
    b_cert, b_key = _certificate(tmp_path / "certs", "node-b.test")
    trust = tmp_path / "certs" / "trust.pem"
    trust.write_text(a_cert.read_text() + b_cert.read_text())
    first, a_port = _tls_mosquitto(tmp_path / "a", a_cert, a_key)
    second, b_port = _tls_mosquitto(tmp_path / "b", b_cert, b_key)
    nodes = [
        BrokerHost(host="127.0.0.1", port=a_port, tls_server_name="node-a.test"),
        BrokerHost(host="127.0.0.1", port=b_port, tls_server_name="node-b.test"),
    ]

    async def body() -> bytes:
        src, _ = _source(nodes, TlsSettings(ca_file=trust))
        async with _running(src):
            await asyncio.to_thread(first.stop)
            await _wait_reconnected(src, a_port)
            await asyncio.to_thread(_publish, second.port, "over-tls")
            return await _first_message(src)

    try:
        assert asyncio.run(body()) == b"over-tls"
    finally:
        first.stop()
        second.stop()
