"""Shared by the drain benchmarks: a private broker, a generated backlog queued for a
persistent session, and a timer around `mosquitto_sub` as the C baseline."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord._types import Family
from sensord.ingest import MqttSource
from sensord.simulate import Scenario, generate, registry_for
from sensord.testing import MosquittoServer, start_mosquitto

TOPIC = "sensord/+/+/+/+"
# queue_qos0_messages: without it Mosquitto keeps no QoS 0 messages for an offline
# persistent session, and there would be no QoS 0 backlog to drain.
BENCH_CONF = "queue_qos0_messages true\nmax_queued_bytes 0\nmessage_size_limit 0\n"


REPORT_INTERVAL_S = 10


def scenario(
    devices_per_family: int = 2000,
    *,
    messages: int | None = None,
    incidents: bool = True,
    communities: int = 4,
) -> Scenario:
    """A large neighbourhood; the first messages of it make up the backlog. A few
    incidents make the rules fire as they would on a real day (`incidents=False`: none,
    for a backlog whose alerts are shaped afterwards). With `messages`, the scenario lasts
    just long enough to hold that many: generating a whole day of 12,000 devices to keep
    its first 200,000 messages takes minutes. `communities`: how many (c0, c1, …) the
    devices are spread over, two grids each."""
    kinds = [
        ("bin_overflow", "bin"),
        ("sos", "wb"),
        ("fall", "wb"),
        ("high_heart_rate", "wb"),
        ("smoke", "fire"),
        ("trapped_lift", "lift"),
        ("charger_ground_fault", "ev"),
        ("water_tds_high", "water"),
    ]
    width = len(str(devices_per_family))  # device ids are zero-padded to the fleet size
    planned = [
        {"at_s": 5 + 7 * i, "kind": k, "device": f"{prefix}-{10 + i:0{width}d}", "duration_s": 60}
        for i, (k, prefix) in enumerate(kinds * 4)
    ]
    duration = 86400.0
    if messages is not None:
        per_s = len(Family) * devices_per_family / REPORT_INTERVAL_S
        duration = min(duration, messages / per_s * 1.05 + 2 * REPORT_INTERVAL_S)
    return Scenario.model_validate(
        {
            "name": "bench",
            "duration_s": duration,
            "report_interval_s": REPORT_INTERVAL_S,
            "communities": [{"name": f"c{i}", "grids": ["g1", "g2"]} for i in range(communities)],
            "devices": dict.fromkeys((f.value for f in Family), devices_per_family),
            "incidents": planned if incidents else [],
        }
    )


def messages(sc: Scenario, n: int, start_ts: float) -> list[tuple[str, bytes]]:
    """The first n messages of the scenario: mixed six-family JSON of ~150 bytes."""
    return [(t, p) for _, t, p, _ in itertools.islice(generate(sc, seed=1, start_ts=start_ts), n)]


def registry_doc(sc: Scenario) -> dict[str, Any]:
    return registry_for(sc)


def broker(workdir: Path) -> MosquittoServer:
    return start_mosquitto(workdir, extra_conf=BENCH_CONF)


def create_session(port: int, client_id: str, qos: int) -> None:
    """Subscribe once with a persistent session and leave: the broker now queues for us."""
    subprocess.run(
        ["mosquitto_sub", "-p", str(port), "-i", client_id, "-c", "-q", str(qos), "-t", TOPIC, "-E"],
        check=True,
        timeout=30,
    )


def publish_backlog(port: int, msgs: list[tuple[str, bytes]], qos: int) -> float:
    """Publish the backlog (bounded in flight); returns seconds taken."""

    async def go() -> None:
        settings = BrokerSettings(port=port, client_id=f"bench-pub-{time.monotonic_ns()}", subscriptions=())
        pub = MqttSource(settings, None, Metrics(), BatchSettings())
        runner = asyncio.create_task(pub.run())
        await asyncio.wait_for(pub.connected.wait(), 10)
        chunk = 2000
        for i in range(0, len(msgs), chunk):
            await asyncio.gather(*(pub.publish(t, p, qos) for t, p in msgs[i : i + chunk]))
        if qos == 0:
            # QoS 0 has no acknowledgement: one QoS 1 message after the backlog, on a topic
            # no client takes, is acknowledged only once the broker has read (and queued)
            # everything before it. Closing at once could leave part of the backlog in
            # flight while the first client connects and drains, a client short of it.
            await pub.publish("sensord-bench/fence", b"", 1)
        await pub.aclose()
        runner.cancel()

    t = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t


def drain_mosquitto_sub(port: int, client_id: str, qos: int, n: int) -> float:
    """Time the C client draining n queued messages into /dev/null."""
    exe = shutil.which("mosquitto_sub")
    assert exe is not None, "mosquitto-clients is not installed"
    t = time.perf_counter()
    subprocess.run(
        [exe, "-p", str(port), "-i", client_id, "-c", "-q", str(qos), "-t", TOPIC, "-C", str(n)],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=600,
    )
    return time.perf_counter() - t


def drain_mosquitto_sub_first_to_last(port: int, client_id: str, qos: int, n: int, out: Path) -> float:
    """Time the C client draining n queued messages, from the first message received to
    the last: it prints each message's receive time (`-F %U`, µs) into `out`, and the
    span of the first and last line is the drain (its connect and start are not)."""
    exe = shutil.which("mosquitto_sub")
    assert exe is not None, "mosquitto-clients is not installed"
    with out.open("wb") as sink:
        subprocess.run(
            [
                exe,
                "-p",
                str(port),
                "-i",
                client_id,
                "-c",
                "-q",
                str(qos),
                "-t",
                TOPIC,
                "-C",
                str(n),
                "-F",
                "%U",
            ],
            check=True,
            stdout=sink,
            timeout=600,
        )
    lines = out.read_bytes().split()
    assert len(lines) == n, f"mosquitto_sub printed {len(lines)} of {n} receive times"
    return float(lines[-1]) - float(lines[0])
