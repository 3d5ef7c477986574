"""Rule files cannot exhaust or break the daemon: templates that cannot be filled,
expressions nested too deep, windows and durations too long are refused with file:line
and a reason, by `sensord rules check` and by a reload alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord._cli import main
from sensord._daemon import Daemon
from sensord._registry import Registry, parse_registry
from sensord._types import AlertStatus
from sensord.rules import check_rule_files
from sensord.sinks import MemorySink
from sensord.testing import MemorySource
from tests.unit.test_reload import msg, run, statuses, until


@pytest.fixture
def registry() -> Registry:
    devices = {"bin-1": {"family": "bin", "community": "c", "grid": "g"}}
    return parse_registry({"devices": devices}, source="t")


def rule_file(tmp_path: Path, *, when: str = "fill_pct >= 80", summary: str = "x", extra: str = "") -> Path:
    path = tmp_path / "bin.yaml"
    path.write_text(
        "family: bin\nrules:\n  - name: bin_full\n"
        f"    when: {when!r}\n{extra}    summary: {summary!r}\n"
    )
    return path


def problems(path: Path, registry: Registry) -> list[str]:
    return [str(e) for e in check_rule_files([path], registry)]


class TestTemplates:
    @pytest.mark.parametrize(
        ("summary", "needle"),
        [
            ("Bin {fill_pct.0f} full", "not a plain name"),
            ("Bin {fill_pct[0]} full", "not a plain name"),
            ("Bin {0} full", "not a plain name"),
            ("Bin {nosuchfield}", "unknown placeholder(s) ['nosuchfield']"),
            ("Bin {fill_pct:.0q}", "cannot be filled"),
            ("Bin {device_id:.0f}", "cannot be filled"),
        ],
    )
    def test_template_that_cannot_render_is_refused(
        self, tmp_path: Path, registry: Registry, summary: str, needle: str
    ) -> None:
        """A template with attribute access, indexing, an unknown name or a format spec
        its value cannot take is a rule error naming file:line and the rule."""
        found = problems(rule_file(tmp_path, summary=summary), registry)
        assert len(found) == 1
        assert found[0].startswith(f"{tmp_path / 'bin.yaml'}:5 rule 'bin_full': summary:")
        assert needle in found[0]

    def test_good_template_passes(self, tmp_path: Path, registry: Registry) -> None:
        """Fields with format specs, parameters and device facts are fine."""
        summary = "Bin {device_id} in {community} is {fill_pct:.0f}% full (tilt {tilt_deg:.1f})"
        assert problems(rule_file(tmp_path, summary=summary), registry) == []


class TestExpressionLimits:
    def test_deep_expression_is_a_rule_error_not_a_crash(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A 500-deep expression: `rules check` prints file:line and the limit, exit 1, no traceback."""
        path = rule_file(tmp_path, when="(" * 500 + "fill_pct >= 80" + ")" * 500)
        assert main(["rules", "check", str(path)]) == 1
        err = capsys.readouterr()
        text = err.out + err.err
        assert f"{path}:4 rule 'bin_full': when: the expression nests 500 brackets deep" in text
        assert "Traceback" not in text

    def test_long_chain_without_brackets_is_refused(self, tmp_path: Path, registry: Registry) -> None:
        """`fill_pct + fill_pct + …` nests without brackets; it is refused too."""
        found = problems(rule_file(tmp_path, when=" + ".join(["fill_pct"] * 300) + " > 1"), registry)
        assert len(found) == 1
        assert "nests too deeply" in found[0]

    @pytest.mark.parametrize(
        ("when", "extra", "needle"),
        [
            ("avg_over(fill_pct, 3650d) > 1", "", "limit of 30d"),
            ("avg_over(fill_pct, 25h) > 1", "", "the longest is 24h"),
            ("fill_pct > 1", "    for: .inf\n", "finite"),
            ("fill_pct > 1", "    cooldown: 3650d\n", "limit of 30d"),
        ],
    )
    def test_windows_and_durations_are_bounded(
        self, tmp_path: Path, registry: Registry, when: str, extra: str, needle: str
    ) -> None:
        """A window past 24 h, an infinite duration, or one past 30 days is a rule error."""
        found = problems(rule_file(tmp_path, when=when, extra=extra), registry)
        assert len(found) == 1
        assert needle in found[0]


def test_reload_with_an_exhausting_rule_keeps_the_old_rules(tmp_path: Path) -> None:
    """A reload whose file nests 5,000 deep is refused and counted; the old rules alert on."""

    async def body(daemon: Daemon, source: MemorySource, sink: MemorySink, rules: Path) -> None:
        deep = "(" * 5000 + "fill_pct >= 80" + ")" * 5000
        text = f"family: bin\nrules:\n  - name: x\n    when: '{deep}'\n    summary: x\n"
        (rules / "bin.yaml").write_text(text)
        assert not await daemon.reload_rules()
        assert daemon.metrics.rule_reloads.labels("error")._value.get() == 1
        source.put([msg("wb-01", sos=True)])
        await until(lambda: bool(sink.events), "an SOS alert under the old rules")
        assert statuses(sink, "wristband_sos") == [("wb-01", AlertStatus.FIRING)]

    run(tmp_path, body)
