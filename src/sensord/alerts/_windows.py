"""Per-device windowed values (avg/min/max/sum/count over a duration, delta, rate).

For each field a rule windows, the readings of the last `max window` seconds per device
are kept as three flat arrays (device, ts, value). A batch's readings are appended, the
whole is sorted by (device, ts), and every window is answered for every new reading at
once: the start of its window by one `searchsorted`, sums and counts by prefix sums,
minimum and maximum by a sparse table. No Python loop runs per reading.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from sensord.rules import WindowSpec

FloatArr = npt.NDArray[np.float64]
IntArr = npt.NDArray[np.int64]
BoolArr = npt.NDArray[np.bool_]


def _range_extreme(
    values: FloatArr, lo: npt.NDArray[np.intp], hi: npt.NDArray[np.intp], *, minimum: bool
) -> FloatArr:
    """min (or max) of values[lo..hi] inclusive for each pair, via a sparse table."""
    op = np.minimum if minimum else np.maximum
    length = hi - lo + 1
    level = np.floor(np.log2(np.maximum(length, 1))).astype(np.intp)
    out = np.empty(lo.shape[0])
    table = values
    for k in range(int(level.max()) + 1 if level.shape[0] else 0):
        if k > 0:
            half = 1 << (k - 1)
            table = op(table[:-half], table[half:])
        sel = level == k
        if sel.any():
            out[sel] = op(table[lo[sel]], table[hi[sel] - (1 << k) + 1])
    return out


class WindowHistory:
    """Recent readings of the windowed fields of one family, and the window values."""

    def __init__(self, specs: Iterable[WindowSpec], n_devices: int) -> None:
        every = sorted(set(specs))
        self.specs = [s for s in every if s.func != "unchanged_for"]
        self._span: dict[str, float] = {}
        for s in self.specs:
            self._span[s.field] = max(self._span.get(s.field, 0.0), s.seconds)
        # unchanged_for(field): each device's last value of the field and when it changed.
        self._unchanged = {
            s.field: (np.full(n_devices, np.nan), np.full(n_devices, np.nan))
            for s in every
            if s.func == "unchanged_for"
        }
        empty_i, empty_f = np.empty(0, dtype=np.int64), np.empty(0)
        self._hist: dict[str, tuple[IntArr, FloatArr, FloatArr]] = dict.fromkeys(
            self._span, (empty_i, empty_f, empty_f)
        )

    def update(
        self,
        dev: IntArr,
        ts: FloatArr,
        raw: dict[str, FloatArr],
        present: dict[str, BoolArr],
        last_ts: FloatArr,
    ) -> dict[str, FloatArr]:
        """Window values for every row of the batch (NaN where the row lacks the field or
        the window has too few readings); the history then keeps what later windows need."""
        out: dict[str, FloatArr] = {}
        n = dev.shape[0]
        for fname, (last, since) in self._unchanged.items():
            out[f"unchanged_for({fname},0s)"] = self._unchanged_for(
                dev, ts, raw[fname], present[fname], last, since
            )
        for fname, span in self._span.items():
            specs = [s for s in self.specs if s.field == fname]
            mask = present.get(fname, np.zeros(n, dtype=bool))
            hdev, hts, hval = self._hist[fname]
            rows = np.flatnonzero(mask)
            cdev = np.concatenate([hdev, dev[rows]])
            cts = np.concatenate([hts, ts[rows]])
            cval = np.concatenate([hval, raw[fname][rows]])
            origin = np.concatenate([np.full(hdev.shape[0], -1), rows])
            results = {s.column: np.full(n, np.nan) for s in specs}
            if cdev.shape[0]:
                t0 = float(cts.min())
                # One sortable key per reading: devices in blocks far enough apart that a
                # window never reaches into the previous device's block.
                block = float(cts.max()) - t0 + span + 1.0
                key = cdev.astype(np.float64) * block + (cts - t0)
                # The history is kept in (device, time) order and the batch's rows come
                # sorted the same way: two sorted runs, which a stable sort (timsort for
                # floats) merges in linear time where lexsort sorted the whole history
                # again every batch. Ties keep the history first, as lexsort did.
                order = np.argsort(key, kind="stable")
                key, cdev, cts, cval, origin = key[order], cdev[order], cts[order], cval[order], origin[order]
                new = np.flatnonzero(origin >= 0)
                for s in specs:
                    lo = np.searchsorted(key, key[new] - s.seconds, side="right")
                    results[s.column][origin[new]] = self._answer(s.func, cts, cval, lo, new)
                keep = cts > last_ts[cdev] - span
                self._hist[fname] = (cdev[keep], cts[keep], cval[keep])
            out.update(results)
        return out

    @staticmethod
    def _unchanged_for(  # noqa: PLR0913, PLR0917 - the columns and the state they update
        dev: IntArr, ts: FloatArr, values: FloatArr, present: BoolArr, last: FloatArr, since: FloatArr
    ) -> FloatArr:
        """Seconds since each row's field value changed (rows sorted by device, then time)."""
        out = np.full(dev.shape[0], np.nan)
        rows = np.flatnonzero(present)
        if rows.shape[0] == 0:
            return out
        d, t, v = dev[rows], ts[rows], values[rows]
        first = np.ones(d.shape[0], dtype=bool)
        first[1:] = d[1:] != d[:-1]
        prev = np.empty(d.shape[0])
        prev[1:] = v[:-1]
        prev[first] = last[d[first]]
        changed = v != prev  # NaN prev (never seen) counts as a change: the clock starts then
        stamp = np.where(changed, t, np.nan)
        stamp[first & ~changed] = since[d[first & ~changed]]
        pos = np.maximum.accumulate(np.where(changed | first, np.arange(d.shape[0]), 0))
        at = stamp[pos]
        out[rows] = t - at
        final = np.ones(d.shape[0], dtype=bool)
        final[:-1] = first[1:]
        last[d[final]] = v[final]
        since[d[final]] = at[final]
        return out

    @staticmethod
    def _answer(
        func: str, cts: FloatArr, cval: FloatArr, lo: npt.NDArray[np.intp], hi: npt.NDArray[np.intp]
    ) -> FloatArr:
        count = (hi - lo + 1).astype(np.float64)
        if func == "count_over":
            return count
        if func in {"sum_over", "avg_over"}:
            prefix: FloatArr = np.concatenate([np.zeros(1), np.cumsum(cval)])
            total: FloatArr = prefix[hi + 1] - prefix[lo]
            return total if func == "sum_over" else total / count
        if func in {"min_over", "max_over"}:
            return _range_extreme(cval, lo, hi, minimum=func == "min_over")
        delta = cval[hi] - cval[lo]
        if func == "delta":
            return np.where(count > 1, delta, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            elapsed = cts[hi] - cts[lo]
            return np.asarray(np.where(elapsed > 0, delta / elapsed, np.nan), dtype=np.float64)  # per second

    def adopt(self, other: WindowHistory) -> None:
        """Take over the history of fields both windows sets track (after a rule reload)."""
        for fname in self._span.keys() & other._hist.keys():
            self._hist[fname] = other._hist[fname]
        for fname in self._unchanged.keys() & other._unchanged.keys():
            self._unchanged[fname] = other._unchanged[fname]

    def take(self, other: WindowHistory, new: IntArr, old: IntArr) -> None:
        """Another instance's history of the devices `old`, as our devices `new` (same
        devices, other indices): what this history held for `new` is replaced."""
        for fname, (last, since) in self._unchanged.items():
            if fname in other._unchanged:
                their_last, their_since = other._unchanged[fname]
                last[new], since[new] = their_last[old], their_since[old]
        lookup = np.full(max(int(old.max()) + 1, 1), -1, dtype=np.int64)
        lookup[old] = new
        for fname, (hdev, hts, hval) in self._hist.items():
            keep = ~np.isin(hdev, new)
            dev, ts, val = hdev[keep], hts[keep], hval[keep]
            if fname in other._hist:
                odev, ots, oval = other._hist[fname]
                mapped = np.where(odev < lookup.shape[0], lookup[np.minimum(odev, lookup.shape[0] - 1)], -1)
                take = mapped >= 0
                dev = np.concatenate([dev, mapped[take]])
                ts = np.concatenate([ts, ots[take]])
                val = np.concatenate([val, oval[take]])
                order = np.lexsort((ts, dev))
                dev, ts, val = dev[order], ts[order], val[order]
            self._hist[fname] = (dev, ts, val)

    def arrays(self) -> dict[str, npt.NDArray[np.float64] | IntArr]:
        out: dict[str, npt.NDArray[np.float64] | IntArr] = {}
        for fname, (last, since) in self._unchanged.items():
            out[f"{fname}/unchanged_last"], out[f"{fname}/unchanged_since"] = last, since
        for fname, (d, t, v) in self._hist.items():
            out[f"{fname}/dev"], out[f"{fname}/ts"], out[f"{fname}/val"] = d, t, v
        return out

    def load(self, arrays: dict[str, npt.NDArray[np.float64] | IntArr]) -> None:
        for fname, (last, since) in self._unchanged.items():
            if f"{fname}/unchanged_last" in arrays:
                last[:] = arrays[f"{fname}/unchanged_last"]
                since[:] = arrays[f"{fname}/unchanged_since"]
        for fname in self._hist:
            if f"{fname}/dev" in arrays:
                self._hist[fname] = (
                    arrays[f"{fname}/dev"].astype(np.int64),
                    arrays[f"{fname}/ts"].astype(np.float64),
                    arrays[f"{fname}/val"].astype(np.float64),
                )
