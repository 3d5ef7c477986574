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

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sensord._errors import ConfigError
from sensord._registry_text import read_registry_text
from sensord._types import Family

# One shared, read-only empty mapping: most devices override nothing, and 100,000 empty
# dicts would cost ~6 MB.
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _empty() -> Mapping[str, Any]:
    return _EMPTY


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    """One device as written in the registry file, validated.

    A plain slotted dataclass, not a pydantic model: a fleet of 100,000 devices is only data,
    and one model instance each cost ~1 KB and ~10 µs. `_EntryModel` below still judges any
    entry the quick check in `_entry` does not accept, so errors read as before.
    """

    family: Family
    community: str
    grid: str
    building: str | None = None
    unit: str | None = None
    floor: int | None = None
    location: Mapping[str, float | str] = field(default_factory=_empty)
    contacts: Mapping[str, str] = field(default_factory=_empty)
    params: Mapping[str, float] = field(default_factory=_empty)
    labels: Mapping[str, str] = field(default_factory=_empty)


class _EntryModel(BaseModel):
    """The schema of one device entry; the reference the quick check must agree with."""

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

    def entry(self) -> DeviceEntry:
        return DeviceEntry(
            self.family, self.community, self.grid, self.building, self.unit, self.floor,
            _frozen(self.location), _frozen(self.contacts), _frozen(self.params), _frozen(self.labels),
        )  # fmt: skip


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


def parse_registry(data: Any, *, source: str, lines: Mapping[str, int] | None = None) -> Registry:
    """Validate a parsed registry document; `lines` (device id → line) puts file:line in errors."""
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        raise ConfigError("expected a mapping with a 'devices' mapping of id → device", source=source)
    entries: dict[str, DeviceEntry] = {}
    pool: dict[str, str] = {}
    for device_id, raw in data["devices"].items():
        if not isinstance(device_id, str) or not device_id or "/" in device_id:
            raise ConfigError(
                "device ids must be non-empty strings without '/'",
                source=_where(source, lines, device_id),
                key=str(device_id),
            )
        entry = _entry(raw, pool)
        if entry is None:
            try:
                entry = _EntryModel.model_validate(raw).entry()
            except ValidationError as exc:
                err = exc.errors()[0]
                key = ".".join(["devices", device_id, *(str(p) for p in err["loc"])])
                raise ConfigError(err["msg"], source=_where(source, lines, device_id), key=key) from None
        entries[device_id] = entry
    return Registry.from_entries(entries, _grids(data.get("grids"), source))


def _where(source: str, lines: Mapping[str, int] | None, device_id: object) -> str:
    line = lines.get(str(device_id)) if lines else None
    return f"{source}:{line}" if line else source


_V = TypeVar("_V")
_FAMILIES = {f.value: f for f in Family}
_FIELDS = frozenset(_EntryModel.model_fields)
_SCALARS = frozenset(("family", "community", "grid", "building", "unit", "floor"))


def _entry(raw: object, pool: dict[str, str]) -> DeviceEntry | None:
    """The entry when it is plainly valid (exact types, nothing to coerce), else None.

    None sends the entry to `_EntryModel`, which coerces what pydantic coerces and words
    the error; the quick check only accepts what the model would accept unchanged (ints
    in `params` and `location` become floats, as the model makes them). Repeated strings
    (community, grid, building) are pooled so a fleet shares one object each.
    """
    if type(raw) is not dict or not raw.keys() <= _FIELDS:
        return None
    family, community, grid = raw.get("family"), raw.get("community"), raw.get("grid")
    if type(family) is not str or family not in _FAMILIES:
        return None
    if type(community) is not str or not community or type(grid) is not str or not grid:
        return None
    building, unit, floor = raw.get("building"), raw.get("unit"), raw.get("floor")
    if not (_opt_str(building) and _opt_str(unit) and (floor is None or type(floor) is int)):
        return None
    location: Mapping[str, Any] | None
    contacts: Mapping[str, Any] | None
    params: Mapping[str, Any] | None
    labels: Mapping[str, Any] | None
    if raw.keys() <= _SCALARS:  # the usual entry: no mapping fields to walk
        location = contacts = params = labels = _EMPTY
    else:
        location = _mapping(raw, "location", _place_value)
        contacts = _mapping(raw, "contacts", _text_value)
        params = _mapping(raw, "params", _number_value)
        labels = _mapping(raw, "labels", _text_value)
    if location is None or contacts is None or params is None or labels is None:
        return None
    return DeviceEntry(
        _FAMILIES[family], pool.setdefault(community, community), pool.setdefault(grid, grid),
        pool.setdefault(building, building) if building is not None else None, unit, floor,
        location, contacts, params, labels,
    )  # fmt: skip


def _opt_str(value: object) -> bool:
    return value is None or type(value) is str


def _text_value(value: object) -> str | None:
    return value if type(value) is str else None


def _number_value(value: object) -> float | None:
    return float(value) if type(value) in {int, float} else None  # type: ignore[arg-type]


def _place_value(value: object) -> float | str | None:
    return value if isinstance(value, str) else _number_value(value)


def _mapping(raw: dict[str, Any], name: str, convert: Callable[[object], object]) -> Mapping[str, Any] | None:
    """A mapping field with str keys and every value converted, or None when one is not plain."""
    given = raw.get(name, _EMPTY)
    if given is _EMPTY or (type(given) is dict and not given):
        return _EMPTY
    if type(given) is not dict:
        return None
    out: dict[str, object] = {}
    for key, value in given.items():
        converted = convert(value)
        if type(key) is not str or converted is None:
            return None
        out[key] = converted
    return MappingProxyType(out)


def _frozen(values: dict[str, _V]) -> Mapping[str, _V]:
    return MappingProxyType(values) if values else _EMPTY


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
        data, lines = read_registry_text(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read device registry: {exc.strerror}", source=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=str(path)) from None
    return parse_registry(data, source=str(path), lines=lines)
