"""The routing tree: which receivers an alert reaches, and with which grouping settings.

Alertmanager's walk: an alert enters the root; at each node the children are tried in
order, the first whose matchers all hold takes it, and the walk goes on past that child
only if it says `continue: true`. A node none of whose children take the alert is where
it lands. Settings a node leaves unset come from its parent. The receivers a rule names
in `dispatch:` are added (with the settings of the first node the alert landed on).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from sensord._types import AlertEvent
from sensord.dispatch._spec import DispatchSpec, Matcher, Route

# Alertmanager's defaults, which operators know: wait 30 s for a group's first message,
# 5 min between updates of a group, 4 h before the same group is sent again.
DEFAULT_GROUP_BY = ("community", "grid", "rule")
DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0
# The labels every alert has, whatever its rule: routes may match on these.
FIXED_LABELS = ("family", "rule", "severity", "life_safety", "community", "grid", "building", "device")


@dataclass(frozen=True)
class RouteNode:
    """A node of the tree with its inherited settings filled in."""

    loc: tuple[int | str, ...]  # where it is in the dispatch file, for file:line
    receiver: str
    matchers: tuple[Matcher, ...]
    continue_: bool
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    mute: tuple[str, ...]
    active: tuple[str, ...]
    on_mute: str
    escalation: str | None
    children: tuple[RouteNode, ...]

    @property
    def name(self) -> str:
        """`route`, `route.routes[1]`, … as an operator finds it in the file."""
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def walk(self) -> list[RouteNode]:
        """This node and every node below it, depth first."""
        return [self, *(n for c in self.children for n in c.walk())]


@dataclass(frozen=True)
class Routed:
    """One receiver an alert reaches, the node that decided it, and why."""

    receiver: str
    node: RouteNode
    via: Literal["route", "rule"]


def compile_tree(
    route: Route, parent: RouteNode | None, loc: tuple[int | str, ...], default: str
) -> RouteNode:
    """The tree with inherited settings; `default` is the root's receiver if it names none."""
    p = parent
    node = RouteNode(
        loc=loc,
        receiver=route.receiver or (p.receiver if p else default),
        matchers=route.matchers,
        continue_=route.continue_,
        group_by=route.group_by if route.group_by is not None else (p.group_by if p else DEFAULT_GROUP_BY),
        group_wait_s=_pick(route.group_wait, p.group_wait_s if p else DEFAULT_GROUP_WAIT_S),
        group_interval_s=_pick(route.group_interval, p.group_interval_s if p else DEFAULT_GROUP_INTERVAL_S),
        repeat_interval_s=_pick(
            route.repeat_interval, p.repeat_interval_s if p else DEFAULT_REPEAT_INTERVAL_S
        ),
        mute=_inherit(route.mute_time_intervals, p.mute if p else ()),
        active=_inherit(route.active_time_intervals, p.active if p else ()),
        on_mute=route.on_mute or (p.on_mute if p else "defer"),
        escalation=route.escalation or (p.escalation if p else None),
        children=(),
    )
    kids = tuple(compile_tree(r, node, (*loc, "routes", i), default) for i, r in enumerate(route.routes))
    return RouteNode(**{**node.__dict__, "children": kids})


def _inherit(value: tuple[str, ...] | None, inherited: tuple[str, ...]) -> tuple[str, ...]:
    return inherited if value is None else value


def _pick(value: float | None, inherited: float) -> float:
    return inherited if value is None else value


def alert_labels(event: AlertEvent) -> dict[str, str]:
    """What routes match on: the rule's and the device's labels, then the fixed ones
    (which win: a rule label cannot pretend an alert is from another community)."""
    fixed = {
        "family": event.family,
        "rule": event.rule,
        "severity": event.severity.value,
        "life_safety": "true" if event.life_safety else "false",
        "community": event.community,
        "grid": event.grid,
        "building": str(event.location.get("building", "")),
        "device": event.device_id,
    }
    return {**event.labels, **fixed}


class Router:
    """The compiled routing tree of one dispatch spec."""

    def __init__(self, spec: DispatchSpec, *, builtin: tuple[str, ...] = ()) -> None:
        """`builtin`: receivers that exist without a definition in the file (`webhook`,
        today's sinks.webhook, when configured); the first is the default receiver."""
        self.spec = spec
        self.root = compile_tree(spec.route, None, ("route",), builtin[0] if builtin else "")
        self.receivers = {r.name for r in spec.receivers} | set(builtin)

    def landings(self, labels: Mapping[str, str]) -> list[RouteNode]:
        """The nodes an alert with these labels lands on, in tree order."""
        return _walk(self.root, labels) or [self.root]

    def route(self, labels: Mapping[str, str], dispatch: Sequence[str] = ()) -> list[Routed]:
        """Every receiver the alert reaches, each once, tree receivers first."""
        nodes = self.landings(labels)
        out: list[Routed] = []
        seen: set[str] = set()
        for node in nodes:
            if node.receiver not in seen:
                seen.add(node.receiver)
                out.append(Routed(node.receiver, node, "route"))
        if self.spec.rule_dispatch:
            for name in dispatch:
                if name in self.receivers and name not in seen:
                    seen.add(name)
                    out.append(Routed(name, nodes[0], "rule"))
        return out


def _walk(node: RouteNode, labels: Mapping[str, str]) -> list[RouteNode]:
    if not node.matches(labels):
        return []
    out: list[RouteNode] = []
    for child in node.children:
        got = _walk(child, labels)
        if got:
            out.extend(got)
            if not child.continue_:
                break
    return out or [node]
