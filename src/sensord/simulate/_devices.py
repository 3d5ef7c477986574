"""Device models: one reading of each family, with noise, and incidents layered on top."""

from __future__ import annotations

import math
import random
from typing import Any

from sensord._types import Family


def _bin(rng: random.Random, t: float, phase: float, inc: set[str]) -> dict[str, Any]:
    # Fills through the day; emptied when it passes ~75 % (a collection round).
    fill = (phase * 60 + t / 60) % 75
    if "bin_overflow" in inc:
        fill = 92.0
    temp = 65.0 if "bin_fire" in inc else 18 + rng.gauss(0, 1)
    return {
        "fill_pct": round(max(0.0, fill + rng.gauss(0, 0.5)), 1),
        "temp_c": round(temp, 1),
        "tilt_deg": round(abs(rng.gauss(2, 1)), 1),
        "battery_v": round(3.6 - t / 1e6, 3),
    }


def _fire(rng: random.Random, _t: float, _phase: float, inc: set[str]) -> dict[str, Any]:
    smoke = "smoke" in inc
    return {
        "smoke_alarm": smoke,
        "smoke_db_m": round(0.5 if smoke else abs(rng.gauss(0.01, 0.005)), 3),
        "temp_c": round(48.0 if smoke else 21 + rng.gauss(0, 0.5), 1),
        "co_ppm": round(abs(rng.gauss(2, 1)), 1),
        "pressure_mpa": round(0.3 + rng.gauss(0, 0.005), 3),
        "fault": False,
        "tamper": False,
    }


def _lift(rng: random.Random, t: float, phase: float, inc: set[str]) -> dict[str, Any]:
    if "trapped_lift" in inc:
        return {
            "state": "stopped",
            "door_open": False,
            "floor": 7,
            "in_levelling_zone": False,
            "speed_mps": 0.0,
            "rated_speed_mps": 1.75,
            "occupied": True,
            "alarm_button": False,
            "vibration_rms": 0.2,
        }
    cycle = (t / 20 + phase * 10) % 3
    moving = cycle < 1
    floor = int((t / 20 + phase * 17) % 18) + 1
    return {
        "state": "moving" if moving else "idle",
        "door_open": (not moving) and cycle < 1.3,
        "floor": floor,
        "in_levelling_zone": not moving,
        "speed_mps": round(1.6 + rng.gauss(0, 0.03), 2) if moving else 0.0,
        "rated_speed_mps": 1.75,
        "occupied": moving or rng.random() < 0.3,
        "alarm_button": False,
        "vibration_rms": round(abs(rng.gauss(1.0 if moving else 0.2, 0.1)), 2),
    }


def _water(rng: random.Random, t: float, _phase: float, inc: set[str]) -> dict[str, Any]:
    tds = 80.0 if "water_tds_high" in inc else 12 + t / 3600 * 0.1
    return {
        "tds_ppm": round(tds + rng.gauss(0, 1), 1),
        "tank_pct": round(max(15.0, 90 - t / 120), 1),
        "uv_ok": True,
        "filter_life_pct": round(max(6.0, 60 - t / 7200), 1),
        "leak": False,
        "temp_c": round(16 + rng.gauss(0, 0.3), 1),
        "door_open": False,
    }


def _charger(rng: random.Random, t: float, phase: float, inc: set[str]) -> dict[str, Any]:
    charging = ((t / 600 + phase) % 1) < 0.6
    current = 31 + rng.gauss(0, 0.5) if charging else 0.0
    return {
        "status": "charging" if charging else "idle",
        "connector_temp_c": round(
            95.0 if "charger_overheat" in inc else (38 if charging else 20) + rng.gauss(0, 1), 1
        ),
        "current_a": round(current, 1),
        "voltage_v": round(230 + rng.gauss(0, 1), 1),
        "power_kw": round(current * 0.23, 2),
        "residual_current_ma": round(35.0 if "charger_ground_fault" in inc else abs(rng.gauss(3, 1)), 1),
        "residual_dc_ma": round(abs(rng.gauss(0.5, 0.2)), 2),
        "fault_code": 0,
    }


def _wristband(rng: random.Random, t: float, phase: float, inc: set[str]) -> dict[str, Any]:
    # Activity rises and falls over the (scenario) day; HR and SpO2 follow it.
    activity = 0.5 + 0.5 * math.sin(t / 900 + phase * 6)
    hr = 62 + 30 * activity + rng.gauss(0, 2)
    if "high_heart_rate" in inc:
        hr = 138 + rng.gauss(0, 2)
    return {
        "heart_rate": round(hr),
        "spo2": round(min(100.0, 97 + rng.gauss(0, 0.7)), 1),
        "systolic": round(128 + rng.gauss(0, 4)),
        "diastolic": round(80 + rng.gauss(0, 3)),
        "skin_temp_c": round(33 + rng.gauss(0, 0.3), 1),
        "worn": True,
        "steps": int(t * activity / 2),
        "fall": "fall" in inc,
        "sos": "sos" in inc,
        "battery_pct": round(max(20.0, 95 - t / 400), 1),
    }


MODELS = {
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


def reading(
    family: Family, rng: random.Random, t: float, phase: float, incidents: set[str]
) -> dict[str, Any]:
    """One payload of `family` at scenario time `t` (seconds since start)."""
    return MODELS[family](rng, t, phase, incidents)
