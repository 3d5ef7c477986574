"""The console's words in zh-CN (the default: the duty offices read Chinese) and English.
Chinese text uses full-width punctuation."""

from __future__ import annotations

LANGS = ("zh-CN", "en")

WORDS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "title": "sensord 值班台", "orders": "工单", "silences": "静默", "kpi": "近7天统计",
        "login": "登录", "logout": "退出", "token": "访问令牌", "login_hint": "请输入值班台的访问令牌。",
        "signed_in": "当前用户", "role": "角色", "all": "全部",
        "open_orders": "待处理工单", "none_open": "没有待处理的工单。",
        "id": "工单号", "rule": "告警", "device": "设备", "where": "社区与网格", "state": "状态",
        "assignee": "处理人", "age": "已过", "sla": "时限", "actions": "操作",
        "accept": "接单", "assign": "指派", "done": "办结", "comment": "备注", "to": "指派给",
        "note": "说明", "send": "提交", "life_safety": "生命安全",
        "sla_ok": "正常", "sla_due_soon": "即将超时", "sla_breached": "已超时", "sla_none": "—",
        "sla_accept": "接单", "sla_done": "办结", "deadline": "时限",
        "timeline": "处理记录", "at": "时间", "action": "动作", "by": "操作人", "back": "返回工单列表",
        "reload": "最近一次规则重载", "reload_none": "自启动以来未重载规则。", "reload_ok": "成功",
        "reload_failed": "失败，仍沿用原规则", "added": "新增", "removed": "删除", "changed": "修改",
        "matchers": "匹配条件（每行一条）", "duration": "时长（如 2h）", "reason": "屏蔽生命安全告警的理由",
        "hold_life_safety": "同时屏蔽生命安全告警", "create": "新建静默", "expire": "结束",
        "active": "生效中", "pending": "未开始", "expired": "已结束", "from": "开始", "until": "结束",
        "none_silences": "没有静默。", "admin_only": "新建和结束静默需要管理员角色。",
        "community": "社区", "count": "工单数", "accepted": "已接单", "done_closed": "已办结或关闭",
        "auto_resolved": "自动恢复", "closure_rate": "办结率", "accept_p50": "接单用时中位数",
        "done_p50": "办结用时中位数", "breaches": "超时（接单/办结）", "mean_rating": "平均评分（评价数）",
        "group_by": "分组：", "by_community": "社区", "by_grid": "网格", "by_team": "首派接收方",
        "by_rule": "告警规则", "none_kpi": "最近7天没有工单。",
        "kpi_hint": "按派单时间统计最近7天的工单。", "more": "另有 {n} 条未显示。",
        "refused": "未执行：", "ok_done": "已完成：",
    },
    "en": {
        "title": "sensord console", "orders": "Work orders", "silences": "Silences", "kpi": "Last 7 days",
        "login": "Log in", "logout": "Log out", "token": "Access token",
        "login_hint": "Enter your desk's access token.", "signed_in": "Signed in as", "role": "role",
        "all": "all", "open_orders": "Open work orders", "none_open": "No open work orders.",
        "id": "ID", "rule": "Alert", "device": "Device", "where": "Community / grid", "state": "State",
        "assignee": "Assignee", "age": "Age", "sla": "SLA", "actions": "Actions",
        "accept": "Accept", "assign": "Assign", "done": "Done", "comment": "Comment", "to": "Assign to",
        "note": "Note", "send": "Send", "life_safety": "life-safety",
        "sla_ok": "ok", "sla_due_soon": "due soon", "sla_breached": "breached", "sla_none": "—",
        "sla_accept": "accept", "sla_done": "done", "deadline": "deadline",
        "timeline": "Timeline", "at": "Time", "action": "Action", "by": "By", "back": "Back to the list",
        "reload": "Last rule reload", "reload_none": "No rule reload since sensord started.",
        "reload_ok": "ok", "reload_failed": "failed; the previous rules stay in force",
        "added": "added", "removed": "removed", "changed": "changed",
        "matchers": "Matchers (one per line)", "duration": "Duration (e.g. 2h)",
        "reason": "Why life-safety alerts may be held", "hold_life_safety": "Also hold life-safety alerts",
        "create": "Create silence", "expire": "Expire", "active": "active", "pending": "pending",
        "expired": "expired", "from": "From", "until": "Until", "none_silences": "No silences.",
        "admin_only": "Creating and expiring silences needs the admin role.",
        "community": "Community", "count": "Work orders", "accepted": "Accepted",
        "done_closed": "Done/closed",
        "auto_resolved": "Auto-resolved", "closure_rate": "Closure rate", "accept_p50": "Accept time p50",
        "done_p50": "Done time p50", "breaches": "SLA breaches (accept/done)",
        "mean_rating": "Mean rating (rated)", "group_by": "Group by: ", "by_community": "Community",
        "by_grid": "Grid", "by_team": "Team (first sent to)", "by_rule": "Rule",
        "none_kpi": "No work orders in the last 7 days.",
        "kpi_hint": "Work orders dispatched in the last 7 days.",
        "more": "{n} more not shown.", "refused": "Not done: ", "ok_done": "Done: ",
    },
}  # fmt: skip

# The headings and legends of the KPI plots (sensord.report.kpi_plots); English is the
# report's own words.
PLOT_WORDS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "accept": "接单用时（派单至首次接单）", "dots": "每个点是一张工单；粗线：中位数（p50），细线：p90。",
        "done": "办结用时（派单至办结）",
        "closure": "办结率（已办结和已关闭的工单占自动恢复以外全部工单的比例）",
        "breaches": "超时", "accept_passed": "超过接单时限，", "done_passed": "超过办结时限。",
    },
    "en": {},
}  # fmt: skip

# Work-order states and history actions, as a duty officer says them.
STATES: dict[str, dict[str, str]] = {
    "zh-CN": {
        "dispatched": "已派单", "accepted": "已接单", "done": "已办结", "closed": "已关闭",
        "reopened": "重新打开", "rejected": "已退回", "auto_resolved": "自动恢复",
        "opened": "派单", "assigned": "指派", "comment": "备注", "feedback": "评价", "escalated": "升级",
        "accept_expired": "接单后超时", "sla_breach": "超时", "condition_cleared": "告警已恢复",
    },
    "en": {},
}  # fmt: skip


def lang_of(query: str | None, cookie: str | None) -> str:
    """The language asked for (`?lang=`), else remembered (cookie), else zh-CN."""
    for choice in (query, cookie):
        if choice in LANGS:
            return choice
    return LANGS[0]


def state_word(lang: str, key: str) -> str:
    return STATES.get(lang, {}).get(key, key.replace("_", " "))
