"""The alert engine: evaluates compiled rules over a family batch, in event time.

State is a few numpy arrays per rule, indexed by the device's registry index. For one
batch the rows are sorted by (device, ts) and every rule is evaluated as array
operations; Python loops run only over rows where an alert changes state.

Semantics (documented in the README's rule reference):
- `when` latches the condition on, `clear` (default: not `when`) latches it off; a row
  that satisfies neither keeps the previous state (hysteresis).
- A reading holds until the device's next reading says otherwise. A run of the
  condition fires once it has held `for` seconds: at the first reading past
  `since + for`, at the watermark passing `since + for` (`advance`), or — if the clearing
  reading comes after `since + for` — it fires at `since + for` and resolves at once.
- A reading older than the device's newest reading already applied is late: it is not
  applied to rule state (it is counted); within one batch rows are sorted by time.
- A row missing a field a rule reads is skipped by that rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sensord._registry import Device, Registry
from sensord._settings import AlertSettings
from sensord._types import AlertEvent, AlertStatus, Family
from sensord.alerts._events import fingerprint, make_event, readings
from sensord.decode import FamilyBatch
from sensord.rules import CompiledRule, FamilyRules, RuleSet

FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
_ORDER = {AlertStatus.PENDING: 0, AlertStatus.FIRING: 1, AlertStatus.RESOLVED: 2}


@dataclass(frozen=True)
class ActiveAlert:
    """A pending or firing alert, as checkpointed beside the outbox."""

    fingerprint: str
    family: Family
    rule: str
    device_id: str
    status: AlertStatus
    since: float
    fired_at: float | None
    last_notified: float | None


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


@dataclass
class EngineResult:
    """What one call produced: events, pending runs that ended unfired, counts."""

    events: list[AlertEvent] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    late: int = 0
    evaluations: int = 0


class _RuleState:
    def __init__(self, n: int) -> None:
        self.active = np.zeros(n, dtype=bool)
        self.since = np.full(n, np.nan)
        self.firing = np.zeros(n, dtype=bool)
        self.last_notified = np.full(n, np.nan)
        # Readings at the start of a pending run, for the text of a timer-fired event.
        self.start_values: dict[int, dict[str, Any]] = {}


@dataclass
class _Rows:
    """The rows of one batch, sorted by (device, ts), with columns and parameters."""

    dev: npt.NDArray[np.int64]
    ts: FloatArr
    env: dict[str, FloatArr]


def _fill_forward(defined: BoolArr) -> npt.NDArray[np.intp]:
    """For each row, the index of the last row at or before it where `defined` holds."""
    pos = np.where(defined, np.arange(defined.shape[0]), 0)
    return np.maximum.accumulate(pos)


class Engine:
    """Rule evaluation and alert lifecycle for all families."""

    def __init__(self, rules: RuleSet, registry: Registry, alerts: AlertSettings) -> None:
        self._rules = rules
        self._registry = registry
        self._repeat_default = alerts.repeat_interval_s
        self._state: dict[Family, list[_RuleState]] = {}
        self._last_ts: dict[Family, FloatArr] = {}
        # Each device's latest value of every field, kept so that a rule reload can say
        # which alerts the new rules would resolve or fire.
        self._last_vals: dict[Family, dict[str, FloatArr]] = {}
        for family, fr in rules.by_family.items():
            n = registry.count(family)
            self._state[family] = [_RuleState(n) for _ in fr.rules]
            self._last_ts[family] = np.full(n, -np.inf)
            self._last_vals[family] = {}

    # -- batches ----------------------------------------------------------------------
    def process(self, batch: FamilyBatch) -> EngineResult:
        """Evaluate every rule of the batch's family over the batch."""
        result = EngineResult()
        fr = self._rules.by_family.get(batch.family)
        if fr is None or not fr.rules or len(batch) == 0:
            return result
        rows = self._sorted_rows(batch, fr, result)
        if rows is None:
            return result
        for rule, state in zip(fr.rules, self._state[batch.family], strict=True):
            self._evaluate(rule, state, fr, rows, result)
        result.events.sort(key=lambda e: (e.event_time, _ORDER[e.status]))
        return result

    def _sorted_rows(self, batch: FamilyBatch, fr: FamilyRules, result: EngineResult) -> _Rows | None:
        order = np.lexsort((batch.ts, batch.device))
        dev, ts = batch.device[order], batch.ts[order]
        last_ts = self._last_ts[batch.family]
        late = ts < last_ts[dev]
        if late.any():
            result.late = int(late.sum())
            keep = ~late
            order, dev, ts = order[keep], dev[keep], ts[keep]
        if dev.shape[0] == 0:
            return None
        np.maximum.at(last_ts, dev, ts)
        env = {name: col[order] for name, col in batch.columns.items()}
        self._remember(batch.family, dev, env)
        env.update({p: arr[dev] for p, arr in fr.param_arrays.items()})
        return _Rows(dev, ts, env)

    def _remember(self, family: Family, dev: npt.NDArray[np.int64], env: dict[str, FloatArr]) -> None:
        store = self._last_vals[family]
        n = self._registry.count(family)
        for name, col in env.items():
            idx = np.flatnonzero(~np.isnan(col))
            if idx.shape[0] == 0:
                continue
            d = dev[idx]
            last = np.flatnonzero(np.r_[d[1:] != d[:-1], True])  # rows are sorted by (device, ts)
            arr = store.get(name)
            if arr is None:
                arr = store[name] = np.full(n, np.nan)
            arr[d[last]] = col[idx[last]]

    def _evaluate(
        self, rule: CompiledRule, st: _RuleState, fr: FamilyRules, rows: _Rows, result: EngineResult
    ) -> None:
        valid = np.ones(rows.dev.shape[0], dtype=bool)
        for f in rule.fields:
            valid &= ~np.isnan(rows.env[f])
        when = np.broadcast_to(rule.when.fn(rows.env), valid.shape) & valid
        if not when.any() and not st.active[rows.dev].any():
            return  # the common case: nothing is or becomes active
        idx = np.flatnonzero(valid)
        result.evaluations += int(idx.shape[0])
        if rule.clear is not None:
            clear = np.broadcast_to(rule.clear.fn(rows.env), valid.shape)[idx]
        else:
            clear = ~when[idx]
        d, t, c = rows.dev[idx], rows.ts[idx], when[idx]
        n = d.shape[0]
        first = np.ones(n, dtype=bool)
        first[1:] = d[1:] != d[:-1]
        init_active = st.active[d]
        # Latch: 1 = condition on, 0 = cleared, -1 = neither (keep the previous state).
        ev = np.where(c, 1, np.where(clear, 0, -1)).astype(np.int8)
        seed = first & (ev < 0)
        ev[seed] = init_active[seed]
        a = ev[_fill_forward(ev >= 0)].astype(bool)
        prev = np.empty(n, dtype=bool)
        prev[1:] = a[:-1]
        prev[first] = init_active[first]
        start, end = a & ~prev, ~a & prev
        carried = first & a & ~start  # a run already active before this batch
        since_at = np.where(start, t, np.nan)
        since_at[carried] = st.since[d[carried]]
        run_since = np.where(a, since_at[_fill_forward(start | carried)], np.nan)
        before = np.empty(n)
        before[1:] = run_since[:-1]
        before[first] = st.since[d[first]]
        run_since = np.where(end, before, run_since)
        was_firing = st.firing[d] & (run_since == st.since[d])
        self._transitions(rule, st, fr, rows, idx, a, start, end, run_since, was_firing, result)
        last = np.ones(n, dtype=bool)
        last[:-1] = first[1:]
        ld = d[last]
        st.active[ld] = a[last]
        st.since[ld] = np.where(a[last], run_since[last], np.nan)

    def _transitions(  # noqa: PLR0913, PLR0917 - one pass over the few changing rows
        self,
        rule: CompiledRule,
        st: _RuleState,
        fr: FamilyRules,
        rows: _Rows,
        idx: npt.NDArray[np.intp],
        a: BoolArr,
        start: BoolArr,
        end: BoolArr,
        run_since: FloatArr,
        was_firing: BoolArr,
        result: EngineResult,
    ) -> None:
        d, t = rows.dev[idx], rows.ts[idx]
        held = (t - run_since) >= rule.for_s
        fire_cand = (a | end) & held & ~was_firing
        repeat_s = rule.repeat_s if rule.repeat_s is not None else self._repeat_default
        firing_rows = a & (was_firing | fire_cand) if repeat_s else np.zeros_like(a)
        interesting = np.flatnonzero(start | end | fire_cand | firing_rows)
        fired: set[tuple[int, float]] = set()
        firing_now = {int(x) for x in np.flatnonzero(st.firing)}
        devices = self._registry.devices(rule.family)
        for r in interesting:
            dv, tr, since = int(d[r]), float(t[r]), float(run_since[r])
            device = devices[dv]
            params = {p: float(fr.param_arrays[p][dv]) for p in rule.params}
            key = (dv, since)
            if start[r] and rule.for_s > 0:
                vals = readings(rule, fr.specs, rows.env, int(idx[r]), tr)
                st.start_values[dv] = vals
                result.events.append(
                    self._ev(rule, device, params, AlertStatus.PENDING, since, None, tr, vals)
                )
            if fire_cand[r] and key not in fired:
                fired.add(key)
                at = since + rule.for_s if rule.for_s > 0 else tr
                held_vals = st.start_values.get(dv) if end[r] else None
                vals = held_vals or readings(rule, fr.specs, rows.env, int(idx[r]), tr)
                result.events.append(
                    self._ev(rule, device, params, AlertStatus.FIRING, since, None, at, vals)
                )
                st.last_notified[dv] = at
                firing_now.add(dv)
            elif a[r] and repeat_s and dv in firing_now and tr - st.last_notified[dv] >= repeat_s:
                vals = readings(rule, fr.specs, rows.env, int(idx[r]), tr)
                result.events.append(
                    self._ev(rule, device, params, AlertStatus.FIRING, since, None, tr, vals, repeat=True)
                )
                st.last_notified[dv] = tr
            if end[r]:
                if was_firing[r] or key in fired:
                    vals = readings(rule, fr.specs, rows.env, int(idx[r]), tr)
                    result.events.append(
                        self._ev(rule, device, params, AlertStatus.RESOLVED, since, tr, tr, vals)
                    )
                elif rule.for_s > 0:
                    result.cancelled.append(fingerprint(rule, device))
                firing_now.discard(dv)
                st.start_values.pop(dv, None)
        st.firing[:] = False
        if firing_now:
            st.firing[np.fromiter(firing_now, dtype=np.int64)] = True

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

    # -- timers -----------------------------------------------------------------------
    def advance(self, watermark: float) -> EngineResult:
        """Fire every pending run whose `for` has elapsed by the event-time watermark."""
        result = EngineResult()
        for family, fr in self._rules.by_family.items():
            devices = self._registry.devices(family)
            for rule, st in zip(fr.rules, self._state[family], strict=True):
                if rule.for_s <= 0:
                    continue
                due = np.flatnonzero(st.active & ~st.firing & (st.since + rule.for_s <= watermark))
                for dv in due:
                    at = float(st.since[dv] + rule.for_s)
                    vals = st.start_values.get(int(dv), {"ts": float(st.since[dv])})
                    params = {p: float(fr.param_arrays[p][dv]) for p in rule.params}
                    result.events.append(
                        self._ev(
                            rule, devices[dv], params, AlertStatus.FIRING, float(st.since[dv]), None, at, vals
                        )
                    )
                    st.firing[dv] = True
                    st.last_notified[dv] = at
        result.events.sort(key=lambda e: e.event_time)
        return result

    # -- reload -----------------------------------------------------------------------
    def take_over(self, old: Engine, now: float) -> ReloadDiff:
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
        self._last_ts = {f: old._last_ts.get(f, v) for f, v in self._last_ts.items()}
        self._last_vals = {f: old._last_vals.get(f, {}) for f in self._last_vals}
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
                if prior is None or prior[0].definition != rule.definition:
                    self._judge(rule, fr, self._state[family][i], diff)
        for (family, name), (rule, st) in sorted(
            old_rules.items(), key=lambda kv: (kv[0][0].value, kv[0][1])
        ):
            diff.removed.append(f"{family.value}/{name}")
            devices = old._registry.devices(family)
            ofr = old._rules.by_family[family]
            for dv in np.flatnonzero(st.active):
                device = devices[dv]
                if not st.firing[dv]:
                    diff.cancelled.append(fingerprint(rule, device))
                    continue
                params = {p: float(ofr.param_arrays[p][dv]) for p in rule.params}
                vals = st.start_values.get(int(dv), {"ts": float(st.since[dv])})
                diff.events.append(
                    self._ev(rule, device, params, AlertStatus.RESOLVED, float(st.since[dv]), now, now, vals)
                )
        return diff

    def _judge(self, rule: CompiledRule, fr: FamilyRules, st: _RuleState, diff: ReloadDiff) -> None:
        """Which alerts of this (new or changed) rule the latest readings would change."""
        n = self._registry.count(rule.family)
        seen = self._last_ts[rule.family] > -np.inf
        vals = self._last_vals[rule.family]
        env = {f: vals.get(f, np.full(n, np.nan)) for f in fr.specs}
        env.update(fr.param_arrays)
        valid = seen.copy()
        for f in rule.fields:
            valid &= ~np.isnan(env[f])
        when = np.broadcast_to(rule.when.fn(env), valid.shape) & valid
        clear = (np.broadcast_to(rule.clear.fn(env), valid.shape) if rule.clear else ~when) & valid
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
                for dv in np.flatnonzero(st.active):
                    firing = bool(st.firing[dv])
                    out.append(
                        ActiveAlert(
                            fingerprint=fingerprint(rule, devices[dv]),
                            family=family,
                            rule=rule.name,
                            device_id=devices[dv].device_id,
                            status=AlertStatus.FIRING if firing else AlertStatus.PENDING,
                            since=float(st.since[dv]),
                            fired_at=None,
                            last_notified=float(st.last_notified[dv]) if firing else None,
                        )
                    )
        return out

    def restore(self, active: Iterable[ActiveAlert]) -> int:
        """Load checkpointed alerts; unknown rules or devices are skipped. Returns how many."""
        index = {(f, r.name): i for f, fr in self._rules.by_family.items() for i, r in enumerate(fr.rules)}
        n = 0
        for al in active:
            i = index.get((al.family, al.rule))
            device = self._registry.get(al.device_id)
            if i is None or device is None or device.family is not al.family:
                continue
            st = self._state[al.family][i]
            dv = device.index
            st.active[dv] = True
            st.since[dv] = al.since
            st.firing[dv] = al.status is AlertStatus.FIRING
            st.last_notified[dv] = al.last_notified if al.last_notified is not None else np.nan
            n += 1
        return n
