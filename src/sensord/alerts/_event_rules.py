"""Event rules (`kind: event`): fire on a rising edge, resolve on acknowledgement or
when `resolve_after` has passed."""

from __future__ import annotations

import math

import numpy as np

from sensord._types import AlertStatus
from sensord.alerts._base import EngineBase
from sensord.alerts._events import readings
from sensord.alerts._model import (
    EngineResult,
    FloatArr,
    _due,
    _last_of_device,
    _open_since,
    _params,
    _Rows,
    _RuleState,
)
from sensord.rules import CompiledRule, FamilyRules


class EventRules(EngineBase):
    """Evaluates `kind: event` rules and expires them after `resolve_after`."""

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

    def _expire_events(  # noqa: PLR0913, PLR0917
        self,
        rule: CompiledRule,
        st: _RuleState,
        dur: dict[str, FloatArr],
        fr: FamilyRules,
        watermark: float,
        result: EngineResult,
    ) -> None:
        if not st.since:
            return
        devices = self._registry.devices(rule.family)
        # Which open events are due, for all of them at once: this runs every batch, and
        # a burst leaves thousands open (an SOS stays open for its resolve_after).
        keys, starts = _open_since(st.since)
        ats = starts + dur["resolve_after"][keys]
        for j in np.flatnonzero(st.firing[keys] & _due(ats, watermark)).tolist():
            dv, since, at = int(keys[j]), float(starts[j]), float(ats[j])
            params = _params(rule, fr, dv)
            vals = st.start_values.pop(dv, {"ts": at})
            result.events.append(
                self._ev(rule, devices[dv], params, AlertStatus.RESOLVED, since, at, at, vals)
            )
            st.firing[dv], st.resolved_at[dv] = False, at
            del st.since[dv]
            st.last_notified.pop(dv, None)
