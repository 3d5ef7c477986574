"""Several instances sharing a district: settings, the assignment, the registry split,
subscriptions, the lock and what `sensord check` says (the handover: test_shard_handover)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sensord._errors import ConfigError
from sensord._registry import Registry, parse_registry
from sensord._settings import DecodeSettings, Settings, parse_settings
from sensord._shard_cli import check_lines, refuse_foreign_silence, subscription_lines
from sensord._state_lock import StateLock
from sensord._types import RawMessage
from sensord.decode import Decoder
from sensord.shard import (
    MARKER_DEVICE,
    Shard,
    assignment,
    instance_filters,
    jetstream_consumers,
    marker_topics,
    owner,
    shard_filters,
    split_registry,
)
from sensord.shard._assign import narrow

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
