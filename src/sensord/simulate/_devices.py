"""Device models: every reading of one family over a whole scenario, as numpy columns.

A model gets all report times of all devices of its family (rows sorted by device, then
time), the hour of day (UTC) of each, the incidents active at each row, and a seeded
numpy generator; it returns one column per payload field. Working on whole columns is
what lets a day of thousands of devices be generated in seconds. The models follow
DOMAIN.md: bins fill with the day's foot traffic and are emptied by the 07:00 and 19:00
rounds; wristbands follow activity and sleep; lifts make trips; chargers run sessions;
water machines sell water and their filters age.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sensord._types import Family

FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
IntArr = npt.NDArray[np.int64]
# Field name -> one value per row: numpy arrays, or a list of text values. Typed loosely:
# numpy's stubs give rounded arrays odd scalar types, and the consumer only calls tolist().
Columns = dict[str, Any]
DAY, HOUR = 86400.0, 3600.0


@dataclass(frozen=True)
class Rows:
    """The rows of one family: device (0..n-1), scenario time, absolute time, hour of day,
    and a mask per active incident kind."""

    dev: IntArr
    t: FloatArr
    abs_t: FloatArr
    hour: FloatArr
    incident: dict[str, BoolArr]
    n_devices: int

    def has(self, kind: str) -> BoolArr:
        return self.incident.get(kind, np.zeros(self.dev.shape[0], dtype=bool))

    def per_device(self, values: FloatArr) -> FloatArr:
        """A per-device value spread over the rows."""
        return values[self.dev]

    def first(self) -> BoolArr:
        out = np.ones(self.dev.shape[0], dtype=bool)
        out[1:] = self.dev[1:] != self.dev[:-1]
        return out

    def elapsed(self) -> FloatArr:
        """Seconds since the device's previous row (0 on its first)."""
        dt = np.diff(self.t, prepend=self.t[:1])
        dt[self.first()] = 0.0
        return dt

    def cumsum(self, x: FloatArr, segment: BoolArr | None = None) -> FloatArr:
        """Running sum of x per device, restarting where `segment` is set (and at each device)."""
        starts = self.first() if segment is None else self.first() | segment
        total = np.cumsum(x)
        base = np.maximum.accumulate(np.where(starts, np.arange(x.shape[0]), 0))
        return total - total[base] + x[base]


def daylight(hour: FloatArr) -> FloatArr:
    """0 at night, 1 at midday: how busy the neighbourhood is."""
    return np.where((hour >= 6) & (hour <= 22), np.maximum(0.0, np.sin((hour - 6) / 16 * np.pi)), 0.0)


def _bin(r: Rows, g: np.random.Generator) -> Columns:
    n = r.dev.shape[0]
    # Collections at 07:00 and 19:00: a new round index starts a new fill segment.
    rounds = np.floor((r.abs_t - 7 * HOUR) / (12 * HOUR))
    emptied = np.zeros(n, dtype=bool)
    emptied[1:] = rounds[1:] != rounds[:-1]
    pace = r.per_device(g.uniform(1.0, 4.0, r.n_devices))
    added = r.elapsed() / HOUR * pace * (0.3 + daylight(r.hour))
    start = np.where(r.first(), r.per_device(g.uniform(5, 40, r.n_devices)), g.uniform(0, 5, n))
    fill = r.cumsum(np.where(r.first() | emptied, start, 0.0) + added, emptied)
    # Capped below the 80 % line: in a healthy neighbourhood the round comes first;
    # an overflow is an incident.
    fill = np.where(r.has("bin_overflow"), 92.0, np.minimum(fill, 79.0))
    temp = np.where(r.has("bin_fire"), 65.0, 14 + 8 * daylight(r.hour) + g.normal(0, 0.5, n))
    battery = r.per_device(g.uniform(3.5, 3.7, r.n_devices)) - r.t * 2e-8
    return {
        "fill_pct": np.round(np.maximum(0.0, fill + g.normal(0, 0.5, n)), 1),
        "temp_c": np.round(temp, 1),
        "tilt_deg": np.round(np.abs(g.normal(2, 1, n)), 1),
        "battery_v": np.round(battery, 3),
    }


def _fire(r: Rows, g: np.random.Generator) -> Columns:
    n = r.dev.shape[0]
    fire = r.has("fire")
    smoke = r.has("smoke") | fire
    return {
        "smoke_alarm": smoke,
        "smoke_db_m": np.round(np.where(smoke, 0.5, np.abs(g.normal(0.01, 0.005, n))), 3),
        # A smouldering source smokes at 48 °C; a fire in the room is hotter and fills it with CO.
        "temp_c": np.round(
            np.where(fire, 65.0, np.where(smoke, 48.0, 20 + 2 * daylight(r.hour) + g.normal(0, 0.2, n))), 1
        ),
        "co_ppm": np.round(np.where(fire, 160.0, np.abs(g.normal(2, 1, n))), 1),
        "pressure_mpa": np.round(0.3 + g.normal(0, 0.005, n), 3),
        "fault": np.zeros(n, dtype=bool),
        "tamper": np.zeros(n, dtype=bool),
    }


def _lift(r: Rows, g: np.random.Generator) -> Columns:
    n = r.dev.shape[0]
    trapped = r.has("trapped_lift")
    # Trips between floors, busier by day; the car moves a few floors per trip.
    moving = (g.random(n) < 0.1 + 0.4 * daylight(r.hour)) & ~trapped
    step = np.where(moving, g.choice(np.array([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0]), n), 0.0)
    start = r.per_device(g.integers(0, 18, r.n_devices).astype(np.float64))
    floor = np.mod(start + r.cumsum(step), 18).astype(np.int64) + 1
    door = ~moving & ~trapped & (g.random(n) < 0.3)
    return {
        "state": [
            "stopped" if tr else ("moving" if mv else "idle")
            for tr, mv in zip(trapped.tolist(), moving.tolist(), strict=True)
        ],
        "door_open": door,
        "floor": floor,
        "in_levelling_zone": ~moving & ~trapped,
        "speed_mps": np.round(np.where(moving, 1.6 + g.normal(0, 0.03, n), 0.0), 2),
        "rated_speed_mps": np.full(n, 1.75),
        "occupied": moving | trapped | (g.random(n) < 0.2),
        "alarm_button": np.zeros(n, dtype=bool),
        "vibration_rms": np.round(np.abs(np.where(moving, 1.0, 0.2) + g.normal(0, 0.1, n)), 2),
    }


def _water(r: Rows, g: np.random.Generator) -> Columns:
    n = r.dev.shape[0]
    # Sells water by day; refilled from 20 % back up to 95 %; the filter ages with every
    # litre and the product water's TDS creeps up as it does.
    sold = r.elapsed() / 60 * g.uniform(0, 0.6, n) * daylight(r.hour)
    total = r.cumsum(sold)
    tank = 95 - np.mod(95 - r.per_device(g.uniform(50, 95, r.n_devices)) + total, 75)
    filt = np.maximum(6.0, r.per_device(g.uniform(30, 90, r.n_devices)) - total * 0.01)
    tds = np.where(r.has("water_tds_high"), 80.0, 8 + (100 - filt) * 0.2)
    return {
        "tds_ppm": np.round(tds + g.normal(0, 0.8, n), 1),
        "tank_pct": np.round(tank, 1),
        "uv_ok": np.ones(n, dtype=bool),
        "filter_life_pct": np.round(filt, 1),
        "leak": np.zeros(n, dtype=bool),
        "temp_c": np.round(16 + g.normal(0, 0.3, n), 1),
        "door_open": np.zeros(n, dtype=bool),
    }


def _charger(r: Rows, g: np.random.Generator) -> Columns:
    n = r.dev.shape[0]
    # Sessions: a car plugs in and draws 16 or 32 A for one to three hours; the bay then
    # stays free for ten minutes to two hours.
    span = float(r.t.max()) + 1 if n else 1.0
    k = int(span / 600) + 2
    lengths = np.empty((r.n_devices, 2 * k))
    lengths[:, 0::2] = g.uniform(600, 7200, (r.n_devices, k))  # idle
    lengths[:, 1::2] = g.uniform(3600, 10800, (r.n_devices, k))  # charging
    edges = np.cumsum(lengths, axis=1) - g.uniform(0, 7200, (r.n_devices, 1))
    amps = g.choice(np.array([16.0, 32.0]), (r.n_devices, 2 * k))
    segment = np.empty(n, dtype=np.int64)
    for d in range(r.n_devices):
        rows = np.flatnonzero(r.dev == d)
        segment[rows] = np.searchsorted(edges[d], r.t[rows], side="right")
    charging = segment % 2 == 1
    current = np.where(charging, amps[r.dev, segment % (2 * k)] + g.normal(0, 0.3, n), 0.0)
    temp = np.where(r.has("charger_overheat"), 95.0, 20 + current * 0.6 + g.normal(0, 0.3, n))
    return {
        "status": ["charging" if c else "idle" for c in charging.tolist()],
        "connector_temp_c": np.round(temp, 1),
        "current_a": np.round(current, 1),
        "voltage_v": np.round(230 + g.normal(0, 1, n), 1),
        "power_kw": np.round(current * 0.23, 2),
        "residual_current_ma": np.round(
            np.where(r.has("charger_ground_fault"), 35.0, np.abs(g.normal(3, 1, n))), 1
        ),
        "residual_dc_ma": np.round(np.abs(g.normal(0.5, 0.2, n)), 2),
        "fault_code": np.zeros(n, dtype=np.int64),
    }


def _wristband(r: Rows, g: np.random.Generator) -> Columns:
    n = r.dev.shape[0]
    # Heart rate, SpO2 and steps follow activity; asleep 23:00 to 07:00 (low, steady).
    asleep = (r.hour >= 23) | (r.hour < 7)
    phase = r.per_device(g.uniform(0, 6, r.n_devices))
    activity = np.where(asleep, 0.0, daylight(r.hour) * (0.5 + 0.5 * np.sin(r.t / 900 + phase)))
    hr = np.where(asleep, 54, 64) + 28 * activity + g.normal(0, 2, n)
    hr = np.where(r.has("high_heart_rate"), 138 + g.normal(0, 2, n), hr)
    steps = r.cumsum(np.floor(r.elapsed() * activity * 1.5))
    # Drains about 4 % an hour by day, charges on its cradle at night.
    charge = r.elapsed() / HOUR * np.where(asleep, 20.0, -4.0)
    battery = np.clip(r.per_device(g.uniform(60, 100, r.n_devices)) + r.cumsum(charge), 16.0, 100.0)
    return {
        "heart_rate": np.round(hr).astype(np.int64),
        "spo2": np.round(np.minimum(100.0, 97 + g.normal(0, 0.6, n) - np.where(asleep, 0.8, 0.0)), 1),
        "systolic": np.round(126 + 10 * activity + g.normal(0, 4, n)).astype(np.int64),
        "diastolic": np.round(79 + 4 * activity + g.normal(0, 3, n)).astype(np.int64),
        "skin_temp_c": np.round(33 + g.normal(0, 0.3, n), 1),
        "worn": np.ones(n, dtype=bool),
        "steps": steps.astype(np.int64),
        "fall": r.has("fall"),
        "sos": r.has("sos"),
        "battery_pct": np.round(battery, 1),
    }


MODELS: dict[Family, Callable[[Rows, np.random.Generator], Columns]] = {
    Family.BIN: _bin,
    Family.FIRE: _fire,
    Family.LIFT: _lift,
    Family.WATER: _water,
    Family.CHARGER: _charger,
    Family.WRISTBAND: _wristband,
}

PREFIX = {
    Family.BIN: "bin",
    Family.FIRE: "fire",
    Family.LIFT: "lift",
    Family.WATER: "water",
    Family.CHARGER: "ev",
    Family.WRISTBAND: "wb",
}

# Report intervals from DOMAIN.md, used when a scenario does not set its own.
DEFAULT_INTERVAL_S = {
    Family.BIN: 600.0,
    Family.FIRE: 60.0,
    Family.LIFT: 30.0,
    Family.WATER: 60.0,
    Family.CHARGER: 30.0,
    Family.WRISTBAND: 30.0,
}
