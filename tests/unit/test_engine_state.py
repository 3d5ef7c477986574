"""Unit tests for engine state beyond one rule: community silence, acknowledgements,
windows against a plain computation, batch-split independence, snapshots."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from sensord._metrics import Metrics
from sensord._pipeline import Pipeline
from sensord._registry import Registry, parse_registry
from sensord._settings import AlertSettings, DecodeSettings
from sensord._types import AlertEvent, AlertStatus, Family, RawMessage
from sensord.alerts import Engine
from sensord.alerts._windows import WindowHistory
from sensord.decode import Decoder, FamilyBatch, field_specs
from sensord.rules import WindowSpec, load_rules
from sensord.sinks import DeadLetter

T0 = 1_700_000_000.0
TOPIC = "sensord/{community}/{family}/{device_id}/{kind}"

RULES = """\
family: wristband
params: {hr_high: 120, quiet: 120}
rules:
  - name: hr_high
    when: heart_rate > hr_high
    clear: heart_rate <= hr_high - 5
    for: 20s
    keep_firing_for: 15s
    cooldown: 30s
    summary: hr
  - name: spo2_avg
    when: avg_over(spo2, 1m) < 90 or min_over(spo2, 30s) < 80
    summary: spo2
  - name: sos
    kind: event
    when: sos
    resolve_after: 40s
    summary: sos
  - name: silent
    no_data: quiet
    summary: silent
  - name: hr_levels
    levels:
      - {severity: warning, when: heart_rate > 115, clear: heart_rate <= 110}
      - {severity: critical, when: heart_rate > 128, clear: heart_rate <= 120}
    summary: levels
  - name: hr_flappy
    when: heart_rate > 120
    flapping: {window: 6, high: 0.5, low: 0.2}
    summary: flappy
  - name: spo2_stuck
    when: unchanged_for(spo2) >= 15
    summary: stuck
"""


def registry(n: int, communities: int = 2) -> Registry:
    devices = {
        f"wb-{i}": {"family": "wristband", "community": f"c{i % communities}", "grid": "g"} for i in range(n)
    }
    return parse_registry({"devices": devices}, source="test")


def make_engine(tmp_path: Path, reg: Registry, **alerts: float) -> Engine:
    d = tmp_path / "rules"
    d.mkdir(exist_ok=True)
    (d / "wristband.yaml").write_text(RULES)
    return Engine(load_rules(d, reg), reg, AlertSettings(**alerts))  # type: ignore[arg-type]


def batch(rows: list[tuple[int, float, dict[str, float]]]) -> FamilyBatch:
    names = [s.name for s in field_specs(Family.WRISTBAND)]
    cols = {n: np.array([r[2].get(n, np.nan) for r in rows], dtype=np.float64) for n in names}
    ts = np.array([T0 + r[1] for r in rows])
    return FamilyBatch(Family.WRISTBAND, np.array([r[0] for r in rows], dtype=np.int64), ts, ts, cols)


def stream(n_devices: int, seconds: int, seed: int) -> list[tuple[int, float, dict[str, float]]]:
    """Random wristband readings every ~5 s, with spells of high heart rate, low SpO2,
    SOS presses and silences, in time order."""
    rng = random.Random(seed)
    out = []
    for dv in range(n_devices):
        t = rng.uniform(0, 5)
        while t < seconds:
            if rng.random() < 0.03:
                t += rng.uniform(60, 200)  # a silence
                continue
            hr = float(rng.choice([80, 80, 80, 125, 130, 118]))
            out.append(
                (
                    dv,
                    round(t, 3),
                    {
                        "heart_rate": hr,
                        "spo2": float(rng.choice([97, 95, 88, 75])),
                        "sos": float(rng.random() < 0.05),
                    },
                )
            )
            t += rng.uniform(3, 7)
    out.sort(key=lambda r: r[1])
    return out


def feed(engine: Engine, part: FamilyBatch) -> list[AlertEvent]:
    """One batch as the pipeline hands it over: community view first, then the rules."""
    return engine.begin([part]).events + engine.process(part).events


def run(engine: Engine, rows: list[tuple[int, float, dict[str, float]]], cuts: list[int]) -> list[AlertEvent]:
    """Process rows in batches cut at `cuts`, advancing the clock after each, as the daemon does."""
    events: list[AlertEvent] = []
    bounds = [0, *cuts, len(rows)]
    watermark = -np.inf
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        part = batch(rows[a:b])
        events += feed(engine, part)
        watermark = max(watermark, float(part.ts.max()))
        events += engine.advance(watermark).events
    return events


class TestBatchIndependence:
    @pytest.mark.parametrize("seed", [1, 2, 3])
    def test_same_events_whatever_the_cuts(self, tmp_path: Path, seed: int) -> None:
        """keep_firing_for, cooldown, windows, event and no-data rules give the same events
        (same ids) whether a stream is processed whole or cut into random batches."""
        reg = registry(12)
        rows = stream(12, 900, seed)
        whole = run(make_engine(tmp_path, reg, community_silence_s=0), rows, [])
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(rows)), 40))
        split = run(make_engine(tmp_path, reg, community_silence_s=0), rows, cuts)
        assert sorted(e.event_id for e in split) == sorted(e.event_id for e in whole)
        kinds = {(e.rule, e.status) for e in whole}
        for rule in ("hr_high", "spo2_avg", "sos", "silent", "hr_levels", "hr_flappy", "spo2_stuck"):
            assert (rule, AlertStatus.FIRING) in kinds, (
                f"the stream never fired {rule}; the test proves little"
            )

    @pytest.mark.parametrize("seed", [4, 5])
    def test_community_silence_whatever_the_cuts(self, tmp_path: Path, seed: int) -> None:
        """A community silent for 200 s is one community alert and no device alert, whether
        the silence falls inside one batch or across many."""
        reg = registry(12)
        rows = [r for r in stream(12, 900, seed) if not (r[0] % 2 == 1 and 300 <= r[1] < 500)]
        whole = run(make_engine(tmp_path, reg, community_silence_s=100), rows, [])
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, len(rows)), 60))
        split = run(make_engine(tmp_path, reg, community_silence_s=100), rows, cuts)
        assert sorted(e.event_id for e in split) == sorted(e.event_id for e in whole)
        silent = [e for e in whole if e.rule == "community_silent" and e.status is AlertStatus.FIRING]
        assert [e.community for e in silent] == ["c1"]
        inside = [
            e
            for e in whole
            if e.rule == "silent"
            and e.community == "c1"
            and e.status is AlertStatus.FIRING
            and 400 < e.event_time - T0 < 500
        ]
        assert not inside, "a device of the silent community paged during the outage"


class TestWindows:
    @pytest.mark.parametrize(
        "func", ["avg_over", "min_over", "max_over", "sum_over", "count_over", "delta", "rate"]
    )
    def test_matches_plain_computation(self, func: str) -> None:
        """Every window function equals a per-reading loop over (t - w, t], across batches."""
        rng = np.random.default_rng(7)
        n = 400
        dev = np.sort(rng.integers(0, 5, n))
        ts = np.concatenate([np.sort(rng.uniform(0, 300, int((dev == d).sum()))) for d in range(5)])
        val = rng.normal(50, 10, n)
        spec = WindowSpec(func, "x", 45.0)
        hist = WindowHistory([spec], 5)
        last_ts = np.full(5, -np.inf)
        got = np.full(n, np.nan)
        order = np.argsort(ts, kind="stable")  # feed in time order, in 8 batches
        for chunk in np.array_split(order, 8):
            part = chunk[np.lexsort((ts[chunk], dev[chunk]))]
            np.maximum.at(last_ts, dev[part], ts[part])
            res = hist.update(dev[part], ts[part], {"x": val[part]}, {"x": np.ones(len(part), bool)}, last_ts)
            got[part] = res[spec.column]
        for i in range(n):
            w = (dev == dev[i]) & (ts > ts[i] - 45) & (ts <= ts[i])
            xs, tw = val[w][np.argsort(ts[w])], np.sort(ts[w])
            want = {
                "avg_over": xs.mean(),
                "min_over": xs.min(),
                "max_over": xs.max(),
                "sum_over": xs.sum(),
                "count_over": len(xs),
                "delta": xs[-1] - xs[0] if len(xs) > 1 else np.nan,
                "rate": (xs[-1] - xs[0]) / (tw[-1] - tw[0]) if len(xs) > 1 else np.nan,
            }[func]
            assert got[i] == pytest.approx(want, nan_ok=True), f"row {i}"


class TestCommunitySilence:
    def test_one_alert_for_a_silent_community(self, tmp_path: Path) -> None:
        """When nothing arrives from a community, one community_silent alert fires (not one
        no-data alert per device); it resolves at the community's next reading."""
        reg = registry(40)
        eng = make_engine(tmp_path, reg, community_silence_s=60)
        both = [(dv, float(t), {"heart_rate": 80.0}) for t in range(0, 30, 10) for dv in range(40)]
        feed(eng, batch(both))
        only_c0 = [(dv, float(t), {"heart_rate": 80.0}) for t in range(30, 200, 10) for dv in range(0, 40, 2)]
        events = feed(eng, batch(only_c0)) + eng.advance(T0 + 190).events
        fired = [(e.rule, e.community) for e in events if e.status is AlertStatus.FIRING]
        assert fired == [("community_silent", "c1")]
        assert events[0].event_time == T0 + 20 + 60
        back = feed(eng, batch([(1, 200.0, {"heart_rate": 80.0})]))
        assert [(e.rule, e.status) for e in back] == [("community_silent", AlertStatus.RESOLVED)]


class TestCommunityLateReadings:
    def test_late_reading_is_no_silence(self, tmp_path: Path) -> None:
        """A reading delivered late (older than the community's newest) does not open a gap:
        no community alert while the community kept reporting."""
        reg = registry(8, communities=1)
        eng = make_engine(tmp_path, reg, community_silence_s=60)
        steady = [(dv, float(t), {"heart_rate": 80.0}) for t in range(0, 300, 10) for dv in range(8)]
        first = batch(steady)
        events = feed(eng, first)
        late = batch(
            [(3, 20.0, {"heart_rate": 80.0}), *[(dv, 300.0, {"heart_rate": 80.0}) for dv in range(8)]]
        )
        events += feed(eng, late)
        assert [e for e in events if e.rule == "community_silent"] == []


class TestAcknowledgement:
    def test_ack_message_resolves_event_alert(self, tmp_path: Path) -> None:
        """An ack from the dispatch side naming the rule resolves an open event alert at
        its receive time; a malformed one is rejected."""
        reg = registry(2)
        d = tmp_path / "rules"
        d.mkdir()
        (d / "wristband.yaml").write_text(RULES)
        dead = DeadLetter(tmp_path / "dl.jsonl")
        pipeline = Pipeline(
            decoder=Decoder(reg, DecodeSettings(max_clock_skew_s=0), TOPIC),
            engine=Engine(load_rules(d, reg), reg, AlertSettings()),
            ack_topic_template="sensord-dispatch/ack/{community}/{family}/{device_id}",
            deadletter=dead,
            metrics=Metrics(),
        )
        sos = RawMessage("sensord/c0/wristband/wb-0/telemetry", orjson.dumps({"ts": T0, "sos": True}), T0, 1)
        ack = RawMessage(
            "sensord-dispatch/ack/c0/wristband/wb-0", orjson.dumps({"rule": "sos", "by": "desk"}), T0 + 5, 2
        )
        bad = RawMessage("sensord-dispatch/ack/c0/wristband/wb-0", b"[1]", T0 + 5, 3)
        first = pipeline.evaluate([sos])
        second = pipeline.evaluate([ack, bad])
        dead.close()
        assert [(e.rule, e.status) for e in first.events] == [("sos", AlertStatus.FIRING)]
        assert [(e.rule, e.status, e.event_time - T0) for e in second.events] == [
            ("sos", AlertStatus.RESOLVED, 5)
        ]
        assert second.events[0].readings["acknowledged_by"] == "desk"
        assert second.rejected == 1
        assert second.tokens == [2, 3]


class TestSnapshot:
    def test_restart_from_snapshot_continues_timers_and_windows(self, tmp_path: Path) -> None:
        """Snapshot mid-stream, load it into a fresh engine: the rest of the stream gives
        the same events as an engine that never stopped."""
        reg = registry(10)
        rows = stream(10, 900, 5)
        half = len(rows) // 2
        straight = make_engine(tmp_path, reg, community_silence_s=0)
        run(straight, rows[:half], [])
        want = run(straight, rows[half:], [])
        first = make_engine(tmp_path, reg, community_silence_s=0)
        run(first, rows[:half], [])
        blob = first.snapshot()
        second = make_engine(tmp_path, reg, community_silence_s=0)
        assert second.load_snapshot(blob) == 7
        got = run(second, rows[half:], [])
        assert [e.event_id for e in got] == [e.event_id for e in want]
        assert want, "nothing happened after the restart; the test proves little"

    def test_snapshot_before_any_reading_loads(self, tmp_path: Path) -> None:
        """A daemon stopped before its first reading restarts: the snapshot has no origin yet."""
        reg = registry(3)
        blob = make_engine(tmp_path, reg).snapshot()
        second = make_engine(tmp_path, reg)
        second.load_snapshot(blob)
        assert np.isnan(second.origin)

    def test_snapshot_of_other_registry_is_ignored(self, tmp_path: Path) -> None:
        """A snapshot taken with a different device registry is not applied (indexes differ)."""
        blob = make_engine(tmp_path, registry(3)).snapshot()
        assert make_engine(tmp_path, registry(4)).load_snapshot(blob) == 0


class TestEventLatch:
    def test_press_after_ack_and_release_fires_again(self, tmp_path: Path) -> None:
        """An SOS acknowledged while the button is still held, released in a later batch,
        and pressed again fires again: the release is seen even with no alert open."""
        reg = registry(2)
        eng = make_engine(tmp_path, reg)
        fired = eng.process(batch([(0, 0.0, {"sos": 1.0})])).events
        acked = eng.acknowledge("wb-0", "sos", T0 + 1, "desk")
        eng.process(batch([(0, 5.0, {"sos": 1.0})]))
        eng.process(batch([(0, 10.0, {"sos": 0.0})]))
        again = eng.process(batch([(0, 15.0, {"sos": 1.0})])).events
        assert [e.status for e in fired + acked.events + again] == [
            AlertStatus.FIRING,
            AlertStatus.RESOLVED,
            AlertStatus.FIRING,
        ]


class TestAckAfterExpiry:
    def test_ack_after_resolve_after_resolves_as_the_clock_would_whatever_the_cut(
        self, tmp_path: Path
    ) -> None:
        """An SOS (resolve_after 40 s) acknowledged at 60 s resolves at 40 s whether the
        clock passed 40 s in an earlier batch or the ack comes in the same batch as the
        readings that pass it (acks are applied before the batch moves the clock)."""
        reg = registry(1)
        (tmp_path / "one").mkdir()
        (tmp_path / "cut").mkdir()
        one = make_engine(tmp_path / "one", reg)
        whole = feed(one, batch([(0, 0, {"sos": 1}), (0, 50, {"heart_rate": 80})]))
        whole += one.acknowledge("wb-0", "sos", T0 + 60, "desk").events + one.advance(T0 + 50).events
        cut = make_engine(tmp_path / "cut", reg)
        parts = feed(cut, batch([(0, 0, {"sos": 1})])) + cut.advance(T0).events
        parts += feed(cut, batch([(0, 50, {"heart_rate": 80})])) + cut.advance(T0 + 50).events
        parts += cut.acknowledge("wb-0", "sos", T0 + 60, "desk").events
        sos = [e for e in whole if e.rule == "sos"]
        assert [(e.status.value, e.event_time - T0) for e in sos] == [("firing", 0.0), ("resolved", 40.0)]
        assert [e.event_id for e in sos] == [e.event_id for e in parts if e.rule == "sos"]
