"""bench/latency.py's pure parts: which messages the publisher makes an SOS, how many fresh
wristbands a daemon's registry holds, and the HTML page's curves."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

with pytest.MonkeyPatch.context() as _mp:
    # bench/ is a folder of scripts, not a package: its modules import each other by name.
    _mp.syspath_prepend(str(Path(__file__).resolve().parents[2] / "bench"))
    import latency
    from _latency_rig import is_sos, share_fraction, sos_count


class TestSosShare:
    @pytest.mark.parametrize("percent", [0.02, 0.1, 0.29, 1.0, 10.0, 12.5, 33.3, 100.0])
    def test_the_first_n_messages_hold_the_asked_share(self, percent: float) -> None:
        """Exactly floor(n * share) of the first n messages are an SOS, at every n."""
        share = share_fraction(percent)
        sos = 0
        for k in range(1, 20_001):
            sos += is_sos(k, share)
            assert sos == int(k * Fraction(str(percent)) / 100)
        assert sos == sos_count(20_000, share)

    def test_one_percent_is_every_hundredth_message(self) -> None:
        """At 1 % the SOS are messages 100, 200, …, as the default run has always sent them."""
        share = share_fraction(1)
        assert [k for k in range(1, 501) if is_sos(k, share)] == [100, 200, 300, 400, 500]

    @pytest.mark.parametrize("percent", [-1.0, 100.5])
    def test_a_share_outside_0_to_100_is_refused(self, percent: float) -> None:
        """A share that is not a percentage stops the sweep with the value named."""
        with pytest.raises(ValueError, match="percentage from 0 to 100"):
            latency.sweep_stages([percent], [])


class TestLayout:
    def test_the_default_run_keeps_its_eleven_thousand_wristbands(self) -> None:
        """Without a sweep: 5,000 ordinary wristbands and 6,000 fresh ones for the SOS."""
        plan = latency.layout(latency.default_stages(slow_rate=0), 25)
        assert (plan.ordinary, plan.first_sos, plan.registry) == (5000, 5000, 11_000)

    def test_a_device_point_holds_the_asked_count_when_it_suffices(self) -> None:
        """10,000 devices at 5 k msg/s, 1 % for 25 s: the registry is 10,000 and the SOS
        go to its last 15 + 1,250 wristbands."""
        stages = latency.sweep_stages([], [10_000])
        plan = latency.layout(stages, 25)
        assert (plan.ordinary, plan.registry) == (10_000, 10_000)
        assert plan.registry - plan.first_sos == 15 + 1250

    def test_a_small_device_point_gets_enough_fresh_wristbands(self) -> None:
        """1,000 devices cannot hold 1,265 SOS: the registry grows to that many."""
        plan = latency.layout(latency.sweep_stages([], [1000]), 25)
        assert (plan.ordinary, plan.first_sos, plan.registry) == (1000, 0, 1265)

    def test_the_share_sweep_reserves_wristbands_for_all_its_points(self) -> None:
        """One daemon runs every share; it has a fresh wristband for each SOS of them all."""
        stages = latency.sweep_stages([1, 10], [])
        needed = 15 + sum(latency.sos_needed(s, 8) for s in stages)
        assert needed == 15 + 400 + 4000
        assert latency.layout(stages, 8).registry == max(latency.NORMAL_DEVICES, needed)


def _result(label: str, stage: latency.Stage, p99: float, registry: int) -> latency.StageResult:
    """A stage whose 100 latencies are 1 … 99 ms and then `p99`."""
    lat = [float(i) for i in range(1, 100)] + [p99]
    return latency.StageResult(
        label, stage, 40_000, 8.0, lat, 100, [0, 0], 0.0, (1.5, 2.5, 3.5), registry=registry
    )


def _point(text: str) -> tuple[float, float]:
    x, y = text.split(",")
    return float(x), float(y)


def _curves(page: str) -> list[list[tuple[float, float]]]:
    """The points of each polyline of each chart, in order."""
    lines = re.findall(r'<polyline class="series" points="([^"]*)"', page)
    return [[_point(p) for p in line.split()] for line in lines]


class TestHtml:
    def _results(self) -> list[latency.StageResult]:
        shares = latency.sweep_stages([10, 1], [1000, 100_000])
        out = []
        for label, worse in (("before", 55.0), ("after", 0.0)):
            out += [
                _result(label, shares[0], 300 + worse, 5000),
                _result(label, shares[1], 200 + worse, 5000),
                _result(label, shares[2], 120 + worse, 1265),
                _result(label, shares[3], 170 + worse, 100_000),
            ]
        return out

    def test_each_chart_draws_p99_and_p50_before_and_after(self) -> None:
        """Two charts (share, devices), each with four curves of two points."""
        page = "".join(latency.html_sections(self._results()))
        assert page.count('<svg class="chart"') == 2
        assert [len(c) for c in _curves(page)] == [2] * 8
        for name in ("p99 before", "p99 after", "p50 before", "p50 after"):
            assert page.count(f">{name}</text>") == 2

    def test_a_curve_runs_along_x_and_a_worse_p99_is_drawn_higher(self) -> None:
        """The p99 curve rises from 1 % to 10 % (200 → 300 ms), and before (55 ms worse)
        lies above after at every point (SVG y grows downwards)."""
        curves = _curves("".join(latency.html_sections(self._results())))
        before, after = curves[0], curves[1]  # the share chart: p99 before, p99 after
        assert after[0][0] < after[1][0]
        assert after[0][1] > after[1][1]
        assert all(b[1] < a[1] for b, a in zip(before, after, strict=True))

    def test_the_table_holds_every_point_with_its_load(self) -> None:
        """One row per result: its stage, p99, registry and load average."""
        page = "".join(latency.html_sections(self._results()))
        assert page.count("<tr>") == 1 + 8
        assert "<td>100,000 devices</td>" in page
        assert "<td>175.0</td>" in page  # 1,000 devices, before: 120 + 55
        assert "<td>1,265</td>" in page
        assert page.count("<td>1.50 2.50 3.50</td>") == 8

    def test_one_daemon_is_drawn_without_before_and_after(self) -> None:
        """Without a baseline the curves are named p99 and p50."""
        after = [r for r in self._results() if r.label == "after"]
        page = "".join(latency.html_sections(after))
        assert ">p99</text>" in page
        assert ">p50</text>" in page
        assert "before" not in page

    def test_write_html_writes_index_html(self, tmp_path: Path) -> None:
        """--html DIR writes DIR/index.html, a whole page holding the charts."""
        index = latency.write_html(tmp_path / "out", self._results(), latency.note(8))
        assert index == tmp_path / "out" / "index.html"
        text = index.read_text(encoding="utf-8")
        assert text.startswith("<!doctype html>")
        assert "p99 and p50 latency against device count" in text
