"""Device models: one reading of each family, behaving like the real thing (DOMAIN.md),
with noise, and incidents layered on top.

Each model gets the scenario time `t` (seconds since start), the wall-clock hour of day
of that moment (so bins fill by day and wristbands sleep at night), the device's own
mutable state (fill level, tank, battery, charging session...) and the set of incidents
active on it. Everything random comes from the generator's seeded `rng`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from sensord._types import Family

State = dict[str, Any]
Model = Callable[[random.Random, float, float, State, set[str]], dict[str, Any]]
COLLECTION_HOURS = (7.0, 19.0)  # the sanitation rounds empty the bins


def _daylight(hour: float) -> float:
    """0 at night, 1 at midday: how busy the neighbourhood is."""
    return max(0.0, math.sin((hour - 6) / 16 * math.pi)) if 6 <= hour <= 22 else 0.0


def _bin(rng: random.Random, t: float, hour: float, st: State, inc: set[str]) -> dict[str, Any]:
    last_t, last_hour = st.get("t", t), st.get("hour", hour)
    # Fills with the day's foot traffic at the bin's own pace; emptied on a collection round.
    st["fill"] = st.get("fill", rng.uniform(5, 40)) + (t - last_t) / 3600 * st.setdefault(
        "pace", rng.uniform(1.0, 4.0)
    ) * (0.3 + _daylight(hour))
    if any(
        last_hour < h <= hour or (last_hour > hour and (h > last_hour or h <= hour)) for h in COLLECTION_HOURS
    ):
        st["fill"] = rng.uniform(0, 5)
    st["t"], st["hour"] = t, hour
    fill = min(st["fill"], 79.0)
    if "bin_overflow" in inc:
        fill = 92.0
    st["battery"] = st.get("battery", rng.uniform(3.5, 3.7)) - (t - last_t) * 2e-8
    return {
        "fill_pct": round(max(0.0, fill + rng.gauss(0, 0.5)), 1),
        "temp_c": round(65.0 if "bin_fire" in inc else 14 + 8 * _daylight(hour) + rng.gauss(0, 0.5), 1),
        "tilt_deg": round(abs(rng.gauss(2, 1)), 1),
        "battery_v": round(st["battery"], 3),
    }


def _fire(rng: random.Random, _t: float, hour: float, _st: State, inc: set[str]) -> dict[str, Any]:
    smoke = "smoke" in inc or "fire" in inc
    return {
        "smoke_alarm": smoke,
        "smoke_db_m": round(0.5 if smoke else abs(rng.gauss(0.01, 0.005)), 3),
        "temp_c": round(48.0 if smoke else 20 + 2 * _daylight(hour) + rng.gauss(0, 0.2), 1),
        "co_ppm": round(60.0 if "fire" in inc else abs(rng.gauss(2, 1)), 1),
        "pressure_mpa": round(0.3 + rng.gauss(0, 0.005), 3),
        "fault": False,
        "tamper": False,
    }


def _lift(rng: random.Random, _t: float, hour: float, st: State, inc: set[str]) -> dict[str, Any]:
    if "trapped_lift" in inc:
        return {
            "state": "stopped",
            "door_open": False,
            "floor": st.get("floor", 7),
            "in_levelling_zone": False,
            "speed_mps": 0.0,
            "rated_speed_mps": 1.75,
            "occupied": True,
            "alarm_button": False,
            "vibration_rms": 0.2,
        }
    # Trips between floors: busier by day. A trip is ~20 s of moving, then doors open.
    floor = st.setdefault("floor", rng.randint(1, 18))
    moving = rng.random() < 0.1 + 0.4 * _daylight(hour)
    if moving:
        st["floor"] = max(1, min(18, floor + rng.choice((-3, -2, -1, 1, 2, 3))))
    return {
        "state": "moving" if moving else "idle",
        "door_open": (not moving) and rng.random() < 0.3,
        "floor": st["floor"],
        "in_levelling_zone": not moving,
        "speed_mps": round(1.6 + rng.gauss(0, 0.03), 2) if moving else 0.0,
        "rated_speed_mps": 1.75,
        "occupied": moving or rng.random() < 0.2,
        "alarm_button": False,
        "vibration_rms": round(abs(rng.gauss(1.0 if moving else 0.2, 0.1)), 2),
    }


def _water(rng: random.Random, t: float, hour: float, st: State, inc: set[str]) -> dict[str, Any]:
    last_t = st.get("t", t)
    st["t"] = t
    # Sells water by day; the operator refills below 20 %; the filter ages with every litre
    # and the product water's TDS creeps up as it does.
    sold = (t - last_t) / 60 * rng.uniform(0, 0.6) * _daylight(hour)
    tank = st.get("tank", rng.uniform(50, 95)) - sold
    st["tank"] = rng.uniform(90, 99) if tank < 20 else tank
    st["filter"] = max(6.0, st.get("filter", rng.uniform(30, 90)) - sold * 0.01)
    tds = 80.0 if "water_tds_high" in inc else 8 + (100 - st["filter"]) * 0.2
    return {
        "tds_ppm": round(tds + rng.gauss(0, 0.8), 1),
        "tank_pct": round(st["tank"], 1),
        "uv_ok": True,
        "filter_life_pct": round(st["filter"], 1),
        "leak": False,
        "temp_c": round(16 + rng.gauss(0, 0.3), 1),
        "door_open": False,
    }


def _charger(rng: random.Random, t: float, hour: float, st: State, inc: set[str]) -> dict[str, Any]:
    # Sessions: a car plugs in, draws 16 to 32 A for one to three hours, leaves.
    until = st.get("until", -1.0)
    if t >= until:
        if st.get("charging"):
            st["charging"], st["until"] = False, t + rng.uniform(600, 3600) / (0.2 + _daylight(hour))
        else:
            st["charging"], st["until"] = True, t + rng.uniform(3600, 10800)
            st["amps"] = rng.choice((16.0, 32.0))
    charging = bool(st.get("charging"))
    current = st.get("amps", 16.0) + rng.gauss(0, 0.3) if charging else 0.0
    temp = 95.0 if "charger_overheat" in inc else 20 + (current * 0.6 if charging else 0) + rng.gauss(0, 0.3)
    return {
        "status": "charging" if charging else "idle",
        "connector_temp_c": round(temp, 1),
        "current_a": round(current, 1),
        "voltage_v": round(230 + rng.gauss(0, 1), 1),
        "power_kw": round(current * 0.23, 2),
        "residual_current_ma": round(35.0 if "charger_ground_fault" in inc else abs(rng.gauss(3, 1)), 1),
        "residual_dc_ma": round(abs(rng.gauss(0.5, 0.2)), 2),
        "fault_code": 0,
    }


def _wristband(rng: random.Random, t: float, hour: float, st: State, inc: set[str]) -> dict[str, Any]:
    last_t = st.get("t", t)
    st["t"] = t
    # Heart rate and SpO2 follow activity; asleep 23:00 to 07:00 (low, steady, no steps).
    asleep = hour >= 23 or hour < 7
    activity = (
        0.0
        if asleep
        else _daylight(hour) * (0.5 + 0.5 * math.sin(t / 900 + st.setdefault("ph", rng.random() * 6)))
    )
    hr = (54 if asleep else 64) + 28 * activity + rng.gauss(0, 2)
    if "high_heart_rate" in inc:
        hr = 138 + rng.gauss(0, 2)
    st["steps"] = st.get("steps", 0) + int((t - last_t) * activity * 1.5)
    # Drains about 4 % an hour; charged overnight on its cradle.
    st["battery"] = min(
        100.0, st.get("battery", rng.uniform(60, 100)) + (t - last_t) / 3600 * (20 if asleep else -4)
    )
    return {
        "heart_rate": round(hr),
        "spo2": round(min(100.0, 97 + rng.gauss(0, 0.6) - (0.8 if asleep else 0)), 1),
        "systolic": round(126 + 10 * activity + rng.gauss(0, 4)),
        "diastolic": round(79 + 4 * activity + rng.gauss(0, 3)),
        "skin_temp_c": round(33 + rng.gauss(0, 0.3), 1),
        "worn": True,
        "steps": st["steps"],
        "fall": "fall" in inc,
        "sos": "sos" in inc,
        "battery_pct": round(max(16.0, st["battery"]), 1),
    }


MODELS: dict[Family, Model] = {
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


def reading(  # noqa: PLR0913, PLR0917 - the facts of one reading
    family: Family, rng: random.Random, t: float, hour: float, state: State, incidents: set[str]
) -> dict[str, Any]:
    """One payload of `family` at scenario time `t` (seconds since start), `hour` of day."""
    return MODELS[family](rng, t, hour, state, incidents)
