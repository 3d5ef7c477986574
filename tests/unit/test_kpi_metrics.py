"""Work-order KPI metrics: the dispatcher observes response times, breaches and state
changes from the desk's changes (sensord.workorders._kpi_metrics)."""

from __future__ import annotations

from sensord._metrics import Metrics
from sensord._registry import parse_registry
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.dispatch import Dispatcher, spec_from
from sensord.dispatch._spec import Sla
from sensord.workorders import Desk, row_of, work_order_id

T0 = 1_790_000_000.0
REGISTRY = parse_registry(
    {"devices": {"bin-1": {"family": "bin", "community": "maple", "grid": "g1"}}}, source="test"
)
SPEC = spec_from(
    {
        "receivers": [
            {"name": "sanitation", "channels": [{"type": "wecom"}]},
            {"name": "street_office", "channels": [{"type": "wecom"}]},
        ],
        # group_wait 0s: the bin's message (and so its work order) goes at once.
        "route": {"receiver": "sanitation", "group_wait": "0s"},
    }
)
TEAM = {"community": "maple", "grid": "g1", "team": "sanitation", "rule": "bin_full"}
WO = work_order_id("fp-bin", T0)


def bin_full() -> AlertEvent:
    return AlertEvent(
        event_id="ev-bin", fingerprint="fp-bin", status=AlertStatus.FIRING, rule="bin_full",
        severity=Severity.WARNING, life_safety=False, family="bin", device_id="bin-1", community="maple",
        grid="g1", location={}, labels={}, summary="Bin bin-1 full", description="",
        readings={"fill_pct": 93.0}, dispatch=(), starts_at=T0, ends_at=None, event_time=T0,
    )  # fmt: skip


def opened(metrics: Metrics) -> Dispatcher:
    """A dispatcher with a desk (accept within 15 min) that has opened the bin's work order."""
    desk = Desk({}, {"bin": Sla(accept=900.0, done=3600.0)}, 72 * 3600.0)
    d = Dispatcher(SPEC, REGISTRY, metrics, per_recipient={}, desk=desk)
    d.notices([bin_full()], T0)
    return d


def sample(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return m.registry.get_sample_value(name, labels or {})


class TestResponseTimes:
    def test_acceptance_observes_the_accept_time(self) -> None:
        """Accepted 5 min after dispatch: one accept time of 300 s, for the team first sent it."""
        m = Metrics()
        d = opened(m)
        assert d.desk is not None
        d.desk.act(WO, "accept", by="张伟", at=T0 + 300, source="api")
        d.work_order_notices()
        assert sample(m, "sensord_work_order_accept_seconds_count", TEAM) == 1
        assert sample(m, "sensord_work_order_accept_seconds_sum", TEAM) == 300

    def test_only_the_first_acceptance_counts(self) -> None:
        """Sent back and accepted again: the job's accept time stays its first (300 s)."""
        m = Metrics()
        d = opened(m)
        assert d.desk is not None
        d.desk.act(WO, "accept", by="张伟", at=T0 + 300, source="api")
        d.desk.act(WO, "reject", by="张伟", at=T0 + 400, source="api", note="not my grid")
        d.desk.act(WO, "accept", by="李娜", at=T0 + 500, source="api")
        d.work_order_notices()
        assert sample(m, "sensord_work_order_accept_seconds_sum", TEAM) == 300

    def test_done_straight_away_is_also_the_accept_time(self) -> None:
        """Done at 20 min with no acceptance before: accept and done times are both 1200 s."""
        m = Metrics()
        d = opened(m)
        assert d.desk is not None
        d.desk.act(WO, "done", by="张伟", at=T0 + 1200, source="api", note="emptied")
        d.work_order_notices()
        got = [sample(m, f"sensord_work_order_{k}_seconds_sum", TEAM) for k in ("accept", "done")]
        assert got == [1200, 1200]


class TestCounts:
    def test_passed_accept_deadline_is_a_breach(self) -> None:
        """Nobody accepted within 15 min: one accept breach for the community and rule."""
        m = Metrics()
        d = opened(m)
        d.work_order_notices(T0 + 901)
        labels = {"community": "maple", "kind": "accept", "rule": "bin_full"}
        assert sample(m, "sensord_work_order_sla_breaches_total", labels) == 1

    def test_state_changes(self) -> None:
        """Opened, done, then closed by feedback: one change into each state."""
        m = Metrics()
        d = opened(m)
        assert d.desk is not None
        d.desk.act(WO, "done", by="张伟", at=T0 + 60, source="api", note="emptied")
        d.desk.act(WO, "feedback", by="resident", at=T0 + 120, source="api", rating=5)
        d.work_order_notices()
        states = {
            s: sample(m, "sensord_work_orders_total", {"community": "maple", "state": s})
            for s in ("dispatched", "done", "closed")
        }
        assert states == {"dispatched": 1, "done": 1, "closed": 1}

    def test_open_gauge_counts_jobs_waiting_for_someone(self) -> None:
        """Open while nobody has done it; a done job (waiting for feedback) is not open."""
        m = Metrics()
        d = opened(m)
        assert d.desk is not None
        assert sample(m, "sensord_work_orders_open") == 1
        d.desk.act(WO, "done", by="张伟", at=T0 + 60, source="api", note="emptied")
        d.work_order_notices()
        assert sample(m, "sensord_work_orders_open") == 0

    def test_open_gauge_is_right_after_a_restart(self) -> None:
        """Work orders loaded at start count from the first batch, which changes nothing."""
        before = opened(Metrics()).desk
        assert before is not None
        body = row_of(before.get(WO)).body
        m = Metrics()
        desk = Desk({}, {}, 72 * 3600.0)
        desk.load([body])
        Dispatcher(SPEC, REGISTRY, m, per_recipient={}, desk=desk).notices([], T0 + 10)
        assert sample(m, "sensord_work_orders_open") == 1
