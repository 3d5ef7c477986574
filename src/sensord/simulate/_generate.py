"""Generate a scenario's traffic (deterministic for a seed) and publish it to a broker."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from sensord._settings import BrokerSettings
from sensord._types import Family
from sensord.simulate._devices import DAY, HOUR, MODELS, PREFIX, Rows
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
FloatArr = npt.NDArray[np.float64]
IntArr = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]
_CHUNK = 65536  # messages serialised at a time

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
    scenario: Scenario, devs: list[SimDevice], g: np.random.Generator
) -> dict[str, tuple[float, float]]:
    n = round(scenario.noise.dropout_rate * len(devs))
    span = max(scenario.duration_s - scenario.noise.dropout_s, 0.0)
    chosen = g.choice(len(devs), n, replace=False) if n else np.empty(0, dtype=np.int64)
    starts = g.uniform(0, span, n)
    return {
        devs[int(k)].device_id: (float(t0), float(t0) + scenario.noise.dropout_s)
        for k, t0 in zip(chosen, starts, strict=True)
    }


@dataclass
class _Family:
    """One family's generated rows: receive times, payload columns, topics, QoS."""

    recv: FloatArr
    ts: FloatArr
    dev: IntArr
    columns: dict[str, npt.NDArray[Any]]
    topics: list[str]
    qos: int


def _family_rows(  # noqa: PLR0913, PLR0917 - the facts of one family's generation
    scenario: Scenario,
    family: Family,
    devs: list[SimDevice],
    incidents: dict[str, list[tuple[float, float, str]]],
    dropouts: dict[str, tuple[float, float]],
    g: np.random.Generator,
    start_ts: float,
) -> _Family:
    m, step, duration = len(devs), scenario.interval(family), scenario.duration_s
    k = int(duration / (step * 0.9)) + 2
    # Each device reports every step ± 10 %, from its own phase.
    gaps = g.uniform(0.9, 1.1, (m, k)) * step
    gaps[:, 0] = g.uniform(0, step, m)
    times = np.cumsum(gaps, axis=1)
    keep = times <= duration
    dev = np.repeat(np.arange(m, dtype=np.int64), keep.sum(axis=1))
    t = times[keep]
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    masks: dict[str, BoolArr] = {}
    silent = np.zeros(t.shape[0], dtype=bool)
    for d, sd in enumerate(devs):
        lo, hi = int(offsets[d]), int(offsets[d + 1])
        windows = [*incidents.get(sd.device_id, ())]
        if sd.device_id in dropouts:
            windows.append((*dropouts[sd.device_id], "gateway_silent"))
        for t0, t1, kind in windows:
            a = lo + int(np.searchsorted(t[lo:hi], t0, "left"))
            b = lo + int(np.searchsorted(t[lo:hi], t1, "left"))
            target = (
                silent
                if kind == "gateway_silent"
                else masks.setdefault(kind, np.zeros(t.shape[0], dtype=bool))
            )
            target[a:b] = True
    if silent.any():
        dev, t = dev[~silent], t[~silent]
        masks = {kind: mask[~silent] for kind, mask in masks.items()}
    abs_t = start_ts + t
    rows = Rows(dev, t, abs_t, (abs_t % DAY) / HOUR, masks, m)
    columns = {
        name: np.asarray(col, dtype=object) if isinstance(col, list) else col
        for name, col in MODELS[family](rows, g).items()
    }
    recv = abs_t.copy()
    if scenario.noise.out_of_order_rate:
        late = np.asarray(g.random(recv.shape[0]) < scenario.noise.out_of_order_rate, dtype=bool)
        recv[late] += step * g.uniform(1.2, 2.0, int(late.sum()))
    return _Family(
        recv,
        np.round(abs_t, 3),
        dev,
        columns,
        [_topic(d) for d in devs],
        scenario.qos_by_family.get(family, scenario.qos),
    )


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
    the out-of-order noise arrives after younger ones.

    Each family's readings are computed as numpy columns for the whole run; payloads are
    serialised in chunks as the stream is consumed, so memory stays bounded."""
    g = np.random.default_rng(seed)
    devs = devices(scenario)
    incidents = _targets(scenario, devs)
    dropouts = _dropouts(scenario, devs, g)
    fams: list[_Family] = []
    for family in Family:
        members = [d for d in devs if d.family is family]
        if members:
            fams.append(_family_rows(scenario, family, members, incidents, dropouts, g, start_ts))
    extras = _extras(scenario, devs, start_ts)
    recv = np.concatenate([f.recv for f in fams] + [np.array([e[0] for e in extras], dtype=np.float64)])
    which = np.concatenate(
        [np.full(f.recv.shape[0], i, dtype=np.int64) for i, f in enumerate(fams)]
        + [np.full(len(extras), -1, dtype=np.int64)]
    )
    row = np.concatenate(
        [np.arange(f.recv.shape[0], dtype=np.int64) for f in fams] + [np.arange(len(extras), dtype=np.int64)]
    )
    order = np.argsort(recv, kind="stable")
    dup_rate = scenario.noise.duplicate_rate
    dups = np.asarray(g.random(order.shape[0]) < dup_rate, dtype=bool)
    for lo in range(0, order.shape[0], _CHUNK):
        part = order[lo : lo + _CHUNK]
        out: list[Message | None] = [None] * part.shape[0]
        for i, f in enumerate(fams):
            pos = np.flatnonzero(which[part] == i)
            if pos.shape[0] == 0:
                continue
            rows = row[part[pos]]
            names = list(f.columns)
            values = [f.columns[n][rows].tolist() for n in names]
            ts = f.ts[rows].tolist()
            devices_ = f.dev[rows].tolist()
            received = f.recv[rows].tolist()
            for j, (p, *vals) in enumerate(zip(pos.tolist(), *values, strict=True)):
                body = dict(zip(names, vals, strict=True))
                body["ts"] = ts[j]
                out[p] = (received[j], f.topics[devices_[j]], orjson.dumps(body), f.qos)
        for p in np.flatnonzero(which[part] < 0).tolist():
            out[p] = extras[int(row[part[p]])]
        for p, msg in enumerate(out):
            assert msg is not None
            yield msg
            if dups[lo + p]:
                yield msg


async def publish(  # noqa: PLR0913 - a field tester's knobs
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
    from sensord.replay import publish_stream  # noqa: PLC0415 - avoids a cycle at import time

    wall0 = time.time()
    if start_ts is not None:
        start = start_ts
    elif scenario.start is not None:
        start = start_time(scenario)
    else:  # the stream's event time ends at "now" (at real speed: runs from now on)
        start = wall0 - scenario.duration_s + scenario.duration_s / (speed or math.inf)
    settings = BrokerSettings(
        host=host, port=port, client_id=f"sensord-sim-{seed}-{int(wall0)}", subscriptions=()
    )
    return await publish_stream(
        generate(scenario, seed=seed, start_ts=start),
        settings,
        speed=speed,
        origin=start,
        max_inflight=max_inflight,
        progress=progress,
        on_message=on_message,
    )


def start_time(scenario: Scenario, default: float | None = None) -> float:
    """Event time of the scenario's start: its `start`, else `default`, else such that
    the stream ends now."""
    if scenario.start is not None:
        start = scenario.start if scenario.start.tzinfo else scenario.start.replace(tzinfo=UTC)
        return start.timestamp()
    return default if default is not None else time.time() - scenario.duration_s
