"""What the console's pages show, computed from work orders: each row's age and SLA state,
a work order's timeline in local time, and the cells of the last week's KPI table.

Pure functions of (work orders, now): the routes read, these shape, the templates print.
Times are event time, as the desk keeps them (`Office.event_time()` is now).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sensord.workorders import OPEN, UNTAKEN, Kpi, WorkOrder, local_time

TZ = ZoneInfo("Asia/Shanghai")  # the communities' time: history and deadlines are read in it
# States a person still has to look at: the console's main list.
LISTED = ("dispatched", "rejected", "reopened", "accepted", "done")
# A deadline is "due soon" in the last quarter of the time it allows.
DUE_SOON_PART = 0.25
WEEK_S = 7 * 86400.0
NONE = "—"  # a figure with nothing to measure, as the other pages show it


def age(seconds: float) -> str:
    """`45s`, `12m`, `3h05m`, `2d04h`: short enough for a table cell."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def when(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return local_time(ts, TZ, fmt) if ts is not None else ""


def title(wo: WorkOrder, lang: str) -> str:
    """The rule's summary in the page's language when the alert carried it (the work
    order keeps the zh-CN one its messages were made with)."""
    texts = wo.event.get("texts")
    text = texts.get(lang) if isinstance(texts, dict) else None
    return str(text[0]) if isinstance(text, (list, tuple)) and text else wo.title


@dataclass(frozen=True, slots=True)
class Sla:
    """A work order's standing against its deadlines: ok, due_soon, breached or none
    (no deadline applies), and the deadline in question ("accept" or "done")."""

    state: str
    which: str = ""
    deadline: float | None = None


def sla(wo: WorkOrder, now: float) -> Sla:
    """Breached once a deadline passed (recorded by the desk, or past it now); due soon
    in its last quarter; the accept deadline while nobody took the job, then done."""
    if wo.breaches:
        return Sla("breached", wo.breaches[-1])
    pending = []
    if wo.state in UNTAKEN and wo.sla_accept_at is not None:
        pending.append(("accept", wo.sla_accept_at))
    if wo.state in OPEN and wo.sla_done_at is not None:
        pending.append(("done", wo.sla_done_at))
    if not pending:
        return Sla("none")
    which, deadline = pending[0]
    if now >= deadline:
        return Sla("breached", which, deadline)
    if deadline - now <= (deadline - wo.opened_at) * DUE_SOON_PART:
        return Sla("due_soon", which, deadline)
    return Sla("ok", which, deadline)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the main list."""

    wo: WorkOrder
    age: str
    sla: Sla
    can_accept: bool
    can_finish: bool  # assign and done: an open job


def rows(orders: Iterable[WorkOrder], now: float) -> list[Row]:
    return [
        Row(wo, age(now - wo.opened_at), sla(wo, now), wo.state in UNTAKEN, wo.state in OPEN) for wo in orders
    ]


def kpi_cells(k: Kpi) -> list[str]:
    """A row of /console/kpi: the group, work orders, accepted, done or closed,
    auto-resolved, closure rate, accept and done p50, breaches (accept/done), mean
    rating (how many rated); a dash where there is nothing to measure."""
    closure = f"{k.closure_rate * 100:.1f} %" if k.closure_rate is not None else NONE
    rating = f"{k.mean_rating:.1f} ({k.rated})" if k.mean_rating is not None else NONE
    times = [age(t) if t is not None else NONE for t in (k.accept_p50, k.done_p50)]
    counts = (k.work_orders, k.accepted, k.done, k.auto_resolved)
    return [k.group, *map(str, counts), closure, *times, f"{k.accept_breaches}/{k.done_breaches}", rating]
