"""The device registry: device id → family, place, owner contacts and parameter overrides.

A YAML file:

    devices:
      wb-0007:
        family: wristband
        community: maple-court
        grid: g3
        building: "3"
        unit: "3-402"
        floor: 4
        location: {lat: 31.2304, lon: 121.4737}
        contacts: {family: "+86 138 0000 0000"}
        params: {hr_high: 110}      # this resident's doctor set a lower limit
    grids:                          # who works each grid (网格员): the `grid_worker` receiver
      g3:                           # or `maple-court/g3` when grid names repeat across communities
        workers:
          - {name: 张伟, phone: "+86 138 0000 0001", chat: {wecom: zhangwei}}

Each family's devices get dense indices 0..n-1 so rule state is a plain array per rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sensord._errors import ConfigError
from sensord._types import Family


class DeviceEntry(BaseModel):
    """One device as written in the registry file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Family
    community: Annotated[str, Field(min_length=1)]
    grid: Annotated[str, Field(min_length=1)]
    building: str | None = None
    unit: str | None = None
    floor: int | None = None
    location: dict[str, float | str] = Field(default_factory=dict)
    contacts: dict[str, str] = Field(default_factory=dict)
    params: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class PersonEntry(BaseModel):
    """A person who receives alerts: a grid worker (网格员)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    phone: str | None = None
    email: str | None = None
    chat: dict[str, str] = Field(default_factory=dict)


class GridEntry(BaseModel):
    """One grid (网格) and the workers who take its jobs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workers: tuple[PersonEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class Device:
    """A registered device with its dense index within its family."""

    device_id: str
    index: int
    entry: DeviceEntry

    @property
    def family(self) -> Family:
        return self.entry.family

    def place(self) -> dict[str, Any]:
        """Where to send a responder: building/unit/floor and coordinates."""
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("building", self.entry.building),
                ("unit", self.entry.unit),
                ("floor", self.entry.floor),
            )
            if v is not None
        }
        out.update(self.entry.location)
        return out


@dataclass(frozen=True)
class Registry:
    """Lookup tables built once from the registry file."""

    by_id: dict[str, Device]
    by_family: dict[Family, tuple[Device, ...]] = field(default_factory=dict)
    # Only the devices that override a parameter: looking up overrides must not walk a
    # fleet of 100,000 devices once per parameter.
    with_params: dict[Family, tuple[Device, ...]] = field(default_factory=dict)
    # Grid → its workers, keyed `grid` or `community/grid` (the latter wins).
    grids: dict[str, GridEntry] = field(default_factory=dict)

    @classmethod
    def from_entries(
        cls, entries: dict[str, DeviceEntry], grids: dict[str, GridEntry] | None = None
    ) -> Registry:
        lists: dict[Family, list[Device]] = {f: [] for f in Family}
        by_id: dict[str, Device] = {}
        for device_id, entry in entries.items():
            dev = Device(device_id, len(lists[entry.family]), entry)
            lists[entry.family].append(dev)
            by_id[device_id] = dev
        with_params = {f: tuple(d for d in v if d.entry.params) for f, v in lists.items()}
        return cls(by_id, {f: tuple(v) for f, v in lists.items()}, with_params, dict(grids or {}))

    def get(self, device_id: str) -> Device | None:
        return self.by_id.get(device_id)

    def grid(self, community: str, grid: str) -> GridEntry | None:
        """The workers of a grid: `community/grid` if registered so, else `grid`."""
        return self.grids.get(f"{community}/{grid}") or self.grids.get(grid)

    def devices(self, family: Family) -> tuple[Device, ...]:
        return self.by_family.get(family, ())

    def count(self, family: Family) -> int:
        return len(self.devices(family))

    def overrides(self, family: Family, param: str) -> dict[int, float]:
        """Per-device values of one parameter, by device index."""
        return {
            d.index: d.entry.params[param]
            for d in self.with_params.get(family, ())
            if param in d.entry.params
        }


def parse_registry(data: Any, *, source: str) -> Registry:
    """Validate a parsed registry document."""
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise ConfigError("expected a mapping with a 'devices' mapping of id → device", source=source)
    entries: dict[str, DeviceEntry] = {}
    for device_id, raw in data["devices"].items():
        if not isinstance(device_id, str) or not device_id or "/" in device_id:
            raise ConfigError(
                "device ids must be non-empty strings without '/'", source=source, key=str(device_id)
            )
        try:
            entries[device_id] = DeviceEntry.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(["devices", device_id, *(str(p) for p in err["loc"])])
            raise ConfigError(err["msg"], source=source, key=key) from None
    return Registry.from_entries(entries, _grids(data.get("grids"), source))


def _grids(raw: Any, source: str) -> dict[str, GridEntry]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("grids is a mapping of grid (or community/grid) → {workers: [...]}", source=source)
    out: dict[str, GridEntry] = {}
    for name, body in raw.items():
        try:
            out[str(name)] = GridEntry.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(["grids", str(name), *(str(p) for p in err["loc"])])
            raise ConfigError(err["msg"], source=source, key=key) from None
    return out


def load_registry(path: Path) -> Registry:
    """Load the registry file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read device registry: {exc.strerror}", source=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    return parse_registry(data, source=str(path))
