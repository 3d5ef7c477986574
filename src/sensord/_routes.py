"""`sensord routes test`: which receivers, channels and people an alert would reach, like
`amtool config routes test`, from the dispatch file alone or with the config's registry
and rules (`--device` fills in the place, `--rule` the rule's labels and dispatch list)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sensord._errors import ConfigError, RuleError
from sensord._registry import Registry, load_registry
from sensord._settings import Settings, load_settings
from sensord.dispatch import Router, read_dispatch
from sensord.dispatch._recipients import recipients


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    routes = sub.add_parser("routes", help="dispatch tooling: where would an alert go")
    test = routes.add_subparsers(dest="routes_command", required=True).add_parser(
        "test", help="print the receivers, channels and people an alert with these labels reaches"
    )
    test.add_argument("-c", "--config", type=Path, help="config: its dispatch file, registry and rules")
    test.add_argument("--dispatch", type=Path, help="dispatch file (default: the config's `dispatch:`)")
    test.add_argument("--device", help="take community, grid, building and family from this device")
    test.add_argument("--rule", help="take family, severity, life_safety, labels and dispatch from this rule")
    test.add_argument("--labels", nargs="*", default=[], metavar="K=V", help="labels to set (win over those)")


def routes_test(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config) if args.config is not None else None
        loaded = read_dispatch(_dispatch_path(args, settings))
        registry = load_registry(settings.input_path(settings.registry)) if settings else Registry({})
        labels, dispatch = _labels(args, settings, registry)
    except (ConfigError, RuleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    builtin = ("webhook",) if settings is not None and settings.sinks.webhook is not None else ()
    router = Router(loaded.spec, builtin=builtin)
    routed = router.route(labels, dispatch)
    by_name = {r.name: r for r in loaded.spec.receivers}
    print(", ".join(r.receiver for r in routed))
    for r in routed:
        why = f"{r.node.name} ({', '.join(m.text for m in r.node.matchers) or 'default'})"
        if r.via == "rule":
            why = f"the rule's dispatch list, grouped as {r.node.name}"
        receiver = by_name.get(r.receiver)
        channels = ", ".join(c.type for c in receiver.channels) if receiver else "sinks.webhook"
        people = ""
        if receiver is not None:
            found = recipients(
                receiver,
                device_id=labels.get("device", ""),
                community=labels.get("community", ""),
                grid=labels.get("grid", ""),
                registry=registry,
            )
            people = "; ".join(f"{p.name} {p.phone or p.email or ''}".strip() for p in found)
        group = f"group_by [{', '.join(r.node.group_by)}]"
        if labels.get("life_safety") == "true":
            group = "never grouped or delayed (life-safety)"
        print(f"  {r.receiver}: via {why}; channels: {channels or 'none'}; {group}")
        if people:
            print(f"    to: {people}")
    print("  labels: " + " ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    return 0


def _dispatch_path(args: argparse.Namespace, settings: Settings | None) -> Path:
    if args.dispatch is not None:
        return Path(args.dispatch)
    if settings is None or settings.dispatch is None:
        raise ConfigError("give --dispatch FILE, or -c CONFIG whose `dispatch:` names one")
    return settings.input_path(settings.dispatch)


def _labels(
    args: argparse.Namespace, settings: Settings | None, registry: Registry
) -> tuple[dict[str, str], tuple[str, ...]]:
    labels: dict[str, str] = {}
    dispatch: tuple[str, ...] = ()
    family = None
    if args.device:
        device = registry.get(args.device)
        if device is None:
            raise ConfigError(f"device {args.device!r} is not in the registry (-c CONFIG names the registry)")
        e = device.entry
        family = e.family
        labels |= {**e.labels, "family": e.family.value, "community": e.community, "grid": e.grid}
        labels |= {"building": e.building or "", "device": args.device}
    if args.rule:
        if settings is None:
            raise ConfigError("--rule needs -c CONFIG (the rules are found through it)")
        from sensord.rules import load_rule_files, rule_files  # noqa: PLC0415 - numpy-heavy

        rules = load_rule_files(rule_files(settings.input_path(settings.rules_dir)), registry)
        found = [
            r
            for f, fr in rules.by_family.items()
            for r in fr.rules
            if r.name == args.rule and family in (None, f)
        ]
        if not found:
            raise ConfigError(f"no rule {args.rule!r}" + (f" for {family.value} devices" if family else ""))
        rule = found[0]
        labels = {**rule.labels, **labels, "family": rule.family.value, "rule": rule.name}
        labels |= {"severity": rule.severity.value, "life_safety": "true" if rule.life_safety else "false"}
        dispatch = rule.dispatch
    for kv in args.labels:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise ValueError(f"labels are written k=v, got {kv!r}")
        labels[key] = value
    return labels, dispatch
