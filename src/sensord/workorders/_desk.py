"""The desk: every open work order, its escalation timers and the actions people take.

Pure and synchronous, on event time: the dispatcher opens and clears work orders from a
batch's events, the clock (`due`) takes escalation steps, breaches deadlines and closes
done jobs, and the API's actions come in dated by the stream clock. What changed is
taken with `take` and committed in the same outbox transaction as the batch (or the
action) that changed it, so no work order, history entry or timer is lost to a crash.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sensord._errors import Conflict, NotFound
from sensord._types import AlertEvent
from sensord.outbox import WorkOrderRow
from sensord.workorders._model import FINISHED, OPEN, UNTAKEN, Entry, State, WorkOrder, work_order_id

if TYPE_CHECKING:  # the dispatch package builds the desk: importing it here would be a cycle
    from sensord.dispatch._spec import EscalationPolicy, Sla

# History actions that are state changes worth telling the receivers that asked.
TOLD = frozenset({"accepted", "assigned", "done", "closed", "rejected", "reopened", "auto_resolved"})


@dataclass(frozen=True, slots=True)
class Change:
    """One history entry of one work order, as it was made (for InfluxDB and updates)."""

    order: WorkOrder
    entry: Entry
    index: int  # the entry's place in the history: part of the message ids


@dataclass(frozen=True, slots=True)
class Escalation:
    """Receivers to tell about a work order nobody took: a step of its policy."""

    order: WorkOrder
    receivers: tuple[str, ...]
    entry: Entry
    index: int  # the entry's place in the history: part of the message ids


@dataclass
class Taken:
    """What the desk changed since the last `take`."""

    rows: list[WorkOrderRow] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    escalations: list[Escalation] = field(default_factory=list)


class Desk:
    """Open work orders in memory (finished ones are read back from the store on demand)."""

    def __init__(
        self,
        policies: Mapping[str, EscalationPolicy],
        sla: Mapping[str, Sla],
        close_after_s: float,
        *,
        loader: Callable[[str], WorkOrder | None] | None = None,
    ) -> None:
        self._policies = policies
        self._sla = sla
        self._close_after = close_after_s
        self._loader = loader
        self._orders: dict[str, WorkOrder] = {}
        self._latest: dict[tuple[str, str], str] = {}  # (device, rule) → its latest work order
        self._timers: list[tuple[float, str]] = []
        self._dirty: dict[str, WorkOrder] = {}
        self._taken = Taken()

    # -- loading and taking ---------------------------------------------------------

    def load(self, bodies: Iterable[bytes]) -> int:
        """The work orders committed before a restart that are not finished for good."""
        n = 0
        for body in bodies:
            self._keep(WorkOrder.decode(body))
            n += 1
        return n

    def take(self) -> Taken:
        """Rows to commit, changes to tell and escalations to send, since the last take.
        Closed and auto-resolved work orders leave memory here (their row is written),
        when there is a store to read them back from."""
        taken, self._taken = self._taken, Taken()
        taken.rows = [row_of(wo) for wo in self._dirty.values()]
        for wo in self._dirty.values():
            if wo.state in (State.CLOSED, State.AUTO_RESOLVED) and self._loader is not None:
                self._orders.pop(wo.id, None)
        self._dirty = {}
        return taken

    def open_count(self) -> int:
        return len(self._orders)

    def count(self, states: Collection[State]) -> int:
        """Work orders in memory in one of `states`; every unfinished one is in memory."""
        return sum(wo.state in states for wo in self._orders.values())

    def get(self, wo_id: str) -> WorkOrder:
        wo = self._orders.get(wo_id) or (self._loader(wo_id) if self._loader else None)
        if wo is None:
            raise NotFound(f"no work order {wo_id}")
        return wo

    # -- from dispatch -----------------------------------------------------------------

    def open(
        self,
        e: AlertEvent,
        receivers: Sequence[str],
        policy: str | None,
        event: Mapping[str, object],
        at: float | None = None,
    ) -> tuple[WorkOrder, tuple[str, ...]]:
        """The work order of a firing alert sent to `receivers` at `at` (default: its
        event time), opened or joined. Returns it and the receivers its policy's first
        step adds to the route's."""
        wo_id = work_order_id(e.fingerprint, e.starts_at)
        wo = self._orders.get(wo_id)
        if wo is not None:
            new = [r for r in receivers if r not in wo.receivers]
            if new:
                wo.receivers.extend(new)
                wo.first.extend(new)
                self._touch(wo)
            return wo, ()
        at = e.event_time if at is None else at
        wo = WorkOrder(
            id=wo_id, fingerprint=e.fingerprint, starts_at=e.starts_at, rule=e.rule, family=e.family,
            device_id=e.device_id, community=e.community, grid=e.grid, severity=e.severity.value,
            life_safety=e.life_safety, title=e.text("zh-CN")[0], opened_at=at, receivers=list(receivers),
            policy=policy if policy in self._policies else None, event=dict(event),
        )  # fmt: skip
        sla = self._sla.get(e.family)
        if sla is not None:
            wo.sla_accept_at = at + sla.accept if sla.accept is not None else None
            wo.sla_done_at = at + sla.done if sla.done is not None else None
        extra: tuple[str, ...] = ()
        if wo.policy is not None:
            first = self._policies[wo.policy].steps[0]
            wo.escalate_at = at + first.ack_timeout if first.ack_timeout is not None else None
            extra = tuple(r for r in first.notify if r not in wo.receivers)
            wo.receivers.extend(extra)
        wo.first = list(wo.receivers)
        self._keep(wo)
        self._note(wo, at, "opened", by="sensord", note=", ".join(wo.receivers), source="dispatch")
        return wo, extra

    def cleared(self, e: AlertEvent) -> None:
        """The alert's condition cleared. Nobody took the job: it resolved by itself."""
        wo = self._orders.get(work_order_id(e.fingerprint, e.starts_at))
        if wo is None or wo.cleared_at is not None:
            return
        wo.cleared_at = at = e.event_time
        if wo.state in UNTAKEN:
            wo.state = State.AUTO_RESOLVED
            wo.escalate_at = None
            self._note(wo, at, "auto_resolved", by="sensord", source="dispatch")
        else:
            self._note(wo, at, "condition_cleared", by="sensord", source="dispatch")

    def acknowledged(self, device_id: str, rule: str, by: str, at: float) -> None:
        """An MQTT ack from the dispatch side: the latest work order of that alert is
        accepted. After an automatic resolve (or when it is finished) it changes nothing."""
        wo_id = self._latest.get((device_id, rule))
        wo = self._orders.get(wo_id) if wo_id else None
        if wo is not None and wo.state in UNTAKEN:
            self.act(wo.id, "accept", by=by, at=at, source="mqtt")

    # -- people's actions ------------------------------------------------------------

    def act(  # noqa: PLR0913 - an action's parts, all keywords
        self,
        wo_id: str,
        action: str,
        *,
        by: str,
        at: float,
        source: str,
        note: str = "",
        to: str = "",
        rating: int | None = None,
    ) -> WorkOrder:
        """Do one action; raises NotFound, or Conflict with the reason it is not allowed."""
        wo = self.get(wo_id)
        if wo.id not in self._orders:
            self._keep(wo)  # a finished one read back: reopen and feedback change it
        handler = _ACTIONS.get(action)
        if handler is None:
            raise Conflict(f"unknown action {action!r}; one of {', '.join(_ACTIONS)}")
        handler(self, wo, _Act(by, at, source, note.strip(), to.strip(), rating))
        return wo

    def _accept(self, wo: WorkOrder, a: _Act) -> None:
        if wo.state not in UNTAKEN:
            raise Conflict(f"{wo.id} is {wo.state.value}; only a dispatched, rejected or reopened job")
        wo.state = State.ACCEPTED
        wo.assignee = wo.assignee or a.by
        if wo.accepted_at is None:
            wo.accepted_at, wo.accepted_by = a.at, a.by
        pol = self._policies.get(wo.policy or "")
        wo.escalate_at = a.at + pol.accept_expiry if pol is not None and pol.accept_expiry else None
        self._note(wo, a.at, "accepted", by=a.by, note=a.note, source=a.source)

    def _assign(self, wo: WorkOrder, a: _Act) -> None:
        if wo.state not in OPEN:
            raise Conflict(f"{wo.id} is {wo.state.value}; only an open one is assigned")
        if not a.to:
            raise Conflict("assign needs `to`: the person the job is for")
        wo.assignee = a.to
        self._note(wo, a.at, "assigned", by=a.by, note=a.to, source=a.source)

    def _done(self, wo: WorkOrder, a: _Act) -> None:
        if wo.state not in OPEN:
            raise Conflict(f"{wo.id} is {wo.state.value}; only an open one is done")
        if not a.note:
            raise Conflict("done needs a note: what was found and done")
        if wo.accepted_at is None:  # done straight away: accepted by the same person
            wo.accepted_at, wo.accepted_by = a.at, a.by
        wo.state = State.DONE
        wo.done_at, wo.done_by = a.at, a.by
        wo.escalate_at = None
        wo.close_at = a.at + self._close_after
        self._note(wo, a.at, "done", by=a.by, note=a.note, source=a.source)

    def _reject(self, wo: WorkOrder, a: _Act) -> None:
        if wo.state not in OPEN:
            raise Conflict(f"{wo.id} is {wo.state.value}; only an open one is sent back")
        if not a.note:
            raise Conflict("reject needs a reason: why it is sent back")
        wo.state = State.REJECTED
        wo.assignee = None
        self._note(wo, a.at, "rejected", by=a.by, note=a.note, source=a.source)
        self._step(wo, a.at, "rejected")  # re-routed: the next step's receivers

    def _reopen(self, wo: WorkOrder, a: _Act) -> None:
        if wo.state not in FINISHED:
            raise Conflict(f"{wo.id} is {wo.state.value}; only a done, closed or auto-resolved job")
        if not a.note:
            raise Conflict("reopen needs a reason")
        wo.state = State.REOPENED
        wo.assignee = None
        wo.close_at = None
        wo.step, wo.round = -1, 0
        self._note(wo, a.at, "reopened", by=a.by, note=a.note, source=a.source)
        if wo.policy is not None:
            self._step(wo, a.at, "reopened")
        else:
            self._escalation(wo, tuple(wo.first or wo.receivers))

    def _comment(self, wo: WorkOrder, a: _Act) -> None:
        if not a.note:
            raise Conflict("a comment needs text")
        self._note(wo, a.at, "comment", by=a.by, note=a.note, source=a.source)

    def _feedback(self, wo: WorkOrder, a: _Act) -> None:
        if wo.state not in (State.DONE, State.CLOSED) or wo.rating is not None:
            raise Conflict(f"{wo.id} is {wo.state.value}; feedback is given once, on a done job")
        if a.rating is None or not 1 <= a.rating <= 5:
            raise Conflict("feedback needs a rating from 1 to 5")
        wo.rating, wo.rating_comment = a.rating, a.note
        self._note(wo, a.at, "feedback", by=a.by, note=f"{a.rating}/5 {a.note}".strip(), source=a.source)
        if wo.state is State.DONE:
            self._close(wo, a.at, by=a.by, source=a.source)

    def _close(self, wo: WorkOrder, at: float, *, by: str, source: str) -> None:
        wo.state = State.CLOSED
        wo.closed_at = at
        wo.close_at = None
        self._note(wo, at, "closed", by=by, source=source)

    # -- the clock ---------------------------------------------------------------------

    def due(self, clock: float) -> None:
        """Take every timer due by `clock`, each at its own time (a replay that jumps an
        hour takes each step when it was due, not when the jump landed)."""
        while self._timers and self._timers[0][0] <= clock:
            at, wo_id = heapq.heappop(self._timers)
            wo = self._orders.get(wo_id)
            if wo is None or wo.next_due() != at:
                continue  # a timer replaced since it was set
            self._fire(wo, at)
            self._arm(wo)

    def _fire(self, wo: WorkOrder, at: float) -> None:
        if wo.close_at == at and wo.state is State.DONE:
            self._close(wo, at, by="sensord", source="clock")
            return
        if wo.sla_accept_at == at and wo.state in UNTAKEN and "accept" not in wo.breaches:
            wo.breaches.append("accept")
            self._note(wo, at, "sla_breach", by="sensord", note="accept", source="clock")
        if wo.sla_done_at == at and wo.state in OPEN and "done" not in wo.breaches:
            wo.breaches.append("done")
            self._note(wo, at, "sla_breach", by="sensord", note="done", source="clock")
        if wo.escalate_at == at:
            wo.escalate_at = None
            if wo.state in UNTAKEN:
                self._step(wo, at, "no_accept")
            elif wo.state is State.ACCEPTED:
                self._step(wo, at, "accept_expired")

    def _step(self, wo: WorkOrder, at: float, reason: str) -> None:
        """Take the next step of the policy (or start a new round) and tell its receivers."""
        pol = self._policies.get(wo.policy or "")
        if pol is None:
            return
        nxt = wo.step + 1
        if nxt >= len(pol.steps):
            if wo.round >= pol.repeat:
                wo.escalate_at = None
                return
            wo.round += 1
            nxt = 0
        wo.step = nxt
        step = pol.steps[nxt]
        timeout = pol.accept_expiry if wo.state is State.ACCEPTED else step.ack_timeout
        wo.escalate_at = at + timeout if timeout is not None else None
        receivers = tuple(dict.fromkeys((*step.notify, *((wo.first or wo.receivers) if nxt == 0 else ()))))
        for r in receivers:
            if r not in wo.receivers:
                wo.receivers.append(r)
        self._note(wo, at, "escalated", by="sensord", note=f"step {nxt + 1}: {reason}", source="clock")
        self._escalation(wo, receivers)

    def _escalation(self, wo: WorkOrder, receivers: tuple[str, ...]) -> None:
        index = len(wo.history) - 1
        self._taken.escalations.append(Escalation(wo, receivers, wo.history[index], index))

    # -- bookkeeping -----------------------------------------------------------------

    def _note(  # noqa: PLR0913 - a history entry's parts, as keywords
        self, wo: WorkOrder, at: float, action: str, *, by: str, note: str = "", source: str
    ) -> None:
        entry = wo.record(at, action, by=by, note=note, source=source)
        self._taken.changes.append(Change(wo, entry, len(wo.history) - 1))
        self._touch(wo)

    def _touch(self, wo: WorkOrder) -> None:
        self._dirty[wo.id] = wo
        self._arm(wo)

    def _keep(self, wo: WorkOrder) -> None:
        self._orders[wo.id] = wo
        key = (wo.device_id, wo.rule)
        latest = self._orders.get(self._latest.get(key, ""))
        if latest is None or latest.starts_at <= wo.starts_at:
            self._latest[key] = wo.id
        self._arm(wo)

    def _arm(self, wo: WorkOrder) -> None:
        due = wo.next_due()
        if due is not None:
            heapq.heappush(self._timers, (due, wo.id))


def row_of(wo: WorkOrder) -> WorkOrderRow:
    """The stored row: the columns the API filters on, and the whole work order."""
    updated = wo.history[-1].at if wo.history else wo.opened_at
    return WorkOrderRow(
        wo.id, wo.state.value, wo.community, wo.grid, wo.family, wo.rule, wo.life_safety,
        wo.opened_at, updated, wo.encode(),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Act:
    by: str
    at: float
    source: str
    note: str
    to: str
    rating: int | None


_ACTIONS: dict[str, Callable[[Desk, WorkOrder, _Act], None]] = {
    "accept": Desk._accept,  # noqa: SLF001 - the table of the class's own handlers
    "assign": Desk._assign,  # noqa: SLF001
    "done": Desk._done,  # noqa: SLF001
    "reject": Desk._reject,  # noqa: SLF001
    "reopen": Desk._reopen,  # noqa: SLF001
    "comment": Desk._comment,  # noqa: SLF001
    "feedback": Desk._feedback,  # noqa: SLF001
}
