"""State rules (`when`/`clear`): pending → firing → resolved with `for`, keep_firing_for,
cooldown, repeat and flap detection; per batch (a walk over the changing rows) and on
the event-time clock."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sensord._registry import Device
from sensord._types import AlertStatus
from sensord.alerts._base import EngineBase
from sensord.alerts._events import fingerprint, readings
from sensord.alerts._model import (
    BoolArr,
    EngineResult,
    FloatArr,
    IntArr,
    _Cur,
    _due,
    _gather,
    _last_of_device,
    _open_since,
    _params,
    _passed,
    _put,
    _Rows,
    _RuleState,
)
from sensord.rules import CompiledRule, FamilyRules


class StateRules(EngineBase):
    """Evaluates `when`/`clear` rules over a batch and fires or resolves their timers."""

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
        # Rows where the condition holds (or a run ends) without a fired alert are
        # interesting once the run is due: `for` held, and the cooldown after the last
        # resolve passed. Only those rows' due times are worked out: looking up the last
        # resolve is a dictionary read per row, and most rows have the condition off.
        interesting = start | end
        ci = np.flatnonzero((a | end) & ~was_firing & ~interesting)
        if ci.shape[0]:
            dc = d[ci]
            due = run_since[ci] + for_s[dc]
            if st.resolved_at:
                due = np.fmax(due, _gather(st.resolved_at, dc) + cool[dc])
            interesting[ci] = t[ci] >= due
        repeat_s = rule.repeat_s if rule.repeat_s is not None else self._repeat_default
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

    def _state_timers(  # noqa: PLR0913, PLR0917 - the facts of one timer pass
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
        # Only runs still pending can fire: found for all open alerts at once (this runs
        # every batch, and a burst leaves thousands of alerts firing).
        keys, starts = _open_since(st.since)
        for j in np.flatnonzero(st.active[keys] & ~st.firing[keys]).tolist():
            dv, since = int(keys[j]), float(starts[j])
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
