"""The words of work-order messages: an escalation ("nobody accepted in 3 min") and a
state change told to the receivers that asked ("accepted by grid worker Zhang at 10:42")."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sensord.workorders._model import Entry, WorkOrder

_ACTION = {
    "zh-CN": {
        "accepted": "已接单", "assigned": "已指派给", "done": "已办结", "closed": "已关闭",
        "rejected": "已退回", "reopened": "已重新打开", "auto_resolved": "已自动恢复（无人处理）",
    },
    "en": {
        "accepted": "accepted", "assigned": "assigned to", "done": "done", "closed": "closed",
        "rejected": "sent back", "reopened": "reopened", "auto_resolved": "resolved by itself (nobody acted)",
    },
}  # fmt: skip
_ESCALATION = {
    "zh-CN": {"title": "【升级·第{n}级】", "why": {
        "no_accept": "无人接单", "accept_expired": "已接单但超时未办结", "rejected": "被退回",
        "reopened": "重新打开"}, "order": "工单", "since": "派单于"},
    "en": {"title": "[ESCALATED step {n}] ", "why": {
        "no_accept": "nobody accepted", "accept_expired": "accepted but not done in time",
        "rejected": "sent back", "reopened": "reopened"}, "order": "Work order", "since": "dispatched"},
}  # fmt: skip


def local_time(ts: float, tz: ZoneInfo, fmt: str = "%H:%M") -> str:
    return datetime.fromtimestamp(ts, tz).strftime(fmt)


def escalation_title(entry: Entry, locale: str) -> tuple[str, str]:
    """The prefix of an escalated alert's title, and the line saying why."""
    w = _ESCALATION.get(locale, _ESCALATION["en"])
    step, _, reason = entry.note.partition(": ")
    n = step.removeprefix("step ")
    why: dict[str, str] = w["why"]  # type: ignore[assignment]
    return str(w["title"]).format(n=n), why.get(reason, reason)


def update_words(wo: WorkOrder, entry: Entry, *, locale: str, tz: ZoneInfo) -> tuple[str, str]:
    """(title, text) of one state change: what, who, when, and the job's id."""
    words = _ACTION.get(locale, _ACTION["en"])
    what = words.get(entry.action, entry.action)
    when = local_time(entry.at, tz)
    if locale == "zh-CN":
        who = f"{entry.by} " if entry.by and entry.action != "assigned" else ""
        extra = f" {entry.note}" if entry.action == "assigned" else ""
        title = f"【工单{what}】{wo.title}"
        text = f"{wo.title}：{who}于 {when} {what}{extra}\n工单：{wo.id}"
    else:
        who = f" by {entry.by}" if entry.by and entry.action != "assigned" else ""
        extra = f" {entry.note}" if entry.action == "assigned" else ""
        title = f"[Work order {what}] {wo.title}"
        text = f"{wo.title}: {what}{extra}{who} at {when}\nWork order: {wo.id}"
    if entry.note and entry.action in ("done", "rejected", "reopened"):
        text += f"\n{entry.note}"
    return title, text


def change_data(wo: WorkOrder, entry: Entry) -> dict[str, Any]:
    """The structured form of a change: InfluxDB's point and the webhook's `data`."""
    return {
        "workOrder": wo.id,
        "action": entry.action,
        "state": entry.state.value,
        "by": entry.by,
        "note": entry.note,
        "source": entry.source,
        "at": entry.at,
        "rule": wo.rule,
        "family": wo.family,
        "community": wo.community,
        "grid": wo.grid,
        "deviceId": wo.device_id,
        "lifeSafety": wo.life_safety,
        "openedAt": wo.opened_at,
    }
