"""Unit tests for rule expressions compiled to numpy (no eval) and for the shipped rule set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from sensord._registry import parse_registry
from sensord._types import Family
from sensord.decode import field_specs
from sensord.rules import load_rules
from sensord.rules._expr import ExprError, compile_expr

ROOT = Path(__file__).resolve().parents[2]
WB = {s.name: s for s in field_specs(Family.WRISTBAND)}
LIFT = {s.name: s for s in field_specs(Family.LIFT)}


def run(text: str, env: Mapping[str, Sequence[float]], params: dict[str, float] | None = None) -> list[bool]:
    specs = LIFT if "state" in text or "door_open" in text else WB
    compiled = compile_expr(text, specs, params or {})
    cols = {k: np.asarray(v, dtype=np.float64) for k, v in env.items()}
    return [bool(x) for x in compiled.fn(cols)]


class TestExpressions:
    def test_comparison_with_parameter(self) -> None:
        """A field compared to a named parameter is evaluated row by row."""
        assert run(
            "heart_rate > hr_high", {"heart_rate": [100, 121, 140], "hr_high": [120] * 3}, {"hr_high": 120}
        ) == [
            False,
            True,
            True,
        ]

    def test_chained_range(self) -> None:
        """`a <= x < b` means both comparisons."""
        assert run("60 <= heart_rate < 100", {"heart_rate": [59, 60, 99, 100]}) == [False, True, True, False]

    def test_boolean_operators(self) -> None:
        """and / or / not combine conditions as array operations."""
        env = {"sos": [1, 0, 0, 0], "fall": [0, 1, 0, 0], "worn": [1, 1, 0, 1]}
        assert run("(sos or fall) and not (not worn)", env) == [True, True, False, False]

    def test_arithmetic_and_functions(self) -> None:
        """Arithmetic and abs/max over fields: pulse pressure and a symmetric band."""
        env = {"systolic": [120, 190], "diastolic": [80, 90], "heart_rate": [70, 30]}
        assert run("systolic - diastolic > 60", env) == [False, True]
        assert run("abs(heart_rate - 70) > 30", env) == [False, True]
        assert run("max(systolic, diastolic * 2) >= 170", env) == [False, True]

    def test_enum_comparison(self) -> None:
        """A text value compared with an enum field uses the value's code."""
        codes = {c: float(i) for i, c in enumerate(LIFT["state"].choices)}
        env = {"state": [codes["stopped"], codes["moving"]], "door_open": [0.0, 0.0]}
        assert run('state == "stopped" and not door_open', env) == [True, False]

    def test_missing_value_is_false(self) -> None:
        """A NaN (field absent in that row) never satisfies a comparison."""
        assert run("heart_rate > 100", {"heart_rate": [float("nan"), 150]}) == [False, True]

    @pytest.mark.parametrize(
        "text",
        [
            "__import__('os')",
            "heart_rate.__class__",
            "[x for x in heart_rate]",
            "heart_rate[0] > 1",
            "lambda: 1",
            "open('/etc/passwd')",
        ],
    )
    def test_code_is_refused(self, text: str) -> None:
        """Anything outside the whitelist (calls, attributes, subscripts, lambdas) is an error."""
        with pytest.raises(ExprError):
            compile_expr(text, WB, {})


class TestDefaultRules:
    def test_default_rules_cover_six_families(self) -> None:
        """The shipped rules load against the demo registry: ≥ 30 rules over all six families."""
        registry = parse_registry(
            {"devices": {f"{f.value}-1": {"family": f.value, "community": "c", "grid": "g"} for f in Family}},
            source="test",
        )
        rules = load_rules(ROOT / "rules", registry)
        assert rules.rule_count >= 30
        assert rules.families == set(Family)

    def test_every_default_rule_says_why(self) -> None:
        """Each shipped rule has a `# Why:` line in the comment block just above it."""
        for path in sorted((ROOT / "rules").glob("*.yaml")):
            lines = path.read_text().splitlines()
            for i, line in enumerate(lines):
                if line.strip().startswith("- name:"):
                    block = []
                    j = i - 1
                    while j >= 0 and lines[j].strip().startswith("#"):
                        block.append(lines[j].strip())
                        j -= 1
                    assert any(b.startswith("# Why:") for b in block), f"{path.name}:{i + 1} has no # Why:"


class TestLocalHour:
    """`local_hour()`: a rule that holds by day only (issue 9, point 7)."""

    def test_local_hour_reads_the_engine_column(self) -> None:
        """`local_hour() >= 8 and local_hour() < 20` is true between 08:00 and 20:00."""
        got = run("local_hour() >= 8 and local_hour() < 20", {"local_hour()": [7.99, 8.0, 19.99, 20.0]})
        assert got == [False, True, True, False]

    def test_local_hour_takes_no_argument(self) -> None:
        """An argument is refused with the form to use."""
        with pytest.raises(ExprError, match=r"local_hour\(\) takes no arguments"):
            compile_expr("local_hour(steps) > 8", WB, {})

    def test_local_hours_follow_the_zone_and_its_clock_changes(self) -> None:
        """Shanghai is UTC+8 all year; Berlin moves an hour on 2026-03-29 at 01:00 UTC."""
        from zoneinfo import ZoneInfo  # noqa: PLC0415

        from sensord.alerts._model import local_hours  # noqa: PLC0415

        ts = np.array([1_796_090_400.0])  # 2026-12-01T02:00Z
        assert list(local_hours(ts, ZoneInfo("Asia/Shanghai"))) == [10.0]
        spring = np.array([1_774_746_000.0 - 1800, 1_774_746_000.0 + 1800])  # 00:30Z and 01:30Z
        assert list(local_hours(spring, ZoneInfo("Europe/Berlin"))) == [1.5, 3.5]
