"""The words of a notification: short, actionable, in the receiver's language.

What (the rule's summary), where (community, building, unit, floor), since when (local
time in the dispatch file's time zone), how bad, and the id to quote when answering. A
receiver not marked `sensitive` gets no readings and no coordinates: a bin's fill level
is harmless, but a resident's heart rate and whereabouts go only to the desks, doctors
and families that need them (数据安全).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sensord._types import AlertEvent, AlertStatus

_SEVERITY = {
    "zh-CN": {"critical": "紧急", "warning": "警告", "info": "提示"},
    "en": {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"},
}
_WORDS = {
    "zh-CN": {
        "where": "位置", "since": "开始", "ended": "结束", "readings": "读数", "answer": "处理编号",
        "firing": "告警", "resolved": "已恢复", "acked": "已处理", "by": "处理人", "repeat": "仍未处理",
        "building": "{}号楼", "unit": "{}室", "floor": "{}层",
    },
    "en": {
        "where": "Where", "since": "Since", "ended": "Ended", "readings": "Readings", "answer": "Reply with",
        "firing": "FIRING", "resolved": "RESOLVED", "acked": "HANDLED", "by": "By", "repeat": "STILL OPEN",
        "building": "building {}", "unit": "unit {}", "floor": "floor {}",
    },
}  # fmt: skip
# Readings never shown to a receiver that is not `sensitive`.
_PRIVATE_KEYS = ("lat", "lon")


@dataclass(frozen=True)
class Text:
    title: str
    text: str
    markdown: str


def render(  # noqa: PLR0913 - what one receiver may read of one event
    event: AlertEvent,
    *,
    locale: str,
    tz: ZoneInfo,
    sensitive: bool,
    answer_id: str,
    redact: frozenset[str] = frozenset(),
) -> Text:
    """The title, plain text and markdown of one event for one receiver. `redact`: the
    readings (and `coordinates`) a sensitive receiver still must not see."""
    w = _WORDS[locale]
    sev = _SEVERITY[locale][event.severity.value]
    acked_by = event.readings.get("acknowledged_by") if event.status is AlertStatus.RESOLVED else None
    if event.status is AlertStatus.RESOLVED:
        state = w["acked"] if acked_by else w["resolved"]
    else:
        state = w["repeat"] if event.repeat else w["firing"]
    summary = event.text(locale)[0]  # the rule's text in the receiver's language
    title = f"【{sev}·{state}】{summary}" if locale == "zh-CN" else f"[{sev} {state}] {summary}"
    where = " ".join(p for p in (event.community, *_place(event, w)) if p)
    lines = [title, f"{w['where']}: {where}", f"{w['since']}: {_local(event.starts_at, tz)}"]
    if event.status is AlertStatus.RESOLVED and event.ends_at is not None:
        lines.append(f"{w['ended']}: {_local(event.ends_at, tz)}")
    if acked_by:
        lines.append(f"{w['by']}: {acked_by}")
    if sensitive:
        hidden = {"ts", "acknowledged_by", *redact}
        shown = {k: v for k, v in event.readings.items() if k not in hidden}
        if shown:
            lines.append(f"{w['readings']}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        coords = [
            f"{k}={event.location[k]}"
            for k in _PRIVATE_KEYS
            if k in event.location and "coordinates" not in redact
        ]
        if coords:
            lines[1] += " (" + ", ".join(coords) + ")"
    lines.append(f"{w['answer']}: {answer_id}")
    text = "\n".join(lines)
    markdown = "\n".join([f"**{title}**", *(f"> {ln}" for ln in lines[1:])])
    return Text(title, text, markdown)


def _place(event: AlertEvent, w: dict[str, str]) -> list[str]:
    loc = event.location
    return [w[k].format(loc[k]) for k in ("building", "unit", "floor") if loc.get(k) not in (None, "")]


def _local(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


_GROUP_WORDS = {
    "zh-CN": {"alerts": "{n} 条告警", "more": "……另有 {k} 条", "resolved": " [已恢复]", "firing": ""},
    "en": {"alerts": "{n} alerts", "more": "... and {k} more", "resolved": " (resolved)", "firing": ""},
}
# A grouped message lists this many alerts; the rest are counted (SMS and chat limits).
MAX_LINES = 20


def render_group(  # noqa: PLR0913 - the parts of one grouped message
    events: list[AlertEvent],
    *,
    labels: dict[str, str],
    locale: str,
    tz: ZoneInfo,
    sensitive: bool,
    answer_id: str,
    redact: frozenset[str] = frozenset(),
) -> Text:
    """One message for a group of ordinary alerts: how many, where, and one line each."""
    if len(events) == 1:
        return render(
            events[0], locale=locale, tz=tz, sensitive=sensitive, answer_id=answer_id, redact=redact
        )
    w, g = _WORDS[locale], _GROUP_WORDS[locale]
    worst = max(events, key=lambda e: ("info", "warning", "critical").index(e.severity.value))
    sev = _SEVERITY[locale][worst.severity.value]
    count = g["alerts"].format(n=len(events))
    where = " ".join(f"{k}={v}" for k, v in labels.items() if v)
    title = f"【{sev}】{count} {where}" if locale == "zh-CN" else f"[{sev}] {count}: {where}"
    lines = [title]
    for e in events[:MAX_LINES]:
        place = " ".join(_place(e, w))
        state = g["resolved"] if e.status is AlertStatus.RESOLVED else g["firing"]
        lines.append(f"- {e.text(locale)[0]}{state} {place} {_local(e.starts_at, tz)}".rstrip())
    if len(events) > MAX_LINES:
        lines.append(g["more"].format(k=len(events) - MAX_LINES))
    lines.append(f"{w['answer']}: {answer_id}")
    text = "\n".join(lines)
    markdown = "\n".join([f"**{title}**", *lines[1:]])
    return Text(title, text, markdown)
