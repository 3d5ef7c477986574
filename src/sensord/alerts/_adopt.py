"""Taking over some communities' state from another engine (another instance's, with
another registry): the handover step of `sensord shard finish` (README: Changing the
number of instances).

Engines index devices densely per registry, so the same device has another index in each
instance; everything per device is copied by device id. A rule's state is taken only
from the other engine's rule of the same family, name and definition (as a snapshot is
restored): a rule changed meanwhile starts fresh for the taken devices.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np

from sensord._types import Family
from sensord.alerts._base import EngineBase
from sensord.alerts._model import IntArr, _RuleState


class Adoption(EngineBase):
    """`adopt`: state of whole communities from another engine."""

    def adopt(self, other: Adoption, communities: Collection[str]) -> int:
        """Take the state of every device of `communities` (and of the communities
        themselves) from `other`, replacing this engine's. Returns the devices taken."""
        wanted = set(communities)
        if not math.isnan(other.origin):
            self.origin = other.origin if math.isnan(self.origin) else min(self.origin, other.origin)
        self._adopt_communities(other, wanted)
        taken = 0
        for family in Family:
            theirs = {d.device_id: d.index for d in other._registry.devices(family)}
            pairs = [
                (d.index, theirs[d.device_id])
                for d in self._registry.devices(family)
                if d.entry.community in wanted and d.device_id in theirs
            ]
            if not pairs:
                continue
            new = np.fromiter((p[0] for p in pairs), dtype=np.int64, count=len(pairs))
            old = np.fromiter((p[1] for p in pairs), dtype=np.int64, count=len(pairs))
            self._adopt_devices(other, family, new, old)
            taken += len(pairs)
        return taken

    def _adopt_communities(self, other: Adoption, wanted: set[str]) -> None:
        theirs = {name: i for i, name in enumerate(other._communities)}
        for i, name in enumerate(self._communities):
            j = theirs.get(name)
            if name not in wanted or j is None:
                continue
            self._comm_last[i] = other._comm_last[j]
            self._comm_firing[i] = other._comm_firing[j]
            self._comm_since[i] = other._comm_since[j]
            self._comm_back[i] = other._comm_back[j]

    def _adopt_devices(self, other: Adoption, family: Family, new: IntArr, old: IntArr) -> None:
        n = self._registry.count(family)
        self._last_ts[family][new] = other._last_ts[family][old]
        for name, values in other._last_vals[family].items():
            mine = self._last_vals[family].get(name)
            if mine is None:
                mine = self._last_vals[family][name] = np.full(n, np.nan)
            mine[new] = values[old]
        if family in self._windows and family in other._windows:
            self._windows[family].take(other._windows[family], new, old)
        fr, ofr = self._rules.by_family.get(family), other._rules.by_family.get(family)
        if fr is None or ofr is None:
            return
        theirs = {r.name: (r, i) for i, r in enumerate(ofr.rules)}
        to_new = dict(zip(old.tolist(), new.tolist(), strict=True))
        for i, rule in enumerate(fr.rules):
            found = theirs.get(rule.name)
            if found is None or found[0].definition != rule.definition:
                continue
            j = found[1]
            _copy_rule_state(self._state[family][i], other._state[family][j], new, to_new)
            for latch, their_latch in zip(self._latches[family][i], other._latches[family][j], strict=True):
                latch.set_active(new, their_latch.active[old])


def _copy_rule_state(st: _RuleState, theirs: _RuleState, new: IntArr, to_new: dict[int, int]) -> None:
    """One rule's per-device state of the devices `old` (theirs) into `new` (ours)."""
    old = np.fromiter(to_new.keys(), dtype=np.int64, count=len(to_new))
    st.set_active(new, theirs.active[old])
    st.firing[new] = theirs.firing[old]
    mine = set(to_new.values())
    for name in (*_RuleState.MAPS, "told", "level", "flap_hist", "start_values"):
        ours, src = getattr(st, name), getattr(theirs, name)
        for dv in mine & ours.keys():
            del ours[dv]
        for dv, value in src.items():
            if dv in to_new:
                ours[to_new[dv]] = value
    for name in ("acked", "flapping"):
        ours_set, src_set = getattr(st, name), getattr(theirs, name)
        ours_set -= mine
        ours_set |= {to_new[dv] for dv in src_set if dv in to_new}
