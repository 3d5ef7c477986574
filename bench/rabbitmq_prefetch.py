"""How RabbitMQ's `mqtt.prefetch` bounds sensord's ingest.

sensord acknowledges a whole batch after its outbox commit, so the broker's window of
unacknowledged messages per client caps a batch. The MQTT plugin's default window is 10:
each batch then holds 10 messages and waits `batch.max_wait_ms` for more that cannot
come. A private RabbitMQ node (sensord.testing.RabbitMqServer) queues a backlog for a
persistent session, and sensord's client drains it (receive and acknowledge, as the
daemon's ingest does, with the default batch settings), once per prefetch value, in the
same run.

    .venv/bin/python bench/rabbitmq_prefetch.py [--messages 20000] [--prefetch 10 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord.ingest import MqttSource
from sensord.testing import RabbitMqServer, free_port

PAYLOAD = b'{"fill_pct": 81, "temp_c": 24.5, "battery_v": 3.61, "ts": 1700000000}'


def source(port: int) -> MqttSource:
    settings = BrokerSettings(
        port=port, client_id="bench-drain", subscriptions=("bench/#",), ack_topic_template=None
    )
    return MqttSource(settings, None, Metrics(), BatchSettings())


async def drain(port: int, n: int) -> tuple[float, float]:
    """Queue n messages for the session while it is away, then drain them: msg/s and
    messages per batch."""
    src = source(port)
    task = asyncio.create_task(src.run())
    await src.connected.wait()  # the session and its subscription exist from here on
    await src.aclose()
    task.cancel()
    lines = b"\n".join(PAYLOAD for _ in range(n)) + b"\n"
    cmd = ["mosquitto_pub", "-p", str(port), "-t", "bench/bin/1", "-q", "1", "-l"]
    subprocess.run(cmd, input=lines, check=True, timeout=600)  # noqa: ASYNC221 - nothing else runs meanwhile
    src = source(port)
    task = asyncio.create_task(src.run())
    got = batches = 0
    start = time.perf_counter()
    async for batch in src.batches():
        got += len(batch)
        batches += 1
        src.ack([m.token for m in batch if m.token is not None])
        if got >= n:
            break
    elapsed = time.perf_counter() - start
    await src.aclose()
    task.cancel()
    return n / elapsed, got / batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--prefetch", type=int, nargs="+", default=[10, 20_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = RabbitMqServer(Path(tmp) / "rabbitmq", free_port())
        try:
            print(f"RabbitMQ {node.start().version()}, {args.messages:,} messages queued, then drained")
            for prefetch in args.prefetch:
                node.extra_conf = f"mqtt.prefetch = {prefetch}"
                node.restart()
                rate, per_batch = asyncio.run(drain(node.port, args.messages))
                print(f"mqtt.prefetch {prefetch:>6}: {rate:9,.0f} msg/s, {per_batch:7,.0f} per batch")
        finally:
            node.close()


if __name__ == "__main__":
    main()
