"""The engine's value types and small helpers: checkpoint rows, results, per-rule state,
a batch's rows, and the one rule for when a timer is due."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, overload
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sensord._types import AlertEvent, AlertStatus, Family
from sensord.rules import CompiledRule, FamilyRules
from sensord.rules._expr import LOCAL_HOUR

FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
IntArr = npt.NDArray[np.int64]
_ORDER = {AlertStatus.PENDING: 0, AlertStatus.FIRING: 1, AlertStatus.RESOLVED: 2}
COMMUNITY_RULE = "community_silent"


@dataclass(frozen=True)
class ActiveAlert:
    """A pending or firing alert, as checkpointed beside the outbox with every batch.

    The checkpoint is the authority on which alerts are open after a crash: a restore
    switches off whatever an older engine snapshot has open and the checkpoint does not.
    """

    fingerprint: str
    family: Family | None  # None: a community silence (no device)
    rule: str
    device_id: str
    status: AlertStatus
    since: float
    fired_at: float | None
    last_notified: float | None
    severity: str | None = None  # a multi-level alert's current level
    community: str = ""
    acked: bool = False  # a state alert the dispatch side acknowledged: no repeats


@dataclass
class EngineResult:
    """What one call produced: events, pending runs that ended unfired, counts."""

    events: list[AlertEvent] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    late: int = 0
    evaluations: int = 0
    # Transitions of a flapping alert: the state moved, nobody is told; the checkpoint
    # still has to follow them.
    held: list[AlertEvent] = field(default_factory=list)
    # Checkpoint rows that change with no event (an acknowledged state alert).
    checkpoint: list[ActiveAlert] = field(default_factory=list)
    # Acknowledgements stamped before the open alert they name began: for an earlier one.
    stale_acks: int = 0


@dataclass
class ReloadDiff:
    """What a rule reload changes. `would_*` judge the new rules on each device's latest
    readings; `events` resolve alerts of removed rules, so no dispatch job is left open."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    would_resolve: list[str] = field(default_factory=list)
    would_fire: list[str] = field(default_factory=list)
    events: list[AlertEvent] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)


class _RuleState:
    """Per-device state of one rule.

    Two dense flags per device (gathered for every batch) and, for the few devices with
    something going on, dicts by device index: a thousand rules over 100,000 devices must
    not hold a thousand float arrays of 100,000. `since` is the start of the current run
    (state rules) or of the open alert (event and no-data rules); a device is in it while
    its condition is on or its alert is firing.
    """

    FLAGS = ("active", "firing")
    MAPS = ("since", "last_notified", "keep_until", "resolved_at")

    def __init__(self, n: int) -> None:
        self.active = np.zeros(n, dtype=bool)
        self.firing = np.zeros(n, dtype=bool)
        self.since: dict[int, float] = {}
        self.last_notified: dict[int, float] = {}
        self.keep_until: dict[int, float] = {}
        self.resolved_at: dict[int, float] = {}
        self.acked: set[int] = set()
        # Readings at the start of a run, for the text of a timer-fired event.
        self.start_values: dict[int, dict[str, Any]] = {}
        # How many devices have the condition on: 0 lets a batch skip this rule cheaply.
        self.n_active = 0
        # Multi-level rules: the level (index into rule.levels) each firing alert is at.
        self.level: dict[int, int] = {}
        # Flapping rules: a bit per recent evaluation (1 = the state changed), who is
        # flapping, and what the dispatch side was last told (device -> alert start).
        self.flap_hist: dict[int, int] = {}
        self.flapping: set[int] = set()
        self.told: dict[int, float] = {}

    def set_active(self, idx: IntArr, values: BoolArr) -> None:
        self.n_active += int(values.sum()) - int(self.active[idx].sum())
        self.active[idx] = values


def _gather(values: dict[int, float], idx: IntArr) -> FloatArr:
    """values[i] for each i of idx (NaN where absent); idx is expected to be short."""
    return np.fromiter((values.get(i, np.nan) for i in idx.tolist()), dtype=np.float64, count=idx.shape[0])


def _open_since(since: dict[int, float]) -> tuple[IntArr, FloatArr]:
    """A since-map's devices and times as two arrays, in the map's order: the timer
    passes run every batch over every open alert, and test them all at once."""
    n = len(since)
    keys = np.fromiter(since.keys(), dtype=np.int64, count=n)
    return keys, np.fromiter(since.values(), dtype=np.float64, count=n)


def _put(values: dict[int, float], key: int, value: float) -> None:
    if math.isnan(value):
        values.pop(key, None)
    else:
        values[key] = value


@dataclass
class _Rows:
    """The rows of one batch, sorted by (device, ts), with filled columns and parameters."""

    dev: IntArr
    ts: FloatArr
    env: dict[str, FloatArr]
    present: dict[str, BoolArr]
    # Time of the device's previous reading (the one before the batch for its first row).
    prev_ts: FloatArr
    # The row's community was silent (one community alert stands for its devices).
    muted: BoolArr
    _relevant: dict[frozenset[str], BoolArr] = field(default_factory=dict)

    def relevant(self, fields: frozenset[str]) -> BoolArr:
        """Rows carrying at least one of `fields` (computed once per field set per batch)."""
        got = self._relevant.get(fields)
        if got is None:
            got = np.zeros(self.dev.shape[0], dtype=bool)
            for f in fields:
                p = self.present.get(f)
                if p is not None:
                    got |= p
            self._relevant[fields] = got
        return got


@dataclass
class _Cur:
    """One device's alert state while its rows of a batch are walked in time order."""

    firing: bool
    since: float
    keep_until: float
    resolved_at: float
    last_notified: float
    acked: bool
    pending: bool = False
    resumed: float | None = None


class _Env(dict[str, FloatArr]):
    """Batch columns; per-device parameter columns, and the local hour of each reading
    (`local_hour()`), are worked out on first use."""

    def __init__(
        self,
        base: dict[str, FloatArr],
        params: dict[str, FloatArr],
        dev: IntArr,
        *,
        ts: FloatArr | None = None,
        tz: ZoneInfo | None = None,
    ) -> None:
        super().__init__(base)
        self._params = params
        self._dev = dev
        self._ts = ts
        self._tz = tz

    def __missing__(self, key: str) -> FloatArr:
        if key == LOCAL_HOUR and self._ts is not None and self._tz is not None:
            col = self[key] = local_hours(self._ts, self._tz)
            return col
        arr = self._params.get(key)
        if arr is None:
            raise KeyError(key)
        col = self[key] = arr[self._dev]
        return col


def local_hours(ts: FloatArr, tz: ZoneInfo) -> FloatArr:
    """Each time's local hour of day (0 <= h < 24). One UTC offset serves the whole batch
    unless it spans a daylight-saving change (none in Asia/Shanghai)."""
    if ts.shape[0] == 0:
        return ts.copy()

    def offset(t: float) -> float:
        delta = datetime.fromtimestamp(t, tz).utcoffset()
        return delta.total_seconds() if delta is not None else 0.0

    lo, hi = offset(float(ts.min())), offset(float(ts.max()))
    offs = np.full(ts.shape[0], lo) if lo == hi else np.array([offset(float(t)) for t in ts])
    hours: FloatArr = np.mod(ts + offs, 86400.0) / 3600.0
    return hours


def _fill_forward(defined: BoolArr) -> npt.NDArray[np.intp]:
    """For each row, the index of the last row at or before it where `defined` holds."""
    pos = np.where(defined, np.arange(defined.shape[0]), 0)
    return np.maximum.accumulate(pos)


def _first_of_device(dev: IntArr) -> BoolArr:
    first = np.ones(dev.shape[0], dtype=bool)
    first[1:] = dev[1:] != dev[:-1]
    return first


def _last_of_device(dev: IntArr) -> BoolArr:
    last = np.ones(dev.shape[0], dtype=bool)
    last[:-1] = dev[1:] != dev[:-1]
    return last


def _params(rule: CompiledRule, fr: FamilyRules, dv: int) -> dict[str, float]:
    """The device's values of the parameters a rule reads (for the event's text)."""
    return {p: float(fr.param_arrays[p][dv]) for p in rule.params}


@overload
def _due(at: float, now: float) -> bool: ...
@overload
def _due(at: FloatArr, now: float) -> BoolArr: ...
def _due(at: float | FloatArr, now: float) -> bool | BoolArr:
    """One rule for every timer (for, keep_firing_for, cooldown, resolve_after, no-data,
    community silence): once the event-time clock reaches `at`, the timer has fired and
    the state shows it. Readings stamped exactly `at` are applied before it: in a batch
    the rows are walked before the clock moves, and a row at `at` that ends (or brings
    back) the condition decides first; see `_passed` for the walk."""
    return now >= at


@overload
def _passed(at: float, t: float) -> bool: ...
@overload
def _passed(at: FloatArr, t: FloatArr) -> BoolArr: ...
def _passed(at: float | FloatArr, t: float | FloatArr) -> bool | BoolArr:
    """In the walk over a device's readings: the reading at `t` comes after the timer due
    at `at` (a reading stamped exactly `at` comes before it)."""
    return t > at


def _latched(rule: CompiledRule) -> bool:
    """Rules whose open alert means "the condition is latched on" (`active`)."""
    return rule.kind == "state" and not rule.no_data and not rule.levels


def _community_fingerprint(community: str) -> str:
    return hashlib.sha256(f"community\x1f{COMMUNITY_RULE}\x1f{community}".encode()).hexdigest()[:16]
