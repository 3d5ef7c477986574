"""MQTT client benchmark: which client can feed sensord's pipeline fastest?

The same backlog of N mixed six-family messages is queued for one persistent session
per client, then each client drains it, doing only what the daemon needs of a client:
receive every message and acknowledge it (QoS 1 acknowledgement under the caller's
control where the library allows it). The C client `mosquitto_sub` is the baseline,
measured in the same run.

    .venv/bin/pip install -e '.[bench]'     # gmqtt and paho-mqtt, used only here
    .venv/bin/python bench/clients.py [--messages 100000]

Candidates: sensord's own asyncio MQTT 3.1.1 client (batched PUBACKs, no per-message
callback), gmqtt (asyncio, acknowledges when its on_message returns), paho-mqtt 2.x with
manual_ack (threaded network loop, one callback per message).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmqtt
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from _backlog import TOPIC, broker, create_session, drain_mosquitto_sub, messages, publish_backlog, scenario
from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord.ingest import MqttSource

TIMEOUT_S = 600.0


def drain_own(port: int, client_id: str, qos: int, n: int) -> float:
    """sensord's client: batches of raw messages, one ack call per batch."""
    settings = BrokerSettings(port=port, client_id=client_id, qos=qos)  # type: ignore[arg-type]
    source = MqttSource(settings, None, Metrics(), BatchSettings(max_size=5000, max_wait_ms=5))

    async def go() -> float:
        runner = asyncio.create_task(source.run())
        t = time.perf_counter()
        done = 0
        async for batch in source.batches():
            source.ack([m.token for m in batch if m.token is not None])  # QoS 0 has none
            done += len(batch)
            if done >= n:
                break
        elapsed = time.perf_counter() - t
        await source.aclose()
        runner.cancel()
        return elapsed

    return asyncio.run(go())


def drain_gmqtt(port: int, client_id: str, qos: int, n: int) -> float:
    """gmqtt: it sends PUBACK once on_message returns; it cannot defer it to a batch commit."""

    async def go() -> float:
        done = asyncio.Event()
        count = 0

        def on_message(_c: Any, _topic: str, _payload: bytes, _qos: int, _props: Any) -> int:
            nonlocal count
            count += 1
            if count >= n:
                done.set()
            return 0

        client = gmqtt.Client(client_id, clean_session=False)
        client.on_message = on_message
        t = time.perf_counter()
        await client.connect("127.0.0.1", port, version=gmqtt.constants.MQTTv311)
        client.subscribe(TOPIC, qos=qos)
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
        elapsed = time.perf_counter() - t
        await client.disconnect()
        return elapsed

    logging.getLogger("gmqtt").setLevel(logging.ERROR)
    return asyncio.run(go())


def drain_paho(port: int, client_id: str, qos: int, n: int) -> float:
    """paho-mqtt 2.x, manual_ack so the caller decides when PUBACK goes out."""
    done = threading.Event()
    count = 0
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True
    )

    def on_message(c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        nonlocal count
        if msg.qos:
            c.ack(msg.mid, msg.qos)
        count += 1
        if count >= n:
            done.set()

    def on_connect(c: paho.Client, *_a: Any) -> None:
        c.subscribe(TOPIC, qos=qos)

    client.on_message = on_message
    client.on_connect = on_connect
    t = time.perf_counter()
    client.connect("127.0.0.1", port)
    client.loop_start()
    finished = done.wait(TIMEOUT_S)
    elapsed = time.perf_counter() - t
    client.disconnect()
    client.loop_stop()
    if not finished:
        raise TimeoutError(f"paho drained {count} of {n}")
    return elapsed


CLIENTS: dict[str, Callable[[int, str, int, int], float]] = {
    "mosquitto_sub (C)": drain_mosquitto_sub,
    "sensord client": drain_own,
    "gmqtt": drain_gmqtt,
    "paho-mqtt": drain_paho,
}


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=100_000)
    n = ap.parse_args().messages
    msgs = messages(scenario(), n, start_ts=time.time() - 86400)
    print(f"backlog: {n} messages per client and QoS")
    results: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory(prefix="sensord-bench-") as d:
        server = broker(Path(d) / "mosquitto")
        try:
            for qos in (0, 1):
                ids = {name: f"bench-{i}-q{qos}" for i, name in enumerate(CLIENTS)}
                for cid in ids.values():
                    create_session(server.port, cid, qos)
                publish_backlog(server.port, msgs, qos)  # queued once for every session
                for name, drain in CLIENTS.items():
                    results[name, qos] = n / drain(server.port, ids[name], qos, n)
        finally:
            server.stop()
    base = next(iter(CLIENTS))
    print(f"{'client':<20}{'QoS 0 msg/s':>14}{'ratio':>8}{'QoS 1 msg/s':>14}{'ratio':>8}")
    for name in CLIENTS:
        q0, q1 = results[name, 0], results[name, 1]
        r0, r1 = q0 / results[base, 0], q1 / results[base, 1]
        print(f"{name:<20}{q0:>14,.0f}{r0:>8.2f}{q1:>14,.0f}{r1:>8.2f}")


if __name__ == "__main__":
    main()
