"""Readings that arrived behind an ack but are older than readings before it.

A batch with acks takes effect in runs cut at every ack (`Pipeline.evaluate`), so that an
ack lands between the readings around it. A broker that redelivers only after its ack
timeout (nats-server, after sensord restarts) sends what the last connection had not
acknowledged behind newer messages: an SOS press can arrive after a newer reading of its
wristband with an ack in between, of any device. Cut there, the press came in a later run
than the newer reading, the rules took it for a late reading, and dropped it: the alert
was lost (the fault test `test_killed_daemon_on_the_cluster_...` lost one so).

So a reading older than a reading of its device in an earlier run of the same batch is
moved back to the earliest run that holds a reading of its device at least as new, where
the rules sort it in (readings of one run are sorted per device). It was published before
that reading, so before the acks that followed it; an ack never moves, and a reading that
is in order is never moved, so a stream in order is cut exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sensord._types import Family
from sensord.decode import FamilyBatch


def fold_back(runs: Sequence[dict[Family, FamilyBatch]]) -> None:
    """Move each reading older than a newer one of its device in an earlier run to the
    earliest such run; changes `runs` in place (a run's families keep their order, a family
    new to a run goes last). Runs every batch: a batch without acks (one run) costs a
    length test, and the first run's rows are only noted, never walked in Python."""
    if len(runs) < 2:
        return
    # (family, device) -> the newest reading time after each run it appeared in, in order.
    newest: dict[tuple[Family, int], list[tuple[int, float]]] = {}
    for family, batch in runs[0].items():
        _note(newest, family, batch, 0)
    for pos, run in enumerate(runs[1:], start=1):
        for family, batch in list(run.items()):
            stays = _move_back(runs, family, batch, newest)
            if stays is not batch:
                if len(stays):
                    run[family] = stays
                else:
                    del run[family]
            if pos < len(runs) - 1:  # the last run's times are not needed
                _note(newest, family, stays, pos)


def _move_back(
    runs: Sequence[dict[Family, FamilyBatch]],
    family: Family,
    batch: FamilyBatch,
    newest: dict[tuple[Family, int], list[tuple[int, float]]],
) -> FamilyBatch:
    """Add the rows of `batch` older than an earlier run's reading of their device to the
    earliest such run; returns the rows that stay (`batch` itself when none moved)."""
    keep = np.ones(len(batch), dtype=bool)
    back: dict[int, list[int]] = {}
    for r, (dev, ts) in enumerate(zip(batch.device.tolist(), batch.ts.tolist(), strict=True)):
        seen = newest.get((family, dev))
        if seen and ts < seen[-1][1]:
            back.setdefault(next(p for p, t in seen if t >= ts), []).append(r)
            keep[r] = False
    if not back:
        return batch
    for target, rows in back.items():
        part = batch.take(np.asarray(rows, dtype=np.intp))
        had = runs[target].get(family)
        runs[target][family] = part if had is None else had.extended(part)
    return batch.take(np.flatnonzero(keep))


def _note(
    newest: dict[tuple[Family, int], list[tuple[int, float]]], family: Family, batch: FamilyBatch, pos: int
) -> None:
    """Record the newest time per device after run `pos` (never lower than before)."""
    if not len(batch):
        return
    order = np.lexsort((batch.ts, batch.device))
    dev, ts = batch.device[order], batch.ts[order]
    last = np.ones(dev.shape[0], dtype=bool)
    last[:-1] = dev[1:] != dev[:-1]
    for d, t in zip(dev[last].tolist(), ts[last].tolist(), strict=True):
        seen = newest.setdefault((family, d), [])
        if not seen or t > seen[-1][1]:
            seen.append((pos, t))
