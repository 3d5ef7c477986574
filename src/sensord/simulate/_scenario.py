"""Scenario files: a neighbourhood and a timeline of incidents, validated by pydantic."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sensord._errors import ConfigError
from sensord._types import Family
from sensord.rules._spec import Duration
from sensord.simulate._devices import DEFAULT_INTERVAL_S

IncidentKind = Literal[
    "gateway_silent",
    "fire",
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
    """Something that happens at a moment of the scenario, to one device (`device`) or to
    every device of a place (`community`, optionally `building`): a fire in building 3, a
    gateway of a community going silent. `at` is a time of day ("10:32", needs `start`),
    or `at_s` seconds from the start."""

    at: str | None = None
    at_s: Annotated[float, Field(ge=0)] | None = None
    kind: IncidentKind
    device: str | None = None
    community: str | None = None
    building: str | None = None
    duration_s: Annotated[Duration, Field(ge=0, alias="duration")] = 60.0
    expect: tuple[str, ...] = ()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _target(self) -> Incident:
        if (self.at is None) == (self.at_s is None):
            raise ValueError("give `at` (a time of day like 10:32) or `at_s` (seconds from the start)")
        if (self.device is None) == (self.community is None):
            raise ValueError("give `device`, or `community` (and optionally `building`)")
        if self.at is not None and not re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", self.at):
            raise ValueError(f"`at` is a time of day like 10:32, not {self.at!r}")
        return self


class Noise(_Model):
    """Imperfections of real fleets, as shares of messages (or of devices for dropouts)."""

    dropout_rate: Annotated[float, Field(ge=0, le=1)] = 0.0  # devices that go quiet for a while
    dropout_s: Annotated[Duration, Field(gt=0)] = 900.0
    duplicate_rate: Annotated[float, Field(ge=0, le=1)] = 0.0  # messages sent twice
    out_of_order_rate: Annotated[float, Field(ge=0, le=1)] = 0.0  # messages delayed past the next


class Community(_Model):
    name: str
    grids: tuple[str, ...] = ("g1",)
    buildings: int = 3


class Scenario(_Model):
    """A neighbourhood, its devices and what goes wrong when."""

    name: str
    # Event time of the scenario's start (RFC 3339); without it the stream ends "now".
    start: datetime | None = None
    duration_s: Annotated[Duration, Field(gt=0, alias="duration")]
    communities: tuple[Community, ...]
    devices: dict[Family, Annotated[int, Field(ge=0, le=100_000)]]
    # One interval for every family, or each family's own (default: DOMAIN.md's).
    report_interval_s: Annotated[float, Field(gt=0)] | None = None
    report_intervals: dict[Family, Annotated[Duration, Field(gt=0)]] = Field(default_factory=dict)
    qos: Literal[0, 1] = 1
    qos_by_family: dict[Family, Literal[0, 1]] = Field(default_factory=dict)
    incidents: tuple[Incident, ...] = ()
    malformed: Annotated[int, Field(ge=0)] = 0
    unknown_devices: Annotated[int, Field(ge=0)] = 0
    overrides: dict[str, dict[str, float]] = Field(default_factory=dict)
    noise: Noise = Noise()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _clock_times(self) -> Scenario:
        if self.start is None and any(i.at is not None for i in self.incidents):
            raise ValueError("incidents at a time of day (`at: 10:32`) need the scenario's `start`")
        return self

    def interval(self, family: Family) -> float:
        if family in self.report_intervals:
            return self.report_intervals[family]
        return self.report_interval_s or DEFAULT_INTERVAL_S[family]

    def incident_offset(self, incident: Incident) -> float:
        """Seconds from the scenario's start to the incident."""
        if incident.at_s is not None:
            return incident.at_s
        assert self.start is not None
        assert incident.at is not None
        h, m, *sec = (int(x) for x in incident.at.split(":"))
        start = self.start if self.start.tzinfo else self.start.replace(tzinfo=UTC)
        moment = start.replace(hour=h, minute=m, second=sec[0] if sec else 0, microsecond=0)
        if moment < start:
            moment += timedelta(days=1)
        return (moment - start).total_seconds()


def load_scenario(path: Path) -> Scenario:
    """Read and validate a scenario file."""
    try:
        return Scenario.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise ConfigError(f"cannot read scenario: {exc.strerror}", source=str(path)) from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"invalid scenario: {exc}", source=str(path)) from None
