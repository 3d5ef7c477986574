"""Work-order KPIs (sensord.workorders._kpi): every figure checked against a number worked
out by hand from six hand-made work orders."""

from __future__ import annotations

import pytest

from sensord.workorders import Kpi, State, WorkOrder, kpis, percentile

T0 = 1_790_000_000.0


def order(
    wo_id: str,
    state: State,
    *,
    community: str = "maple",
    grid: str = "g1",
    receivers: tuple[str, ...] = ("grid_worker",),
    rule: str = "bin_full",
    accepted: float | None = None,
    done: float | None = None,
    breaches: tuple[str, ...] = (),
    rating: int | None = None,
) -> WorkOrder:
    """A work order opened at T0; `accepted` and `done` are seconds after that."""
    return WorkOrder(
        id=wo_id, fingerprint=wo_id, starts_at=T0, rule=rule, family="bin", device_id="bin-1",
        community=community, grid=grid, severity="warning", life_safety=False, title=wo_id,
        opened_at=T0, receivers=list(receivers), state=state,
        accepted_at=T0 + accepted if accepted is not None else None,
        done_at=T0 + done if done is not None else None, breaches=list(breaches), rating=rating,
    )  # fmt: skip


# accept times: A 60, B 300, C 900, F 120; done times: A 3600, B 7200, F 1800.
ORDERS = [
    order("A", State.CLOSED, accepted=60, done=3600, rating=5),
    order("B", State.DONE, accepted=300, done=7200, breaches=("accept",)),
    order("C", State.ACCEPTED, grid="g2", receivers=("sanitation",), accepted=900, breaches=("done",)),
    order("D", State.AUTO_RESOLVED, grid="g2", receivers=("sanitation",), rule="lift_trapped"),
    order("E", State.DISPATCHED, community="oak", breaches=("accept", "done")),
    order("F", State.CLOSED, community="oak", accepted=120, done=1800, rating=3),
]


def by_name(rows: list[Kpi]) -> dict[str, Kpi]:
    return {k.group: k for k in rows}


class TestOverall:
    def test_counts(self) -> None:
        """6 work orders: A B C F taken, A B F done or closed, D auto-resolved, C E open."""
        (k,) = kpis(ORDERS)
        assert (k.group, k.work_orders, k.accepted, k.done, k.auto_resolved, k.open) == ("all", 6, 4, 3, 1, 2)

    def test_closure_rate_leaves_out_auto_resolved(self) -> None:
        """办结率 = 3 done or closed / (6 - 1 auto-resolved) = 0.6."""
        assert kpis(ORDERS)[0].closure_rate == pytest.approx(0.6)

    def test_accept_percentiles(self) -> None:
        """Accept times 60 120 300 900 s: p50 = 120 + 0.5·180 = 210, p90 = 300 + 0.7·600 = 720."""
        k = kpis(ORDERS)[0]
        assert (k.accept_p50, k.accept_p90) == pytest.approx((210, 720))

    def test_done_percentiles(self) -> None:
        """Done times 1800 3600 7200 s: p50 = 3600, p90 = 3600 + 0.8·3600 = 6480."""
        k = kpis(ORDERS)[0]
        assert (k.done_p50, k.done_p90) == pytest.approx((3600, 6480))

    def test_breaches_and_rating(self) -> None:
        """Accept deadline passed on B and E, done on C and E; ratings 5 and 3 average 4."""
        k = kpis(ORDERS)[0]
        assert (k.accept_breaches, k.done_breaches, k.rated, k.mean_rating) == pytest.approx((2, 2, 2, 4.0))


class TestGroups:
    def test_by_community(self) -> None:
        """maple (A B C D): closure 2/3, accept p50 300 and p90 300 + 0.8·600 = 780, done
        p50 5400 and p90 3600 + 0.9·3600 = 6840; oak (E F): closure 1/2, one time each."""
        got = by_name(kpis(ORDERS, "community"))
        maple, oak = got["maple"], got["oak"]
        counts = (maple.work_orders, maple.accepted, maple.done, maple.auto_resolved, maple.open)
        assert counts == (4, 3, 2, 1, 1)
        assert maple.closure_rate == pytest.approx(2 / 3)
        assert (maple.accept_p50, maple.accept_p90) == pytest.approx((300, 780))
        assert (maple.done_p50, maple.done_p90) == pytest.approx((5400, 6840))
        assert (maple.accept_breaches, maple.done_breaches, maple.mean_rating) == (1, 1, 5.0)
        assert (oak.closure_rate, oak.accept_p50, oak.done_p90, oak.mean_rating) == (0.5, 120, 1800, 3.0)

    def test_grid_is_named_with_its_community(self) -> None:
        """A grid's name is only unique within its community: maple/g1 and oak/g1 differ."""
        got = by_name(kpis(ORDERS, "grid"))
        assert {g: k.work_orders for g, k in got.items()} == {"maple/g1": 2, "maple/g2": 2, "oak/g1": 2}

    def test_team_is_the_first_receiver(self) -> None:
        """A job later escalated to the street office still counts for the team first sent it."""
        escalated = order("G", State.DISPATCHED, receivers=("sanitation", "street_office"))
        got = by_name(kpis([*ORDERS, escalated], "team"))
        assert {g: k.work_orders for g, k in got.items()} == {"grid_worker": 4, "sanitation": 3}

    def test_no_closure_rate_when_every_job_resolved_by_itself(self) -> None:
        """lift_trapped's one work order auto-resolved: nothing to close, so no rate
        (bin_full: 3 of A B C E F done or closed = 0.6)."""
        got = by_name(kpis(ORDERS, "rule"))
        assert got["lift_trapped"].closure_rate is None
        assert got["bin_full"].closure_rate == pytest.approx(0.6)

    def test_unknown_grouping_is_refused(self) -> None:
        """--by building is not a grouping: the reason names the ones there are."""
        with pytest.raises(ValueError, match="community, grid, team, rule"):
            kpis(ORDERS, "building")


def test_reopened_job_is_open_and_has_no_done_time() -> None:
    """Reported done, then reopened: open again, not done, and its old done time is not
    a done time (it was not done)."""
    (k,) = kpis([order("R", State.REOPENED, accepted=60, done=600)])
    assert (k.open, k.done, k.done_times, k.accept_times) == (1, 0, (), (60.0,))


def test_percentile_of_nothing_is_none() -> None:
    """No accepted work order: no accept time, not zero."""
    assert (percentile([], 50), kpis([order("E", State.DISPATCHED)])[0].accept_p50) == (None, None)
