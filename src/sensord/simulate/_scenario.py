"""Scenario files: a neighbourhood and a timeline of incidents, validated by pydantic."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sensord._errors import ConfigError
from sensord._types import Family

IncidentKind = Literal[
    "bin_overflow",
    "bin_fire",
    "sos",
    "fall",
    "high_heart_rate",
    "smoke",
    "trapped_lift",
    "charger_ground_fault",
    "charger_overheat",
    "water_tds_high",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Incident(_Model):
    """Something that happens to one device at an offset into the scenario (event time)."""

    at_s: Annotated[float, Field(ge=0)]
    kind: IncidentKind
    device: str
    duration_s: Annotated[float, Field(ge=0)] = 60.0
    expect: tuple[str, ...] = ()


class Community(_Model):
    name: str
    grids: tuple[str, ...] = ("g1",)
    buildings: int = 3


class Scenario(_Model):
    """A neighbourhood, its devices and what goes wrong when."""

    name: str
    duration_s: Annotated[float, Field(gt=0)]
    communities: tuple[Community, ...]
    devices: dict[Family, Annotated[int, Field(ge=0, le=100_000)]]
    report_interval_s: Annotated[float, Field(gt=0)] = 10.0
    qos: Literal[0, 1] = 1
    incidents: tuple[Incident, ...] = ()
    malformed: Annotated[int, Field(ge=0)] = 0
    unknown_devices: Annotated[int, Field(ge=0)] = 0
    overrides: dict[str, dict[str, float]] = Field(default_factory=dict)


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        return Scenario.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"cannot read scenario: {exc.strerror}", source=str(path)) from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid scenario: {exc}", source=str(path)) from None
