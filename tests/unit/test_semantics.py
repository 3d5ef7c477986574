"""Unit tests for the alert semantics, each through `sensord rules test` cases: a rule
file and a test file written to a temp folder, run by the same runner operators use."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sensord.ruletest import run_test_file

HEADER = (
    "devices:\n  wb-1: {family: wristband}\n  wb-2: {family: wristband, params: {hr_high: 100, hold: 5}}\n"
)


def check(tmp_path: Path, rules: str, tests: str, devices: str = HEADER) -> list[str]:
    """Failures of the cases in `tests` against a wristband rule file holding `rules`."""
    folder = tmp_path / "rules"
    (folder / "tests").mkdir(parents=True)
    (folder / "wristband.yaml").write_text(
        "family: wristband\nparams: {hr_high: 120, hold: 30, quiet: 600}\nrules:\n"
        + textwrap.indent(rules, "  ")
    )
    path = folder / "tests" / "case_test.yaml"
    path.write_text(devices + "tests:\n" + textwrap.indent(tests, "  "))
    res = run_test_file(path)
    assert res.error is None, res.error
    assert res.cases, "no case ran"
    return [f"{c.name}: {f}" for c in res.cases for f in c.failures]


HR = """\
- name: hr_high
  when: heart_rate > hr_high
  clear: heart_rate <= hr_high - 5
  summary: "HR {heart_rate}"
"""


def test_keep_firing_for_bridges_a_short_dip(tmp_path: Path) -> None:
    """keep_firing_for: a dip shorter than the keep time does not resolve; a longer one
    resolves at dip + keep, with the original start."""
    rules = HR + "  keep_firing_for: 30s\n"
    tests = """\
- name: dip of 10 s is bridged, then a long dip resolves 30 s after it began
  input:
    wb-1: {heart_rate: "130 80 130 130 80 80 80 80 80"}
  events:
    - {rule: hr_high, device: wb-1, status: firing, at: 0s}
    - {rule: hr_high, device: wb-1, status: resolved, at: 70s}
  expect:
    - {at: 15s, alerts: [{rule: hr_high, device: wb-1}]}
    - {at: 60s, alerts: [{rule: hr_high, device: wb-1}]}
    - {at: 80s, alerts: []}
"""
    assert check(tmp_path, rules, tests) == []


def test_cooldown_delays_refiring(tmp_path: Path) -> None:
    """cooldown: after resolving, the same alert cannot fire again until cooldown passed;
    if the condition still holds then, it fires at that moment."""
    rules = HR + "  cooldown: 60s\n"
    tests = """\
- name: refire waits for the cooldown
  input:
    wb-1: {heart_rate: "130 80 130 130 130 130 130 130 130 130"}
  events:
    - {rule: hr_high, device: wb-1, status: firing, at: 0s}
    - {rule: hr_high, device: wb-1, status: resolved, at: 10s}
    - {rule: hr_high, device: wb-1, status: firing, at: 70s}
"""
    assert check(tmp_path, rules, tests) == []


def test_for_duration_from_per_device_parameter(tmp_path: Path) -> None:
    """`for:` may name a parameter: each device waits its own time (wb-2 overrides hold: 5)."""
    rules = HR + "  for: hold\n"
    tests = """\
- name: wb-1 waits 30 s, wb-2 (limit 100, hold 5 s) fires 5 s after its run began
  input:
    wb-1: {heart_rate: "130x4"}
    wb-2: {heart_rate: "110x4"}
  events:
    - {rule: hr_high, device: wb-2, status: firing, at: 5s}
    - {rule: hr_high, device: wb-1, status: firing, at: 30s}
"""
    assert check(tmp_path, rules, tests) == []


def test_event_rule_fires_once_per_edge_and_resolves_after(tmp_path: Path) -> None:
    """kind: event fires on the rising edge, ignores the button held or pressed again while
    open, resolves after resolve_after, and fires again on the next press after that."""
    rules = """\
- name: sos
  kind: event
  when: sos
  resolve_after: 60s
  summary: SOS
"""
    tests = """\
- name: one alert per press while open, a new one after it resolved
  input:
    wb-1: {sos: "true true false true false false false false true"}
  events:
    - {rule: sos, device: wb-1, status: firing, at: 0s}
    - {rule: sos, device: wb-1, status: resolved, at: 60s}
    - {rule: sos, device: wb-1, status: firing, at: 80s}
"""
    assert check(tmp_path, rules, tests) == []


def test_windowed_average(tmp_path: Path) -> None:
    """avg_over: the mean of the last minute's readings, per device."""
    rules = """\
- name: spo2_low_avg
  when: avg_over(spo2, 1m) < 90
  clear: avg_over(spo2, 1m) >= 92
  summary: low
"""
    tests = """\
- name: one low reading does not pull the minute's mean under 90; a run of them does
  interval: 20s
  input:
    wb-1: {spo2: "97 97 97 80 97 97 86 86 86 97 97 97 97"}
  events:
    - {rule: spo2_low_avg, device: wb-1, status: firing, at: 140s}
    - {rule: spo2_low_avg, device: wb-1, status: resolved, at: 200s}
"""
    assert check(tmp_path, rules, tests) == []


def test_rate_of_change(tmp_path: Path) -> None:
    """rate: change per second over the window; x60 gives per minute."""
    rules = """\
- name: skin_heating
  when: rate(skin_temp_c, 1m) * 60 >= 5
  summary: heating
"""
    tests = """\
- name: +1 °C per 10 s is 6 °C/min and fires; it resolves once the minute's rise is under 5 °C/min
  input:
    wb-1: {skin_temp_c: "30+1x3 33x5"}
    wb-2: {skin_temp_c: "30x8"}
  events:
    - {rule: skin_heating, device: wb-1, status: firing, at: 10s}
    - {rule: skin_heating, device: wb-1, status: resolved, at: 40s}
"""
    assert check(tmp_path, rules, tests) == []


def test_no_data_fires_on_silence_and_resolves_on_return(tmp_path: Path) -> None:
    """no_data: a device silent for its limit alerts at last reading + limit, resolves at
    its next reading; the other device keeps reporting and stays quiet."""
    rules = """\
- name: silent
  no_data: 1m
  summary: silent
"""
    tests = """\
- name: wb-1 stops for 2 minutes
  input:
    wb-1: {heart_rate: "70 _x10 70"}
    wb-2: {heart_rate: "70x12"}
  events:
    - {rule: silent, device: wb-1, status: firing, at: 60s}
    - {rule: silent, device: wb-1, status: resolved, at: 120s}
"""
    assert check(tmp_path, rules, tests) == []


def test_missing_field_uses_last_value(tmp_path: Path) -> None:
    """A reading without a field uses the device's last value of it: a rule reading two
    fields fires when the second arrives in a later message."""
    rules = """\
- name: hot_and_fast
  when: heart_rate > 120 and skin_temp_c >= 38
  summary: fever
"""
    tests = """\
- name: temperature then heart rate in separate messages
  input:
    wb-1:
      points:
        - {at: 0s, skin_temp_c: 38.5}
        - {at: 10s, heart_rate: 130}
  events:
    - {rule: hot_and_fast, device: wb-1, status: firing, at: 10s}
"""
    assert check(tmp_path, rules, tests) == []


def test_unknown_field_does_not_alert(tmp_path: Path) -> None:
    """A flag never reported is unknown, not true: `or` still fires on the known part."""
    rules = """\
- name: either
  when: heart_rate > 150 or fall
  summary: either
"""
    tests = """\
- name: no fall field ever; heart rate alone decides
  input:
    wb-1: {heart_rate: "70 160"}
  events:
    - {rule: either, device: wb-1, status: firing, at: 10s}
"""
    assert check(tmp_path, rules, tests) == []


def test_multi_level_severity_moves_between_levels(tmp_path: Path) -> None:
    """levels: the alert moves warning → critical → warning → resolved as the value moves,
    each level with its own reset; every level change is an event."""
    rules = """\
- name: heart_rate_levels
  levels:
    - {severity: warning, when: heart_rate > 110, clear: heart_rate <= 105}
    - {severity: critical, when: heart_rate > 140, clear: heart_rate <= 130}
  summary: "HR {heart_rate}"
"""
    tests = """\
- name: 120 warns, 150 is critical, 135 stays critical (reset at 130), 125 warns, 100 resolves
  input:
    wb-1: {heart_rate: "100 120 150 135 125 100"}
  expect:
    - at: 10s
      alerts: [{rule: heart_rate_levels, device: wb-1, severity: warning}]
  events:
    - {rule: heart_rate_levels, device: wb-1, status: firing, at: 10s}
    - {rule: heart_rate_levels, device: wb-1, status: firing, at: 20s}
    - {rule: heart_rate_levels, device: wb-1, status: firing, at: 40s}
    - {rule: heart_rate_levels, device: wb-1, status: resolved, at: 50s}
"""
    assert check(tmp_path, rules, tests) == []


def test_flapping_holds_notifications_until_it_settles(tmp_path: Path) -> None:
    """flapping: an alert toggling every reading is held once the share of changes over
    the last 4 evaluations reaches 3/4; when it settles one event brings dispatch up to date."""
    rules = HR + "  flapping: {window: 4, high: 0.75, low: 0.25}\n"
    tests = """\
- name: toggling is notified until flapping starts (at 20 s), then one firing once it settles
  input:
    wb-1: {heart_rate: "130 80 130 80 130 80 130 130 130 130 130"}
  events:
    - {rule: hr_high, device: wb-1, status: firing, at: 0s}
    - {rule: hr_high, device: wb-1, status: resolved, at: 10s}
    - {rule: hr_high, device: wb-1, status: firing, at: 90s}
"""
    assert check(tmp_path, rules, tests) == []


def test_unchanged_for_counts_from_the_last_change(tmp_path: Path) -> None:
    """unchanged_for(field): seconds since the device's value of the field last changed;
    a new value restarts the count."""
    rules = """\
- name: stuck
  when: unchanged_for(steps) >= 30
  summary: stuck
"""
    tests = """\
- name: steps stop at 10 s, the alert fires 30 s later, and clears when they move again
  input:
    wb-1: {steps: "5 10 10 10 10 10 12 12"}
  events:
    - {rule: stuck, device: wb-1, status: firing, at: 40s}
    - {rule: stuck, device: wb-1, status: resolved, at: 60s}
"""
    assert check(tmp_path, rules, tests) == []


class TestTiesWithTimers:
    """A reading stamped exactly when a timer is due is applied before the timer; once the
    clock reaches a due time the state shows the timer's transition (one rule for all)."""

    def test_clearing_reading_exactly_at_for_end_fires_nothing(self, tmp_path: Path) -> None:
        """for: 30s, condition from 0 s, cleared by the reading at exactly 30 s: no alert
        at all (it used to fire and resolve at 30 s, a zero-length page)."""
        rules = HR + "  for: 30s\n"
        tests = """\
- name: cleared at the instant it would fire
  input:
    wb-1: {heart_rate: "130 130 130 80 80"}
  events: []
  expect:
    - {at: 30s, alerts: []}
"""
        assert check(tmp_path, rules, tests) == []

    def test_clearing_reading_exactly_at_for_end_with_keep_fires_nothing(self, tmp_path: Path) -> None:
        """The same with keep_firing_for: 1m: nothing fires, nothing is kept firing."""
        rules = HR + "  for: 30s\n  keep_firing_for: 1m\n"
        tests = """\
- name: cleared at the instant it would fire, with keep
  input:
    wb-1: {heart_rate: "130 130 130 80 80 80 80 80 80 80"}
  events: []
  expect:
    - {at: 30s, alerts: []}
    - {at: 60s, alerts: []}
"""
        assert check(tmp_path, rules, tests) == []

    def test_reading_holding_the_condition_at_for_end_fires_then(self, tmp_path: Path) -> None:
        """The condition still on at exactly 30 s: it held for `for`, so it fires at 30 s."""
        rules = HR + "  for: 30s\n"
        tests = """\
- name: held through the for time
  input:
    wb-1: {heart_rate: "130 130 130 130 80"}
  events:
    - {rule: hr_high, device: wb-1, status: firing, at: 30s}
    - {rule: hr_high, device: wb-1, status: resolved, at: 40s}
"""
        assert check(tmp_path, rules, tests) == []

    def test_state_at_end_of_keep_matches_the_resolved_event(self, tmp_path: Path) -> None:
        """keep_firing_for: 30s after the condition ends at 10 s: the resolved event is
        stamped 40 s, and at 40 s the state no longer shows the alert."""
        rules = HR + "  keep_firing_for: 30s\n"
        tests = """\
- name: keep ends at 40 s
  input:
    wb-1: {heart_rate: "130 80 _x4"}
  events:
    - {rule: hr_high, device: wb-1, status: firing, at: 0s}
    - {rule: hr_high, device: wb-1, status: resolved, at: 40s}
  expect:
    - {at: 39s, alerts: [{rule: hr_high, device: wb-1}]}
    - {at: 40s, alerts: []}
"""
        assert check(tmp_path, rules, tests) == []

    def test_condition_back_exactly_at_end_of_keep_goes_on(self, tmp_path: Path) -> None:
        """A reading at exactly end + keep that brings the condition back is applied before
        the keep timer: the alert simply goes on, with no resolved/firing pair."""
        rules = HR + "  keep_firing_for: 30s\n"
        tests = """\
- name: back at the last instant of keep
  input:
    wb-1: {heart_rate: "130 80 _ _ 130 130"}
  events:
    - {rule: hr_high, device: wb-1, status: firing, at: 0s}
  expect:
    - {at: 50s, alerts: [{rule: hr_high, device: wb-1}]}
"""
        assert check(tmp_path, rules, tests) == []

    def test_device_heard_exactly_at_its_no_data_limit_was_not_silent(self, tmp_path: Path) -> None:
        """no_data: 60s and the next reading exactly 60 s later: no silence alert (it used
        to fire and resolve at the same instant)."""
        rules = "- name: silent\n  no_data: 60s\n  summary: silent\n"
        tests = """\
- name: heard at the limit
  devices: [wb-1]
  interval: 30s
  input:
    wb-1: {heart_rate: "80 _ 80"}
  events: []
"""
        assert check(tmp_path, rules, tests) == []


LEVELS = """\
- name: cpu_levels
  levels:
    - {severity: info, when: heart_rate > 60, clear: heart_rate < 50}
    - {severity: warning, when: heart_rate > 70, clear: heart_rate < 60}
    - {severity: critical, when: heart_rate > 80, clear: heart_rate < 70}
  summary: "HR {heart_rate}"
"""


def test_levels_follow_kapacitor_resets(tmp_path: Path) -> None:
    """Kapacitor's documented sequence 61 73 64 85 62 56 47 gives info, warning, warning,
    critical, info, info, ok: when critical's reset holds at 62, the new level is the
    highest lower level whose condition holds (info), not warning's old latch."""
    tests = """\
- name: the reset of a level decides by the lower levels' conditions
  input:
    wb-1: {heart_rate: "61 73 64 85 62 56 47"}
  expect:
    - {at: 0s, alerts: [{rule: cpu_levels, device: wb-1, severity: info}]}
    - {at: 10s, alerts: [{rule: cpu_levels, device: wb-1, severity: warning}]}
    - {at: 20s, alerts: [{rule: cpu_levels, device: wb-1, severity: warning}]}
    - {at: 30s, alerts: [{rule: cpu_levels, device: wb-1, severity: critical}]}
    - {at: 40s, alerts: [{rule: cpu_levels, device: wb-1, severity: info}]}
    - {at: 50s, alerts: [{rule: cpu_levels, device: wb-1, severity: info}]}
    - {at: 60s, alerts: []}
  events:
    - {rule: cpu_levels, device: wb-1, status: firing, at: 0s}
    - {rule: cpu_levels, device: wb-1, status: firing, at: 10s}
    - {rule: cpu_levels, device: wb-1, status: firing, at: 30s}
    - {rule: cpu_levels, device: wb-1, status: firing, at: 40s}
    - {rule: cpu_levels, device: wb-1, status: resolved, at: 60s}
"""
    assert check(tmp_path, LEVELS, tests) == []
