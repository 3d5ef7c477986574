"""Comparing the alerts two rule sets raise on the same stream."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from sensord._types import AlertEvent, AlertStatus

Interval = tuple[float, float | None]  # when it fired (paged), when it resolved (None: still firing)


@dataclass
class Comparison:
    """Alerts only in A (removed by B), only in B (added), and with other times."""

    removed: list[tuple[str, str, Interval]] = field(default_factory=list)
    added: list[tuple[str, str, Interval]] = field(default_factory=list)
    changed: list[tuple[str, str, Interval, Interval]] = field(default_factory=list)
    same: int = 0

    @property
    def differs(self) -> bool:
        return bool(self.removed or self.added or self.changed)


def intervals(events: list[AlertEvent]) -> dict[tuple[str, str], list[Interval]]:
    """Firing intervals per (rule, device), in time order: from the firing notification
    (what the dispatch side saw) to the resolution."""
    open_: dict[tuple[str, float], int] = {}
    out: dict[tuple[str, str], list[Interval]] = collections.defaultdict(list)
    for e in events:
        key = (e.rule, e.device_id or e.community)
        if e.status is AlertStatus.FIRING and not e.repeat and (e.fingerprint, e.starts_at) not in open_:
            open_[e.fingerprint, e.starts_at] = len(out[key])
            out[key].append((e.event_time, None))
        elif e.status is AlertStatus.RESOLVED and (e.fingerprint, e.starts_at) in open_:
            i = open_.pop((e.fingerprint, e.starts_at))
            out[key][i] = (out[key][i][0], e.ends_at)
    return out


def _overlap(a: Interval, b: Interval) -> bool:
    a_end = a[1] if a[1] is not None else float("inf")
    b_end = b[1] if b[1] is not None else float("inf")
    return a[0] <= b_end and b[0] <= a_end


def compare(a: list[AlertEvent], b: list[AlertEvent]) -> Comparison:
    """Pair each alert of A with the overlapping alert of B for the same rule and device."""
    out = Comparison()
    ia, ib = intervals(a), intervals(b)
    for key in sorted(ia.keys() | ib.keys()):
        left, right = list(ia.get(key, [])), list(ib.get(key, []))
        for x in left:
            match = next((y for y in right if _overlap(x, y)), None)
            if match is None:
                out.removed.append((*key, x))
                continue
            right.remove(match)
            if match == x:
                out.same += 1
            else:
                out.changed.append((*key, x, match))
        out.added.extend((*key, y) for y in right)
    return out
