"""The engine's state and the steps every rule kind shares: durations per device,
the latch of a condition over a batch's rows, a device's walk state, and turning a
transition into an AlertEvent (rendering comes last and cannot fail)."""

from __future__ import annotations

import math
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from sensord._registry import Device, Registry
from sensord._settings import AlertSettings
from sensord._types import AlertEvent, AlertStatus, Family, Severity
from sensord.alerts._events import Subject, event_id, fingerprint, make_event, subject
from sensord.alerts._model import (
    COMMUNITY_RULE,
    ActiveAlert,
    BoolArr,
    EngineResult,
    FloatArr,
    IntArr,
    _community_fingerprint,
    _Cur,
    _fill_forward,
    _first_of_device,
    _gather,
    _Rows,
    _RuleState,
)
from sensord.alerts._windows import WindowHistory
from sensord.rules import CompiledRule, FamilyRules, RuleSet

# About 1 KB each: enough for the alerts of a large burst, small beside the registry.
_MAX_SUBJECTS = 10_000


class EngineBase:
    """Rule evaluation state for all families, shared by the rule kinds."""

    def __init__(self, rules: RuleSet, registry: Registry, alerts: AlertSettings) -> None:
        self._rules = rules
        self._registry = registry
        self._settings = alerts
        self._tz = ZoneInfo(alerts.timezone)  # local_hour() in rules
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
        # What the events of one alert share (its fingerprint, labels, place, names), by
        # (rule, device index): an alert-heavy burst makes many events of few alerts.
        # Bounded: a flood over many devices starts it again rather than growing it.
        self._subjects: dict[tuple[int, int], tuple[CompiledRule, Subject]] = {}
        # The registry's digest, kept in every snapshot; computed once per registry.
        self._digest_of: tuple[Registry, str] | None = None
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
        key = (id(rule), device.index)
        kept = self._subjects.get(key)
        if kept is not None and kept[0] is rule:
            who = kept[1]
        else:
            if len(self._subjects) >= _MAX_SUBJECTS:
                self._subjects.clear()
            who = subject(rule, device)
            self._subjects[key] = (rule, who)
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
            who=who,
        )

    def _community_event(self, ci: int, status: AlertStatus, at: float) -> AlertEvent:
        name = self._communities[ci]
        since = float(self._comm_since[ci]) if status is AlertStatus.RESOLVED else at
        fp = _community_fingerprint(name)
        silent_min = self._settings.community_silence_s / 60
        summary = f"No message from any device in {name} for {silent_min:g} min: gateway or broker down?"
        zh_summary = f"小区 {name} 全部设备 {silent_min:g} 分钟无消息：网关或 MQTT 服务器故障？"
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
            summary=summary,
            description="",
            texts={"en": (summary, ""), "zh-CN": (zh_summary, "")},
            readings={"ts": at, "devices": int(self._comm_size[ci])},
            dispatch=("operator", "grid_worker"),
            starts_at=since,
            ends_at=at if status is AlertStatus.RESOLVED else None,
            event_time=at,
        )

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
