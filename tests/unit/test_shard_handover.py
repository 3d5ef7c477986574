"""The handover of a community between instances: the gate that cuts its messages by
markers, the engine's adoption of its state, and `sensord shard begin/finish`'s plan and
state moves."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensord._errors import ConfigError
from sensord._handover import finish, make_plan
from sensord._metrics import Metrics
from sensord._pipeline import decode_active, encode_active
from sensord._registry import Registry
from sensord._settings import OutboxSettings
from sensord._types import AlertEvent, AlertStatus, Family, RawMessage
from sensord.alerts import ActiveAlert, Engine
from sensord.dispatch._group import Group
from sensord.outbox import Outbox, WorkOrderRow
from sensord.shard import (
    FINISHED,
    MARKER_DEVICE,
    GateRow,
    HandoverGate,
    marker_payload,
    owner,
)
from tests.unit.test_engine_state import T0, batch, feed, make_engine, registry, stream
from tests.unit.test_shard import COMMUNITIES, RULES, TOPIC
from tests.unit.test_sinks import event as sink_event


def msg(community: str, device: str, body: dict[str, Any] | bytes, *, ack: bool = False) -> RawMessage:
    topic = (f"sensord-dispatch/ack/{community}/wristband/{device}" if ack
             else f"sensord/{community}/wristband/{device}/telemetry")  # fmt: skip
    return RawMessage(topic, body if isinstance(body, bytes) else orjson.dumps(body), T0)


def marker(community: str, handover: str = "h1", *, ack: bool = False) -> RawMessage:
    topic = (f"sensord-dispatch/ack/{community}/shard/{MARKER_DEVICE}" if ack
             else f"sensord/{community}/shard/{MARKER_DEVICE}/telemetry")  # fmt: skip
    return RawMessage(topic, marker_payload(handover, community, "0 of 2", "2 of 3"), T0)


def gate(*rows: GateRow) -> HandoverGate:
    g = HandoverGate(TOPIC, "sensord-dispatch/ack/{community}/{family}/{device_id}", Metrics())
    g.load([(r.key, r.encode()) for r in rows])
    return g


class TestGate:
    def test_giver_processes_up_to_the_marker_only(self) -> None:
        """The old owner keeps a community's messages before its marker and none after;
        other communities pass; the row is marked cut in the batch's changes."""
        g = gate(GateRow("give", "devices", "x", "h1", "instance 2 of 3"))
        batch_in = [msg("x", "d1", {"n": 1}), msg("y", "d2", {"n": 2}), marker("x"), msg("x", "d1", {"n": 3})]
        keep, changes = g.filter(batch_in)
        assert [m.payload for m in keep] == [b'{"n":1}', b'{"n":2}']
        assert orjson.loads(changes["shard\x1fgive\x1fdevices\x1fx"] or b"")["cut"] is True
        assert g.open_gives() == []
        keep, _ = g.filter([msg("x", "d1", {"n": 4}), marker("x")])
        assert keep == []

    def test_taker_processes_after_the_marker_only(self) -> None:
        """The new owner skips a community's messages before its marker, keeps those after,
        and deletes its row in the batch's changes."""
        g = gate(GateRow("take", "devices", "x", "h1", "instance 0 of 2"))
        keep, changes = g.filter([msg("x", "d1", {"n": 1}), marker("x"), msg("x", "d1", {"n": 2})])
        assert [m.payload for m in keep] == [b'{"n":2}']
        assert changes == {"shard\x1ftake\x1fdevices\x1fx": None}
        assert not g.active

    def test_trees_are_cut_separately(self) -> None:
        """An ack after the device marker but before the ack marker is still the giver's."""
        g = gate(GateRow("give", "devices", "x", "h1", "p"), GateRow("give", "acks", "x", "h1", "p"))
        keep, _ = g.filter([marker("x"), msg("x", "d1", {"rule": "r"}, ack=True), marker("x", ack=True),
                            msg("x", "d1", {"rule": "s"}, ack=True)])  # fmt: skip
        assert [m.payload for m in keep] == [b'{"rule":"r"}']

    def test_finished_give_of_a_community_no_longer_served_costs_nothing(self) -> None:
        """After the restart with the new config, a cut community this instance no longer
        serves leaves the gate idle (no per-message look) and is known as handed over."""
        g = HandoverGate(TOPIC, None, Metrics())
        cut = GateRow("give", "devices", "x", "h1", "instance 2 of 3", cut=True)
        kept = GateRow("give", "devices", "y", "h1", "instance 2 of 3", cut=True)
        g.load([(cut.key, cut.encode()), (kept.key, kept.encode())], served={"y", "z"})
        assert g.handed_over == {"x": "instance 2 of 3"}
        assert list(g.rows) == [("devices", "y")]

    def test_new_config_waits_for_drain_and_finish(self) -> None:
        """A config no longer serving a community it has not passed the marker of is
        refused (drain first); a taker is refused until finish moved the state; the old
        config (drain itself) may run."""
        give = GateRow("give", "devices", "x", "h1", "instance 2 of 3")
        g = gate(give)
        assert "sensord shard drain" in (g.refusal({"y"}) or "")
        assert g.refusal({"x", "y"}) is None
        take = GateRow("take", "devices", "x", "h1", "instance 0 of 2")
        t = gate(take)
        assert "sensord shard finish" in (t.refusal({"x"}) or "")
        done = HandoverGate(TOPIC, None, Metrics())
        done.load([(take.key, take.encode()), (f"{FINISHED}h1", b"1")], served={"x"})
        assert done.refusal({"x"}) is None

    def test_marker_of_another_handover_is_ignored(self) -> None:
        """A stray marker (another handover id) neither cuts nor passes to decode."""
        g = gate(GateRow("give", "devices", "x", "h1", "p"))
        keep, changes = g.filter([marker("x", "h0"), msg("x", "d1", {"n": 1})])
        assert [m.payload for m in keep] == [b'{"n":1}']
        assert changes == {}
        assert len(g.open_gives()) == 1


def shared(reg: Registry, community: str) -> Registry:
    """The part of `reg` one instance serving `community` alone has."""
    return Registry.from_entries({i: d.entry for i, d in reg.by_id.items() if d.entry.community == community})


def by_id(rows: list[tuple[int, float, dict[str, float]]], src: Registry, dst: Registry) -> list[Any]:
    """Rows of the devices `dst` has, re-indexed from `src` to `dst`."""
    out = []
    for dv, t, body in rows:
        device = dst.get(src.devices(Family.WRISTBAND)[dv].device_id)
        if device is not None:
            out.append((device.index, t, body))
    return out


def run_rows(engine: Engine, rows: list[Any], end: float) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    for a in range(0, len(rows), 37):
        part = batch(rows[a : a + 37])
        events += feed(engine, part)
        events += engine.advance(float(part.ts.max())).events
    return events + engine.advance(T0 + end).events


class TestAdopt:
    @pytest.mark.parametrize("seed", [1, 2])
    def test_taken_community_goes_on_as_if_never_moved(self, tmp_path: Path, seed: int) -> None:
        """Instance A runs two communities for 450 s, instance B takes c1 (A's rule state
        by device id) and runs it for 450 s more: c1's events after the handover are those
        one engine running all 900 s gives (same ids: timers, windows, cooldowns, flapping
        and no-data continue)."""
        full = registry(12)
        rows = stream(12, 900, seed)
        first = [r for r in rows if r[1] < 450]
        second = [r for r in rows if r[1] >= 450]
        ref = make_engine(tmp_path, full, community_silence_s=0)
        run_rows(ref, first, 450)
        want = [e for e in run_rows(ref, second, 1000) if e.community == "c1"]
        a = make_engine(tmp_path, full, community_silence_s=0)
        run_rows(a, first, 450)
        b_reg = shared(full, "c1")
        b = make_engine(tmp_path, b_reg, community_silence_s=0)
        assert b.adopt(a, {"c1"}) == 6
        got = run_rows(b, by_id(second, full, b_reg), 1000)
        assert len(want) > 10, "the second half fired too little to prove anything"
        assert sorted(e.event_id for e in got) == sorted(e.event_id for e in want)

    def test_community_silence_across_the_handover(self, tmp_path: Path) -> None:
        """c1 falls silent before the handover and speaks again after it: the new owner
        raises and resolves the one community alert the single engine raises."""
        full = registry(12)
        rows = [r for r in stream(12, 900, 3) if not (r[0] % 2 == 1 and 380 <= r[1] < 600)]
        ref = make_engine(tmp_path, full, community_silence_s=100)
        run_rows(ref, [r for r in rows if r[1] < 450], 450)
        want = [e for e in run_rows(ref, [r for r in rows if r[1] >= 450], 1000) if e.community == "c1"]
        a = make_engine(tmp_path, full, community_silence_s=100)
        run_rows(a, [r for r in rows if r[1] < 450], 450)
        b_reg = shared(full, "c1")
        b = make_engine(tmp_path, b_reg, community_silence_s=100)
        b.adopt(a, {"c1"})
        got = run_rows(b, by_id([r for r in rows if r[1] >= 450], full, b_reg), 1000)
        assert sorted(e.event_id for e in got) == sorted(e.event_id for e in want)
        # (then silent again after the stream's end, at the final clock)
        assert [e.status.value for e in got if e.rule == "community_silent"][:2] == ["firing", "resolved"]

    def test_without_adopting_the_same_stream_repeats_alerts(self, tmp_path: Path) -> None:
        """The counter-check: a fresh engine for c1 gives other events (the test above can fail)."""
        full = registry(12)
        rows = stream(12, 900, 1)
        ref = make_engine(tmp_path, full, community_silence_s=0)
        run_rows(ref, [r for r in rows if r[1] < 450], 450)
        want = [e for e in run_rows(ref, [r for r in rows if r[1] >= 450], 1000) if e.community == "c1"]
        b_reg = shared(full, "c1")
        fresh = run_rows(make_engine(tmp_path, b_reg, community_silence_s=0),
                         by_id([r for r in rows if r[1] >= 450], full, b_reg), 1000)  # fmt: skip
        assert sorted(e.event_id for e in fresh) != sorted(e.event_id for e in want)


def configs(tmp: Path, side: str, shards: list[dict[str, Any]], **broker: Any) -> list[Path]:
    """One config per shard, each with its own state_dir, on the district registry."""
    devices = {f"{c}-wb0": {"family": "wristband", "community": c, "grid": "g"} for c in COMMUNITIES[:12]}
    (tmp / "devices.yaml").write_text(orjson.dumps({"devices": devices}).decode())
    out = []
    for i, shard in enumerate(shards):
        path = tmp / f"{side}{i}.yaml"
        cfg = {"registry": "devices.yaml", "rules_dir": RULES, "state_dir": str(tmp / f"state{i}"),
               "shard": shard, "broker": {"client_id": f"sensord-{i}", **broker}}  # fmt: skip
        path.write_text(orjson.dumps(cfg).decode())
        out.append(path)
    return out


class TestPlan:
    def test_growing_moves_only_to_the_new_instance(self, tmp_path: Path) -> None:
        """2 -> 3: every move goes to instance 2, from the instance serving it before."""
        old = configs(tmp_path, "old", [{"index": i, "count": 2} for i in range(2)])
        new = configs(tmp_path, "new", [{"index": i, "count": 3} for i in range(3)])
        plan = make_plan(old, new)
        assert plan.moves
        for c, (giver, taker) in plan.moves.items():
            assert giver is not None
            assert taker.config == new[2]
            assert giver.config == old[owner(c, 2)]
        assert not plan.retiring(plan.old[0])
        assert not plan.retiring(plan.old[1])

    def test_shrinking_retires_the_removed_instance(self, tmp_path: Path) -> None:
        """3 -> 2: only instance 2 gives, and it serves nothing afterwards."""
        old = configs(tmp_path, "old", [{"index": i, "count": 3} for i in range(3)])
        new = configs(tmp_path, "new", [{"index": i, "count": 2} for i in range(2)])
        plan = make_plan(old, new)
        assert {g.config for g, _ in plan.moves.values() if g is not None} == {old[2]}
        assert plan.retiring(plan.old[2])

    def test_an_instance_giving_and_taking_at_once_is_refused(self, tmp_path: Path) -> None:
        """Two lists swapping communities would need an instance to give and take."""
        a, b = COMMUNITIES[:6], COMMUNITIES[6:12]
        old = configs(tmp_path, "old", [{"communities": a}, {"communities": b}])
        new = configs(tmp_path, "new", [{"communities": a[:5] + b[:1]}, {"communities": b[1:] + a[5:]}])
        with pytest.raises(ConfigError, match="both give and take"):
            make_plan(old, new)

    def test_a_changed_session_id_is_refused(self, tmp_path: Path) -> None:
        """An instance whose broker session id would change loses what was queued for it."""
        old = configs(tmp_path, "old", [{"index": i, "count": 2} for i in range(2)])
        new = configs(tmp_path, "new", [{"index": i, "count": 2} for i in range(2)], client_id="other")
        with pytest.raises(ConfigError, match="broker session of the instance"):
            make_plan(old, new)

    def test_other_topics_on_one_side_are_refused(self, tmp_path: Path) -> None:
        """The markers must travel in both sides' subscriptions."""
        old = configs(tmp_path, "old", [{"index": 0, "count": 1}])
        new = configs(tmp_path, "new", [{"index": i, "count": 2} for i in range(2)], ack_topic_template=None)
        with pytest.raises(ConfigError, match="subscribe differently"):
            make_plan(old, new)


class TestFinish:
    def test_a_moved_community_takes_its_alerts_orders_holds_and_silences(self, tmp_path: Path) -> None:
        """finish moves, for a community given away: its open alert, its unfinished work
        order (with an audit entry on both sides), its part of a group mixing communities,
        and the giver's silences; the giver keeps its own part and loses the rest; each
        outbox is copied first and marked finished."""
        old = configs(tmp_path, "old", [{"index": i, "count": 2} for i in range(2)])
        new = configs(tmp_path, "new", [{"index": i, "count": 3} for i in range(3)])
        plan = make_plan(old, new)
        moved, (giver, taker) = next((c, m) for c, m in sorted(plan.moves.items()) if m[0] is not None)
        assert giver is not None
        kept = next(c for c in giver.communities if c not in plan.moves)
        box = Outbox(giver.db, (), OutboxSettings(), Metrics())
        alert = ActiveAlert(fingerprint="fp-moved", family=Family.WRISTBAND, rule="wristband_sos",
                            device_id=f"{moved}-wb0", status=AlertStatus.FIRING, since=T0, fired_at=T0,
                            last_notified=T0, community=moved)  # fmt: skip
        order = WorkOrderRow("wo-1", "dispatched", moved, "g", "wristband", alert.rule, True, T0, T0, b"")
        events = {f"fp-{c}": dataclasses.replace(sink_event(i), fingerprint=f"fp-{c}", community=c)
                  for i, c in enumerate((moved, kept))}  # fmt: skip
        group = Group(key="grid_worker\x1froot", receiver="grid_worker", labels={}, wait_s=30, interval_s=300,
                      repeat_s=3600, first_at=T0, alerts=events)  # fmt: skip
        box.commit([], upsert_active=[("fp-moved", encode_active(alert))], work_orders=[order],
                   groups={"group\x1fgrid_worker\x1froot": group.encode()})  # fmt: skip
        ends = time.time() + 3600
        box.silences.add(['community="x"'], starts_at=T0, ends_at=ends, created_by="desk", comment="c")
        box.close()
        for c, (g, t) in plan.moves.items():  # as drained: every giver passed every marker
            assert g is not None
            cut = [GateRow("give", tree, c, "h1", t.label, cut=True) for tree in ("devices", "acks")]
            with contextlib.closing(Outbox(g.db, (), OutboxSettings(), Metrics())) as gbox:
                gbox.commit([], groups={r.key: r.encode() for r in cut})
        assert finish(plan, out=[]) == "h1"
        gave = Outbox(giver.db, (), OutboxSettings(), Metrics())
        took = Outbox(taker.db, (), OutboxSettings(), Metrics())
        try:
            assert [decode_active(b).fingerprint for b in took.active_rows()] == ["fp-moved"]
            assert gave.active_rows() == []
            assert [o.id for o in took.work_orders.unfinished_rows()] == ["wo-1"]
            assert gave.work_orders.unfinished_rows() == []
            assert [a.action for a in gave.work_orders.audit()] == ["handed_over_out"]
            assert [a.action for a in took.work_orders.audit()] == ["handed_over_in"]
            took_group = Group.decode(dict(took.dispatch_state())["group\x1fgrid_worker\x1froot"])
            gave_group = Group.decode(dict(gave.dispatch_state())["group\x1fgrid_worker\x1froot"])
            assert [e.community for e in took_group.alerts.values()] == [moved]
            assert [e.community for e in gave_group.alerts.values()] == [kept]
            assert [s.comment for s in took.silences.all()] == ["c"]
            assert f"{FINISHED}h1" in dict(took.dispatch_state())
            assert took.snapshots.load() is not None  # the new owner's rule state, for its registry
            assert giver.db.with_name(f"{giver.db.name}.before-h1").is_file()
        finally:
            gave.close()
            took.close()
        said: list[str] = []
        assert finish(plan, out=said) == "h1"
        assert said == ["handover h1 was finished already"]
