"""`sensord kpi`: the KPI table, JSON and HTML page from work orders committed to a real
outbox, read back read-only (the figures are those worked out by hand in test_kpi.py)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import orjson
import pytest

from sensord._cli import main
from sensord._metrics import Metrics
from sensord._settings import load_settings
from sensord._since import parse_since
from sensord.outbox import Outbox
from sensord.workorders import State, row_of
from tests.unit.test_kpi import ORDERS, T0, order

SINCE = "2026-09-21T00:00Z"  # T0 is 2026-09-21 14:13:20 UTC


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    """A config whose outbox holds the six work orders of test_kpi.py and one opened a
    month before --since."""
    path = tmp_path / "sensord.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n")
    settings = load_settings(path)
    old = dataclasses.replace(order("OLD", State.DISPATCHED), opened_at=T0 - 30 * 86400)
    outbox = Outbox(settings.data_path(settings.outbox.path), ["webhook"], settings.outbox, Metrics())
    try:
        outbox.commit([], work_orders=[row_of(wo) for wo in [*ORDERS, old]])
    finally:
        outbox.close()
    return path


def rows(out: str) -> dict[str, str]:
    """The table's rows by their first cell, the other cells joined by " | " (in the
    output they are at least two spaces apart)."""
    return {c[0]: " | ".join(c[1:]) for line in out.splitlines()[1:] if (c := re.split(r"\s{2,}", line))}


def test_table_by_community(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Per community and in total: counts, closure rate, accept and done p50/p90 as people
    say them (under 2 min in s, under 2 h in min: 6840 s is 114 min), breaches
    accept/done and the mean rating (with how many rated); the work order opened before
    --since is left out."""
    assert main(["kpi", "-c", str(cfg), "--since", SINCE, "--by", "community"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("6 work orders opened since 2026-09-21T00:00:00Z")
    got = rows(out)
    assert got["community"].startswith("orders | taken | done | auto | open | closure | accept p50")
    assert got["maple"] == "4 | 3 | 2 | 1 | 1 | 66.7 % | 5 min | 13 min | 90 min | 114 min | 1/1 | 5.0 (1)"
    assert got["oak"] == "2 | 1 | 1 | 0 | 1 | 50.0 % | 2 min | 2 min | 30 min | 30 min | 1/1 | 3.0 (1)"
    assert got["all"] == "6 | 4 | 3 | 1 | 2 | 60.0 % | 4 min | 12 min | 60 min | 108 min | 2/2 | 4.0 (2)"


def test_json_has_the_figures_in_seconds(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json: the same figures, times in seconds (accept p90 720 s, closure 0.6)."""
    assert main(["kpi", "-c", str(cfg), "--since", SINCE, "--json"]) == 0
    total = orjson.loads(capsys.readouterr().out)["all"]
    figures = (total["work_orders"], total["accept_p90_s"], total["closure_rate"])
    assert figures == pytest.approx((6, 720, 0.6))


def test_html_page_has_the_plots(cfg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--html DIR writes DIR/index.html: the table, a dot per accepted work order in the
    accept-time plot, the done-time plot, closure and breach bars per group."""
    assert main(["kpi", "-c", str(cfg), "--since", SINCE, "--by", "team", "--html", str(tmp_path / "r")]) == 0
    assert f"wrote {tmp_path / 'r' / 'index.html'}" in capsys.readouterr().out
    page = (tmp_path / "r" / "index.html").read_text()
    accept = page.split('<svg class="dist accept"')[1].split("</svg>")[0]
    assert accept.count("<circle") == 4
    for plot in ('<svg class="dist done"', '<svg class="bars closure"', '<svg class="bars breaches"'):
        assert plot in page
    assert '<table id="kpis">' in page
    assert "<td>grid_worker</td>" in page


def test_missing_outbox_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config whose daemon never ran: a reason, exit status 1, and no database made."""
    path = tmp_path / "sensord.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n")
    assert main(["kpi", "-c", str(path)]) == 1
    assert "no outbox database" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.db"))


def test_since_is_a_span_back_from_now_or_an_iso_time() -> None:
    """7d is a week before now; an ISO time with a zone is that instant; other text is refused."""
    assert parse_since("7d", T0) == T0 - 7 * 86400
    assert parse_since("2026-09-21T22:13:20+08:00", 0) == T0
    with pytest.raises(ValueError, match="neither a span"):
        parse_since("last week", T0)
