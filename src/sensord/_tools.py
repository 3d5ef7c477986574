"""Operator and field-tester commands that need no running daemon: `rules check`,
`rules test`, `replay`. Each prints for a person and returns the exit status."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pydantic import SecretStr

from sensord._errors import ConfigError, RecordingError, RuleError
from sensord._metrics import Metrics
from sensord._registry import Registry, load_registry, parse_registry
from sensord._settings import BrokerSettings, SecretRef, Settings, load_settings
from sensord._types import AlertStatus
from sensord.dispatch import Dispatcher, read_dispatch
from sensord.dispatch._build import build_desk, builtin_receivers
from sensord.replay import Limits, Progress, ReplayResult, compare, play, read_recording, record, replay
from sensord.rules import check_rule_files, load_rule_files, rule_files
from sensord.ruletest import run_test_file
from sensord.sinks._webhook import webhook_body

DEFAULT_RULES = Path("rules")


def _expand(paths: list[Path], pattern: str) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.extend(sorted(p.glob(pattern)) if p.is_dir() else [p])
    return out


def rules_check(paths: list[Path], config: Path | None) -> int:
    """`sensord rules check [FILES]`: every problem as file:line: reason; 1 on any."""
    registry = Registry.from_entries({})
    try:
        if config is not None:
            settings = load_settings(config)
            registry = load_registry(settings.input_path(settings.registry))
            paths = paths or [settings.input_path(settings.rules_dir)]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = [f for p in paths or [DEFAULT_RULES] for f in (rule_files(p) if p.is_dir() else [p])]
    errors = check_rule_files(files, registry)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    if errors:
        print(f"{len(errors)} problem(s) in {len(files)} file(s)", file=sys.stderr)
        return 1
    rules = load_rule_files(files, registry)
    print(f"ok: {rules.rule_count} rules in {len(files)} file(s)")
    return 0


def rules_test(paths: list[Path]) -> int:
    """`sensord rules test FILES`: run rule unit tests; 1 if any case fails."""
    files = _expand(paths, "*_test.yaml")
    if not files:
        print("error: no test files (*_test.yaml) found", file=sys.stderr)
        return 1
    cases = failed = broken = 0
    for path in files:
        res = run_test_file(path)
        print(str(path))
        if res.error is not None:
            broken += 1
            print(f"  ERROR {res.error}")
            continue
        for case in res.cases:
            cases += 1
            if case.ok:
                print(f"  ok    {case.name}")
                continue
            failed += 1
            print(f"  FAIL  {case.name}")
            for f in case.failures:
                print(f"        {f}")
    summary = f"{cases} case(s) in {len(files)} file(s): {cases - failed} passed, {failed} failed"
    if broken:
        summary += f", {broken} file(s) could not run"
    print(summary)
    return 1 if failed or broken else 0


def _replay_inputs(args: argparse.Namespace) -> tuple[Settings, Registry, Path]:
    if args.config is not None:
        settings = load_settings(args.config)
        registry_path = args.registry or settings.input_path(settings.registry)
        rules_dir = args.rules or settings.input_path(settings.rules_dir)
    else:
        if args.registry is None:
            raise ConfigError("give -c CONFIG, or --registry FILE (and --rules DIR)", source="replay")
        settings = Settings()
        registry_path, rules_dir = args.registry, args.rules or DEFAULT_RULES
    # A recording made elsewhere (or generated) is judged by its own receive times.
    settings = settings.model_copy(
        update={"decode": settings.decode.model_copy(update={"max_clock_skew_s": 0})}
    )
    return settings, load_registry(registry_path), rules_dir


def _iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def replay_command(args: argparse.Namespace) -> int:
    """`sensord replay FILE`: the alert timeline of a recording under a rule set."""
    try:
        settings, registry, rules_dir = _replay_inputs(args)
        rules = load_rule_files(rule_files(rules_dir), registry)
        dispatcher = _replay_dispatcher(settings, registry) if args.notifications else None
        show = Progress("replayed")
        result = replay(
            read_recording(args.recording),
            registry=registry,
            rules=rules,
            settings=settings,
            on_batch=show.add,
            dispatcher=dispatcher,
        )
        show.done()
    except (ConfigError, RuleError, RecordingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.compare is not None:
        return _compare(args, settings, registry, rules_dir, result)
    if args.report is not None:
        from sensord.report import write_report  # noqa: PLC0415 - only when asked

        index = write_report(args.report, read_recording(args.recording), result, registry, rules)
        print(f"report: {index}", file=sys.stderr)
    if dispatcher is not None:
        return _print_notices(result)
    shown = sorted(result.events if args.all else result.notifications(), key=lambda e: e.event_time)
    for e in shown:
        if args.json:
            sys.stdout.write(orjson.dumps({"eventId": e.event_id, **webhook_body(e)}).decode() + "\n")
            continue
        mark = "*" if e.life_safety else " "
        head = f"{_iso(e.event_time)} {mark}{e.status.value:<9}{e.severity.value:<9}"
        print(f"{head}{e.rule:<28}{e.device_id:<12}{e.summary}")
    firing = sum(1 for e in result.events if e.status is AlertStatus.FIRING and not e.repeat)
    rejects = ", ".join(f"{k} {v}" for k, v in sorted(result.rejects.items())) or "none"
    print(
        f"replayed {result.messages} messages ({result.accepted} accepted; rejects: {rejects}); "
        f"{firing} alerts fired, {len(result.events)} events",
        file=sys.stderr,
    )
    return 0


def _replay_dispatcher(settings: Settings, registry: Registry) -> Dispatcher:
    """The daemon's dispatch stage without its channels (nothing is sent) or silences."""
    if settings.dispatch is None:
        raise ConfigError("--notifications needs -c CONFIG whose `dispatch:` names a dispatch file")
    loaded = read_dispatch(settings.input_path(settings.dispatch))
    spec = loaded.spec
    per_person = {
        sink: c.type == "sms"
        for r in spec.receivers
        for c, sink in zip(r.channels, r.channel_sinks(), strict=True)
    }
    # With work orders: a replayed day escalates exactly as it did live.
    return Dispatcher(
        spec, registry, Metrics(), per_recipient=per_person, builtin=builtin_receivers(settings),
        desk=build_desk(loaded),
    )  # fmt: skip


def _print_notices(result: ReplayResult) -> int:
    """Each message a receiver's channel would get, in the order they were made."""
    for n in sorted(result.notices, key=lambda n: n.at):
        m = n.message
        mark = "*" if m.life_safety else " "
        people = ", ".join(p.name for p in m.recipients)
        print(f"{_iso(n.at)} {mark}{n.sink:<28}{m.title}" + (f"  -> {people}" if people else ""))
    waiting = [g for g in result.waiting if g.sent_at is None or g.changed]
    for g in waiting:
        print(f"waiting at the end: {g.receiver} group {g.labels} with {len(g.alerts)} alert(s)")
    print(f"{len(result.notices)} messages; {len(waiting)} groups still waiting", file=sys.stderr)
    return 0


def _compare(
    args: argparse.Namespace, settings: Settings, registry: Registry, rules_dir: Path, base: ReplayResult
) -> int:
    """Replay the same recording under a second rule folder; print what changes. Exit 0
    when the two agree, 1 when they differ (so a script can gate a deploy on it)."""
    try:
        other_rules = load_rule_files(rule_files(args.compare), registry)
    except RuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    other = replay(read_recording(args.recording), registry=registry, rules=other_rules, settings=settings)
    diff = compare(base.events, other.events)

    def span(iv: tuple[float, float | None]) -> str:
        return f"{_iso(iv[0])} .. {_iso(iv[1]) if iv[1] is not None else 'still firing'}"

    print(f"comparing {rules_dir} (A) with {args.compare} (B) on {args.recording}")
    for rule, dev, iv in diff.removed:
        print(f"  - only in A  {rule:<28}{dev:<12}{span(iv)}")
    for rule, dev, iv in diff.added:
        print(f"  + only in B  {rule:<28}{dev:<12}{span(iv)}")
    for rule, dev, a, b in diff.changed:
        print(f"  ~ timing     {rule:<28}{dev:<12}A {span(a)}  B {span(b)}")
    print(
        f"{diff.same} alerts the same, {len(diff.removed)} only in A, {len(diff.added)} only in B, "
        f"{len(diff.changed)} with other times"
    )
    return 1 if diff.differs else 0


def _broker(
    args: argparse.Namespace, client_id: str, subscriptions: tuple[str, ...]
) -> tuple[BrokerSettings, SecretStr | None]:
    password = None
    if args.password_file is not None:
        password = SecretRef(file=args.password_file).read(Path.cwd())
    settings = BrokerSettings(
        host=args.host,
        port=args.port,
        client_id=client_id,
        clean_session=True,
        username=args.username,
        subscriptions=subscriptions,
        # Filters given by hand are all that is recorded; by default acks are recorded too.
        ack_topic_template=None if getattr(args, "topic", None) else BrokerSettings().ack_topic_template,
        qos=1,
    )
    return settings, password


def record_command(args: argparse.Namespace) -> int:
    """`sensord record`: live traffic to a recording, until a limit or Ctrl-C."""
    settings, password = _broker(args, f"sensord-record-{os.getpid()}", tuple(args.topic or ["sensord/#"]))
    limits = Limits(
        messages=args.max_messages,
        seconds=args.max_seconds,
        bytes=int(args.max_mb * 1e6) if args.max_mb is not None else None,
    )
    try:
        n = asyncio.run(record(settings, args.out, limits, password=password))
    except KeyboardInterrupt:
        n = -1
    print(f"recorded to {args.out}" + (f": {n} messages" if n >= 0 else ""), file=sys.stderr)
    return 0


def play_command(args: argparse.Namespace) -> int:
    """`sensord play FILE`: publish a recording at --speed or --fast."""
    settings, password = _broker(args, f"sensord-play-{os.getpid()}", ())
    try:
        total = sum(1 for _ in read_recording(args.recording))
        speed = None if args.fast else args.speed
        coro = play(
            read_recording(args.recording),
            settings,
            speed=speed,
            qos=args.qos,
            max_inflight=args.max_inflight,
            total=total,
            password=password,
        )
        n = asyncio.run(coro)
    except RecordingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"published {n} messages from {args.recording}", file=sys.stderr)
    return 0


__all__ = ["parse_registry", "play_command", "record_command", "replay_command", "rules_check", "rules_test"]
