"""Silence: a device that sends nothing for its no-data limit, and a community from
which nothing at all arrives (one alert instead of one per device)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from sensord._types import AlertStatus
from sensord.alerts._base import EngineBase
from sensord.alerts._model import (
    EngineResult,
    FloatArr,
    _due,
    _first_of_device,
    _params,
    _passed,
    _Rows,
    _RuleState,
)
from sensord.decode import FamilyBatch
from sensord.rules import CompiledRule, FamilyRules


class Silence(EngineBase):
    """Finds silent devices and silent communities, in a batch and on the clock."""

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
