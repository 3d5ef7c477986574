"""Grouping of ordinary (not life-safety) alerts, Alertmanager's way, on event time.

Alerts that reach one receiver through one route and share the route's `group_by`
labels form a group: twelve bins full in one grid are one message to sanitation. A new
group waits `group_wait` for company, then is sent; after that it is sent again when it
changed, at most every `group_interval`, and unchanged but still firing every
`repeat_interval`. The clock is the stream's event time, so a replay groups exactly as
the live daemon did, and a group's state is committed with the batch that changed it, so
a crash loses no waiting alert. Life-safety alerts never come here: they go at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sensord._types import AlertEvent, AlertStatus
from sensord.dispatch._routing import Routed
from sensord.outbox import decode_event, encode_event


@dataclass
class Group:
    """One group's alerts: the latest event of each, and whether they were sent."""

    key: str
    receiver: str
    labels: dict[str, str]
    wait_s: float
    interval_s: float
    repeat_s: float
    first_at: float
    sent_at: float | None = None
    alerts: dict[str, AlertEvent] = field(default_factory=dict)  # fingerprint -> latest event
    changed: bool = True
    # The route's quiet hours (names of time intervals) and what a muted send does.
    mute: tuple[str, ...] = ()
    active: tuple[str, ...] = ()
    on_mute: str = "defer"
    # The route's escalation policy: the work orders its alerts open when it is sent.
    escalation: str | None = None

    def due_at(self) -> float:
        """When the group is next to be sent (event time; inf: not until it changes)."""
        if self.sent_at is None:
            return self.first_at + self.wait_s
        if self.changed:
            return self.sent_at + self.interval_s
        firing = any(e.status is AlertStatus.FIRING for e in self.alerts.values())
        return self.sent_at + self.repeat_s if firing else math.inf

    def sent(self, clock: float) -> None:
        """After a message: resolved alerts were told and leave the group."""
        self.sent_at, self.changed = clock, False
        self.alerts = {fp: e for fp, e in self.alerts.items() if e.status is AlertStatus.FIRING}

    def encode(self) -> bytes:
        body: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "alerts"}
        body["alerts"] = [orjson.Fragment(encode_event(e)) for e in self.alerts.values()]
        return orjson.dumps(body)

    @classmethod
    def decode(cls, raw: bytes) -> Group:
        body = orjson.loads(raw)
        events = [decode_event(orjson.dumps(e)) for e in body.pop("alerts")]
        return cls(**body, alerts={e.fingerprint: e for e in events})


def group_key(routed: Routed, labels: Mapping[str, str]) -> str:
    by = routed.node.group_by
    return "\x1f".join([routed.receiver, routed.node.name, *(f"{k}={labels.get(k, '')}" for k in by)])


class Groups:
    """Every open group, and which changed since the last commit (to be saved with it)."""

    def __init__(self) -> None:
        self.open: dict[str, Group] = {}
        self._dirty: set[str] = set()
        self.dropped = 0  # messages not sent because a route's quiet hours drop them
        # No group is due before this: most batches end without walking every group.
        self._next_due = -math.inf

    def add(self, event: AlertEvent, routed: Routed, labels: Mapping[str, str]) -> None:
        key = group_key(routed, labels)
        g = self.open.get(key)
        if g is None:
            if event.status is not AlertStatus.FIRING:
                return  # the group was sent and closed: a late resolve of an alert it told of
            node = routed.node
            g = Group(
                key=key,
                receiver=routed.receiver,
                labels={k: labels.get(k, "") for k in node.group_by},
                wait_s=node.group_wait_s,
                interval_s=node.group_interval_s,
                repeat_s=node.repeat_interval_s,
                first_at=event.event_time,
                mute=node.mute,
                active=node.active,
                on_mute=node.on_mute,
                escalation=node.escalation,
            )
            self.open[key] = g
        g.alerts[event.fingerprint] = event
        g.changed = True
        self._dirty.add(key)
        self._next_due = min(self._next_due, g.due_at())

    def forget(self, event: AlertEvent, routed: Routed, labels: Mapping[str, str]) -> None:
        """An alert that ended without a word to this receiver leaves its group quietly."""
        key = group_key(routed, labels)
        g = self.open.get(key)
        if g is None or g.alerts.pop(event.fingerprint, None) is None:
            return
        if not g.alerts:
            del self.open[key]
        self._dirty.add(key)

    def take_due(self, clock: float, muted: Callable[[Group, float], bool] | None = None) -> list[Group]:
        """Groups to send now (marked sent; a group left with nothing firing closes). A
        group muted at `clock` waits (defer: it goes when the mute ends) or is marked sent
        without a message (drop; `dropped` counts them)."""
        if clock < self._next_due:
            return []
        out = []
        for key, g in list(self.open.items()):
            if clock < g.due_at():
                continue
            if muted is not None and muted(g, clock):
                if g.on_mute == "defer":
                    continue
                self.dropped += 1
            else:
                out.append(Group(**{**g.__dict__, "alerts": dict(g.alerts)}))
            g.sent(clock)
            if not g.alerts:
                del self.open[key]
            self._dirty.add(key)
        # A deferred (muted) group stays due, so the next batch walks the groups again.
        self._next_due = min((g.due_at() for g in self.open.values()), default=math.inf)
        return out

    def load(self, rows: Iterable[bytes]) -> None:
        for raw in rows:
            g = Group.decode(raw)
            self.open[g.key] = g
        self._next_due = -math.inf

    def changes(self) -> dict[str, bytes | None]:
        """Rows to commit (keyed `group\x1f<key>`): each changed group's state, or None."""
        rows = {f"group\x1f{k}": (self.open[k].encode() if k in self.open else None) for k in self._dirty}
        self._dirty.clear()
        return rows
