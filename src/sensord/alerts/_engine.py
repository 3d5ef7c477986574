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

import math

import numpy as np

from sensord._types import AlertStatus, Family
from sensord.alerts._adopt import Adoption
from sensord.alerts._event_rules import EventRules
from sensord.alerts._events import fingerprint
from sensord.alerts._level_rules import LevelRules
from sensord.alerts._model import (
    _ORDER,
    EngineResult,
    ReloadDiff,
    _params,
    _RuleState,
)
from sensord.alerts._persist import Persistence
from sensord.alerts._rows import RowsMixin
from sensord.alerts._silence import Silence
from sensord.alerts._state_rules import StateRules
from sensord.decode import FamilyBatch
from sensord.rules import CompiledRule, FamilyRules


class Engine(RowsMixin, StateRules, EventRules, LevelRules, Silence, Persistence, Adoption):
    """Rule evaluation and alert lifecycle for all families: each rule kind's evaluation
    and timers, silences and persistence live in their own modules; this class runs them
    for a batch, on the clock, for an acknowledgement and across a rule reload."""

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

    def has_rule(self, family: Family, name: str) -> bool:
        """Is there a rule of this name for this family (an acknowledgement may name it)?"""
        fr = self._rules.by_family.get(family)
        return fr is not None and any(r.name == name for r in fr.rules)

    def acknowledge(
        self, device_id: str, rule_name: str, ts: float, by: str, *, starts_at: float | None = None
    ) -> EngineResult:
        """The dispatch side acknowledged an alert at `ts`: an open event alert resolves; a
        state alert stops repeating until it resolves. Unknown device or rule: nothing. An
        ack for an earlier alert than the open one (its `starts_at` is another, or it is
        dated before the open one began) changes nothing and is counted."""
        result = EngineResult()
        device = self._registry.get(device_id)
        fr = self._rules.by_family.get(device.family) if device is not None else None
        if device is None or fr is None:
            return result
        dv = device.index
        for rule, st, dur in zip(fr.rules, self._state[device.family], self._dur[device.family], strict=True):
            if rule.name != rule_name or not st.firing[dv]:
                continue
            since = st.since.get(dv, -math.inf)
            # startsAt is written to the millisecond: within 1 ms it names this alert.
            if ts < since or (starts_at is not None and abs(starts_at - since) >= 1e-3):
                # A late or retried ack of an earlier alert. Applying it would close a
                # new SOS nobody has seen.
                result.stale_acks += 1
                continue
            if rule.kind == "event":
                since = st.since.pop(dv)
                start_vals = st.start_values.pop(dv, {})
                at, vals = ts, {**start_vals, "ts": ts, "acknowledged_by": by}
                expired = since + float(dur["resolve_after"][dv])
                if at > expired:
                    # The alert had already expired when this ack was given: it resolves
                    # exactly as the clock would have resolved it, whatever the batch cut
                    # (the clock moves at the end of a batch, after the batch's acks).
                    at, vals = expired, start_vals or {"ts": expired}
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
