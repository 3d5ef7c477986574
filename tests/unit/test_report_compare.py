"""Unit tests for rule-set comparison, the HTML replay report and the progress line."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import pytest

from sensord._cli import main
from sensord._registry import parse_registry
from sensord._settings import Settings
from sensord._types import AlertStatus, RawMessage
from sensord.replay import Progress, compare, replay
from sensord.report import write_report
from sensord.rules import load_rules
from sensord.simulate import generate, load_scenario, registry_for

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000.0


def demo() -> tuple[list[RawMessage], dict[str, object]]:
    sc = load_scenario(ROOT / "simulators" / "neighbourhood.yaml")
    msgs = [RawMessage(t, p, ts) for ts, t, p, _ in generate(sc, seed=1, start_ts=T0)]
    return msgs, registry_for(sc)


SETTINGS = Settings.model_validate({"decode": {"max_clock_skew_s": 0}})


class TestCompare:
    def test_threshold_change_shows_added_removed_and_timing(self, tmp_path: Path) -> None:
        """Raising the bin limit to 95 % removes the bin alert; a longer heart-rate `for:`
        changes that alert's start; nothing else differs."""
        msgs, doc = demo()
        reg = parse_registry(doc, source="demo")
        other = tmp_path / "rules"
        shutil.copytree(ROOT / "rules", other, ignore=shutil.ignore_patterns("tests"))
        (other / "bin.yaml").write_text(
            (other / "bin.yaml").read_text().replace("fill_high: 80", "fill_high: 95")
        )
        wb = other / "wristband.yaml"
        wb.write_text(
            wb.read_text().replace(
                "    for: 30s\n    severity: warning", "    for: 40s\n    severity: warning"
            )
        )
        a = replay(msgs, registry=reg, rules=load_rules(ROOT / "rules", reg), settings=SETTINGS)
        b = replay(msgs, registry=reg, rules=load_rules(other, reg), settings=SETTINGS)
        diff = compare(a.events, b.events)
        assert [(r, d) for r, d, _ in diff.removed] == [("bin_full", "bin-03")]
        assert diff.added == []
        assert [(r, d) for r, d, _, _ in diff.changed] == [("heart_rate_abnormal", "wb-03")]
        (_, _, before, after) = diff.changed[0]
        assert after[0] == before[0] + 10  # paged 10 s later
        assert diff.same >= 6

    def test_cli_exit_code_says_whether_rules_differ(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`replay --compare` exits 0 for identical rule folders and 1 when alerts differ."""
        reg, rec = tmp_path / "devices.yaml", tmp_path / "demo.jsonl"
        scenario = str(ROOT / "simulators" / "neighbourhood.yaml")
        assert main(["simulate", scenario, "--registry-out", str(reg)]) == 0
        assert main(["simulate", scenario, "--out", str(rec), "--start", str(T0)]) == 0
        other = tmp_path / "rules"
        shutil.copytree(ROOT / "rules", other, ignore=shutil.ignore_patterns("tests"))
        base = ["replay", str(rec), "--registry", str(reg), "--rules", str(ROOT / "rules")]
        assert main([*base, "--compare", str(other)]) == 0
        (other / "bin.yaml").write_text(
            (other / "bin.yaml").read_text().replace("fill_high: 80", "fill_high: 95")
        )
        assert main([*base, "--compare", str(other)]) == 1
        assert "only in A  bin_full" in capsys.readouterr().out


class TestReport:
    def test_report_has_a_plot_per_alerting_device_and_matching_counts(self, tmp_path: Path) -> None:
        """The demo's report: one plot per device that alerted, shaded intervals, threshold
        lines, and a counts table equal to the replay's events."""
        msgs, doc = demo()
        reg = parse_registry(doc, source="demo")
        rules = load_rules(ROOT / "rules", reg)
        result = replay(msgs, registry=reg, rules=rules, settings=SETTINGS)
        index = write_report(tmp_path / "report", msgs, result, reg, rules)
        page = index.read_text()
        alerted = {e.device_id for e in result.events if e.status is AlertStatus.FIRING}
        assert page.count('<svg class="plot"') == len(alerted)
        for dev in alerted:
            assert f'id="dev-{dev}"' in page
        fired = sum(1 for e in result.events if e.status is AlertStatus.FIRING and not e.repeat)
        assert page.count('<rect class="alert"') == fired
        assert page.count('<polyline class="series"') >= len(alerted)
        assert 'class="threshold"' in page
        table = dict(re.findall(r"<tr><td>(\w+)</td><td>(\d+)</td>", page))
        for rule in {e.rule for e in result.events if e.status is AlertStatus.FIRING}:
            want = sum(1 for e in result.events if e.rule == rule and e.status is AlertStatus.FIRING)
            assert int(table[rule]) == want


class TestProgress:
    def test_line_shows_rate_and_time_left(self) -> None:
        """The progress line names the count, total, rate, elapsed and remaining time."""
        out = io.StringIO()
        p = Progress("published", 1000, out=out)
        p.add(250)
        line = p.line()
        assert line.startswith("published 250/1,000")
        assert "/s" in line
        assert "left" in line
        p.done()
        assert out.getvalue().endswith("\n")
