"""Multi-level rules: the level after each reading, as Kapacitor's reset expressions
decide it."""

from __future__ import annotations

import numpy as np

from sensord._types import AlertStatus
from sensord.alerts._base import EngineBase
from sensord.alerts._events import readings
from sensord.alerts._model import (
    BoolArr,
    EngineResult,
    IntArr,
    _last_of_device,
    _params,
    _Rows,
    _RuleState,
)
from sensord.rules import CompiledRule, FamilyRules


class LevelRules(EngineBase):
    """Evaluates multi-level rules."""

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
