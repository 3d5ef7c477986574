"""Static checks of a dispatch file against the rules and the registry, as `sensord check`
runs them: every problem as `file:line: reason`, so an operator can act on each.

A route is judged by the alerts that can exist: every rule (each level's severity) for
every place its family's devices are registered (community, grid, building, device
labels), plus the community-silence alert. A route that none of them reaches either has
matchers that nothing satisfies (a misspelt family, a rule that does not exist) or is
shadowed by an earlier sibling that takes all its alerts without `continue: true`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sensord._registry import Registry
from sensord._types import Family
from sensord.alerts._model import COMMUNITY_RULE
from sensord.dispatch._routing import RouteNode, Router
from sensord.dispatch._spec import LoadedDispatch
from sensord.rules import RuleSet


@dataclass(frozen=True)
class Shape:
    """One kind of alert that can exist: its labels, and the rule's dispatch list."""

    labels: dict[str, str]
    dispatch: tuple[str, ...]
    source: str  # the rule's file:line


def alert_shapes(rules: RuleSet, registry: Registry) -> Iterator[Shape]:
    """Every distinct label set an alert can carry (devices collapsed by place and labels)."""
    for family, fr in rules.by_family.items():
        places: dict[tuple[str, ...], dict[str, str]] = {}  # one device stands for its place
        for d in registry.devices(family):
            e = d.entry
            place = {"community": e.community, "grid": e.grid, "building": e.building or "", **e.labels}
            key = tuple(sorted(f"{k}={v}" for k, v in place.items()))
            places.setdefault(key, {**place, "device": d.device_id})
        for rule in fr.rules:
            for sev in {lv.severity.value for lv in rule.levels} or {rule.severity.value}:
                fixed = {
                    "family": family.value,
                    "rule": rule.name,
                    "severity": sev,
                    "life_safety": "true" if rule.life_safety else "false",
                }
                for place in places.values():
                    yield Shape({**place, **rule.labels, **fixed}, rule.dispatch, rule.source)
    for community in sorted({d.entry.community for f in Family for d in registry.devices(f)}):
        labels = {
            "team": "operations", "family": "community", "rule": COMMUNITY_RULE, "severity": "critical",
            "life_safety": "true", "community": community, "grid": "", "building": "", "device": "",
        }  # fmt: skip
        yield Shape(labels, ("operator", "grid_worker"), "(built in: community silence)")


def check_dispatch(loaded: LoadedDispatch, router: Router, rules: RuleSet, registry: Registry) -> list[str]:
    """Every problem of the dispatch file, as `file:line: reason` lines."""
    problems = _receiver_problems(loaded, router)
    shapes = list(alert_shapes(rules, registry))
    reached: set[tuple[int | str, ...]] = set()
    for shape in shapes:
        _visit(router.root, shape.labels, reached)
    for parent in router.root.walk():
        for i, node in enumerate(parent.children):
            if node.loc in reached or parent.loc not in reached:
                continue  # an unreached parent is reported, not each node below it
            mine = [s for s in shapes if parent.matches(s.labels) and node.matches(s.labels)]
            if not mine:
                said = ", ".join(m.text for m in node.matchers)
                why = f"no alert can match {said} (no such rule, family or place)"
            else:
                takers = [
                    n.name
                    for n in parent.children[:i]
                    if not n.continue_ and any(n.matches(s.labels) for s in mine)
                ]
                why = (
                    f"{' and '.join(takers)} above take every alert it would match (add `continue: true` "
                    "there, or move this route up)"
                )
            problems.append(f"{loaded.where(*node.loc)}: {node.name}: {why}")
    problems.extend(_escalation_problems(loaded, router, shapes))
    problems.extend(_inhibit_problems(loaded, router, shapes))
    problems.extend(_quiet_hours_problems(loaded, router, shapes))
    if router.spec.rule_dispatch:
        for shape in shapes:
            problems.extend(
                f"{shape.source}: rule {shape.labels['rule']} dispatches to {name!r}, not a receiver in "
                f"{loaded.path}"
                for name in shape.dispatch
                if name not in router.receivers and shape.labels["rule"] != COMMUNITY_RULE
            )
    return sorted(set(problems), key=problems.index)


def _escalation_problems(loaded: LoadedDispatch, router: Router, shapes: list[Shape]) -> list[str]:
    """Unknown policies on routes, unknown receivers in steps, and life-safety alerts
    whose work orders would never escalate."""
    spec = router.spec
    names = ", ".join(sorted(spec.escalations)) or "none"
    problems = [
        f"{loaded.where(*node.loc, 'escalation')}: {node.name}: unknown escalation policy "
        f"{node.escalation!r} (escalations: {names})"
        for node in router.root.walk()
        if node.escalation is not None and node.escalation not in spec.escalations
    ]
    for name, policy in spec.escalations.items():
        for i, step in enumerate(policy.steps):
            problems.extend(
                f"{loaded.where('escalations', name, 'steps', i, 'notify')}: escalations.{name}.steps[{i}]: "
                f"unknown receiver {r!r}"
                for r in step.notify
                if r not in router.receivers
            )
    if spec.escalations:
        bare = sorted(
            {s.labels["rule"] for s in shapes if s.labels["life_safety"] == "true"
             and not any(n.escalation for n in router.landings(s.labels))}
        )  # fmt: skip
        if bare:
            problems.append(
                f"{loaded.where('route')}: life-safety alerts of {', '.join(bare)} land on routes without "
                "an escalation policy: nobody is told if their work order is not accepted"
            )
    return problems


def _inhibit_problems(loaded: LoadedDispatch, router: Router, shapes: list[Shape]) -> list[str]:
    """Inhibit rules that could hold back a life-safety alert, or that match nothing."""
    problems = []
    for i, rule in enumerate(router.spec.inhibit_rules):
        targets = [s for s in shapes if all(m.matches(s.labels) for m in rule.target_matchers)]
        sources = [s for s in shapes if all(m.matches(s.labels) for m in rule.source_matchers)]
        safety = sorted({s.labels["rule"] for s in targets if s.labels["life_safety"] == "true"})
        if safety:
            problems.append(
                f"{loaded.where('inhibit_rules', i, 'target_matchers')}: inhibit_rules[{i}]: its targets "
                f"include life-safety alerts ({', '.join(safety)}), which are never held back; narrow "
                'target_matchers (e.g. add life_safety="false")'
            )
        sides = (("source", sources, "source_matchers"), ("target", targets, "target_matchers"))
        for what, found, key in sides:
            if not found:
                problems.append(
                    f"{loaded.where('inhibit_rules', i, key)}: inhibit_rules[{i}]: no alert can match its "
                    f"{what} matchers (no such rule, family or place)"
                )
    return problems


def _quiet_hours_problems(loaded: LoadedDispatch, router: Router, shapes: list[Shape]) -> list[str]:
    """Unknown time intervals, and quiet hours on a route life-safety alerts land on."""
    problems: list[str] = []
    known = router.spec.time_intervals
    safety_lands: set[tuple[int | str, ...]] = set()
    for s in shapes:
        if s.labels["life_safety"] == "true":
            safety_lands.update(n.loc for n in router.landings(s.labels))
    names = ", ".join(sorted(known)) or "none"
    for node in router.root.walk():
        problems.extend(
            f"{loaded.where(*node.loc)}: {node.name}: unknown time interval {name!r} (known: {names})"
            for name in (*node.mute, *node.active)
            if name not in known
        )
        if (node.mute or node.active) and node.loc in safety_lands:
            problems.append(
                f"{loaded.where(*node.loc)}: {node.name}: quiet hours on a route life-safety alerts land on; "
                'they are never muted: give them their own route first, or add life_safety="false"'
            )
    return problems


def _receiver_problems(loaded: LoadedDispatch, router: Router) -> list[str]:
    known = router.receivers
    problems = []
    names = [r.name for r in router.spec.receivers]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(f"{loaded.where('receivers', i, 'name')}: receiver {name!r} is defined twice")
    for node in router.root.walk():
        if not node.receiver:
            problems.append(f"{loaded.where(*node.loc)}: the root route needs a receiver (or sinks.webhook)")
        elif node.receiver not in known:
            problems.append(
                f"{loaded.where(*node.loc, 'receiver')}: {node.name}: unknown receiver {node.receiver!r} "
                f"(receivers: {', '.join(sorted(known))})"
            )
    return problems


def _visit(node: RouteNode, labels: dict[str, str], reached: set[tuple[int | str, ...]]) -> bool:
    if not node.matches(labels):
        return False
    reached.add(node.loc)
    for child in node.children:
        if _visit(child, labels, reached) and not child.continue_:
            break
    return True
