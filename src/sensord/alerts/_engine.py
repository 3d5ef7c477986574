"""The alert engine: evaluates compiled rules over a family batch, in event time.

State is a few numpy arrays per rule, indexed by the device's registry index. For one
batch the rows are sorted by (device, ts) and every rule is evaluated as array
operations; Python loops run only over rows where an alert may change state.

Semantics (documented in the README's rule reference):
- A reading holds until the device's next reading says otherwise, field by field: a
  reading lacking a field uses the device's latest value of that field. A rule looks at a
  reading only when the reading carries at least one field the rule reads. A field never
  reported is unknown: comparisons with it are false.
- `when` latches the condition on, `clear` (default: not `when`) latches it off; a row
  that satisfies neither keeps the previous state (hysteresis).
- A run of the condition fires once it has held `for` seconds (and `cooldown` has passed
  since the alert last resolved): at the first reading past that time, or when the
  event-time clock passes it (`advance`). If the clearing reading comes after that time,
  the alert fires at that time and resolves at the clearing reading.
- `keep_firing_for`: a firing alert whose condition ends stays firing that long; if the
  condition returns meanwhile it simply goes on.
- Event rules (`kind: event`) fire on each rising edge of `when` and resolve on
  acknowledgement or `resolve_after` later; a rising edge while open changes nothing.
- No-data rules fire when a device has sent nothing for their duration and resolve at
  its next reading; a community from which nothing at all arrives is one alert instead.
- A reading older than the device's newest reading already applied is late: it is not
  applied to rule state (it is counted); within one batch rows are sorted by time.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
import numpy.typing as npt
import orjson

from sensord._registry import Device, Registry
from sensord._settings import AlertSettings
from sensord._types import AlertEvent, AlertStatus, Family, Severity
from sensord.alerts._events import event_id, fingerprint, make_event, readings
from sensord.alerts._windows import WindowHistory
from sensord.decode import FamilyBatch
from sensord.rules import CompiledRule, FamilyRules, RuleSet

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
    """Batch columns; per-device parameter columns are gathered on first use."""

    def __init__(self, base: dict[str, FloatArr], params: dict[str, FloatArr], dev: IntArr) -> None:
        super().__init__(base)
        self._params = params
        self._dev = dev

    def __missing__(self, key: str) -> FloatArr:
        arr = self._params.get(key)
        if arr is None:
            raise KeyError(key)
        col = self[key] = arr[self._dev]
        return col


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


class Engine:
    """Rule evaluation and alert lifecycle for all families."""

    def __init__(self, rules: RuleSet, registry: Registry, alerts: AlertSettings) -> None:
        self._rules = rules
        self._registry = registry
        self._settings = alerts
        self._repeat_default = alerts.repeat_interval_s
        self._state: dict[Family, list[_RuleState]] = {}
        self._dur: dict[Family, list[dict[str, FloatArr]]] = {}
        # Multi-level rules: one condition latch per level.
        self._latches: dict[Family, list[list[_RuleState]]] = {}
        self._last_ts: dict[Family, FloatArr] = {}
        # Each device's latest value of every field: readings carry only some fields, and
        # a rule reload judges new rules on these.
        self._last_vals: dict[Family, dict[str, FloatArr]] = {}
        self._windows: dict[Family, WindowHistory] = {}
        # Community of each device (index into _communities), per family.
        names = sorted({d.entry.community for d in registry.by_id.values()})
        self._communities = names
        index = {c: i for i, c in enumerate(names)}
        self._comm_of: dict[Family, IntArr] = {}
        self._comm_size = np.zeros(len(names), dtype=np.int64)
        self._comm_last = np.full(len(names), -np.inf)
        self._comm_firing = np.zeros(len(names), dtype=bool)
        self._comm_since = np.full(len(names), np.nan)
        # When each community was last heard again after a silence: its devices' own
        # silences count from then, not from before the outage.
        self._comm_back = np.full(len(names), -np.inf)
        # The event time the stream started at: the baseline for devices never heard from.
        self.origin = math.nan
        # This batch's readings by community (set by `begin`), to tell a device's own
        # silence from its community's.
        self._heard: tuple[IntArr, FloatArr, FloatArr] | None = None
        # This batch's community outages: (last heard before, heard again), by community.
        self._outages: dict[int, list[tuple[float, float]]] = {}
        self._back_at_begin = self._comm_back.copy()
        for family in Family:
            devices = registry.devices(family)
            n = len(devices)
            comm = np.fromiter((index[d.entry.community] for d in devices), dtype=np.int64, count=n)
            self._comm_of[family] = comm
            np.add.at(self._comm_size, comm, 1)
            self._last_ts[family] = np.full(n, -np.inf)
            self._last_vals[family] = {}
        for family, fr in rules.by_family.items():
            n = registry.count(family)
            self._state[family] = [_RuleState(n) for _ in fr.rules]
            self._latches[family] = [[_RuleState(n) for _ in rule.levels] for rule in fr.rules]
            self._dur[family] = [self._durations(rule, fr, n) for rule in fr.rules]
            specs = {w for r in fr.rules for w in r.windows}
            if specs:
                self._windows[family] = WindowHistory(specs, n)

    @staticmethod
    def _durations(rule: CompiledRule, fr: FamilyRules, n: int) -> dict[str, FloatArr]:
        """Each duration per device: a parameter's array, or a zero-memory broadcast."""
        out: dict[str, FloatArr] = {}
        for key, ref in rule.durations.items():
            out[key] = (
                fr.param_arrays[ref] if isinstance(ref, str) else np.broadcast_to(np.float64(ref), (n,))
            )
        return out

    # -- batches ----------------------------------------------------------------------
    def begin(self, batches: Iterable[FamilyBatch]) -> EngineResult:
        """Before the families of one batch are processed: community silences inside it.

        A community whose readings (all families) leave a gap of `community_silence_s`
        was silent then, wherever the batches were cut: the alert fires at the start of
        the gap + the limit and resolves at the reading that ends it."""
        result = EngineResult()
        self._heard = None
        self._outages = {}
        self._back_at_begin = self._comm_back.copy()
        limit = self._settings.community_silence_s
        parts = [(self._comm_of[b.family][b.device], b.ts) for b in batches if len(b)]
        if limit <= 0 or not parts or not self._communities:
            return result
        comm = np.concatenate([c for c, _ in parts])
        ts = np.concatenate([t for _, t in parts])
        if math.isnan(self.origin):
            self.origin = float(ts.min())
        order = np.lexsort((ts, comm))
        comm, ts = comm[order], ts[order]
        before = np.where(np.isfinite(self._comm_last), self._comm_last, self.origin)
        # A late reading (older than the community's newest) says nothing about a silence.
        current = ts >= before[comm]
        comm, ts = comm[current], ts[current]
        self._heard = (comm, ts, before.copy())
        prev = np.empty(ts.shape[0])
        prev[1:] = ts[:-1]
        first = np.ones(ts.shape[0], dtype=bool)
        first[1:] = comm[1:] != comm[:-1]
        prev[first] = before[comm[first]]
        judged = self._comm_size[comm] >= self._settings.community_min_devices
        for r in map(int, np.flatnonzero(judged & _passed(prev + limit, ts))):
            ci, at = int(comm[r]), float(ts[r])
            self._outages.setdefault(ci, []).append((float(prev[r]), at))
            if not self._comm_firing[ci]:
                start = float(prev[r] + limit)
                result.events.append(self._community_event(ci, AlertStatus.FIRING, start))
                self._comm_since[ci] = start
            result.events.append(self._community_event(ci, AlertStatus.RESOLVED, at))
            self._comm_firing[ci], self._comm_since[ci], self._comm_back[ci] = False, np.nan, at
        for still in map(int, np.flatnonzero(self._comm_firing)):
            hit = comm == still
            if hit.any():  # the silence began before this batch and ends in it
                at = float(ts[hit][0])
                quiet = float(self._comm_since[still]) - self._settings.community_silence_s
                self._outages.setdefault(still, []).append((quiet, at))
                result.events.append(self._community_event(still, AlertStatus.RESOLVED, at))
                self._comm_firing[still], self._comm_since[still], self._comm_back[still] = False, np.nan, at
        return result

    def _community_heard(self, ci: int, t0: float, t1: float) -> bool:
        """Did anything of community `ci` arrive in [t0, t1) (this batch or before it)?"""
        if self._heard is None:
            return True  # no community view of this batch: judge the device alone
        comm, ts, before = self._heard
        if before[ci] >= t0:
            return True
        lo, hi = np.searchsorted(comm, ci, "left"), np.searchsorted(comm, ci, "right")
        j = lo + int(np.searchsorted(ts[lo:hi], t0, "left"))
        return bool(j < hi and ts[j] < t1)

    def process(self, batch: FamilyBatch) -> EngineResult:
        """Evaluate every rule of the batch's family over the batch (after `begin`)."""
        result = EngineResult()
        if len(batch) == 0:
            return result
        fr = self._rules.by_family.get(batch.family)
        rows = self._sorted_rows(batch, fr, result)
        if rows is None:
            return result
        if fr is None:
            return result
        for i, rule in enumerate(fr.rules):
            st, dur = self._state[batch.family][i], self._dur[batch.family][i]
            if rule.no_data:
                self._no_data_resumes(rule, st, dur, fr, rows, result)
            elif rule.kind == "event":
                self._evaluate_event(rule, st, dur, fr, rows, result)
            elif rule.levels:
                self._evaluate_levels(rule, st, self._latches[batch.family][i], fr, rows, result)
            else:
                self._evaluate_state(rule, st, dur, fr, rows, result)
        result.events.sort(key=lambda e: (e.event_time, _ORDER[e.status]))
        return result

    def _sorted_rows(self, batch: FamilyBatch, fr: FamilyRules | None, result: EngineResult) -> _Rows | None:
        family = batch.family
        order = np.lexsort((batch.ts, batch.device))
        dev, ts = batch.device[order], batch.ts[order]
        last_ts = self._last_ts[family]
        late = ts < last_ts[dev]
        if late.any():
            result.late = int(late.sum())
            keep = ~late
            order, dev, ts = order[keep], dev[keep], ts[keep]
        if dev.shape[0] == 0:
            return None
        prev_ts = np.empty(dev.shape[0])
        prev_ts[1:] = ts[:-1]
        starts = _first_of_device(dev)
        prev_ts[starts] = last_ts[dev[starts]]
        np.maximum.at(last_ts, dev, ts)
        np.maximum.at(self._comm_last, self._comm_of[family][dev], ts)
        if math.isnan(self.origin):
            self.origin = float(ts.min())
        raw = {name: col[order] for name, col in batch.columns.items()}
        first = _first_of_device(dev)
        seg = np.maximum.accumulate(np.where(first, np.arange(dev.shape[0]), 0))
        store = self._last_vals[family]
        env: dict[str, FloatArr] = {}
        present: dict[str, BoolArr] = {}
        for name, col in raw.items():
            defined = ~np.isnan(col)
            present[name] = defined
            if defined.all():
                env[name] = col
                continue
            pos = _fill_forward(defined)
            prev = store.get(name)
            fallback = prev[dev] if prev is not None else np.full(dev.shape[0], np.nan)
            env[name] = np.where(defined[pos] & (pos >= seg), col[pos], fallback)
        self._remember(family, dev, env)
        if family in self._windows:
            env.update(self._windows[family].update(dev, ts, raw, present, last_ts))
        if fr is not None:
            # A parameter nobody overrides is the plain number; overridden ones are looked up
            # per row only when a rule reads them.
            env.update({p: np.float64(v) for p, v in fr.constant.items()})  # type: ignore[misc]
            env = _Env(env, fr.param_arrays, dev)
        return _Rows(dev, ts, env, present, prev_ts, self._comm_firing[self._comm_of[family][dev]])

    def _remember(self, family: Family, dev: IntArr, env: dict[str, FloatArr]) -> None:
        store = self._last_vals[family]
        last = _last_of_device(dev)
        ld = dev[last]
        n = self._registry.count(family)
        for name, col in env.items():
            v = col[last]
            ok = ~np.isnan(v)
            if not ok.any():
                continue
            arr = store.get(name)
            if arr is None:
                arr = store[name] = np.full(n, np.nan)
            arr[ld[ok]] = v[ok]

    def _latch(
        self, rule: CompiledRule, st: _RuleState, rows: _Rows, result: EngineResult
    ) -> tuple[npt.NDArray[np.intp], BoolArr, BoolArr, BoolArr, FloatArr] | None:
        """Rows this rule looks at, and per row: latched state, run start, run end, run since."""
        assert rule.when is not None
        relevant = rows.relevant(rule.watched)
        raw = rule.when.fn(rows.env)
        when = (raw if raw.shape == relevant.shape else np.broadcast_to(raw, relevant.shape)) & relevant
        if not when.any() and (not st.n_active or not (st.active[rows.dev] & relevant).any()):
            return None  # the common case: nothing is or becomes active
        idx = np.flatnonzero(relevant)
        result.evaluations += int(idx.shape[0])
        if rule.clear is not None:
            clear = np.broadcast_to(rule.clear.fn(rows.env), relevant.shape)[idx]
        else:
            clear = ~when[idx]
        d, t, c = rows.dev[idx], rows.ts[idx], when[idx]
        first = _first_of_device(d)
        init_active = st.active[d]
        # Latch: 1 = condition on, 0 = cleared, -1 = neither (keep the previous state).
        ev = np.where(c, 1, np.where(clear, 0, -1)).astype(np.int8)
        seed = first & (ev < 0)
        ev[seed] = init_active[seed]
        a = ev[_fill_forward(ev >= 0)].astype(bool)
        prev = np.empty(d.shape[0], dtype=bool)
        prev[1:] = a[:-1]
        prev[first] = init_active[first]
        start, end = a & ~prev, ~a & prev
        carried = first & a & ~start  # a run already active before this batch
        since_at = np.where(start, t, np.nan)
        since_at[carried] = _gather(st.since, d[carried])
        run_since = np.where(a, since_at[_fill_forward(start | carried)], np.nan)
        before = np.empty(d.shape[0])
        before[1:] = run_since[:-1]
        before[first] = np.nan
        was_on = first & init_active
        before[was_on] = _gather(st.since, d[was_on])
        run_since = np.where(end, before, run_since)
        return idx, a, start, end, run_since

    def _cur(self, st: _RuleState, dv: int) -> _Cur:
        return _Cur(
            firing=bool(st.firing[dv]),
            since=st.since.get(dv, math.nan),
            keep_until=st.keep_until.get(dv, math.nan),
            resolved_at=st.resolved_at.get(dv, math.nan),
            last_notified=st.last_notified.get(dv, math.nan),
            acked=dv in st.acked,
        )

    def _evaluate_state(  # noqa: C901, PLR0912, PLR0913, PLR0915, PLR0917 - one walk over the changing rows
        self,
        rule: CompiledRule,
        st: _RuleState,
        dur: dict[str, FloatArr],
        fr: FamilyRules,
        rows: _Rows,
        result: EngineResult,
    ) -> None:
        latched = self._latch(rule, st, rows, result)
        if latched is None:
            return
        idx, a, start, end, run_since = latched
        d, t = rows.dev[idx], rows.ts[idx]
        for_s, keep, cool = dur["for"], dur["keep_firing_for"], dur["cooldown"]
        firing_rows = st.firing[d]
        was_firing = np.zeros(d.shape[0], dtype=bool)
        fr_idx = np.flatnonzero(firing_rows)
        if fr_idx.shape[0]:
            was_firing[fr_idx] = run_since[fr_idx] == _gather(st.since, d[fr_idx])
        due = run_since + for_s[d]
        if st.resolved_at:
            due = np.fmax(due, _gather(st.resolved_at, d) + cool[d])
        repeat_s = rule.repeat_s if rule.repeat_s is not None else self._repeat_default
        interesting = start | end | ((a | end) & ~was_firing & (t >= due))
        if repeat_s:
            interesting |= a & firing_rows
        if st.keep_until:
            interesting |= np.isin(d, np.fromiter(st.keep_until, dtype=np.int64))
        if st.resolved_at or st.keep_until or keep.any():
            interesting |= np.isin(d, d[end])
        flap_on = flap_edge = None
        if rule.flapping is not None:
            flap_on, flap_edge = self._flap(rule, st, d, start | end)
            interesting |= flap_edge
        devices = self._registry.devices(rule.family)
        curs: dict[int, _Cur] = {}
        for r in map(int, np.flatnonzero(interesting)):
            dv, tr = int(d[r]), float(t[r])
            c = curs.get(dv)
            if c is None:
                c = curs[dv] = self._cur(st, dv)
            device = devices[dv]
            params = _params(rule, fr, dv)
            # While an alert flaps its notifications are held; the state still moves.
            hold = flap_on is not None and flap_edge is not None and bool(flap_on[r] or flap_edge[r])
            out = result.held if hold else result.events

            def values(r: int = r, tr: float = tr) -> dict[str, Any]:
                return readings(rule, fr.specs, rows.env, int(idx[r]), tr)

            if not math.isnan(c.keep_until) and _passed(c.keep_until, tr):
                out.append(
                    self._ev(
                        rule,
                        device,
                        params,
                        AlertStatus.RESOLVED,
                        c.since,
                        c.keep_until,
                        c.keep_until,
                        values(),
                    )
                )
                c.firing, c.resolved_at, c.keep_until, c.acked = False, c.keep_until, math.nan, False
            if start[r]:
                if not math.isnan(c.keep_until):
                    c.keep_until, c.resumed = math.nan, c.since  # the kept alert simply goes on
                else:
                    c.resumed, c.since = None, tr
                    st.since[dv] = tr
                    first_due = tr + float(for_s[dv])
                    if not math.isnan(c.resolved_at):
                        first_due = max(first_due, c.resolved_at + float(cool[dv]))
                    if first_due > tr:
                        c.pending = True
                        st.start_values[dv] = values()
                        out.append(
                            self._ev(rule, device, params, AlertStatus.PENDING, tr, None, tr, values())
                        )
            since = c.resumed if c.resumed is not None else float(run_since[r])
            if (a[r] or end[r]) and not c.firing:
                fire_at = since + float(for_s[dv])
                if not math.isnan(c.resolved_at):
                    fire_at = max(fire_at, c.resolved_at + float(cool[dv]))
                # A reading at fire_at that still holds the condition fires (it held for
                # `for`); one that ends it there ends a run that never fired.
                if (a[r] and tr >= fire_at) or _passed(fire_at, tr):
                    held = st.start_values.get(dv) if end[r] else None
                    out.append(
                        self._ev(
                            rule, device, params, AlertStatus.FIRING, since, None, fire_at, held or values()
                        )
                    )
                    c.firing, c.since, c.last_notified, c.pending = True, since, fire_at, False
            elif a[r] and c.firing and repeat_s and not c.acked and tr - c.last_notified >= repeat_s:
                out.append(
                    self._ev(rule, device, params, AlertStatus.FIRING, since, None, tr, values(), repeat=True)
                )
                c.last_notified = tr
            if end[r]:
                if c.firing and float(keep[dv]) > 0:
                    c.keep_until, c.since = tr + float(keep[dv]), since
                elif c.firing:
                    out.append(self._ev(rule, device, params, AlertStatus.RESOLVED, since, tr, tr, values()))
                    c.firing, c.resolved_at, c.acked = False, tr, False
                elif c.pending:
                    result.cancelled.append(fingerprint(rule, device))
                c.pending, c.resumed = False, None
                st.start_values.pop(dv, None)
            if rule.flapping is not None:
                settled = bool(
                    flap_edge is not None and flap_on is not None and flap_edge[r] and not flap_on[r]
                )
                self._tell(rule, st, device, params, c, dv, tr, result, held=hold, settled=settled)
        self._write_back(st, d, a, curs)

    @staticmethod
    def _flap(rule: CompiledRule, st: _RuleState, d: IntArr, changed: BoolArr) -> tuple[BoolArr, BoolArr]:
        """Per row: is the alert flapping, and did flapping start or end at this row."""
        spec = rule.flapping
        assert spec is not None
        full = (1 << spec.window) - 1
        on = np.zeros(d.shape[0], dtype=bool)
        edge = np.zeros(d.shape[0], dtype=bool)
        for r, (dv, ch) in enumerate(zip(d.tolist(), changed.tolist(), strict=True)):
            m = ((st.flap_hist.get(dv, 0) << 1) | int(ch)) & full
            if m:
                st.flap_hist[dv] = m
            else:
                st.flap_hist.pop(dv, None)
            share = m.bit_count() / spec.window
            flapping = dv in st.flapping
            if not flapping and share >= spec.high:
                st.flapping.add(dv)
                edge[r] = flapping = True
            elif flapping and share <= spec.low:
                st.flapping.discard(dv)
                edge[r], flapping = True, False
            on[r] = flapping
        return on, edge

    def _tell(  # noqa: PLR0913, PLR0917 - the facts of one catch-up
        self,
        rule: CompiledRule,
        st: _RuleState,
        device: Device,
        params: dict[str, float],
        c: _Cur,
        dv: int,
        tr: float,
        result: EngineResult,
        *,
        held: bool,
        settled: bool,
    ) -> None:
        """`told` is what the dispatch side last heard. Outside flapping every change is
        sent, so it follows the state; when flapping ends, one event brings the dispatch
        side to the alert's current state."""
        if not held:
            _put(st.told, dv, c.since if c.firing else math.nan)
            return
        if not settled:
            return
        vals = {"ts": tr, "flapping_ended": True}
        if c.firing and dv not in st.told:
            result.events.append(self._ev(rule, device, params, AlertStatus.FIRING, c.since, None, tr, vals))
            st.told[dv] = c.since
        elif not c.firing and dv in st.told:
            since = st.told.pop(dv)
            result.events.append(self._ev(rule, device, params, AlertStatus.RESOLVED, since, tr, tr, vals))

    @staticmethod
    def _write_back(st: _RuleState, d: IntArr, a: BoolArr, curs: dict[int, _Cur]) -> None:
        last = _last_of_device(d)
        st.set_active(d[last], a[last])
        # Every change of since/firing happened at a start or end row, all of them walked.
        for dv, c in curs.items():
            st.firing[dv] = c.firing
            _put(st.keep_until, dv, c.keep_until)
            _put(st.resolved_at, dv, c.resolved_at)
            _put(st.last_notified, dv, c.last_notified if c.firing else math.nan)
            if c.acked:
                st.acked.add(dv)
            else:
                st.acked.discard(dv)
            if c.resumed is not None and st.active[dv]:
                st.since[dv] = c.resumed
            elif c.firing and not st.active[dv]:
                st.since[dv] = c.since  # kept: resolves with the start it fired with
            elif not st.active[dv]:
                st.since.pop(dv, None)

    def _evaluate_event(  # noqa: PLR0913, PLR0917 - the facts of one evaluation
        self,
        rule: CompiledRule,
        st: _RuleState,
        dur: dict[str, FloatArr],
        fr: FamilyRules,
        rows: _Rows,
        result: EngineResult,
    ) -> None:
        latched = self._latch(rule, st, rows, result)
        if latched is None:
            return
        idx, a, start, _end, _run_since = latched
        d, t = rows.dev[idx], rows.ts[idx]
        resolve, cool = dur["resolve_after"], dur["cooldown"]
        devices = self._registry.devices(rule.family)
        for r in map(int, np.flatnonzero(start)):
            dv, tr = int(d[r]), float(t[r])
            device = devices[dv]
            params = _params(rule, fr, dv)
            vals = readings(rule, fr.specs, rows.env, int(idx[r]), tr)
            # An edge exactly at the resolve time resolves the open alert first and opens a
            # new one: a press is never swallowed by an alert that ends that instant.
            if st.firing[dv] and tr >= st.since[dv] + resolve[dv]:
                opened = st.since.pop(dv)
                end_at = float(opened + resolve[dv])
                result.events.append(
                    self._ev(rule, device, params, AlertStatus.RESOLVED, opened, end_at, end_at, vals)
                )
                st.firing[dv], st.resolved_at[dv] = False, end_at
                st.last_notified.pop(dv, None)
            if st.firing[dv] or tr < st.resolved_at.get(dv, -math.inf) + cool[dv]:
                continue  # already open, or still cooling down: this edge is part of it
            result.events.append(self._ev(rule, device, params, AlertStatus.FIRING, tr, None, tr, vals))
            st.firing[dv] = True
            st.since[dv], st.last_notified[dv] = tr, tr
            st.start_values[dv] = vals
        last = _last_of_device(d)
        st.set_active(d[last], a[last])

    def _evaluate_levels(  # noqa: PLR0913, PLR0917 - the facts of one evaluation
        self,
        rule: CompiledRule,
        st: _RuleState,
        latches: list[_RuleState],
        fr: FamilyRules,
        rows: _Rows,
        result: EngineResult,
    ) -> None:
        """Levels as Kapacitor's reset expressions work: a level above the current one whose
        condition holds raises the alert to it; the current level stays until its reset
        (`clear`, default: its condition no longer holds) holds, and then the new level is
        the highest lower level whose *condition* holds on that reading (not an earlier
        latch), or none. Every change of level is an event: firing at a new severity, or
        resolved when no level holds."""
        relevant = rows.relevant(rule.watched)
        whens = [
            np.broadcast_to(lv.when.fn(rows.env), relevant.shape) & relevant for lv in rule.levels if lv.when
        ]
        if not any(w.any() for w in whens) and not (st.since and st.firing[rows.dev].any()):
            return
        idx = np.flatnonzero(relevant)
        result.evaluations += int(idx.shape[0]) * len(rule.levels)
        d, t = rows.dev[idx], rows.ts[idx]
        trig = np.stack([w[idx] for w in whens])  # (levels, rows)
        reset = np.stack(
            [
                np.broadcast_to(lv.clear.fn(rows.env), relevant.shape)[idx] if lv.clear else ~trig[k]
                for k, lv in enumerate(rule.levels)
            ]
        )
        level, prev = self._walk_levels(st, d, trig, reset)
        last = _last_of_device(d)
        for k, latch in enumerate(latches):  # kept for snapshots: the level each device is at
            latch.set_active(d[last], level[last] == k)
        devices = self._registry.devices(rule.family)
        for r in map(int, np.flatnonzero(level != prev)):
            dv, tr, now, before = int(d[r]), float(t[r]), int(level[r]), int(prev[r])
            shown = rule.levels[now if now >= 0 else max(before, 0)]
            params = _params(rule, fr, dv)
            vals = readings(shown, fr.specs, rows.env, int(idx[r]), tr)
            if now < 0:
                since = st.since.pop(dv, tr)
                result.events.append(
                    self._ev(shown, devices[dv], params, AlertStatus.RESOLVED, since, tr, tr, vals)
                )
                st.firing[dv] = False
                st.level.pop(dv, None)
                continue
            since = st.since.setdefault(dv, tr)
            result.events.append(
                self._ev(shown, devices[dv], params, AlertStatus.FIRING, since, None, tr, vals)
            )
            st.firing[dv] = True
            st.level[dv] = now
            st.last_notified[dv] = tr

    @staticmethod
    def _walk_levels(
        st: _RuleState, d: IntArr, trig: BoolArr, reset: BoolArr
    ) -> tuple[IntArr, IntArr]:
        """Per row: the level after it and the level before it (-1: none). A walk in time
        order, since each row's answer depends on the level the previous one left."""
        n_levels = trig.shape[0]
        level = np.full(d.shape[0], -1, dtype=np.int64)
        prev = np.full(d.shape[0], -1, dtype=np.int64)
        current, device = -1, -1
        trig_rows, reset_rows = trig.T.tolist(), reset.T.tolist()
        for r, dv in enumerate(d.tolist()):
            if dv != device:
                device, current = dv, st.level.get(dv, -1)
            prev[r] = current
            on = trig_rows[r]
            higher = [k for k in range(current + 1, n_levels) if on[k]]
            if higher:
                current = higher[-1]
            elif current >= 0 and reset_rows[r][current]:
                current = next((k for k in range(current, -1, -1) if on[k]), -1)
            level[r] = current
        return level, prev

    def _no_data_resumes(  # noqa: PLR0913, PLR0917
        self,
        rule: CompiledRule,
        st: _RuleState,
        dur: dict[str, FloatArr],
        fr: FamilyRules,
        rows: _Rows,
        result: EngineResult,
    ) -> None:
        """A reading ends a silence: a firing no-data alert resolves at it; a gap longer
        than the limit inside the stream (seen in one batch) fires and resolves at once,
        so the answer does not depend on where batches were cut."""
        limit = dur["no_data"][rows.dev]
        comm = self._comm_of[rule.family]
        base = np.where(np.isfinite(rows.prev_ts), rows.prev_ts, self.origin)
        back_before = (self._back_at_begin if self._heard is not None else self._comm_back)[comm[rows.dev]]
        base = np.where(back_before <= rows.ts, np.maximum(base, back_before), base)
        gap = (limit > 0) & _passed(base + limit, rows.ts)  # heard exactly at the limit: not silent
        back = (_first_of_device(rows.dev) & st.firing[rows.dev]) | (gap & ~rows.muted)
        devices = self._registry.devices(rule.family)
        for r in map(int, np.flatnonzero(back)):
            dv, tr = int(rows.dev[r]), float(rows.ts[r])
            params = _params(rule, fr, dv)
            if not st.firing[dv]:
                start = self._own_silence(int(comm[dv]), float(base[r]), float(limit[r]), tr)
                if start is None:
                    continue  # the whole community was quiet: its community alert stands for it
                vals = {"ts": start, "last_seen": start - float(limit[r])}
                result.events.append(
                    self._ev(rule, devices[dv], params, AlertStatus.FIRING, start, None, start, vals)
                )
                st.since[dv] = start
            since = st.since.pop(dv)
            vals = {"ts": tr, "silent_since": since}
            result.events.append(
                self._ev(rule, devices[dv], params, AlertStatus.RESOLVED, since, tr, tr, vals)
            )
            st.firing[dv] = False
            st.last_notified.pop(dv, None)

    def _own_silence(self, ci: int, base: float, limit: float, t: float) -> float | None:
        """When a device quiet from `base` until its reading at `t` was silent on its own
        (the time its no-data alert fires), or None if its community's silence covers it.

        As live: the device pages at base + limit if its community was heard after that
        and before any community outage began; if an outage came first, its silence counts
        again from the community's return."""
        judged = (
            self._settings.community_silence_s > 0
            and self._comm_size[ci] >= self._settings.community_min_devices
        )
        if not judged:
            return base + limit
        deadline = base + limit
        outages = [(q, b) for q, b in self._outages.get(ci, ()) if b > base and q < t]
        if not outages:
            return deadline if self._community_heard(ci, deadline, t) else None
        quiet_from, _ = outages[0]
        if deadline <= quiet_from and self._community_heard(
            ci, deadline, math.nextafter(quiet_from, math.inf)
        ):
            return deadline
        back = max(b for _, b in outages if b <= t)
        again = back + limit
        return again if again <= t and self._community_heard(ci, again, t) else None

    def _ev(  # noqa: PLR0913, PLR0917 - the facts of one transition
        self,
        rule: CompiledRule,
        device: Device,
        params: dict[str, float],
        status: AlertStatus,
        starts_at: float,
        ends_at: float | None,
        at: float,
        values: dict[str, Any],
        *,
        repeat: bool = False,
    ) -> AlertEvent:
        return make_event(
            rule,
            device,
            params,
            status=status,
            starts_at=starts_at,
            ends_at=ends_at,
            event_time=at,
            values=values,
            repeat=repeat,
        )

    def _community_event(self, ci: int, status: AlertStatus, at: float) -> AlertEvent:
        name = self._communities[ci]
        since = float(self._comm_since[ci]) if status is AlertStatus.RESOLVED else at
        fp = _community_fingerprint(name)
        silent_min = self._settings.community_silence_s / 60
        return AlertEvent(
            event_id=event_id(fp, status, since, at, repeat=False),
            fingerprint=fp,
            status=status,
            rule=COMMUNITY_RULE,
            severity=Severity.CRITICAL,
            # Every fire sensor and wristband of the community is unheard: treat as life-safety.
            life_safety=True,
            family="community",
            device_id="",
            community=name,
            grid="",
            location={},
            labels={"team": "operations"},
            summary=f"No message from any device in {name} for {silent_min:g} min: gateway or broker down?",
            description="",
            readings={"ts": at, "devices": int(self._comm_size[ci])},
            dispatch=("operator", "grid_worker"),
            starts_at=since,
            ends_at=at if status is AlertStatus.RESOLVED else None,
            event_time=at,
        )

    # -- timers -----------------------------------------------------------------------
    def advance(self, watermark: float) -> EngineResult:
        """Everything the event-time clock reaching `watermark` causes: pending runs that
        have held long enough fire, kept alerts and expired events resolve, silent devices
        and communities alert."""
        result = EngineResult()
        if math.isnan(self.origin):
            self.origin = watermark
        self._community_silences(watermark, result)
        for family, fr in self._rules.by_family.items():
            devices = self._registry.devices(family)
            for rule, st, dur in zip(fr.rules, self._state[family], self._dur[family], strict=True):
                if rule.no_data:
                    self._no_data_silences(rule, st, dur, fr, watermark, result)
                elif rule.kind == "event":
                    self._expire_events(rule, st, dur, fr, watermark, result)
                elif not rule.levels:
                    self._state_timers(rule, st, dur, fr, devices, watermark, result)
        result.events.sort(key=lambda e: (e.event_time, _ORDER[e.status]))
        return result

    def _state_timers(  # noqa: C901, PLR0913, PLR0917 - the facts of one timer pass
        self,
        rule: CompiledRule,
        st: _RuleState,
        dur: dict[str, FloatArr],
        fr: FamilyRules,
        devices: tuple[Device, ...],
        watermark: float,
        result: EngineResult,
    ) -> None:
        if not st.since:
            return
        flaps = rule.flapping is not None
        for dv, since in list(st.since.items()):
            if not st.active[dv] or st.firing[dv]:
                continue
            at = since + float(dur["for"][dv])
            if dv in st.resolved_at:
                at = max(at, st.resolved_at[dv] + float(dur["cooldown"][dv]))
            if not _due(at, watermark):
                continue
            vals = st.start_values.get(dv, {"ts": since})
            params = _params(rule, fr, dv)
            st.firing[dv] = True
            st.last_notified[dv] = at
            fired = self._ev(rule, devices[dv], params, AlertStatus.FIRING, since, None, at, vals)
            if flaps and dv in st.flapping:
                result.held.append(fired)  # held while flapping; sent when it settles
                continue
            result.events.append(fired)
            if flaps:
                st.told[dv] = since
        for dv, at in list(st.keep_until.items()):
            if not _due(at, watermark):
                continue
            vals = st.start_values.get(dv, {"ts": at})
            params = _params(rule, fr, dv)
            since = st.since.pop(dv, at)
            st.firing[dv], st.resolved_at[dv] = False, at
            del st.keep_until[dv]
            st.acked.discard(dv)
            st.last_notified.pop(dv, None)
            resolved = self._ev(rule, devices[dv], params, AlertStatus.RESOLVED, since, at, at, vals)
            if flaps and dv in st.flapping:
                result.held.append(resolved)
                continue
            result.events.append(resolved)
            st.told.pop(dv, None)

    def _expire_events(  # noqa: PLR0913, PLR0917
        self,
        rule: CompiledRule,
        st: _RuleState,
        dur: dict[str, FloatArr],
        fr: FamilyRules,
        watermark: float,
        result: EngineResult,
    ) -> None:
        devices = self._registry.devices(rule.family)
        for dv, since in list(st.since.items()):
            at = since + float(dur["resolve_after"][dv])
            if not st.firing[dv] or not _due(at, watermark):
                continue
            params = _params(rule, fr, dv)
            vals = st.start_values.pop(dv, {"ts": at})
            result.events.append(
                self._ev(rule, devices[dv], params, AlertStatus.RESOLVED, since, at, at, vals)
            )
            st.firing[dv], st.resolved_at[dv] = False, at
            del st.since[dv]
            st.last_notified.pop(dv, None)

    def _no_data_silences(  # noqa: PLR0913, PLR0917
        self,
        rule: CompiledRule,
        st: _RuleState,
        dur: dict[str, FloatArr],
        fr: FamilyRules,
        watermark: float,
        result: EngineResult,
    ) -> None:
        family = rule.family
        seen = self._last_ts[family]
        comm = self._comm_of[family]
        base = np.maximum(np.where(np.isfinite(seen), seen, self.origin), self._comm_back[comm])
        limit = dur["no_data"]
        muted = self._comm_firing[comm]
        due = ~st.firing & ~muted & (limit > 0) & _due(base + limit, watermark)
        if self._settings.community_silence_s > 0:
            # A device is silent on its own only while its community is heard from: when
            # the whole community is quiet (gateway down) one community alert stands for
            # all, so wait for it rather than page once per device first.
            judged = self._comm_size[comm] >= self._settings.community_min_devices
            heard = self._comm_last[comm] >= base + limit
            due &= ~judged | heard
        if not due.any():
            return
        devices = self._registry.devices(family)
        for dv in map(int, np.flatnonzero(due)):
            at = float(base[dv] + limit[dv])
            params = _params(rule, fr, dv)
            vals = {"ts": at, "last_seen": float(seen[dv]) if np.isfinite(seen[dv]) else None}
            result.events.append(self._ev(rule, devices[dv], params, AlertStatus.FIRING, at, None, at, vals))
            st.firing[dv] = True
            st.since[dv], st.last_notified[dv] = at, at

    def _community_silences(self, watermark: float, result: EngineResult) -> None:
        limit = self._settings.community_silence_s
        if limit <= 0 or not self._communities:
            return
        base = np.where(np.isfinite(self._comm_last), self._comm_last, self.origin)
        due = ~self._comm_firing & (self._comm_size >= self._settings.community_min_devices)
        due &= _due(base + limit, watermark)
        for ci in np.flatnonzero(due):
            at = float(base[ci] + limit)
            result.events.append(self._community_event(int(ci), AlertStatus.FIRING, at))
            self._comm_firing[ci] = True
            self._comm_since[ci] = at

    # -- acknowledgement --------------------------------------------------------------
    def has_rule(self, family: Family, name: str) -> bool:
        """Is there a rule of this name for this family (an acknowledgement may name it)?"""
        fr = self._rules.by_family.get(family)
        return fr is not None and any(r.name == name for r in fr.rules)

    def acknowledge(self, device_id: str, rule_name: str, ts: float, by: str = "") -> EngineResult:
        """The dispatch side acknowledged an alert: an open event alert resolves; a state
        alert stops repeating until it resolves. Unknown device or rule: nothing."""
        result = EngineResult()
        device = self._registry.get(device_id)
        fr = self._rules.by_family.get(device.family) if device is not None else None
        if device is None or fr is None:
            return result
        dv = device.index
        for rule, st in zip(fr.rules, self._state[device.family], strict=True):
            if rule.name != rule_name or not st.firing[dv]:
                continue
            if rule.kind == "event":
                since = st.since.pop(dv)
                at = max(ts, since)
                vals = {**st.start_values.pop(dv, {}), "ts": at, "acknowledged_by": by}
                params = _params(rule, fr, dv)
                result.events.append(
                    self._ev(rule, device, params, AlertStatus.RESOLVED, since, at, at, vals)
                )
                st.firing[dv], st.resolved_at[dv] = False, at
                st.last_notified.pop(dv, None)
            else:
                st.acked.add(dv)
                result.checkpoint.append(self._checkpoint_row(rule, device, st, dv))
        return result

    @staticmethod
    def _checkpoint_row(rule: CompiledRule, device: Device, st: _RuleState, dv: int) -> ActiveAlert:
        firing = bool(st.firing[dv])
        shown = rule.levels[st.level.get(dv, len(rule.levels) - 1)] if rule.levels else rule
        return ActiveAlert(
            fingerprint=fingerprint(rule, device),
            family=rule.family,
            rule=rule.name,
            device_id=device.device_id,
            status=AlertStatus.FIRING if firing else AlertStatus.PENDING,
            since=st.since.get(dv, math.nan),
            fired_at=None,
            last_notified=st.last_notified.get(dv) if firing else None,
            severity=shown.severity.value,
            community=device.entry.community,
            acked=dv in st.acked,
        )

    # -- reload -----------------------------------------------------------------------
    def take_over(self, old: Engine, now: float) -> ReloadDiff:  # noqa: C901 - one pass per rule
        """Adopt the state of `old` (same registry) for a new rule set; report the diff.

        A rule kept by name keeps its alerts, timers and last-notified times, whether or
        not its definition changed: a changed rule is judged by its new conditions from
        the next reading on. Firing alerts of removed rules resolve at `now`.
        """
        diff = ReloadDiff()
        old_rules = {
            (f, r.name): (r, st)
            for f in old._state
            for r, st in zip(old._rules.by_family[f].rules, old._state[f], strict=True)
        }
        self._last_ts, self._last_vals, self.origin = old._last_ts, old._last_vals, old.origin
        self._comm_last, self._comm_firing, self._comm_since = (
            old._comm_last,
            old._comm_firing,
            old._comm_since,
        )
        self._comm_back = old._comm_back
        for family, hist in old._windows.items():
            if family in self._windows:
                self._windows[family].adopt(hist)
        for family, fr in self._rules.by_family.items():
            for i, rule in enumerate(fr.rules):
                key = f"{family.value}/{rule.name}"
                prior = old_rules.pop((family, rule.name), None)
                if prior is None:
                    diff.added.append(key)
                elif prior[0].definition != rule.definition:
                    diff.changed.append(key)
                if prior is not None:
                    self._state[family][i] = prior[1]
                    if prior[0].definition == rule.definition and rule.levels:
                        j = old._rules.by_family[family].rules.index(prior[0])
                        self._latches[family][i] = old._latches[family][j]
                if (prior is None or prior[0].definition != rule.definition) and rule.when is not None:
                    self._judge(rule, fr, self._state[family][i], diff)
        for (family, name), (rule, st) in sorted(
            old_rules.items(), key=lambda kv: (kv[0][0].value, kv[0][1])
        ):
            diff.removed.append(f"{family.value}/{name}")
            devices = old._registry.devices(family)
            ofr = old._rules.by_family[family]
            for dv in np.flatnonzero(st.active | st.firing):
                device = devices[dv]
                if not st.firing[dv]:
                    diff.cancelled.append(fingerprint(rule, device))
                    continue
                params = _params(rule, ofr, int(dv))
                since = st.since.get(int(dv), now)
                vals = st.start_values.get(int(dv), {"ts": since})
                diff.events.append(
                    self._ev(rule, device, params, AlertStatus.RESOLVED, since, now, now, vals)
                )
        return diff

    def _judge(self, rule: CompiledRule, fr: FamilyRules, st: _RuleState, diff: ReloadDiff) -> None:
        """Which alerts of this (new or changed) rule the latest readings would change."""
        assert rule.when is not None
        n = self._registry.count(rule.family)
        seen = self._last_ts[rule.family] > -np.inf
        vals = self._last_vals[rule.family]
        env = {f: vals.get(f, np.full(n, np.nan)) for f in fr.specs}
        env.update(fr.param_arrays)
        for w in rule.windows:
            env[w.column] = np.full(n, np.nan)  # windows are judged from the next reading on
        when = np.broadcast_to(rule.when.fn(env), seen.shape) & seen
        clear = (np.broadcast_to(rule.clear.fn(env), seen.shape) if rule.clear else ~when) & seen
        devices = self._registry.devices(rule.family)
        label = f"{rule.family.value}/{rule.name}"
        diff.would_resolve.extend(
            f"{label}@{devices[d].device_id}" for d in np.flatnonzero(st.firing & clear & ~when)
        )
        diff.would_fire.extend(f"{label}@{devices[d].device_id}" for d in np.flatnonzero(~st.firing & when))

    # -- checkpoint -------------------------------------------------------------------
    def active(self) -> list[ActiveAlert]:
        """Every pending or firing alert."""
        out: list[ActiveAlert] = []
        for family, fr in self._rules.by_family.items():
            devices = self._registry.devices(family)
            for rule, st in zip(fr.rules, self._state[family], strict=True):
                shown = map(int, np.flatnonzero(st.active | st.firing if _latched(rule) else st.firing))
                out.extend(self._checkpoint_row(rule, devices[dv], st, dv) for dv in shown)
        return out

    def restore(self, active: Iterable[ActiveAlert]) -> int:
        """Make the checkpointed alerts the open ones, both ways: an alert the (older)
        snapshot has open and the checkpoint lacks is switched off; a checkpointed one is
        switched on with its start, level and acknowledgement. Unknown rules or devices
        are skipped. Returns how many rows were applied."""
        index = {(f, r.name): i for f, fr in self._rules.by_family.items() for i, r in enumerate(fr.rules)}
        rows: dict[tuple[Family, int, int], ActiveAlert] = {}
        communities: dict[str, ActiveAlert] = {}
        for al in active:
            if al.family is None:
                communities[al.community] = al
                continue
            i = index.get((al.family, al.rule))
            device = self._registry.get(al.device_id)
            if i is not None and device is not None and device.family is al.family:
                rows[(al.family, i, device.index)] = al
        for family, fr in self._rules.by_family.items():
            for i, (rule, st) in enumerate(zip(fr.rules, self._state[family], strict=True)):
                open_now = st.active | st.firing if _latched(rule) else st.firing
                for dv in map(int, np.flatnonzero(open_now)):
                    if (family, i, dv) in rows:
                        continue
                    if rule.no_data and dv in st.since:  # heard again after it fired (as above)
                        self._last_ts[family][dv] = max(float(self._last_ts[family][dv]), st.since[dv])
                    self._switch_off(rule, st, self._latches[family][i], dv)
        for (family, i, dv), al in rows.items():
            rule = self._rules.by_family[family].rules[i]
            self._switch_on(rule, self._state[family][i], self._latches[family][i], dv, al)
        self._restore_communities(communities)
        return len(rows) + sum(1 for c in communities if c in self._communities)

    @staticmethod
    def _switch_off(rule: CompiledRule, st: _RuleState, latches: list[_RuleState], dv: int) -> None:
        """An alert the checkpoint says is closed: nothing of it stays open."""
        if _latched(rule):
            st.set_active(np.array([dv]), np.array([False]))
        st.firing[dv] = False
        for m in _RuleState.MAPS:
            if m != "resolved_at":
                getattr(st, m).pop(dv, None)
        st.acked.discard(dv)
        st.start_values.pop(dv, None)
        st.level.pop(dv, None)
        st.told.pop(dv, None)
        for latch in latches:
            latch.set_active(np.array([dv]), np.array([False]))

    @staticmethod
    def _switch_on(
        rule: CompiledRule, st: _RuleState, latches: list[_RuleState], dv: int, al: ActiveAlert
    ) -> None:
        firing = al.status is AlertStatus.FIRING
        if _latched(rule):
            st.set_active(np.array([dv]), np.array([True]))
        if not firing:
            st.keep_until.pop(dv, None)  # a pending run has nothing kept
        st.since[dv] = al.since
        st.firing[dv] = firing
        _put(st.last_notified, dv, al.last_notified if al.last_notified is not None else math.nan)
        if al.acked:
            st.acked.add(dv)
        else:
            st.acked.discard(dv)
        if rule.levels and firing:
            level = next(
                (k for k, lv in enumerate(rule.levels) if lv.severity.value == al.severity),
                len(rule.levels) - 1,
            )
            st.level[dv] = level
            for k, latch in enumerate(latches):
                latch.set_active(np.array([dv]), np.array([k == level]))

    def _restore_communities(self, rows: dict[str, ActiveAlert]) -> None:
        for ci, name in enumerate(self._communities):
            al = rows.get(name)
            if al is None:
                if self._comm_firing[ci]:
                    # Closed after the snapshot, so heard again at some point after it
                    # fired: without that, the stale last-heard time would make the next
                    # reading look like a new silence.
                    heard = float(self._comm_since[ci])
                    self._comm_last[ci] = max(float(self._comm_last[ci]), heard)
                    self._comm_back[ci] = max(float(self._comm_back[ci]), heard)
                self._comm_firing[ci], self._comm_since[ci] = False, np.nan
            else:
                self._comm_firing[ci], self._comm_since[ci] = True, al.since

    def snapshot(self) -> bytes:
        """The whole state (timers, cooldowns, windows, latest values, communities) as bytes."""
        arrays: dict[str, npt.NDArray[Any]] = {
            "comm_last": self._comm_last,
            "comm_firing": self._comm_firing,
            "comm_since": self._comm_since,
            "comm_back": self._comm_back,
        }
        manifest: dict[str, Any] = {"origin": self.origin, "registry": self._registry_digest(), "rules": {}}
        for family in Family:
            arrays[f"last_ts/{family.value}"] = self._last_ts[family]
            for name, arr in self._last_vals[family].items():
                arrays[f"last_vals/{family.value}/{name}"] = arr
        for family, hist in self._windows.items():
            for key, warr in hist.arrays().items():
                arrays[f"win/{family.value}/{key}"] = warr
        for family, fr in self._rules.by_family.items():
            for rule, st in zip(fr.rules, self._state[family], strict=True):
                key = f"{family.value}/{rule.name}"
                manifest["rules"][key] = {
                    "definition": rule.definition,
                    "start_values": {str(k): v for k, v in st.start_values.items()},
                    "acked": sorted(st.acked),
                    "level": {str(k): v for k, v in st.level.items()},
                    "flap_hist": {str(k): v for k, v in st.flap_hist.items()},
                    "flapping": sorted(st.flapping),
                    "told": {str(k): v for k, v in st.told.items()},
                    **{m: {str(k): v for k, v in getattr(st, m).items()} for m in _RuleState.MAPS},
                }
                for a in _RuleState.FLAGS:
                    arrays[f"rule/{key}/{a}"] = getattr(st, a)
                for k, latch in enumerate(self._latches[family][fr.rules.index(rule)]):
                    arrays[f"rule/{key}/level{k}"] = latch.active
        buf = io.BytesIO()
        arrays["manifest"] = np.frombuffer(orjson.dumps(manifest), dtype=np.uint8)
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds loosely
        return buf.getvalue()

    def load_snapshot(self, blob: bytes) -> int:
        """Restore a snapshot taken with the same registry; rules whose definition changed
        start fresh. Returns how many rules' state was restored (0 if none applies)."""
        with np.load(io.BytesIO(blob)) as z:
            manifest = orjson.loads(z["manifest"].tobytes())
            if manifest.get("registry") != self._registry_digest():
                return 0
            self.origin = float(manifest["origin"])
            self._comm_last, self._comm_firing, self._comm_since = (
                z["comm_last"],
                z["comm_firing"],
                z["comm_since"],
            )
            self._comm_back = z["comm_back"]
            for family in Family:
                self._last_ts[family] = z[f"last_ts/{family.value}"]
                prefix = f"last_vals/{family.value}/"
                self._last_vals[family] = {k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)}
            for family, hist in self._windows.items():
                prefix = f"win/{family.value}/"
                hist.load({k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)})
            restored = 0
            for family, fr in self._rules.by_family.items():
                for rule, st in zip(fr.rules, self._state[family], strict=True):
                    key = f"{family.value}/{rule.name}"
                    saved = manifest["rules"].get(key)
                    if saved is None or saved["definition"] != rule.definition:
                        continue
                    for a in _RuleState.FLAGS:
                        setattr(st, a, z[f"rule/{key}/{a}"].copy())
                    st.n_active = int(st.active.sum())
                    for k, latch in enumerate(self._latches[family][fr.rules.index(rule)]):
                        latch.set_active(np.arange(latch.active.shape[0]), z[f"rule/{key}/level{k}"])
                    for m in _RuleState.MAPS:
                        setattr(st, m, {int(k): float(v) for k, v in saved[m].items()})
                    st.acked = set(saved["acked"])
                    st.level = {int(k): int(v) for k, v in saved["level"].items()}
                    st.flap_hist = {int(k): int(v) for k, v in saved["flap_hist"].items()}
                    st.flapping = set(saved["flapping"])
                    st.told = {int(k): float(v) for k, v in saved["told"].items()}
                    st.start_values = {int(k): v for k, v in saved["start_values"].items()}
                    restored += 1
        return restored

    def _registry_digest(self) -> str:
        ids = "\x1f".join(f"{d.family.value}:{d.device_id}:{d.index}" for d in self._registry.by_id.values())
        return hashlib.sha256(ids.encode()).hexdigest()
