"""A work order: one alert episode that dispatch sent to people, followed to the end.

    dispatched ─accept→ accepted ─done→ done ─feedback / close_after→ closed
        │  ▲               │                    │
        │  └──reopen───────┴── reject → rejected (re-routed: the next escalation step)
        └─ the condition clears with nobody acting → auto_resolved (kept, shown as such)

`done`, `closed` and `auto_resolved` can be reopened. An acknowledgement that comes after
an automatic resolve does not reopen it: the job is over, and a late ack says nothing new.

Times are event time (the stream's clock), so a replay gives the same work orders,
escalations and response times as the day it records.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson


class State(enum.StrEnum):
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    DONE = "done"
    CLOSED = "closed"
    REOPENED = "reopened"
    REJECTED = "rejected"
    AUTO_RESOLVED = "auto_resolved"


# Waiting for someone to take it: escalation runs, the condition clearing resolves it.
UNTAKEN = frozenset({State.DISPATCHED, State.REOPENED, State.REJECTED})
# Someone is still expected to act.
OPEN = UNTAKEN | {State.ACCEPTED}
FINISHED = frozenset({State.DONE, State.CLOSED, State.AUTO_RESOLVED})
ACTIONS = ("accept", "assign", "done", "reject", "reopen", "comment", "feedback")


def work_order_id(fingerprint: str, starts_at: float) -> str:
    """Stable per alert episode: the same after a crash and in every replay."""
    digest = hashlib.sha256(f"{fingerprint}\x1f{starts_at!r}".encode()).hexdigest()
    return f"WO-{digest[:10].upper()}"


@dataclass(slots=True)
class Entry:
    """One step of a work order's history: who did what, when (event time), and why."""

    at: float
    action: str  # opened, accepted, assigned, done, closed, rejected, reopened, comment,
    # feedback, escalated, accept_expired, sla_breach, auto_resolved, condition_cleared
    state: State
    by: str = ""
    note: str = ""
    source: str = ""  # dispatch, api, link, console, mqtt, clock


@dataclass(slots=True)
class WorkOrder:
    """One work order. `event` is the firing alert event as stored (for escalation messages)."""

    id: str
    fingerprint: str
    starts_at: float
    rule: str
    family: str
    device_id: str
    community: str
    grid: str
    severity: str
    life_safety: bool
    title: str
    opened_at: float
    receivers: list[str]
    state: State = State.DISPATCHED
    assignee: str | None = None
    accepted_at: float | None = None
    accepted_by: str | None = None
    done_at: float | None = None
    done_by: str | None = None
    closed_at: float | None = None
    cleared_at: float | None = None
    rating: int | None = None
    rating_comment: str = ""
    # Escalation: the policy's name, the step reached (0 = the first notification), the
    # round (after the last step, `repeat` starts again), and when the next step is due.
    policy: str | None = None
    step: int = 0
    round: int = 0
    escalate_at: float | None = None
    sla_accept_at: float | None = None
    sla_done_at: float | None = None
    breaches: list[str] = field(default_factory=list)
    close_at: float | None = None
    history: list[Entry] = field(default_factory=list)
    event: dict[str, Any] = field(default_factory=dict)
    # The receivers the route chose (and the first step added): told again when a new
    # round starts or it is reopened. `receivers` is everyone told so far.
    first: list[str] = field(default_factory=list)

    def next_due(self) -> float | None:
        """The earliest timer: the next escalation step, an SLA deadline, the auto-close."""
        times = [self.escalate_at, self.close_at]
        if "accept" not in self.breaches and self.state in UNTAKEN:
            times.append(self.sla_accept_at)
        if "done" not in self.breaches and self.state in OPEN:
            times.append(self.sla_done_at)
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def record(self, at: float, action: str, *, by: str = "", note: str = "", source: str = "") -> Entry:
        entry = Entry(at, action, self.state, by, note, source)
        self.history.append(entry)
        return entry

    def encode(self) -> bytes:
        return orjson.dumps(asdict(self))

    @staticmethod
    def decode(body: bytes) -> WorkOrder:
        d: dict[str, Any] = orjson.loads(body)
        d["state"] = State(d["state"])
        d["history"] = [Entry(**{**h, "state": State(h["state"])}) for h in d["history"]]
        return WorkOrder(**d)

    def summary(self) -> dict[str, Any]:
        """The work order without its history and alert body: what a list shows."""
        d = asdict(self)
        d.pop("history")
        d.pop("event")
        return d
