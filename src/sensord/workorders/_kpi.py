"""Response-time KPIs of work orders: a pure computation over stored work orders.

The figures a community reports (DOMAIN: "The work after an alert"): how many jobs,
how fast they were taken and done, how many were closed (办结率), how many deadlines
passed, and what residents thought of the work. Times are event time, measured from
dispatch (the clock starts at dispatch, not at acceptance).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sensord.workorders._model import OPEN, State, WorkOrder

ALL = "all"  # the name of the group of every work order
_DONE = frozenset({State.DONE, State.CLOSED})


def _team(wo: WorkOrder) -> str:
    """The receiver the work order was first sent to."""
    return wo.receivers[0] if wo.receivers else "-"


# How each `--by` groups: a grid's name is only unique within its community.
GROUPINGS: dict[str, Callable[[WorkOrder], str]] = {
    "community": lambda wo: wo.community,
    "grid": lambda wo: f"{wo.community}/{wo.grid}",
    "team": _team,
    "rule": lambda wo: wo.rule,
}


@dataclass(frozen=True, slots=True)
class Kpi:
    """The KPIs of one group of work orders.

    - `accepted`: work orders someone took (accepted, or reported done straight away),
      whatever their state now.
    - `done`: work orders done or closed now (a reopened one counts again when done again).
    - `open`: dispatched, accepted, rejected or reopened: someone is still expected to act.
    - `closure_rate` (办结率) = (done + closed) / (all - auto_resolved). A job that resolved
      by itself before anyone took it is neither closed nor a failure to close, so it is
      left out of both; None when no work order is left to count.
    - `accept_times`: dispatch to the first acceptance, of every accepted work order.
    - `done_times`: dispatch to the report of done, of the work orders done or closed now
      (for one reopened and done again, to its last done).
    - percentiles interpolate linearly between the nearest ranks (numpy's default).
    - `accept_breaches`, `done_breaches`: work orders whose accept / done deadline passed.
    - `mean_rating` of the `rated` work orders (1 to 5); None when none was rated.
    """

    group: str
    work_orders: int
    accepted: int
    done: int
    auto_resolved: int
    open: int
    closure_rate: float | None
    accept_breaches: int
    done_breaches: int
    rated: int
    mean_rating: float | None
    accept_times: tuple[float, ...] = field(default=(), repr=False)
    done_times: tuple[float, ...] = field(default=(), repr=False)

    @property
    def accept_p50(self) -> float | None:
        return percentile(self.accept_times, 50)

    @property
    def accept_p90(self) -> float | None:
        return percentile(self.accept_times, 90)

    @property
    def done_p50(self) -> float | None:
        return percentile(self.done_times, 50)

    @property
    def done_p90(self) -> float | None:
        return percentile(self.done_times, 90)

    def figures(self) -> dict[str, Any]:
        """The figures as JSON-ready values (seconds for times), without the samples."""
        return {
            "group": self.group, "work_orders": self.work_orders, "accepted": self.accepted,
            "done": self.done, "auto_resolved": self.auto_resolved, "open": self.open,
            "closure_rate": self.closure_rate, "accept_p50_s": self.accept_p50,
            "accept_p90_s": self.accept_p90, "done_p50_s": self.done_p50, "done_p90_s": self.done_p90,
            "accept_breaches": self.accept_breaches, "done_breaches": self.done_breaches,
            "rated": self.rated, "mean_rating": self.mean_rating,
        }  # fmt: skip


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of `values`, linear between the nearest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def kpi(group: str, orders: Sequence[WorkOrder]) -> Kpi:
    """The KPIs of these work orders, named `group`."""
    done = sum(wo.state in _DONE for wo in orders)
    auto = sum(wo.state is State.AUTO_RESOLVED for wo in orders)
    counted = len(orders) - auto
    ratings = [wo.rating for wo in orders if wo.rating is not None]
    taken = [wo.accepted_at - wo.opened_at for wo in orders if wo.accepted_at is not None]
    finished = [wo.done_at - wo.opened_at for wo in orders if wo.state in _DONE and wo.done_at is not None]
    return Kpi(
        group=group,
        work_orders=len(orders),
        accepted=sum(wo.accepted_at is not None for wo in orders),
        done=done,
        auto_resolved=auto,
        open=sum(wo.state in OPEN for wo in orders),
        closure_rate=done / counted if counted else None,
        accept_breaches=sum("accept" in wo.breaches for wo in orders),
        done_breaches=sum("done" in wo.breaches for wo in orders),
        rated=len(ratings),
        mean_rating=sum(ratings) / len(ratings) if ratings else None,
        accept_times=tuple(sorted(taken)),
        done_times=tuple(sorted(finished)),
    )


def kpis(orders: Iterable[WorkOrder], by: str | None = None) -> list[Kpi]:
    """One Kpi per group of `by` (community, grid, team or rule), by name; every work
    order as the one group `all` when `by` is None."""
    orders = list(orders)
    if by is None:
        return [kpi(ALL, orders)]
    key = GROUPINGS.get(by)
    if key is None:
        raise ValueError(f"cannot group by {by!r}; one of {', '.join(GROUPINGS)}")
    groups: dict[str, list[WorkOrder]] = collections.defaultdict(list)
    for wo in orders:
        groups[key(wo)].append(wo)
    return [kpi(name, groups[name]) for name in sorted(groups)]
