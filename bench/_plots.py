"""The benchmarks' HTML page (bench/drain.py, bench/latency.py): scaling curves as inline
SVG line charts (the page shell and colours are those of sensord's reports), so a
regression is visible at a glance.

Charts take (x, y) series by name; `latency_p99_section` draws bench/latency.py's p99 and
p50 latency curves against alert share or device count.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from sensord.report._svg import LINE_COLOURS, PAD, WIDTH, page

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]  # name -> (xs, ys)
HEIGHT = 280
LEFT = 80  # room for the y axis' figures
_LEGEND_H = 20


def _nice_top(v: float) -> float:
    """The smallest of 1, 2, 3, 4, 5, 6, 8 x 10^k at or above v (its quarters are round)."""
    if v <= 0:
        return 1.0
    k = 10.0 ** math.floor(math.log10(v))
    return next(m * k for m in (1, 2, 3, 4, 5, 6, 8, 10) if m * k >= v)


def _figure(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:.3g}"


def line_chart(  # noqa: PLR0913 - a chart's words, data and look
    title: str,
    x_label: str,
    y_label: str,
    series: Series,
    *,
    log_x: bool = True,
    colours: Mapping[str, str] | None = None,
) -> str:
    """One SVG chart: a line with dots per series, x on a log scale by default (alert
    shares and device counts span decades), y from 0; each point's x is a tick.
    `colours` keeps a series' colour the same from chart to chart."""
    xs = sorted({x for sx, _ in series.values() for x in sx if not log_x or x > 0})
    ys = [y for _, sy in series.values() for y in sy if math.isfinite(y)]
    if not xs or not ys:
        return f"<p>{html.escape(title)}: no data</p>"
    top = _nice_top(max(ys))
    f = math.log10 if log_x else float
    lo, hi = f(xs[0]), f(xs[-1])
    span = hi - lo or 1.0
    plot_w, plot_h = WIDTH - LEFT - PAD, HEIGHT - 2 * PAD - _LEGEND_H

    def px(x: float) -> float:
        return LEFT + (f(x) - lo) / span * plot_w if hi != lo else LEFT + plot_w / 2

    def py(y: float) -> float:
        return _LEGEND_H + PAD + plot_h * (1 - y / top)

    parts = [f'<svg class="chart" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">']
    parts.append(f'<text x="{LEFT}" y="14" font-size="13" font-weight="bold">{html.escape(title)}</text>')
    for i in range(5):
        y = top * i / 4
        parts.append(
            f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" stroke="#ddd"/>'
            f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" font-size="10" text-anchor="end">{_figure(y)}</text>'
        )
    tick_y = HEIGHT - PAD + 14
    parts += [
        f'<text x="{px(x):.1f}" y="{tick_y}" font-size="10" text-anchor="middle">{_figure(x)}</text>'
        for x in xs
    ]
    parts.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 6}" font-size="11" text-anchor="middle">'
        f"{html.escape(x_label)}</text>"
        f'<text x="12" y="{_LEGEND_H + PAD + plot_h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {_LEGEND_H + PAD + plot_h / 2})">{html.escape(y_label)}</text>'
    )
    lx = LEFT + 40
    for k, (name, (sx, sy)) in enumerate(series.items()):
        colour = (colours or {}).get(name, LINE_COLOURS[k % len(LINE_COLOURS)])
        points = [
            (px(x), py(y)) for x, y in zip(sx, sy, strict=True) if math.isfinite(y) and (x > 0 or not log_x)
        ]
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
        parts.append(
            f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{colour}"/>' for a, b in points]
        parts.append(
            f'<rect x="{lx}" y="24" width="10" height="10" fill="{colour}"/>'
            f'<text x="{lx + 14}" y="33" font-size="11">{html.escape(name)}</text>'
        )
        lx += 30 + 6 * len(name)  # about the width of the name at 11 px
    parts.append("</svg>")
    return "".join(parts)


def latency_p99_section(
    against: str, series: Series, *, heading: str = "", colours: Mapping[str, str] | None = None
) -> str:
    """Latency (ms) against `against` (the x axis' label: alert share, devices, msg/s),
    one curve per series (p99, with p50 beside it; before and after with a baseline);
    bench/latency.py's figures, to sit beside the msg/s charts."""
    heading = heading or f"p99 latency against {against}"
    return f"<h2>{html.escape(heading)}</h2>\n" + line_chart(
        heading, against, "latency (ms)", series, colours=colours
    )


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def write_index(folder: Path, title: str, sections: Sequence[str]) -> Path:
    """Write folder/index.html: `sections` (HTML) one after another; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "index.html"
    index.write_text(page(title, "\n".join(sections)), encoding="utf-8")
    return index
