"""Several instances sharing a district: settings, the assignment, the registry split,
subscriptions, the handover gate and the engine's adoption of a community's state."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from sensord._errors import ConfigError
from sensord._handover import finish, make_plan
from sensord._metrics import Metrics
from sensord._pipeline import decode_active, encode_active
from sensord._registry import Registry, parse_registry
from sensord._settings import DecodeSettings, OutboxSettings, Settings, parse_settings
from sensord._shard_cli import check_lines, refuse_foreign_silence, subscription_lines
from sensord._state_lock import StateLock
from sensord._types import AlertEvent, AlertStatus, Family, RawMessage
from sensord.alerts import ActiveAlert, Engine
from sensord.decode import Decoder
from sensord.dispatch._group import Group
from sensord.outbox import Outbox, WorkOrderRow
from sensord.shard import (
    FINISHED,
    MARKER_DEVICE,
    GateRow,
    HandoverGate,
    Shard,
    assignment,
    instance_filters,
    jetstream_consumers,
    marker_payload,
    marker_topics,
    owner,
    shard_filters,
    split_registry,
)
from sensord.shard._assign import narrow
from tests.unit.test_engine_state import T0, batch, feed, make_engine, registry, stream
from tests.unit.test_sinks import event as sink_event

TOPIC = "sensord/{community}/{family}/{device_id}/{kind}"
RULES = str(Path(__file__).resolve().parents[2] / "rules")
COMMUNITIES = [f"community-{i:03d}" for i in range(600)]


def settings(**data: Any) -> Settings:
    return parse_settings(data, source="test.yaml", config_dir=Path())


def errors_of(**data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        settings(**data)
    return str(info.value)


class TestSettings:
    def test_index_must_be_below_count(self) -> None:
        """index 2 of count 2 is refused, saying how instances are numbered."""
        msg = errors_of(shard={"index": 2, "count": 2})
        assert "index 2 is not below count 2" in msg
        assert "numbered 0 to 1" in msg

    def test_index_without_count_is_refused(self) -> None:
        """Half of index/count says what is missing."""
        assert "give index and count" in errors_of(shard={"index": 0})

    def test_both_forms_are_refused(self) -> None:
        """A list of communities and an index at once is refused."""
        msg = errors_of(shard={"index": 0, "count": 2, "communities": ["a"]}, broker={"client_id": "x"})
        assert "either index and count, or communities" in msg

    def test_a_list_needs_its_own_client_id(self) -> None:
        """shard.communities without broker.client_id: two instances would share a session."""
        assert "set broker.client_id" in errors_of(shard={"communities": ["a"]})
        assert settings(shard={"communities": ["a"]}, broker={"client_id": "east"}).shard is not None

    def test_topics_without_community_are_refused(self) -> None:
        """A topic template with no {community} cannot be subscribed per community."""
        msg = errors_of(shard={"index": 0, "count": 2}, broker={"topic_template": "d/{family}/{device_id}"})
        assert "topic_template must contain {community}" in msg

    def test_ack_topics_without_community_are_refused(self) -> None:
        """The ack tree must be per community too (or off)."""
        msg = errors_of(
            shard={"index": 0, "count": 2}, broker={"ack_topic_template": "acks/{family}/{device_id}"}
        )
        assert "ack_topic_template must contain {community}" in msg
        off = settings(shard={"index": 0, "count": 2}, broker={"ack_topic_template": None})
        assert off.shard is not None

    def test_one_subscription_filter(self) -> None:
        """Two device filters are refused: the handover marker travels in the one filter."""
        msg = errors_of(shard={"index": 0, "count": 2}, broker={"subscriptions": ["sensord/+/+/+/a", "b/#"]})
        assert "must be one filter" in msg


class TestAssignment:
    def test_owner_is_the_same_in_another_process(self) -> None:
        """The assignment does not depend on Python's per-process string hash seed."""
        code = (
            f"from sensord.shard import assignment;print(sorted(assignment({COMMUNITIES[:50]!r}, 7).items()))"
        )
        outs = {
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True,
                env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
            ).stdout
            for seed in ("1", "2")
        }  # fmt: skip
        assert len(outs) == 1
        assert outs.pop().strip() == str(sorted(assignment(COMMUNITIES[:50], 7).items()))

    def test_shares_are_even(self) -> None:
        """600 communities over 4 instances: each gets 150 ± 40."""
        counts = np.bincount(list(assignment(COMMUNITIES, 4).values()), minlength=4)
        assert all(110 <= c <= 190 for c in counts), counts

    def test_adding_an_instance_moves_only_to_it(self) -> None:
        """4 → 5: every community that moves goes to instance 4, about a fifth of them."""
        before, after = assignment(COMMUNITIES, 4), assignment(COMMUNITIES, 5)
        moved = [c for c in COMMUNITIES if before[c] != after[c]]
        assert all(after[c] == 4 for c in moved)
        assert 0.12 < len(moved) / len(COMMUNITIES) < 0.28

    def test_removing_an_instance_moves_only_its_communities(self) -> None:
        """5 → 4: only instance 4's communities move."""
        before, after = assignment(COMMUNITIES, 5), assignment(COMMUNITIES, 4)
        assert all(before[c] == 4 for c in COMMUNITIES if before[c] != after[c])

    def test_a_list_is_its_own_share(self) -> None:
        """With shard.communities an instance owns exactly those."""
        shard = Shard(settings(shard={"communities": ["a", "b"]}, broker={"client_id": "x"}).shard)  # type: ignore[arg-type]
        assert [shard.owns(c) for c in ("a", "b", "c")] == [True, True, False]


def district(n_per: int = 3) -> Registry:
    devices = {
        f"{c}-wb-{i}": {"family": "wristband", "community": c, "grid": "g"}
        for c in COMMUNITIES[:8]
        for i in range(n_per)
    }
    return parse_registry({"devices": devices}, source="test")


class TestSplit:
    def test_each_device_on_exactly_one_instance(self) -> None:
        """Three instances split the registry without overlap or gap, whole communities each."""
        reg = district()
        parts = [
            split_registry(reg, Shard(settings(shard={"index": i, "count": 3}).shard))  # type: ignore[arg-type]
            for i in range(3)
        ]
        ids = [set(p.registry.by_id) for p in parts]
        assert sum(len(s) for s in ids) == len(reg.by_id)
        assert set().union(*ids) == set(reg.by_id)
        for p in parts:
            assert set(p.foreign) == set(reg.by_id) - set(p.registry.by_id)
            for c in p.communities:
                assert all(d.entry.community == c for d in reg.by_id.values() if d.device_id.startswith(c))

    def test_marker_device_id_is_reserved(self) -> None:
        """A registered device with the marker's id is refused (its messages would be cut)."""
        reg = parse_registry(
            {"devices": {MARKER_DEVICE: {"family": "bin", "community": "a", "grid": "g"}}}, source="t"
        )
        with pytest.raises(ConfigError, match="reserved"):
            split_registry(reg, Shard(settings(shard={"index": 0, "count": 1}).shard))  # type: ignore[arg-type]

    def test_device_of_another_instance_is_rejected_as_not_this_shard(self) -> None:
        """A message from another instance's device is rejected naming its owner, and not
        counted as an unknown device."""
        reg = district()
        s = settings(shard={"index": 0, "count": 3})
        shard = Shard(s.shard)  # type: ignore[arg-type]
        split = split_registry(reg, shard)
        theirs = next(iter(split.foreign))

        def elsewhere(device_id: str) -> tuple[str, str] | None:
            community = split.foreign.get(device_id)
            if community is None:
                return None
            return "not_this_shard", f"owned by {shard.owner_of(community)}"

        decoder = Decoder(split.registry, DecodeSettings(), TOPIC, elsewhere=elsewhere)
        topic = f"sensord/{split.foreign[theirs]}/wristband/{theirs}/telemetry"
        res = decoder([RawMessage(topic, b'{"heart_rate": 80}', time.time())])
        assert [(r.reason, r.detail) for r in res.rejects] == [
            ("not_this_shard", f"owned by instance {owner(split.foreign[theirs], 3)} of 3")
        ]
        assert not res.unknown

    def test_subscribe_all_skips_other_instances_devices_and_keeps_rejecting_the_rest(self) -> None:
        """shard.subscribe: all. Another instance's device is skipped and counted (first
        and later copies of its topic alike), not rejected; this instance's device is
        decoded; a device of no instance is still rejected as unknown."""
        reg = district()
        s = settings(shard={"index": 0, "count": 3, "subscribe": "all"})
        shard = Shard(s.shard)  # type: ignore[arg-type]
        split = split_registry(reg, shard)
        theirs = next(iter(split.foreign))
        ours = next(iter(split.registry.by_id))
        ours_c = split.registry.by_id[ours].entry.community

        def elsewhere(device_id: str) -> tuple[str, str] | None:
            community = split.foreign.get(device_id)
            return None if community is None else ("not_this_shard", "theirs")

        decoder = Decoder(split.registry, DecodeSettings(), TOPIC, elsewhere=elsewhere, skip_elsewhere=True)
        foreign = f"sensord/{split.foreign[theirs]}/wristband/{theirs}/telemetry"
        now = time.time()
        msgs = [
            RawMessage(foreign, b'{"heart_rate": 80}', now),
            RawMessage(f"sensord/{ours_c}/wristband/{ours}/telemetry", b'{"heart_rate": 80}', now),
            RawMessage(foreign, b'{"heart_rate": 81}', now),
            RawMessage(f"sensord/{ours_c}/wristband/nobody/telemetry", b'{"heart_rate": 80}', now),
        ]
        res = decoder(msgs)
        assert res.skipped == 2
        assert res.accepted == 1
        assert [r.reason for r in res.rejects] == ["unknown_device"]
        assert decoder([msgs[0]]).skipped == 1  # from the remembered topic

    def test_subscribe_all_subscribes_the_configured_filters(self) -> None:
        """shard.subscribe: all subscribes broker.subscriptions and the ack wildcard, as
        an unsharded instance does; the default narrows them to its communities."""
        every = settings(shard={"index": 0, "count": 3, "subscribe": "all"})
        assert instance_filters(every, ["a", "b"]) is None
        assert subscription_lines(every, district())[0].startswith("  subscriptions: 2 filters;")
        own = settings(shard={"index": 0, "count": 3})
        assert instance_filters(own, ["a"]) == ("sensord/a/+/+/+", "sensord-dispatch/ack/a/+/+")


class TestSubscriptions:
    @pytest.mark.parametrize(
        ("filt", "want"),
        [
            ("sensord/+/+/+/+", "sensord/c/+/+/+"),
            ("sensord/#", "sensord/c/#"),
            ("#", "+/c/#"),
            ("sensord/+/+/+/telemetry", "sensord/c/+/+/telemetry"),
            ("sensord/c/#", "sensord/c/#"),
            ("sensord/d/#", None),
        ],
    )
    def test_narrow(self, filt: str, want: str | None) -> None:
        """A filter cut down to one community at its level of the template."""
        assert narrow(filt, 1, "c") == want

    def test_filters_per_community_and_acks(self) -> None:
        """One device filter and one ack filter per community, device filters first."""
        s = settings(shard={"index": 0, "count": 2})
        assert shard_filters(s, ["b", "a"]) == (
            "sensord/a/+/+/+", "sensord/b/+/+/+", "sensord-dispatch/ack/a/+/+", "sensord-dispatch/ack/b/+/+",
        )  # fmt: skip

    def test_markers_lie_in_the_community_filters(self) -> None:
        """The handover markers of a community are inside its device and ack filters."""
        s = settings(shard={"index": 0, "count": 2}, broker={"subscriptions": ["sensord/+/+/+/telemetry"]})
        topics = marker_topics(s, "a")
        assert topics == {
            "devices": f"sensord/a/shard/{MARKER_DEVICE}/telemetry",
            "acks": f"sensord-dispatch/ack/a/shard/{MARKER_DEVICE}",
        }

    def test_instance_zero_keeps_the_configured_session(self) -> None:
        """A single instance becomes instance 0 with its broker session."""
        assert Shard(settings(shard={"index": 0, "count": 3}).shard).client_id("sensord") == "sensord"  # type: ignore[arg-type]

    def test_client_id_carries_the_index_not_the_count(self) -> None:
        """Instance 1 keeps its broker session whatever the count."""
        ids = {Shard(settings(shard={"index": 1, "count": n}).shard).client_id("sensord") for n in (2, 3)}  # type: ignore[arg-type]
        assert ids == {"sensord-shard-1"}


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


class TestLock:
    def test_second_holder_is_refused_naming_the_first(self, tmp_path: Path) -> None:
        """A second lock on one state_dir fails with the holder's pid; after release it works."""
        first = StateLock(tmp_path).acquire("sensord")
        with pytest.raises(ConfigError, match=r"in use by sensord \(pid \d+\)"):
            StateLock(tmp_path).acquire()
        first.release()
        StateLock(tmp_path).acquire().release()


class TestOperator:
    def test_check_prints_the_assignment(self) -> None:
        """`sensord check` lists community → instance and devices per instance."""
        s = settings(shard={"index": 1, "count": 3})
        lines = check_lines(s, district())
        owners = assignment(COMMUNITIES[:8], 3)
        assert lines[0].startswith("shard: instance 1 of 3 (broker client id sensord-shard-1)")
        for c, i in owners.items():
            assert f"  {c}\tinstance {i}\t3 devices" in lines
        mine = sum(1 for i in owners.values() if i == 1)
        assert f"  instance 1: {mine} communities, {3 * mine} devices  <- this instance" in lines

    def test_jetstream_consumers_count_a_trailing_hash_twice(self) -> None:
        """nats-server makes two consumers for 'a/#' (it also takes 'a'), one for '#' alone
        and one for a filter of '+' levels."""
        assert jetstream_consumers(["a/#", "#", "a/+/b", "x/y"]) == 5

    def test_check_prints_the_nats_ack_pending_ceiling_of_the_busiest_instance(self) -> None:
        """`sensord check` gives this instance's filter count and, from the instance with the
        most consumers, the highest mqtt.max_ack_pending a nats-server cluster may use
        before it refuses that instance's subscriptions (65535 summed per session)."""
        s = settings(shard={"index": 1, "count": 3})
        owners = assignment(COMMUNITIES[:8], 3)
        per_instance = [sum(1 for o in owners.values() if o == i) for i in range(3)]
        busiest = max(per_instance)
        (line,) = subscription_lines(s, district())
        # Each community: its device filter and its ack filter, one consumer each.
        assert line.startswith(f"  subscriptions: {2 * per_instance[1]} filters;")
        assert f"{2 * busiest} consumers" in line
        assert line.endswith(f"mqtt.max_ack_pending must be at most {65535 // (2 * busiest)}")

    def test_check_prints_the_ceiling_without_a_shard(self) -> None:
        """Unsharded, the configured filters: 'sensord/#' is two consumers, the acks one."""
        s = settings(broker={"subscriptions": ["sensord/#"]})
        (line,) = subscription_lines(s, district())
        assert line.startswith("  subscriptions: 2 filters;")
        assert line.endswith("at most 21845")

    def test_silence_of_another_instances_community_is_refused(self) -> None:
        """`sensord silence add --match community=X` on an instance not serving X says who does."""
        s = settings(shard={"index": 0, "count": 3})
        theirs = next(c for c in COMMUNITIES if owner(c, 3) == 2)
        ours = next(c for c in COMMUNITIES if owner(c, 3) == 0)
        with pytest.raises(ConfigError, match="served by instance 2 of 3"):
            refuse_foreign_silence(s, [f'community="{theirs}"'])
        refuse_foreign_silence(s, [f"community={ours}", "grid=g1"])


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
