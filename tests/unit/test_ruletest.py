"""Unit tests for `sensord rules test`: series notation, pass/fail reporting, shipped rule tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sensord._cli import main
from sensord.ruletest import expand_series, run_test_file

ROOT = Path(__file__).resolve().parents[2]

CASE = """\
devices:
  wb-1: {family: wristband}
tests:
  - name: sustained heart rate
    input:
      wb-1: {heart_rate: "80 130x4 80"}
    expect:
      - at: 40s
        alerts: [{rule: heart_rate_abnormal, device: wb-1, severity: EXPECTED_SEVERITY}]
    events:
      - {rule: heart_rate_abnormal, device: wb-1, status: firing, at: 40s}
      - {rule: heart_rate_abnormal, device: wb-1, status: resolved, at: 60s}
"""


def write_case(tmp_path: Path, text: str) -> Path:
    """A rules folder with the wristband rules and one test file holding `text`."""
    rules = tmp_path / "rules"
    (rules / "tests").mkdir(parents=True)
    shutil.copy(ROOT / "rules" / "wristband.yaml", rules / "wristband.yaml")
    path = rules / "tests" / "wb_test.yaml"
    path.write_text(text)
    return path


class TestSeries:
    @pytest.mark.parametrize(
        ("text", "values"),
        [
            ("1 2 3", [1.0, 2.0, 3.0]),
            ("5x2", [5.0, 5.0, 5.0]),
            ("10+5x2", [10.0, 15.0, 20.0]),
            ("10-5x2", [10.0, 5.0, 0.0]),
            ("_ 1 _x1", [None, 1.0, None, None]),
            ("true false", [True, False]),
            ("stopped idlex1", ["stopped", "idle", "idle"]),
        ],
    )
    def test_expand(self, text: str, values: list[object]) -> None:
        """Compact series notation expands to one value (or gap) per interval, as promtool's."""
        assert expand_series(text) == values

    def test_text_cannot_step(self) -> None:
        """Stepping a non-number is an error with the item."""
        with pytest.raises(ValueError, match="only numbers can step"):
            expand_series("idle+1x2")


class TestRunner:
    def test_passing_case(self, tmp_path: Path) -> None:
        """A case whose expectations hold reports no failures."""
        res = run_test_file(write_case(tmp_path, CASE.replace("EXPECTED_SEVERITY", "warning")))
        assert res.error is None
        assert [c.failures for c in res.cases] == [[]]

    def test_failing_case_says_expected_and_got(self, tmp_path: Path) -> None:
        """A wrong severity is reported with what the rule says and what the test expected."""
        res = run_test_file(write_case(tmp_path, CASE.replace("EXPECTED_SEVERITY", "critical")))
        assert not res.ok
        assert res.cases[0].failures == [
            "at 40s: heart_rate_abnormal/wb-1: severity warning, expected critical"
        ]

    def test_no_alert_expectation_fails_when_one_fires(self, tmp_path: Path) -> None:
        """`alerts: []` fails if an alert is firing at that time, naming it."""
        text = CASE.replace(
            "severity: EXPECTED_SEVERITY}]", "severity: warning}]\n      - {at: 50s, alerts: []}"
        )
        res = run_test_file(write_case(tmp_path, text))
        assert res.cases[0].failures == ["at 50s: unexpected firing heart_rate_abnormal/wb-1"]

    def test_wrong_event_time_fails(self, tmp_path: Path) -> None:
        """An expected event at the wrong time fails with both timelines."""
        text = CASE.replace("EXPECTED_SEVERITY", "warning").replace("firing, at: 40s", "firing, at: 30s")
        failures = run_test_file(write_case(tmp_path, text)).cases[0].failures
        assert len(failures) == 1
        assert "firing heart_rate_abnormal/wb-1 at 30s" in failures[0]
        assert "got [firing heart_rate_abnormal/wb-1 at 40s" in failures[0]

    def test_summary_expectation_compares_each_locale(self, tmp_path: Path) -> None:
        """An event's expected summary per locale is compared with the text sent: a wrong
        zh-CN text fails naming the locale, what was sent and what was expected."""
        expected = 'summary: {en: "Heart rate 130 bpm on wb-1", zh-CN: "心率 130"}'
        text = CASE.replace("EXPECTED_SEVERITY", "warning").replace("at: 40s}", f"at: 40s, {expected}}}")
        failures = run_test_file(write_case(tmp_path, text)).cases[0].failures
        sent = "心率异常：手环 wb-1 心率 130 次/分，请电话回访"
        where = "firing heart_rate_abnormal/wb-1 at 40s"
        assert failures == [f"events: {where}: zh-CN summary {sent!r}, expected '心率 130'"]

    def test_input_out_of_range_is_a_failure(self, tmp_path: Path) -> None:
        """A reading decode would reject makes the case fail instead of silently vanishing."""
        text = CASE.replace("EXPECTED_SEVERITY", "warning").replace('"80 130x4 80"', '"80 900x4 80"')
        failures = run_test_file(write_case(tmp_path, text)).cases[0].failures
        assert any("out_of_range" in f for f in failures)

    def test_broken_test_file_is_an_error(self, tmp_path: Path) -> None:
        """A test file with an unknown key cannot run and is not counted as passing."""
        res = run_test_file(write_case(tmp_path, CASE.replace("devices:", "device:")))
        assert res.error is not None
        assert not res.ok

    def test_cli_exit_codes(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`sensord rules test` exits 0 when all pass and 1 when any case fails."""
        good = write_case(tmp_path / "a", CASE.replace("EXPECTED_SEVERITY", "warning"))
        bad = write_case(tmp_path / "b", CASE.replace("EXPECTED_SEVERITY", "info"))
        assert main(["rules", "test", str(good)]) == 0
        assert main(["rules", "test", str(bad)]) == 1
        assert "FAIL  sustained heart rate" in capsys.readouterr().out


def test_shipped_rule_tests_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """Every test in rules/tests passes against the shipped rules."""
    code = main(["rules", "test", str(ROOT / "rules" / "tests")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert " 0 failed" in out


class TestNotifications:
    """Expected messages per receiver in rule tests (issue 9, point 10)."""

    TEXT = """\
dispatch: dispatch.yaml
devices:
  wb-1: {family: wristband}
tests:
  - name: sos
    input:
      wb-1: {sos: "false true"}
    notifications:
      - {receiver: desk, at: 10s}
"""
    DISPATCH = """\
receivers: [{name: desk}, {name: other}]
route: {receiver: other, routes: [{matchers: ['rule="wristband_sos"'], receiver: desk}]}
rule_dispatch: false
"""

    def test_expected_receiver_and_time_pass(self, tmp_path: Path) -> None:
        """The SOS routed to `desk` at 10 s matches the expectation."""
        path = write_case(tmp_path, self.TEXT)
        (path.parent / "dispatch.yaml").write_text(self.DISPATCH)
        result = run_test_file(path)
        assert result.error is None
        assert [c.failures for c in result.cases] == [[]]

    def test_wrong_receiver_fails_with_both_lists(self, tmp_path: Path) -> None:
        """Expecting another receiver fails, showing what was expected and what came."""
        path = write_case(tmp_path, self.TEXT.replace("receiver: desk", "receiver: other"))
        (path.parent / "dispatch.yaml").write_text(self.DISPATCH)
        [case] = run_test_file(path).cases
        assert case.failures == ["notifications: expected [other at 10s]\n           got [desk at 10s]"]

    def test_notifications_without_a_dispatch_file_is_an_error(self, tmp_path: Path) -> None:
        """`notifications:` with no `dispatch:` in the file says so."""
        path = write_case(tmp_path, self.TEXT.replace("dispatch: dispatch.yaml\n", ""))
        [case] = run_test_file(path).cases
        assert case.failures == ["notifications: the test file has no `dispatch:` file to route with"]
