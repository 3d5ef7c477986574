"""An HTML report of a replay: what alerted, when, and the readings behind it.

One self-contained `index.html` with inline SVG plots (no plotting library, nothing
fetched): counts per rule, a timeline of alerts per family, and for each device that
alerted its readings of the fields the alerting rules read, the rules' thresholds for
that device as dashed lines, and the alert intervals shaded.
"""

from __future__ import annotations

import collections
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import orjson

from sensord._registry import Registry
from sensord._types import AlertEvent, RawMessage, Severity
from sensord.decode import TopicTemplate
from sensord.replay._compare import Interval, intervals
from sensord.replay._offline import ReplayResult
from sensord.report._svg import LINE_COLOURS, PAD, PLOT_H, WIDTH, iso, page
from sensord.rules import CompiledRule, RuleSet

COLOURS = {Severity.INFO: "#6b8fd6", Severity.WARNING: "#e0a030", Severity.CRITICAL: "#d9534f"}
MAX_DEVICE_PLOTS = 200  # a report for a large neighbourhood stays readable and small


def _readings(
    messages: Iterable[RawMessage], template: str, wanted: set[str]
) -> dict[str, list[tuple[float, dict[str, float]]]]:
    """Numeric readings (bools as 0/1) of the wanted devices, from the raw messages."""
    topic = TopicTemplate(template)
    out: dict[str, list[tuple[float, dict[str, float]]]] = collections.defaultdict(list)
    for m in messages:
        parts = topic.parse(m.topic)
        if parts is None or parts.device_id not in wanted:
            continue
        try:
            body = orjson.loads(m.payload)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(body, dict):
            continue
        ts = body.get("ts", m.received_at)
        if not isinstance(ts, (int, float)):
            continue
        values = {
            k: float(v)
            for k, v in body.items()
            if isinstance(v, (int, float)) and k != "ts" and math.isfinite(v)
        }
        out[parts.device_id].append((float(ts), values))
    return out


class _Scale:
    def __init__(self, t0: float, t1: float, lo: float, hi: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1)
        span = hi - lo if hi > lo else 1.0
        self.lo, self.hi = lo - span * 0.08, hi + span * 0.08

    def x(self, t: float) -> float:
        return PAD + (t - self.t0) / (self.t1 - self.t0) * (WIDTH - 2 * PAD)

    def y(self, v: float) -> float:
        return PLOT_H - 20 - (v - self.lo) / (self.hi - self.lo) * (PLOT_H - 40)


def _value_params(rule: CompiledRule) -> set[str]:
    """Parameters compared with readings (not durations such as `for: trapped_for_s`)."""
    out: set[str] = set()
    for part in (rule, *rule.levels):
        for expr in (part.when, part.clear):
            if expr is not None:
                out |= expr.params
    return out


def _axis(sc: _Scale) -> str:
    return (
        f'<line x1="{PAD}" y1="{PLOT_H - 20}" x2="{WIDTH - PAD}" y2="{PLOT_H - 20}" stroke="#999"/>'
        f'<text x="{PAD}" y="{PLOT_H - 5}" font-size="10">{iso(sc.t0)}</text>'
        f'<text x="{WIDTH - PAD}" y="{PLOT_H - 5}" font-size="10" text-anchor="end">{iso(sc.t1)}</text>'
        f'<text x="2" y="{sc.y(sc.hi) + 10:.1f}" font-size="10">{sc.hi:.4g}</text>'
        f'<text x="2" y="{sc.y(sc.lo):.1f}" font-size="10">{sc.lo:.4g}</text>'
    )


def _device_plot(  # noqa: PLR0913, PLR0917 - the facts of one plot
    device_id: str,
    points: list[tuple[float, dict[str, float]]],
    alerts: list[tuple[CompiledRule, Interval]],
    thresholds: dict[str, float],
    t_range: tuple[float, float],
    end: float,
) -> str:
    fields = sorted({f for rule, _ in alerts for f in rule.fields})
    series = {f: [(t, v[f]) for t, v in points if f in v] for f in fields}
    values = [v for s in series.values() for _, v in s] + list(thresholds.values())
    if not values:
        values = [0.0, 1.0]
    sc = _Scale(t_range[0], t_range[1], min(values), max(values))
    # Room on the right for the threshold labels.
    parts = [f'<svg class="plot" width="{WIDTH + 90}" height="{PLOT_H}" xmlns="http://www.w3.org/2000/svg">']
    for rule, (start, stop) in alerts:
        x0, x1 = sc.x(start), sc.x(stop if stop is not None else end)
        colour = COLOURS[rule.severity]
        parts.append(
            f'<rect class="alert" x="{x0:.1f}" y="10" width="{max(x1 - x0, 1.5):.1f}" height="{PLOT_H - 30}" '
            f'fill="{colour}" opacity="0.18"><title>{html.escape(rule.name)}</title></rect>'
        )
    for name, value in sorted(thresholds.items()):
        y = sc.y(value)
        parts.append(
            f'<line class="threshold" x1="{PAD}" y1="{y:.1f}" x2="{WIDTH - PAD}" y2="{y:.1f}" '
            f'stroke="#555" stroke-dasharray="4 3"/><text x="{WIDTH - PAD + 2}" y="{y + 3:.1f}" '
            f'font-size="9">{html.escape(name)} {value:g}</text>'
        )
    for i, (f, pts) in enumerate(series.items()):
        if not pts:
            continue
        colour = LINE_COLOURS[i % len(LINE_COLOURS)]
        path = " ".join(f"{sc.x(t):.1f},{sc.y(v):.1f}" for t, v in pts)
        parts.append(
            f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="1.2"/>'
        )
        parts.append(
            f'<text x="{PAD + 4 + 110 * i}" y="12" font-size="11" fill="{colour}">{html.escape(f)}</text>'
        )
    parts.append(_axis(sc))
    parts.append("</svg>")
    return f'<h3 id="dev-{html.escape(device_id)}">{html.escape(device_id)}</h3>' + "".join(parts)


def _timeline(
    per_family: dict[str, list[tuple[str, str, Severity, Interval]]], t_range: tuple[float, float], end: float
) -> str:
    rows = [(fam, item) for fam in sorted(per_family) for item in per_family[fam]]
    height = 30 + 14 * max(len(rows), 1)
    sc = _Scale(t_range[0], t_range[1], 0, 1)
    parts = [f'<svg class="timeline" width="{WIDTH}" height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i, (fam, (rule, dev, sev, (start, stop))) in enumerate(rows):
        y = 10 + 14 * i
        x0, x1 = sc.x(start), sc.x(stop if stop is not None else end)
        label = html.escape(f"{rule} {dev}")
        # The label beside its bar: after it, or before it when the bar reaches the right edge.
        tx, anchor = (x1 + 4, "start") if x1 < WIDTH - 220 else (x0 - 4, "end")
        parts.append(
            f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 2):.1f}" height="10" fill="{COLOURS[sev]}">'
            f"<title>{html.escape(f'{fam} {rule} {dev}')}</title></rect>"
            f'<text x="2" y="{y + 9}" font-size="9">{html.escape(fam)}</text>'
            f'<text x="{tx:.1f}" y="{y + 9}" font-size="9" text-anchor="{anchor}">{label}</text>'
        )
    parts.append(
        f'<text x="{PAD}" y="{height - 4}" font-size="10">{iso(sc.t0)}</text>'
        f'<text x="{WIDTH - PAD}" y="{height - 4}" font-size="10" text-anchor="end">{iso(sc.t1)}</text>'
        "</svg>"
    )
    return "".join(parts)


def write_report(  # noqa: PLR0913 - what a report is made of
    folder: Path,
    messages: Iterable[RawMessage],
    result: ReplayResult,
    registry: Registry,
    rules: RuleSet,
    *,
    template: str = "sensord/{community}/{family}/{device_id}/{kind}",
) -> Path:
    """Write `folder/index.html`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    by_rule = {(fr.family.value, r.name): r for fr in rules.by_family.values() for r in fr.rules}
    events: Sequence[AlertEvent] = result.events
    spans = intervals(list(events))
    family_of = {e.rule: e.family for e in events}
    alerted = sorted({dev for (_, dev) in spans})
    points = _readings(messages, template, set(alerted))
    all_ts = [t for pts in points.values() for t, _ in pts] + [e.event_time for e in events]
    t_range = (min(all_ts), max(all_ts)) if all_ts else (0.0, 1.0)
    end = t_range[1]
    counts = collections.Counter((e.rule, e.status.value) for e in events if not e.repeat)
    fired = collections.Counter(e.rule for e in events if e.status.value == "firing" and not e.repeat)
    rows = "".join(
        f"<tr><td>{html.escape(rule)}</td><td>{fired[rule]}</td><td>{counts[rule, 'resolved']}</td>"
        f"<td>{counts[rule, 'pending']}</td></tr>"
        for rule in sorted({r for r, _ in counts})
    )
    per_family: dict[str, list[tuple[str, str, Severity, Interval]]] = collections.defaultdict(list)
    per_device: dict[str, list[tuple[CompiledRule, Interval]]] = collections.defaultdict(list)
    for (rule_name, dev), ivs in sorted(spans.items()):
        fam = family_of.get(rule_name, "")
        rule = by_rule.get((fam, rule_name))
        sev = rule.severity if rule is not None else Severity.CRITICAL
        for iv in ivs:
            per_family[fam].append((rule_name, dev, sev, iv))
            if rule is not None:
                per_device[dev].append((rule, iv))
    plots = []
    for dev in alerted[:MAX_DEVICE_PLOTS]:
        device = registry.get(dev)
        fr = rules.by_family.get(device.family) if device is not None else None
        thresholds: dict[str, float] = {}
        if device is not None and fr is not None:
            for rule, _ in per_device.get(dev, []):
                for p in _value_params(rule):
                    if p in fr.param_arrays:
                        thresholds[p] = float(fr.param_arrays[p][device.index])
        if per_device.get(dev):
            plots.append(_device_plot(dev, points.get(dev, []), per_device[dev], thresholds, t_range, end))
    more = len(alerted) - MAX_DEVICE_PLOTS
    rejects = ", ".join(f"{k}: {v}" for k, v in sorted(result.rejects.items())) or "none"
    body = f"""<p>{result.messages} messages, {result.accepted} accepted, rejects: {html.escape(rejects)};
{sum(fired.values())} alerts fired on {len(alerted)} devices, {len(events)} events,
from {iso(t_range[0])} to {iso(t_range[1])} (UTC).</p>
<h2>Alerts per rule</h2>
<table id="counts"><tr><th>rule</th><th>fired</th><th>resolved</th><th>pending</th></tr>{rows}</table>
<h2>Timeline per family</h2>
{_timeline(per_family, t_range, end)}
<h2>Devices that alerted</h2>
<p>Readings of the fields the rules read; dashed: the device's thresholds; shaded: alerts.</p>
{"".join(plots)}
{f"<p>… and {more} more devices not plotted.</p>" if more > 0 else ""}"""
    index = folder / "index.html"
    index.write_text(page("sensord replay report", body), encoding="utf-8")
    return index
