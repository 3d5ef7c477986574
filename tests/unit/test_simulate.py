"""Unit tests for the device simulators, scenario files and generation."""

from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensord._errors import ConfigError
from sensord._registry import parse_registry
from sensord._settings import Settings
from sensord._types import AlertStatus, Family, RawMessage
from sensord.replay import replay
from sensord.rules import load_rules
from sensord.simulate import Scenario, generate, load_scenario, registry_for, start_time

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0
SETTINGS = Settings.model_validate({"decode": {"max_clock_skew_s": 0}})


def scenario(**extra: object) -> Scenario:
    doc: dict[str, object] = {
        "name": "t",
        "start": "2026-11-24T06:00:00Z",
        "duration": "2h",
        "communities": [{"name": "a", "grids": ["g1"], "buildings": 2}, {"name": "b", "grids": ["g2"]}],
        "devices": {"bin": 6, "fire": 6, "wristband": 6},
    }
    doc.update(extra)
    return Scenario.model_validate(doc)


def alerts(sc: Scenario, seed: int = 1) -> collections.Counter[tuple[str, str]]:
    reg = parse_registry(registry_for(sc), source="t")
    msgs = [RawMessage(t, p, ts) for ts, t, p, _ in generate(sc, seed=seed, start_ts=start_time(sc, T0))]
    result = replay(msgs, registry=reg, rules=load_rules(ROOT / "rules", reg), settings=SETTINGS)
    return collections.Counter(
        (e.rule, e.device_id or e.community)
        for e in result.events
        if e.status is AlertStatus.FIRING and not e.repeat
    )


class TestScenarios:
    def test_demo_scenario_gives_exactly_the_expected_alerts(self) -> None:
        """The demo neighbourhood, replayed offline, fires exactly the rules its incidents
        expect, on exactly those devices, once each: no false alarm from the models."""
        sc = load_scenario(ROOT / "simulators" / "neighbourhood.yaml")
        want = collections.Counter((rule, inc.device) for inc in sc.incidents for rule in inc.expect)
        assert alerts(sc) == want

    def test_same_seed_same_stream(self) -> None:
        """Generation is deterministic for a seed, and another seed gives another stream."""
        sc = scenario()
        a = list(generate(sc, seed=7, start_ts=T0))
        assert a == list(generate(sc, seed=7, start_ts=T0))
        assert a != list(generate(sc, seed=8, start_ts=T0))

    def test_incident_at_clock_time(self) -> None:
        """`at: "06:32"` on a scenario starting 06:00 is 32 minutes in; a fall there alerts then."""
        sc = scenario(incidents=[{"at": "06:32", "kind": "fall", "device": "wb-01", "duration": "20s"}])
        assert sc.incident_offset(sc.incidents[0]) == 32 * 60
        assert alerts(sc) == collections.Counter({("wristband_fall", "wb-01"): 1})

    def test_clock_time_needs_a_start(self) -> None:
        """A time-of-day incident in a scenario without `start` is refused with the reason."""
        with pytest.raises(ValueError, match="need the scenario's `start`"):
            scenario(start=None, incidents=[{"at": "06:32", "kind": "fall", "device": "wb-01"}])

    def test_fire_in_a_building_alerts_its_fire_sensors(self) -> None:
        """A fire in building 1 of community a sets off that building's fire sensors only."""
        sc = scenario(
            incidents=[{"at_s": 600, "kind": "fire", "community": "a", "building": "1", "duration": "5m"}]
        )
        reg = registry_for(sc)["devices"]
        in_building = {
            d
            for d, e in reg.items()
            if e["family"] == "fire" and e["community"] == "a" and e["building"] == "1"
        }
        smoke = {dev for (rule, dev) in alerts(sc) if rule == "smoke_alarm"}
        assert smoke == in_building
        assert smoke

    def test_gateway_silence_is_one_community_alert(self) -> None:
        """A community's gateway down for 15 min is one community_silent alert, and none of
        its devices pages on its own, then or when it comes back."""
        sc = scenario(
            devices={"fire": 8, "wristband": 8},
            incidents=[{"at_s": 1800, "kind": "gateway_silent", "community": "b", "duration": "15m"}],
        )
        assert alerts(sc) == collections.Counter({("community_silent", "b"): 1})

    def test_bad_scenario_names_the_problem(self, tmp_path: Path) -> None:
        """A scenario with an unknown incident kind is a ConfigError naming it."""
        bad = tmp_path / "s.yaml"
        bad.write_text(
            "name: x\nduration: 1h\ncommunities: [{name: a}]\ndevices: {bin: 1}\n"
            "incidents: [{at_s: 1, kind: meteor, device: bin-01}]\n"
        )
        with pytest.raises(ConfigError, match="meteor"):
            load_scenario(bad)


class TestModels:
    def by_device(self, sc: Scenario) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for _, topic, payload, _ in generate(sc, seed=1, start_ts=start_time(sc)):
            out[topic.split("/")[3]].append(orjson.loads(payload))
        return out

    def test_bins_are_emptied_on_the_collection_round(self) -> None:
        """Bins fill during the afternoon and drop to near empty after the 19:00 round."""
        sc = scenario(start="2026-11-24T15:00:00Z", duration="5h", devices={"bin": 4})
        round_at = start_time(sc) + 4 * 3600
        for readings in self.by_device(sc).values():
            before = [r["fill_pct"] for r in readings if r["ts"] < round_at]
            after = [r["fill_pct"] for r in readings if round_at + 700 <= r["ts"]]
            assert before[-1] > before[0]
            assert after[0] <= 6 < before[-1]

    def test_wristband_heart_rate_lower_asleep(self) -> None:
        """Heart rate at 03:00 (asleep) is lower on average than at 13:00 (awake)."""
        night = scenario(start="2026-11-24T03:00:00Z", duration="30m", devices={"wristband": 6})
        day = scenario(start="2026-11-24T13:00:00Z", duration="30m", devices={"wristband": 6})

        def mean_hr(sc: Scenario) -> float:
            hrs = [float(r["heart_rate"]) for rs in self.by_device(sc).values() for r in rs]
            return sum(hrs) / len(hrs)

        assert mean_hr(night) + 8 < mean_hr(day)

    def test_noise_duplicates_and_out_of_order(self) -> None:
        """Duplicate and out-of-order rates show up in the stream at about their share."""
        sc = scenario(noise={"duplicate_rate": 0.05, "out_of_order_rate": 0.05}, devices={"wristband": 10})
        msgs = list(generate(sc, seed=3, start_ts=T0))
        payloads = [m[2] for m in msgs]
        dups = sum(1 for a, b in itertools.pairwise(payloads) if a == b)
        assert 0.02 * len(msgs) < dups < 0.08 * len(msgs)
        late = 0
        newest: dict[str, float] = {}
        for _, topic, payload, _ in msgs:
            ts = orjson.loads(payload)["ts"]
            late += ts < newest.get(topic, -1)
            newest[topic] = max(newest.get(topic, -1), ts)
        assert 0.02 * len(msgs) < late < 0.08 * len(msgs)

    def test_qos_per_family(self) -> None:
        """`qos_by_family` sets the QoS of that family's messages; others use `qos`."""
        sc = scenario(qos=1, qos_by_family={"bin": 0})
        qos = {(t.split("/")[2], q) for _, t, _, q in generate(sc, seed=1, start_ts=T0)}
        assert qos == {("bin", 0), ("fire", 1), ("wristband", 1)}

    def test_report_intervals_per_family(self) -> None:
        """Families report at their own interval: wristbands every 30 s, bins every 10 min."""
        sc = scenario(duration="1h")
        counts = collections.Counter(t.split("/")[2] for _, t, _, _ in generate(sc, seed=1, start_ts=T0))
        assert counts["wristband"] == pytest.approx(6 * 120, rel=0.1)
        assert counts["bin"] == pytest.approx(6 * 6, rel=0.2)
        assert Family.BIN.value in counts
