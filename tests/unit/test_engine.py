"""Unit tests for rule compilation and the alert engine (event time, vectorised)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from sensord._errors import RuleError
from sensord._registry import Registry, parse_registry
from sensord._settings import AlertSettings
from sensord._types import AlertEvent, AlertStatus, Family
from sensord.alerts import Engine
from sensord.alerts._events import event_id
from sensord.decode import FamilyBatch, field_specs
from sensord.rules import check_rules, load_rules, parse_duration

T0 = 1_790_000_000.0

RULES = """\
family: wristband
params:
  hr_high: 120
  hr_low: 45
rules:
  # sustained abnormal heart rate
  - name: heart_rate_abnormal
    when: heart_rate > hr_high or heart_rate < hr_low
    clear: heart_rate <= hr_high - 5 and heart_rate >= hr_low + 5
    for: 30s
    severity: warning
    summary: "HR {heart_rate:.0f} for {device_id}"
  - name: wristband_sos
    when: sos
    severity: critical
    life_safety: true
    summary: "SOS from {device_id}"
"""


def registry(n: int = 3, overrides: dict[str, float] | None = None) -> Registry:
    devices = {
        f"wb-{i}": {"family": "wristband", "community": "maple", "grid": "g1", "params": {}} for i in range(n)
    }
    if overrides:
        devices["wb-0"]["params"] = overrides
    return parse_registry({"devices": devices}, source="test")


def make_rules(tmp_path: Path, text: str = RULES) -> Path:
    d = tmp_path / "rules"
    d.mkdir(parents=True, exist_ok=True)
    (d / "wristband.yaml").write_text(text)
    return d


def batch(rows: Sequence[tuple[int, float, Mapping[str, float]]]) -> FamilyBatch:
    """rows: (device index, seconds after T0, fields)."""
    names = [s.name for s in field_specs(Family.WRISTBAND)]
    cols = {n: np.array([r[2].get(n, np.nan) for r in rows], dtype=np.float64) for n in names}
    return FamilyBatch(
        Family.WRISTBAND,
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([T0 + r[1] for r in rows]),
        np.array([T0 + r[1] for r in rows]),
        cols,
    )


def engine(tmp_path: Path, reg: Registry | None = None, repeat: float = 0) -> Engine:
    reg = reg or registry()
    return Engine(load_rules(make_rules(tmp_path), reg), reg, AlertSettings(repeat_interval_s=repeat))


def summary(events: list[AlertEvent]) -> list[tuple[str, str, str, float]]:
    return [(e.rule, e.device_id, e.status.value, e.event_time - T0) for e in events]


HR_STREAM: list[tuple[int, float, Mapping[str, float]]] = [
    (0, 0, {"heart_rate": 80}),
    (0, 10, {"heart_rate": 130}),
    (1, 12, {"heart_rate": 70}),
    (0, 20, {"heart_rate": 118}),  # inside the hysteresis band: stays on
    (0, 45, {"heart_rate": 131}),
    (0, 60, {"heart_rate": 90}),
    (1, 61, {"heart_rate": 150}),
    (1, 70, {"heart_rate": 60}),  # a run of 9 s: pending, then cancelled
]


class TestLifecycle:
    def test_for_duration_pending_firing_resolved(self, tmp_path: Path) -> None:
        """A condition held 30 s goes pending → firing (at since+30) → resolved on the clearing reading."""
        ev = engine(tmp_path).process(batch(HR_STREAM))
        got = [x for x in summary(ev.events) if x[1] == "wb-0"]
        assert got == [
            ("heart_rate_abnormal", "wb-0", "pending", 10),
            ("heart_rate_abnormal", "wb-0", "firing", 40),
            ("heart_rate_abnormal", "wb-0", "resolved", 60),
        ]

    def test_short_run_is_cancelled_not_fired(self, tmp_path: Path) -> None:
        """A run shorter than `for` produces pending and a cancellation, never firing."""
        ev = engine(tmp_path).process(batch(HR_STREAM))
        assert [x for x in summary(ev.events) if x[1] == "wb-1"] == [
            ("heart_rate_abnormal", "wb-1", "pending", 61)
        ]
        assert len(ev.cancelled) == 1

    @pytest.mark.parametrize("size", [1, 3, 7, 100])
    def test_same_events_whatever_the_batch_split(self, tmp_path: Path, size: int) -> None:
        """Splitting the stream into batches of any size gives identical events and ids."""
        whole = engine(tmp_path / "a").process(batch(HR_STREAM)).events
        eng = engine(tmp_path / "b")
        parts: list[AlertEvent] = []
        for i in range(0, len(HR_STREAM), size):
            parts += eng.process(batch(HR_STREAM[i : i + size])).events
        assert sorted(e.event_id for e in parts) == sorted(e.event_id for e in whole)

    def test_resolved_carries_start_and_end(self, tmp_path: Path) -> None:
        """The resolved event has starts_at = run start and ends_at = the clearing reading."""
        ev = engine(tmp_path).process(batch(HR_STREAM)).events
        resolved = next(e for e in ev if e.status is AlertStatus.RESOLVED)
        assert (resolved.starts_at - T0, (resolved.ends_at or 0) - T0) == (10, 60)

    def test_zero_for_fires_on_the_reading(self, tmp_path: Path) -> None:
        """`for: 0s` (the default) fires on the reading itself, with no pending event."""
        ev = engine(tmp_path).process(batch([(2, 5, {"sos": 1})])).events
        assert summary(ev) == [("wristband_sos", "wb-2", "firing", 5)]
        assert ev[0].life_safety
        assert ev[0].summary == "SOS from wb-2"

    def test_no_repeat_while_firing(self, tmp_path: Path) -> None:
        """Further readings that keep the condition true do not notify again."""
        ev = engine(tmp_path).process(batch([(2, s, {"sos": 1}) for s in range(0, 600, 10)])).events
        assert len(ev) == 1

    def test_repeat_interval(self, tmp_path: Path) -> None:
        """With a repeat interval, a firing alert notifies again once per interval."""
        ev = (
            engine(tmp_path, repeat=120)
            .process(batch([(2, s, {"sos": 1}) for s in range(0, 300, 10)]))
            .events
        )
        assert [(e.repeat, e.event_time - T0) for e in ev] == [(False, 0), (True, 120), (True, 240)]

    def test_watermark_fires_pending_timer(self, tmp_path: Path) -> None:
        """With no further reading from the device, the watermark passing since+for fires it."""
        eng = engine(tmp_path)
        eng.process(batch([(0, 0, {"heart_rate": 130})]))
        assert eng.advance(T0 + 29).events == []
        fired = eng.advance(T0 + 31).events
        assert summary(fired) == [("heart_rate_abnormal", "wb-0", "firing", 30)]
        assert fired[0].readings["heart_rate"] == 130

    def test_late_reading_is_not_applied(self, tmp_path: Path) -> None:
        """A reading older than the device's newest applied reading is counted, not applied."""
        eng = engine(tmp_path)
        eng.process(batch([(2, 100, {"sos": 0})]))
        res = eng.process(batch([(2, 50, {"sos": 1})]))
        assert res.late == 1
        assert res.events == []

    def test_missing_field_neither_sets_nor_clears(self, tmp_path: Path) -> None:
        """A row without the rule's field (a step-count-only message) does not resolve the alert."""
        eng = engine(tmp_path)
        eng.process(batch([(0, 0, {"heart_rate": 130}), (0, 40, {"heart_rate": 131})]))
        res = eng.process(batch([(0, 50, {"steps": 10})]))
        assert res.events == []

    def test_per_device_override(self, tmp_path: Path) -> None:
        """A registry override (hr_high 100 for wb-0) applies to that device only."""
        eng = engine(tmp_path, registry(overrides={"hr_high": 100}))
        ev = eng.process(batch([(0, 0, {"heart_rate": 110}), (1, 0, {"heart_rate": 110})])).events
        assert [(e.device_id, e.status.value) for e in ev] == [("wb-0", "pending")]

    def test_restore_does_not_refire(self, tmp_path: Path) -> None:
        """After restoring checkpointed alerts, a firing alert is not re-sent and still resolves."""
        first = engine(tmp_path)
        first.process(batch([(2, 0, {"sos": 1})]))
        saved = first.active()
        second = engine(tmp_path)
        assert second.restore(saved) == 1
        ev = second.process(batch([(2, 10, {"sos": 1}), (2, 20, {"sos": 0})])).events
        assert summary(ev) == [("wristband_sos", "wb-2", "resolved", 20)]

    def test_event_ids_are_deterministic(self, tmp_path: Path) -> None:
        """Two engines fed the same readings produce the same event ids (crash re-processing)."""
        a = engine(tmp_path / "a").process(batch(HR_STREAM)).events
        b = engine(tmp_path / "b").process(batch(HR_STREAM)).events
        assert [e.event_id for e in a] == [e.event_id for e in b]


class TestRuleErrors:
    @pytest.mark.parametrize(
        ("when", "needle"),
        [
            ("heart_rat > 1", "unknown name 'heart_rat'"),
            ("__import__('os').system('x')", "only abs, avg_over, count_over"),
            ("heart_rate.real > 1", "Attribute is not allowed"),
            ("heart_rate >", "cannot parse"),
            ("worn == 'yes'", "text can only be compared with a text field"),
        ],
    )
    def test_bad_expression_names_file_line_and_reason(self, tmp_path: Path, when: str, needle: str) -> None:
        """A broken `when` is refused with the file, the rule's line and a reason."""
        text = RULES.replace("when: sos", f'when: "{when}"')
        errors = check_rules(make_rules(tmp_path, text), registry())
        assert len(errors) == 1
        assert needle in str(errors[0])
        assert errors[0].line == 14
        assert errors[0].rule == "wristband_sos"

    def test_unknown_key_is_refused(self, tmp_path: Path) -> None:
        """A misspelt key (severty) is an error naming the key and its line."""
        text = RULES.replace("    severity: critical", "    severty: critical")
        err = check_rules(make_rules(tmp_path, text), registry())[0]
        assert "severty" in str(err)
        assert err.line == 15

    def test_bad_duration(self, tmp_path: Path) -> None:
        """An unreadable duration is an error at the `for:` line."""
        err = check_rules(make_rules(tmp_path, RULES.replace("for: 30s", "for: 30 secs")), registry())[0]
        assert "duration" in str(err)
        assert err.line == 10

    def test_duplicate_rule_name(self, tmp_path: Path) -> None:
        """Two rules with one name in a family are an error."""
        text = RULES.replace("name: wristband_sos", "name: heart_rate_abnormal")
        assert "duplicate" in str(check_rules(make_rules(tmp_path, text), registry())[0])

    def test_unknown_template_placeholder(self, tmp_path: Path) -> None:
        """A summary naming something that is neither field nor parameter is refused."""
        text = RULES.replace("SOS from {device_id}", "SOS from {resident}")
        assert "resident" in str(check_rules(make_rules(tmp_path, text), registry())[0])

    def test_load_raises_first_error(self, tmp_path: Path) -> None:
        """load_rules raises RuleError when any file is broken."""
        with pytest.raises(RuleError):
            load_rules(make_rules(tmp_path, RULES.replace("when: sos", "when: nope")), registry())

    @pytest.mark.parametrize(
        ("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200), ("1h30m", 5400), (12, 12)]
    )
    def test_durations(self, text: str | int, seconds: float) -> None:
        """Durations read as seconds."""
        assert parse_duration(text) == seconds


class TestEventIds:
    def test_event_id_is_the_rfc_4122_uuid5_of_the_transition(self) -> None:
        """An event's id is uuid5(namespace, "fp|status|starts|time|repeat"): ids already in
        outboxes and at receivers stay the ids of the same transitions."""
        ns = uuid.UUID("6f1c1f5e-53a5-4c56-9d61-2f1f3b7d9e10")
        for status, repeat in [(AlertStatus.FIRING, False), (AlertStatus.RESOLVED, True)]:
            times = "1796056232.165000|1796056290.500000"
            key = f"109d894e15b4b072|{status.value}|{times}|{'r' if repeat else ''}"
            got = event_id("109d894e15b4b072", status, 1796056232.165, 1796056290.5, repeat=repeat)
            assert got == str(uuid.uuid5(ns, key))
