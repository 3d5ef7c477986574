"""Generate a scenario's traffic (deterministic for a seed) and publish it to a broker."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import orjson

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord._types import Family
from sensord.simulate._devices import MODELS, PREFIX, Model, State
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
            width = 2 if count < 100 else len(str(count))
            out.append(
                SimDevice(
                    f"{PREFIX[family]}-{i + 1:0{width}d}",
                    family,
                    community.name,
                    grid,
                    building,
                    (i * 0.37) % 1,
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


def _hour(ts: float) -> float:
    """Hour of day (UTC) of an epoch time, as a float."""
    return (ts % 86400) / 3600


def _targets(scenario: Scenario, devs: list[SimDevice]) -> dict[str, list[tuple[float, float, str]]]:
    """Per device: the (start, end, kind) of every incident that touches it."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    for inc in scenario.incidents:
        t0 = scenario.incident_offset(inc)
        for d in devs:
            hit = d.device_id == inc.device or (
                inc.community == d.community and inc.building in (None, d.building)
            )
            if hit:
                out.setdefault(d.device_id, []).append((t0, t0 + inc.duration_s, inc.kind))
    return out


def _dropouts(
    scenario: Scenario, devs: list[SimDevice], rng: random.Random
) -> dict[str, tuple[float, float]]:
    n = round(scenario.noise.dropout_rate * len(devs))
    chosen = rng.sample(devs, n) if n else []
    span = max(scenario.duration_s - scenario.noise.dropout_s, 0.0)
    return {d.device_id: (t0, t0 + scenario.noise.dropout_s) for d in chosen for t0 in [rng.uniform(0, span)]}


def _extras(scenario: Scenario, devs: list[SimDevice], start_ts: float) -> list[Message]:
    """Malformed payloads and messages from unregistered devices, spread over the run."""
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
    return extras


def generate(scenario: Scenario, *, seed: int, start_ts: float) -> Iterator[Message]:
    """(receive time, topic, payload, qos) in receive-time order; the same seed gives the
    same stream. The payload's `ts` is the reading's event time: a message delayed by
    the out-of-order noise arrives after younger ones."""
    rng = random.Random(seed)  # noqa: S311 - simulation, not crypto
    devs = devices(scenario)
    incidents = _targets(scenario, devs)
    dropouts = _dropouts(scenario, devs, rng)
    # Everything per device that does not change, looked up once (this loop runs millions of times).
    fixed: list[
        tuple[float, str, int, Model, Sequence[tuple[float, float, str]], tuple[float, float] | None, State]
    ]
    fixed = [
        (
            scenario.interval(d.family),
            _topic(d),
            scenario.qos_by_family.get(d.family, scenario.qos),
            MODELS[d.family],
            incidents.get(d.device_id, ()),
            dropouts.get(d.device_id),
            {},
        )
        for d in devs
    ]
    heap: list[tuple[float, int]] = [(rng.uniform(0, f[0]), i) for i, f in enumerate(fixed)]
    heapq.heapify(heap)
    # Messages waiting to be sent later (extras, delayed): (receive time, seq, message).
    later: list[tuple[float, int, Message]] = [
        (m[0], n, m) for n, m in enumerate(_extras(scenario, devs, start_ts))
    ]
    heapq.heapify(later)
    seq = len(later)
    noise = scenario.noise
    duration = scenario.duration_s
    uniform, random_ = rng.uniform, rng.random
    while heap:
        t, i = heapq.heappop(heap)
        if t > duration:
            continue
        now = start_ts + t
        while later and later[0][0] <= now:
            yield heapq.heappop(later)[2]
        step, topic, qos, model, touching, gone, st = fixed[i]
        heapq.heappush(heap, (t + step * uniform(0.9, 1.1), i))
        active = {k for t0, t1, k in touching if t0 <= t < t1} if touching else set()
        if "gateway_silent" in active or (gone is not None and gone[0] <= t < gone[1]):
            continue
        payload = model(rng, t, (now % 86400) / 3600, st, active)
        payload["ts"] = round(now, 3)
        msg: Message = (now, topic, orjson.dumps(payload), qos)
        if noise.out_of_order_rate and random_() < noise.out_of_order_rate:
            delay = step * uniform(1.2, 2.0)
            heapq.heappush(later, (now + delay, seq, (now + delay, *msg[1:])))
            seq += 1
            continue
        yield msg
        if noise.duplicate_rate and random_() < noise.duplicate_rate:
            yield msg
    while later:
        yield heapq.heappop(later)[2]


async def publish(  # noqa: C901, PLR0913 - a field tester's knobs
    scenario: Scenario,
    *,
    host: str,
    port: int,
    speed: float | None,
    seed: int,
    max_inflight: int = 1000,
    start_ts: float | None = None,
    on_message: Callable[[Message], None] | None = None,
    progress: bool = False,
) -> int:
    """Publish the scenario, paced so event time runs `speed` times the wall clock.

    By default the stream's event time ends at "now", so no reading is from the future.
    At most `max_inflight` QoS 1 messages are unacknowledged at once.
    """
    from sensord.ingest import MqttSource  # noqa: PLC0415 - avoids a cycle at import time
    from sensord.replay import Progress  # noqa: PLC0415 - avoids a cycle at import time

    wall0 = time.time()
    show = Progress("published") if progress else None
    if start_ts is not None:
        start = start_ts
    elif scenario.start is not None:
        start = start_time(scenario)
    else:  # the stream's event time ends at "now" (at real speed: runs from now on)
        start = wall0 - scenario.duration_s + scenario.duration_s / (speed or math.inf)
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
            if speed:
                delay = wall0 + (msg[0] - start) / speed - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await inflight.acquire()
            task = asyncio.create_task(send(msg[1], msg[2], msg[3]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            count += 1
            if show is not None:
                show.add()
            if on_message is not None:
                on_message(msg)
        if pending:
            await asyncio.gather(*pending)
    finally:
        await client.aclose()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        if show is not None:
            show.done()
    return count


def start_time(scenario: Scenario, default: float | None = None) -> float:
    """Event time of the scenario's start: its `start`, else `default`, else such that
    the stream ends now."""
    if scenario.start is not None:
        start = scenario.start if scenario.start.tzinfo else scenario.start.replace(tzinfo=UTC)
        return start.timestamp()
    return default if default is not None else time.time() - scenario.duration_s
