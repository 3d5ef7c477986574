"""Payload schemas, one pydantic model per device family.

The models are the single definition of what a device may send: field names, types,
plausible ranges (an absurd value such as a heart rate of 900 is a broken sensor, not an
emergency) and which fields are required. The batched decoder does not call the models
per message, which would be slow; it reads the models once into `FieldSpec` columns and
applies the same checks with numpy over a whole batch.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field

from sensord._types import Family


class _Payload(BaseModel):
    # Devices gain fields with firmware updates; unknown fields are ignored, not rejected.
    model_config = ConfigDict(extra="ignore", frozen=True)


Pct = Annotated[float, Field(ge=0, le=100)]
TempC = Annotated[float, Field(ge=-50, le=1200)]


class BinPayload(_Payload):
    """Smart rubbish bin (ultrasonic fill sensor, NB-IoT, battery)."""

    fill_pct: Pct
    temp_c: TempC | None = None
    tilt_deg: Annotated[float, Field(ge=0, le=180)] | None = None
    battery_v: Annotated[float, Field(ge=0, le=15)] | None = None


class FirePayload(_Payload):
    """Smoke, heat and CO detectors and hydrant pressure sensors."""

    smoke_alarm: bool | None = None
    smoke_db_m: Annotated[float, Field(ge=0, le=100)] | None = None
    temp_c: TempC | None = None
    co_ppm: Annotated[float, Field(ge=0, le=10_000)] | None = None
    pressure_mpa: Annotated[float, Field(ge=0, le=10)] | None = None
    fault: bool | None = None
    tamper: bool | None = None


class LiftPayload(_Payload):
    """Lift (elevator) monitor."""

    state: Literal["idle", "moving", "stopped"]
    door_open: bool | None = None
    floor: Annotated[int, Field(ge=-20, le=300)] | None = None
    in_levelling_zone: bool | None = None
    speed_mps: Annotated[float, Field(ge=0, le=30)] | None = None
    rated_speed_mps: Annotated[float, Field(gt=0, le=30)] | None = None
    occupied: bool | None = None
    alarm_button: bool | None = None
    door_fault: bool | None = None
    vibration_rms: Annotated[float, Field(ge=0, le=100)] | None = None


class WaterPayload(_Payload):
    """Drinking-water vending machine."""

    tds_ppm: Annotated[float, Field(ge=0, le=5000)]
    tank_pct: Pct | None = None
    uv_ok: bool | None = None
    filter_life_pct: Pct | None = None
    leak: bool | None = None
    temp_c: Annotated[float, Field(ge=-30, le=100)] | None = None
    door_open: bool | None = None


class ChargerPayload(_Payload):
    """EV charger."""

    status: Literal["idle", "charging", "fault"]
    connector_temp_c: Annotated[float, Field(ge=-50, le=400)] | None = None
    current_a: Annotated[float, Field(ge=0, le=1000)] | None = None
    voltage_v: Annotated[float, Field(ge=0, le=1500)] | None = None
    power_kw: Annotated[float, Field(ge=0, le=1000)] | None = None
    residual_current_ma: Annotated[float, Field(ge=0, le=10_000)] | None = None
    residual_dc_ma: Annotated[float, Field(ge=0, le=10_000)] | None = None
    fault_code: Annotated[int, Field(ge=0, le=65535)] | None = None


class WristbandPayload(_Payload):
    """Elder wristband: vitals, events (SOS, fall) and position. Health data."""

    heart_rate: Annotated[float, Field(ge=0, le=300)] | None = None
    spo2: Pct | None = None
    systolic: Annotated[float, Field(ge=0, le=320)] | None = None
    diastolic: Annotated[float, Field(ge=0, le=250)] | None = None
    skin_temp_c: Annotated[float, Field(ge=0, le=50)] | None = None
    worn: bool | None = None
    steps: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    fall: bool | None = None
    sos: bool | None = None
    battery_pct: Pct | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180)] | None = None


SCHEMAS: dict[Family, type[_Payload]] = {
    Family.BIN: BinPayload,
    Family.FIRE: FirePayload,
    Family.LIFT: LiftPayload,
    Family.WATER: WaterPayload,
    Family.CHARGER: ChargerPayload,
    Family.WRISTBAND: WristbandPayload,
}

FieldKind = Literal["number", "integer", "bool", "enum"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One payload field as a float64 column.

    bool → 0.0/1.0; enum → the index of the value in `choices`; missing → NaN.
    """

    name: str
    kind: FieldKind
    required: bool
    lo: float
    hi: float
    lo_open: bool = False
    choices: tuple[str, ...] = ()

    def code(self, choice: str) -> float:
        """The column value an enum choice is stored as."""
        return float(self.choices.index(choice))


def _unwrap(annotation: object) -> object:
    """`X | None` → X."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0]
    return annotation


def _spec(name: str, info: typing.Any) -> FieldSpec:
    ann = _unwrap(info.annotation)
    required = bool(info.is_required())
    metadata = list(info.metadata)
    if typing.get_origin(ann) is Annotated:
        ann, *extra = typing.get_args(ann)
        for e in extra:
            metadata.extend(getattr(e, "metadata", [e]))
    lo, hi, lo_open = -float("inf"), float("inf"), False
    for m in metadata:
        if isinstance(m, Ge):
            lo = float(typing.cast("float", m.ge))
        elif isinstance(m, Le):
            hi = float(typing.cast("float", m.le))
        elif hasattr(m, "gt"):
            lo, lo_open = float(m.gt), True
    if typing.get_origin(ann) is Literal:
        return FieldSpec(name, "enum", required, 0, 0, choices=typing.get_args(ann))
    if ann is bool:
        return FieldSpec(name, "bool", required, 0, 1)
    kind: FieldKind = "integer" if ann is int else "number"
    return FieldSpec(name, kind, required, lo, hi, lo_open)


def field_specs(family: Family) -> tuple[FieldSpec, ...]:
    """The column specs of one family, in model order."""
    model = SCHEMAS[family]
    return tuple(_spec(n, f) for n, f in model.model_fields.items())
