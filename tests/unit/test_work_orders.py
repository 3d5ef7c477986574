"""Work orders (issue 10, points 1 and 3): opened by dispatch, taken through their states
by people and by the clock, escalated on event time, committed and restored with their
timers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from sensord._errors import Conflict, NotFound
from sensord._metrics import Metrics
from sensord._settings import OutboxSettings
from sensord._types import AlertStatus
from sensord.dispatch import AckSeen, Dispatcher, spec_from
from sensord.dispatch._build import build_desk
from sensord.dispatch._spec import LoadedDispatch
from sensord.outbox import Filter, Notice, Outbox
from sensord.workorders import State, WorkOrder, work_order_id

from .test_dispatch_notices import REGISTRY, bin_full, sos

T0 = 1_790_000_000.0  # the SOS's event time
SPEC = spec_from(
    {
        "receivers": [
            {"name": "desk", "sensitive": True, "channels": [{"type": "wecom"}]},
            {"name": "family", "recipients": "contacts", "work_order_updates": True,
             "channels": [{"type": "webhook"}]},
            {"name": "doctor", "channels": [{"type": "wecom"}]},
            {"name": "duty", "channels": [{"type": "wecom"}]},
            {"name": "sanitation", "channels": [{"type": "feishu"}]},
        ],
        "escalations": {
            "life_safety": {
                "steps": [{"notify": ["desk", "family"], "ack_timeout": "3m"},
                          {"notify": ["doctor"], "ack_timeout": "5m"}, {"notify": ["duty"]}],
                "accept_expiry": "30m",
            },
        },
        "sla": {"wristband": {"accept": "2m", "done": "1h"}},
        "work_orders": {"close_after": "24h"},
        "route": {
            "receiver": "webhook",
            "routes": [
                {"matchers": ['family="bin"'], "receiver": "sanitation", "group_wait": "30s"},
                {"matchers": ['family="wristband"'], "receiver": "desk", "escalation": "life_safety"},
            ],
        },
    }
)  # fmt: skip
WO = work_order_id("fp-sos", T0)


def make() -> Dispatcher:
    loaded = LoadedDispatch(Path("dispatch.yaml"), SPEC, None)
    return Dispatcher(
        SPEC, REGISTRY, Metrics(), builtin=("webhook",), per_recipient={},
        desk=build_desk(loaded), order_sink="influx/work_orders",
    )  # fmt: skip


def receivers(notices: list[Notice]) -> list[str]:
    return sorted({n.message.receiver for n in notices if n.sink != "influx/work_orders"})


def opened() -> tuple[Dispatcher, list[Notice]]:
    d = make()
    return d, d.notices([sos()], T0)


class TestOpening:
    def test_an_sos_that_reaches_receivers_opens_one_dispatched_work_order(self) -> None:
        d, notices = opened()
        assert d.desk is not None
        wo = d.desk.get(WO)
        assert (wo.state, wo.opened_at, wo.receivers) == (State.DISPATCHED, T0, ["desk", "family"])
        assert receivers(notices) == ["desk", "family"]  # the policy's first step adds the family
        assert {n.message.ack for n in notices if n.message.receiver == "desk"} == {WO}

    def test_a_repeat_of_the_same_alert_joins_its_work_order(self) -> None:
        d, _ = opened()
        d.notices([dataclasses.replace(sos(event_id="ev-2"), repeat=True, event_time=T0 + 60)], T0 + 60)
        assert d.desk is not None
        assert d.desk.open_count() == 1

    def test_an_ordinary_alert_opens_its_work_order_when_its_group_is_sent(self) -> None:
        """A full bin waits in its group (group_wait 30 s): no work order until the
        message goes, then one opened at that time, so its clocks start when someone is
        told (after quiet hours, too)."""
        d = make()
        assert d.desk is not None
        d.notices([bin_full()], T0)
        assert d.desk.open_count() == 0
        d.notices([], T0 + 30)
        assert d.desk.get(work_order_id("fp-bin", T0)).opened_at == T0 + 30

    def test_an_alert_only_the_builtin_webhook_gets_opens_none(self) -> None:
        d = make()
        d.notices([dataclasses.replace(bin_full(), family="lift", rule="lift_x")], T0)
        assert d.desk is not None
        assert d.desk.open_count() == 0


class TestEscalation:
    def test_unaccepted_sos_reaches_step_two_at_its_timeout_to_the_second(self) -> None:
        d, _ = opened()
        assert receivers(d.notices([], T0 + 179.9)) == []
        step2 = d.notices([], T0 + 180.0)
        assert receivers(step2) == ["doctor"]
        assert {n.at for n in step2 if n.message.receiver == "doctor"} == {T0 + 180.0}
        assert all("升级·第2级" in n.message.title for n in step2 if n.message.receiver == "doctor")

    def test_a_jump_of_the_clock_takes_each_step_at_its_own_time(self) -> None:
        d, _ = opened()
        notices = d.notices([], T0 + 3600)
        steps = sorted((n.at, n.message.receiver) for n in notices if n.sink != "influx/work_orders"
                       and n.message.receiver in ("doctor", "duty"))  # fmt: skip
        assert steps == [(T0 + 180, "doctor"), (T0 + 480, "duty")]

    def test_repeat_starts_again_from_the_first_step_then_stops(self) -> None:
        """With `repeat: 1` and a timeout on the last step, the steps run twice (the second
        round re-tells the route's receivers), then nothing more."""
        policy = SPEC.escalations["life_safety"]
        steps = (*policy.steps[:2], policy.steps[2].model_copy(update={"ack_timeout": 60.0}))
        spec = SPEC.model_copy(
            update={"escalations": {"life_safety": policy.model_copy(update={"steps": steps, "repeat": 1})}}
        )
        d = Dispatcher(
            spec, REGISTRY, Metrics(), builtin=("webhook",), per_recipient={},
            desk=build_desk(LoadedDispatch(Path("dispatch.yaml"), spec, None)),
        )  # fmt: skip
        d.notices([sos()], T0)
        later = d.notices([], T0 + 7200)
        told = sorted((n.at - T0, n.message.receiver) for n in later if n.message.receiver != "family")
        assert told == [(180, "doctor"), (480, "duty"), (540, "desk"), (720, "doctor"), (1020, "duty")]

    def test_acceptance_stops_escalation_until_accept_expiry(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.desk.act(WO, "accept", by="张伟", at=T0 + 60, source="api")
        d.work_order_notices()
        assert receivers(d.notices([], T0 + 60 + 1799)) == []
        assert receivers(d.notices([], T0 + 60 + 1800)) == ["doctor"]  # accepted, not done in 30 min

    def test_reject_sends_it_to_the_next_step_at_once(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.desk.act(WO, "reject", by="desk", at=T0 + 30, source="api", note="not ours")
        notices = d.work_order_notices()
        assert "doctor" in receivers(notices)
        assert d.desk.get(WO).state is State.REJECTED

    def test_sla_breach_is_recorded_once_at_its_deadline(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.notices([], T0 + 120)
        d.notices([], T0 + 130)
        wo = d.desk.get(WO)
        assert wo.breaches == ["accept"]
        assert [h.at for h in wo.history if h.action == "sla_breach"] == [T0 + 120]


class TestStates:
    def test_condition_clearing_with_nobody_acting_is_auto_resolved_and_a_late_ack_does_not_reopen(
        self,
    ) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.notices([dataclasses.replace(sos(AlertStatus.RESOLVED, "ev-r"), event_time=T0 + 50)], T0 + 50)
        assert d.desk.get(WO).state is State.AUTO_RESOLVED
        d.notices([], T0 + 60, [AckSeen(0, "wb-1", "wristband_sos", "张伟", T0 + 60)])
        assert d.desk.get(WO).state is State.AUTO_RESOLVED
        assert receivers(d.notices([], T0 + 3600)) == []  # no escalation after it resolved

    def test_an_mqtt_ack_accepts_before_its_resolve_clears_the_condition(self) -> None:
        d, _ = opened()
        resolved = dataclasses.replace(sos(AlertStatus.RESOLVED, "ev-r"), event_time=T0 + 40)
        d.notices([resolved], T0 + 40, [AckSeen(0, "wb-1", "wristband_sos", "desk 1", T0 + 40)])
        assert d.desk is not None
        wo = d.desk.get(WO)
        assert (wo.state, wo.accepted_by, wo.history[-2].source) == (State.ACCEPTED, "desk 1", "mqtt")
        assert wo.history[-1].action == "condition_cleared"

    def test_done_needs_a_note_and_feedback_closes(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.desk.act(WO, "accept", by="张伟", at=T0 + 60, source="api")
        with pytest.raises(Conflict, match="note"):
            d.desk.act(WO, "done", by="张伟", at=T0 + 600, source="api")
        d.desk.act(WO, "done", by="张伟", at=T0 + 600, source="api", note="老人摔倒，已送医")
        wo = d.desk.act(WO, "feedback", by="女儿", at=T0 + 900, source="api", rating=5, note="很及时")
        assert (wo.state, wo.rating, wo.closed_at) == (State.CLOSED, 5, T0 + 900)

    def test_done_closes_by_itself_after_close_after(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.desk.act(WO, "done", by="张伟", at=T0 + 600, source="api", note="处理完毕")
        d.notices([], T0 + 600 + 86400)
        assert d.desk.get(WO).state is State.CLOSED

    def test_actions_not_allowed_in_a_state_say_why(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        with pytest.raises(Conflict, match="only a done, closed or auto-resolved job"):
            d.desk.act(WO, "reopen", by="x", at=T0, source="api", note="why")
        with pytest.raises(Conflict, match="once, on a done job"):
            d.desk.act(WO, "feedback", by="x", at=T0, source="api", rating=3)
        with pytest.raises(NotFound):
            d.desk.act("WO-NOPE", "accept", by="x", at=T0, source="api")

    def test_reopen_notifies_the_first_step_again(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.desk.act(WO, "done", by="张伟", at=T0 + 600, source="api", note="处理完毕")
        d.work_order_notices()
        d.desk.act(WO, "reopen", by="desk", at=T0 + 700, source="api", note="又按了")
        assert receivers(d.work_order_notices()) == ["desk", "family"]
        assert d.desk.get(WO).state is State.REOPENED


class TestTelling:
    def test_family_that_asked_hears_who_accepted_and_influx_gets_every_change(self) -> None:
        d, _ = opened()
        assert d.desk is not None
        d.desk.act(WO, "accept", by="网格员张伟", at=T0 + 42, source="api")
        notices = d.work_order_notices()
        family = [n for n in notices if n.message.receiver == "family"]
        assert len(family) == 1
        assert "网格员张伟" in family[0].message.text
        assert family[0].message.data["action"] == "accepted"
        points = [n for n in notices if n.sink == "influx/work_orders"]
        assert [n.message.data["action"] for n in points] == ["accepted"]


class TestDurability:
    def test_a_restarted_desk_takes_the_pending_step_at_the_same_time(self, tmp_path: Path) -> None:
        d, notices = opened()
        box = Outbox(tmp_path / "o.db", [], OutboxSettings(), Metrics())
        box.commit([], notices=notices, work_orders=d.work_order_rows())
        box.close()
        again = make()
        box = Outbox(tmp_path / "o.db", [], OutboxSettings(), Metrics())
        assert again.desk is not None
        assert again.desk.load(box.work_orders.unfinished()) == 1
        assert receivers(again.notices([], T0 + 179)) == []
        assert receivers(again.notices([], T0 + 180)) == ["doctor"]

    def test_list_filters_and_orders_life_safety_first(self, tmp_path: Path) -> None:
        d = make()
        notices = d.notices([bin_full(), dataclasses.replace(sos(), event_time=T0 + 5)], T0 + 5)
        notices += d.notices([], T0 + 30)  # the bins' group goes after its wait: its work order opens
        box = Outbox(tmp_path / "o.db", [], OutboxSettings(), Metrics())
        box.commit([], notices=notices, work_orders=d.work_order_rows())
        bodies, total = box.work_orders.query(Filter())
        assert total == 2
        assert [WorkOrder.decode(b).rule for b in bodies] == ["wristband_sos", "bin_full"]
        assert box.work_orders.query(Filter(family="bin"))[1] == 1
        assert box.work_orders.query(Filter(state=("accepted",)))[1] == 0
        assert box.work_orders.places(("dispatched",)) == [("maple", "g1", 2)]  # the console's links


class TestLinks:
    def test_a_message_carries_the_one_tap_link_in_its_words_and_ack(self) -> None:
        """With a link maker, each single message ends with the accept link (chat robots and
        SMS show only the text) and carries it in `ack`."""
        loaded = LoadedDispatch(Path("dispatch.yaml"), SPEC, None)
        d = Dispatcher(
            SPEC, REGISTRY, Metrics(), builtin=("webhook",), per_recipient={}, desk=build_desk(loaded),
            links=lambda wo, at: f"https://desk.example/l/{wo}-{at:.0f}",
        )  # fmt: skip
        [desk] = [n for n in d.notices([sos()], T0) if n.message.receiver == "desk"]
        link = f"https://desk.example/l/{WO}-{T0:.0f}"
        assert desk.message.ack == link
        assert desk.message.text.endswith(f"一键接单: {link}")
