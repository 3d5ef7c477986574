"""Response-time metrics of work orders, observed from the desk's changes as they are taken.

Each work order adds at most one accept time and one done time, both measured from
dispatch (the clock starts at dispatch, not at acceptance): the first time someone took
it and the first time it was reported done. A job sent back and accepted again, or
reopened and done again, keeps its first figures; `sensord kpi` reads the rest from the
stored history.
"""

from __future__ import annotations

from collections.abc import Sequence

from sensord._metrics import Metrics
from sensord.workorders._desk import Change, Desk
from sensord.workorders._model import OPEN, WorkOrder

# A job done straight away was accepted by the same step (the desk sets accepted_at then).
_TAKEN = frozenset({"accepted", "done"})


def observe_changes(metrics: Metrics, changes: Sequence[Change], desk: Desk) -> None:
    """Count the changes' transitions and breaches, observe first accept and done times,
    and set the open gauge from the desk (so it is right from the first batch after a
    restart, which loads the open work orders without changing them)."""
    for change in changes:
        _observe(metrics, change)
    metrics.work_orders_open.set(desk.count(OPEN))


def _observe(metrics: Metrics, change: Change) -> None:
    wo, entry, i = change.order, change.entry, change.index
    before = wo.history[:i]
    if not before or before[-1].state is not entry.state:
        metrics.work_orders.labels(wo.community, entry.state.value).inc()
    if entry.action == "sla_breach":
        metrics.work_order_breaches.labels(wo.community, entry.note, wo.rule).inc()
    if entry.action in _TAKEN and not any(e.action in _TAKEN for e in before):
        metrics.work_order_accept.labels(*_labels(wo)).observe(entry.at - wo.opened_at)
    if entry.action == "done" and not any(e.action == "done" for e in before):
        metrics.work_order_done.labels(*_labels(wo)).observe(entry.at - wo.opened_at)


def _labels(wo: WorkOrder) -> tuple[str, str, str, str]:
    team = wo.receivers[0] if wo.receivers else ""
    return wo.community, wo.grid, team, wo.rule
