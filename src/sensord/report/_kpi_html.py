"""An HTML page of work-order KPIs: the figures, then per group the spread of accept and
done times (every job a dot on a log time axis, p50 and p90 marked), the closure rate
(办结率) and the SLA breaches."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from sensord.report._svg import LINE_COLOURS, PAD, WIDTH, page
from sensord.workorders import Kpi

LABEL_W = 150  # room on the left for a group's name
ROW_H = 22
# The time axis: from 30 s to 3 days (longer times stretch it), marked at familiar spans.
T_MIN, T_MAX = 30.0, 3 * 86400.0
TICKS = ((60, "1 min"), (300, "5 min"), (900, "15 min"), (3600, "1 h"), (4 * 3600, "4 h"), (86400, "1 d"))
BREACH_COLOURS = ("#e0a030", "#d9534f")  # accept, done


def _frame(cls: str, rows: int, body: Sequence[str], labels: Sequence[str]) -> str:
    height = 30 + ROW_H * max(rows, 1)
    parts = [f'<svg class="{cls}" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    parts += [
        f'<text x="4" y="{14 + ROW_H * i}" font-size="11">{html.escape(name)}</text>'
        for i, name in enumerate(labels)
    ]
    parts += [*body, "</svg>"]
    return "".join(parts)


def _log_x(hi: float) -> Callable[[float], float]:
    lo, span = math.log(T_MIN), math.log(hi) - math.log(T_MIN)
    return lambda t: LABEL_W + (math.log(min(max(t, T_MIN), hi)) - lo) / span * (WIDTH - LABEL_W - PAD)


def _distribution(cls: str, groups: Sequence[tuple[str, Sequence[float], float | None, float | None]]) -> str:
    """One row per group: a dot per work order, p50 (thick) and p90 (thin) as ticks."""
    hi = max([T_MAX, *(t for _, times, _, _ in groups for t in times)])
    x = _log_x(hi)
    body: list[str] = []
    for i, (_, times, p50, p90) in enumerate(groups):
        y = 10 + ROW_H * i
        dot = f'cy="{y:.0f}" r="3" fill="{LINE_COLOURS[0]}" opacity="0.45"/>'
        body += [f'<circle cx="{x(t):.1f}" {dot}' for t in times]
        for p, w in ((p50, 3), (p90, 1.5)):
            if p is not None:
                body.append(
                    f'<line class="p" x1="{x(p):.1f}" y1="{y - 7}" x2="{x(p):.1f}" y2="{y + 7}" '
                    f'stroke="{LINE_COLOURS[3]}" stroke-width="{w}"/>'
                )
    axis_y = 10 + ROW_H * max(len(groups), 1)
    for t, label in (*TICKS, (hi, f"{hi / 86400:.0f} d")):
        body.append(
            f'<line x1="{x(t):.1f}" y1="0" x2="{x(t):.1f}" y2="{axis_y - 8}" stroke="#ddd"/>'
            f'<text x="{x(t):.1f}" y="{axis_y + 6}" font-size="10" text-anchor="middle">{label}</text>'
        )
    return _frame(cls, len(groups), body, [g for g, _, _, _ in groups])


def _bars(
    cls: str, rows: Sequence[tuple[str, Sequence[float | None]]], top: float, text: Callable[[float], str]
) -> str:
    """One row per group, a bar per value (side by side), scaled so `top` fills the width;
    no value (None) is no bar and a dash."""
    width = WIDTH - LABEL_W - PAD - 60
    body: list[str] = []
    for i, (_, values) in enumerate(rows):
        h = (ROW_H - 6) / max(len(values), 1)
        for j, v in enumerate(values):
            y, w = 2 + ROW_H * i + h * j, width * (v or 0.0) / top
            if v is None:
                body.append(f'<text x="{LABEL_W + 4}" y="{y + h - 2:.1f}" font-size="10">-</text>')
                continue
            colour, w = (BREACH_COLOURS[j] if len(values) > 1 else LINE_COLOURS[1]), max(w, 1)
            body.append(
                f'<rect x="{LABEL_W}" y="{y:.1f}" width="{w:.1f}" height="{h - 1:.1f}" fill="{colour}"/>'
                f'<text x="{LABEL_W + w + 4:.1f}" y="{y + h - 2:.1f}" font-size="10">{text(v)}</text>'
            )
    return _frame(cls, len(rows), body, [name for name, _ in rows])


def _cell(v: object) -> str:
    return f"<td>{html.escape('-' if v is None else str(v))}</td>"


# The plots' headings and legends (a legend's words carry their punctuation); the console
# passes its own words (zh-CN or en).
PLOT_WORDS: dict[str, str] = {
    "accept": "Accept time (dispatch to first acceptance)",
    "dots": "Each dot a work order; thick tick: median (p50), thin tick: p90.",
    "done": "Done time (dispatch to done)",
    "closure": "Closure rate (办结率: done and closed of all but the auto-resolved)",
    "breaches": "SLA breaches",
    "accept_passed": "accept deadline passed,",
    "done_passed": "done deadline passed.",
}


def kpi_plots(groups: Sequence[Kpi], words: Mapping[str, str] = PLOT_WORDS) -> str:
    """The plots of `groups`, each under its heading (HTML with inline SVG): accept and
    done times, closure rate, breaches. Every group name and word is escaped here."""
    w = {key: html.escape(text) for key, text in {**PLOT_WORDS, **words}.items()}
    accept = [(k.group, k.accept_times, k.accept_p50, k.accept_p90) for k in groups]
    done = [(k.group, k.done_times, k.done_p50, k.done_p90) for k in groups]
    closure = [(k.group, [k.closure_rate * 100 if k.closure_rate is not None else None]) for k in groups]
    breaches = [(k.group, [float(k.accept_breaches), float(k.done_breaches)]) for k in groups]
    top = max([1.0, *(v for _, vs in breaches for v in vs)])
    return f"""<h2>{w["accept"]}</h2>
<p>{w["dots"]}</p>
{_distribution("dist accept", accept)}
<h2>{w["done"]}</h2>
{_distribution("dist done", done)}
<h2>{w["closure"]}</h2>
{_bars("bars closure", closure, 100.0, lambda v: f"{v:.1f} %")}
<h2>{w["breaches"]}</h2>
<p><span style="color:{BREACH_COLOURS[0]}">■</span> {w["accept_passed"]}
<span style="color:{BREACH_COLOURS[1]}">■</span> {w["done_passed"]}</p>
{_bars("bars breaches", breaches, top, lambda v: f"{v:.0f}")}"""


def write_kpi_report(
    folder: Path, groups: Sequence[Kpi], table: Sequence[Sequence[str]], *, note: str
) -> Path:
    """Write `folder/index.html`: `table` (a header row, then the rows as `sensord kpi`
    prints them), `note` under the heading, and the plots of `groups`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    head, *rows = table
    body = f"""<p>{html.escape(note)}</p>
<table id="kpis"><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr>
{"".join("<tr>" + "".join(_cell(c) for c in r) + "</tr>" for r in rows)}</table>
{kpi_plots(groups)}"""
    index = folder / "index.html"
    index.write_text(page("sensord work-order KPIs", body), encoding="utf-8")
    return index
