"""Generate a scenario's traffic (deterministic for a seed) and publish it to a broker."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord._types import Family
from sensord.simulate._devices import PREFIX, reading
from sensord.simulate._scenario import Scenario


@dataclass(frozen=True, slots=True)
class SimDevice:
    """One simulated device and where it is registered."""

    device_id: str
    family: Family
    community: str
    grid: str
    building: str
    phase: float


def devices(scenario: Scenario) -> list[SimDevice]:
    """The scenario's devices, spread over its communities, grids and buildings."""
    out: list[SimDevice] = []
    places = [(c, g) for c in scenario.communities for g in c.grids]
    for family, count in scenario.devices.items():
        for i in range(count):
            community, grid = places[i % len(places)]
            building = str(1 + (i // len(places)) % max(1, community.buildings))
            out.append(
                SimDevice(
                    f"{PREFIX[family]}-{i + 1:02d}", family, community.name, grid, building, (i * 0.37) % 1
                )
            )
    return out


def registry_for(scenario: Scenario) -> dict[str, Any]:
    """A device-registry document for the scenario (the format of config/devices.yaml)."""
    reg: dict[str, Any] = {}
    for d in devices(scenario):
        entry: dict[str, Any] = {
            "family": d.family.value,
            "community": d.community,
            "grid": d.grid,
            "building": d.building,
        }
        if d.device_id in scenario.overrides:
            entry["params"] = dict(scenario.overrides[d.device_id])
        reg[d.device_id] = entry
    return {"devices": reg}


Message = tuple[float, str, bytes, int]

_MALFORMED: list[tuple[Family, bytes]] = [
    (Family.WRISTBAND, b'{"heart_rate": 900}'),
    (Family.BIN, b'{"fill_pct": "full"}'),
    (Family.BIN, b"{not json at all"),
    (Family.WRISTBAND, b'{"heart_rate": NaN}'),
    (Family.LIFT, b'{"state": "flying"}'),
    (Family.WATER, b'{"tank_pct": 50}'),
]


def _topic(d: SimDevice, kind: str = "telemetry") -> str:
    return f"sensord/{d.community}/{d.family.value}/{d.device_id}/{kind}"


def generate(scenario: Scenario, *, seed: int, start_ts: float) -> Iterator[Message]:
    """(event_time, topic, payload, qos) in time order; the same seed gives the same stream."""
    rng = random.Random(seed)  # noqa: S311 - simulation, not crypto
    devs = devices(scenario)
    by_id = {d.device_id: d for d in devs}
    step = scenario.report_interval_s
    heap: list[tuple[float, int, str]] = [(rng.uniform(0, step), i, d.device_id) for i, d in enumerate(devs)]
    heapq.heapify(heap)
    extras: list[Message] = []
    for n in range(scenario.malformed):
        family, body = _MALFORMED[n % len(_MALFORMED)]
        target = next((d for d in devs if d.family is family), None)
        if target is not None:
            at = scenario.duration_s * (n + 1) / (scenario.malformed + 1)
            extras.append((start_ts + at, _topic(target), body, scenario.qos))
    for n in range(scenario.unknown_devices):
        at = scenario.duration_s * (n + 0.5) / max(1, scenario.unknown_devices)
        body = orjson.dumps({"fill_pct": 10.0, "ts": start_ts + at})
        extras.append((start_ts + at, f"sensord/unregistered/bin/bin-9{n:03d}/telemetry", body, scenario.qos))
    extras.sort()
    ei = 0
    while heap:
        t, i, device_id = heapq.heappop(heap)
        if t > scenario.duration_s:
            continue
        while ei < len(extras) and extras[ei][0] <= start_ts + t:
            yield extras[ei]
            ei += 1
        d = by_id[device_id]
        active: set[str] = {
            x.kind
            for x in scenario.incidents
            if x.device == device_id and x.at_s <= t < x.at_s + x.duration_s
        }
        payload = reading(d.family, rng, t, d.phase, active)
        payload["ts"] = round(start_ts + t, 3)
        yield (start_ts + t, _topic(d), orjson.dumps(payload), scenario.qos)
        heapq.heappush(heap, (t + step * rng.uniform(0.9, 1.1), i, device_id))
    yield from extras[ei:]


async def publish(  # noqa: PLR0913 - a field tester's knobs
    scenario: Scenario,
    *,
    host: str,
    port: int,
    speed: float,
    seed: int,
    max_inflight: int = 1000,
    start_ts: float | None = None,
    on_message: Callable[[Message], None] | None = None,
) -> int:
    """Publish the scenario, paced so event time runs `speed` times the wall clock.

    By default the stream's event time ends at "now", so no reading is from the future.
    At most `max_inflight` QoS 1 messages are unacknowledged at once.
    """
    from sensord.ingest import MqttSource  # noqa: PLC0415 - avoids a cycle at import time

    wall0 = time.time()
    start = start_ts if start_ts is not None else wall0 - scenario.duration_s + scenario.duration_s / speed
    client_id = f"sensord-sim-{seed}-{int(wall0)}"
    settings = BrokerSettings(host=host, port=port, client_id=client_id, subscriptions=())
    client = MqttSource(settings, None, Metrics(), BatchSettings())
    runner = asyncio.create_task(client.run(), name="sim-mqtt")
    inflight = asyncio.Semaphore(max_inflight)
    pending: set[asyncio.Task[None]] = set()

    async def send(topic: str, payload: bytes, qos: int) -> None:
        try:
            await client.publish(topic, payload, qos)
        finally:
            inflight.release()

    count = 0
    try:
        await asyncio.wait_for(client.connected.wait(), 10)
        for msg in generate(scenario, seed=seed, start_ts=start):
            delay = wall0 + (msg[0] - start) / speed - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await inflight.acquire()
            task = asyncio.create_task(send(msg[1], msg[2], msg[3]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            count += 1
            if on_message is not None:
                on_message(msg)
        if pending:
            await asyncio.gather(*pending)
    finally:
        await client.aclose()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return count
