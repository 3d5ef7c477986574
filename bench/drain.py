"""Drain benchmark: a backlog of N mixed six-family messages queued for a persistent
session, drained by sensord's whole pipeline (decode → default rules → outbox commit →
acknowledgement) and, in the same run, by the C client `mosquitto_sub` as the baseline.

    .venv/bin/python bench/drain.py [--messages 200000]

Prints msg/s for QoS 0 and QoS 1 and the ratio to mosquitto_sub.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _backlog import (
    broker,
    create_session,
    drain_mosquitto_sub,
    messages,
    publish_backlog,
    registry_doc,
    scenario,
)
from sensord._metrics import Metrics
from sensord._pipeline import Pipeline, commit
from sensord._registry import parse_registry
from sensord._settings import AlertSettings, BatchSettings, BrokerSettings, DecodeSettings, OutboxSettings
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.ingest import MqttSource
from sensord.outbox import Outbox
from sensord.rules import load_rules
from sensord.sinks import DeadLetter

ROOT = Path(__file__).resolve().parent.parent
TOPIC_TEMPLATE = "sensord/{community}/{family}/{device_id}/{kind}"


@dataclass(frozen=True)
class Session:
    port: int
    client_id: str
    qos: int


def drain_sensord(session: Session, n: int, work: Path, registry: dict[str, Any]) -> tuple[float, int, int]:
    """sensord's pipeline, as the daemon runs it, until n messages are acknowledged."""
    port, client_id, qos = session.port, session.client_id, session.qos
    reg = parse_registry(registry, source="bench")
    metrics = Metrics()
    pipeline = Pipeline(
        decoder=Decoder(reg, DecodeSettings(max_clock_skew_s=0), TOPIC_TEMPLATE),
        engine=Engine(load_rules(ROOT / "rules", reg), reg, AlertSettings()),
        ack_topic_template=BrokerSettings().ack_topic_template,
        deadletter=DeadLetter(work / f"dl-{client_id}.jsonl"),
        metrics=metrics,
    )
    outbox = Outbox(work / f"outbox-{client_id}.sqlite3", ["webhook"], OutboxSettings(), metrics)
    settings = BrokerSettings(port=port, client_id=client_id, qos=qos)  # type: ignore[arg-type]
    source = MqttSource(settings, None, metrics, BatchSettings(max_size=5000, max_wait_ms=5))
    events = accepted = 0

    async def go() -> float:
        nonlocal events, accepted
        runner = asyncio.create_task(source.run())
        t = time.perf_counter()
        done = 0
        async for batch in source.batches():
            ev = pipeline.evaluate(batch)
            commit(outbox, ev)
            source.ack(ev.tokens)
            events += len(ev.events)
            accepted += ev.accepted
            done += len(batch)
            if done >= n:
                break
        elapsed = time.perf_counter() - t
        await source.aclose()
        runner.cancel()
        return elapsed

    elapsed = asyncio.run(go())
    outbox.close()
    return elapsed, events, accepted


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=200_000)
    args = ap.parse_args()
    n = args.messages
    sc = scenario()
    msgs = messages(sc, n, start_ts=time.time() - 86400)
    size = sum(len(p) for _, p in msgs) / len(msgs)
    devices = sum(sc.devices.values())
    print(f"backlog: {n} messages, mean payload {size:.0f} bytes, {devices} devices, six families")
    with tempfile.TemporaryDirectory(prefix="sensord-bench-") as d:
        work = Path(d)
        server = broker(work / "mosquitto")
        try:
            rows = []
            for qos in (0, 1):
                for who in ("mosquitto_sub", "sensord"):
                    cid = f"{who}-q{qos}"
                    create_session(server.port, cid, qos)
                publish_backlog(server.port, msgs, qos)  # queued once for both sessions
                c_s = drain_mosquitto_sub(server.port, f"mosquitto_sub-q{qos}", qos, n)
                session = Session(server.port, f"sensord-q{qos}", qos)
                s_s, events, accepted = drain_sensord(session, n, work, registry_doc(sc))
                rows.append((qos, n / c_s, n / s_s, events, accepted))
        finally:
            server.stop()
    head = ("QoS", "mosquitto_sub msg/s", "sensord msg/s", "ratio", "accepted", "alert events")
    print(f"{head[0]:<5}{head[1]:>22}{head[2]:>16}{head[3]:>8}{head[4]:>10}{head[5]:>14}")
    for qos, c, s, events, accepted in rows:
        print(f"{qos:<5}{c:>22,.0f}{s:>16,.0f}{s / c:>8.2f}{accepted:>10}{events:>14}")


if __name__ == "__main__":
    main()
