"""A batch's rows for the rules: sorted by (device, time), late readings dropped, each
field filled forward from the device's latest value, window columns added."""

from __future__ import annotations

import math

import numpy as np

from sensord._types import Family
from sensord.alerts._base import EngineBase
from sensord.alerts._model import (
    BoolArr,
    EngineResult,
    FloatArr,
    IntArr,
    _Env,
    _fill_forward,
    _first_of_device,
    _last_of_device,
    _Rows,
)
from sensord.decode import FamilyBatch
from sensord.rules import FamilyRules


class RowsMixin(EngineBase):
    """Prepares a family batch's rows for every rule of the family."""

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
            env = _Env(env, fr.param_arrays, dev, ts=ts, tz=self._tz)
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
