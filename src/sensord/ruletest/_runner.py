"""Runs rule test files: each case's readings go through the same decode, rules and
alert engine as the daemon, in event time, and the alerts at each `at` are compared."""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sensord._errors import ConfigError, RuleError
from sensord._metrics import Metrics
from sensord._pipeline import Pipeline
from sensord._registry import Registry, parse_registry
from sensord._settings import AlertSettings, DecodeSettings
from sensord._types import AlertEvent, AlertStatus, RawMessage
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.dispatch import Dispatcher, DispatchSpec, read_dispatch
from sensord.dispatch._spec import ChannelSpec
from sensord.outbox import Notice
from sensord.rules import CompiledRule, RuleSet, load_rule_files, rule_files
from sensord.ruletest._spec import (
    Case,
    ExpectedAlert,
    ExpectedEvent,
    Point,
    TestFile,
    expand_series,
    read_test_file,
)
from sensord.sinks import DeadLetter
from sensord.workorders import Desk

# Any fixed origin works: test times are offsets from it, so results never depend on today.
T0 = 1_700_000_000.0
TOPIC = "sensord/{community}/{family}/{device_id}/{kind}"
# Acks come from the dispatch side, as the daemon takes them; dated at receive time.
ACK_TOPIC = "sensord-dispatch/ack/{community}/{family}/{device_id}"


@dataclass
class CaseResult:
    name: str
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class FileResult:
    path: Path
    cases: list[CaseResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.cases)


def _fmt_s(t: float) -> str:
    return f"{t:g}s"


def _messages(case: Case, spec: TestFile, registry: Registry) -> list[RawMessage]:
    """Readings of the case as MQTT messages, in time order."""
    readings: dict[tuple[str, float], dict[str, Any]] = collections.defaultdict(dict)
    for device_id, series in case.input.items():
        if registry.get(device_id) is None:
            raise ValueError(f"input for {device_id!r}, which is not under `devices:`")
        for name, value in series.items():
            if name == "points":
                for raw in value or ():
                    point = Point.model_validate(raw)
                    readings[device_id, point.at].update(point.fields())
                continue
            try:
                values = expand_series(str(value))
            except ValueError as exc:
                raise ValueError(f"input {device_id}.{name}: {exc}") from None
            step = case.interval if case.interval is not None else spec.interval
            for i, v in enumerate(values):
                if v is not None:
                    readings[device_id, i * step][name] = v
    out = []
    for (device_id, at), fields in sorted(readings.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        device = registry.get(device_id)
        assert device is not None
        topic = TOPIC.format(
            community=device.entry.community,
            family=device.family.value,
            device_id=device_id,
            kind="telemetry",
        )
        out.append(RawMessage(topic, orjson.dumps({"ts": T0 + at, **fields}), T0 + at))
    out.extend(_ack_messages(case, registry))
    out.sort(key=lambda m: m.received_at)
    return out


def _ack_messages(case: Case, registry: Registry) -> list[RawMessage]:
    out = []
    for ack in case.acks:
        device = registry.get(ack.device)
        if device is None:
            raise ValueError(f"ack for {ack.device!r}, which is not under `devices:`")
        community, family = device.entry.community, device.family.value
        topic = ACK_TOPIC.format(community=community, family=family, device_id=ack.device)
        body = {"rule": ack.rule, "by": ack.by}
        out.append(RawMessage(topic, orjson.dumps(body), T0 + ack.at))
    return out


def _rule_index(rules: RuleSet) -> dict[str, CompiledRule]:
    return {r.name: r for fr in rules.by_family.values() for r in fr.rules}


def _alert_mismatch(expected: ExpectedAlert, rule: CompiledRule | None, severity: str | None) -> str | None:
    """What differs between an expected alert and the rule (and the alert's current level)."""
    if rule is None:
        return f"{expected.rule}: no such rule"
    sev = severity or rule.severity.value
    if expected.severity is not None and expected.severity.value != sev:
        return f"{expected.rule}/{expected.device}: severity {sev}, expected {expected.severity.value}"
    for k, v in expected.labels.items():
        if rule.labels.get(k) != v:
            return f"{expected.rule}/{expected.device}: label {k}={rule.labels.get(k)!r}, expected {v!r}"
    return None


def run_case(  # noqa: C901 - one case: run it, then each kind of expectation
    case: Case, spec: TestFile, registry: Registry, rules: RuleSet, dispatch: DispatchSpec | None = None
) -> CaseResult:
    result = CaseResult(case.name)
    rejects: list[str] = []
    dead = DeadLetter(
        Path(os.devnull), on_record=lambda r: rejects.append(f"{r.get('reason')}: {r.get('detail')}")
    )
    pipeline = Pipeline(
        decoder=Decoder(registry, DecodeSettings(max_clock_skew_s=0), TOPIC),
        engine=Engine(rules, registry, AlertSettings()),
        ack_topic_template=ACK_TOPIC,
        deadletter=dead,
        metrics=Metrics(),
        dispatcher=_dispatcher(dispatch, registry) if dispatch is not None else None,
    )
    try:
        messages = _messages(case, spec, registry)
    except ValueError as exc:
        result.failures.append(str(exc))
        dead.close()
        return result
    by_name = _rule_index(rules)
    scope = case.rules if case.rules is not None else spec.rules
    unknown = sorted(set(scope or ()) - set(by_name))
    if unknown:
        result.failures.append(f"rules: {', '.join(unknown)} not in the rule files")
    events = []
    last_reading = max((m.received_at - T0 for m in messages), default=0.0)
    checkpoints = sorted({e.at for e in case.expect} | {last_reading})
    if dispatch is not None:
        # Groups fall due on the clock: move it at every reading and every expected
        # message, as a live daemon's batches and idle ticks would.
        checkpoints = sorted({*checkpoints, *(m.received_at - T0 for m in messages)})
        checkpoints += [n.at for n in case.notifications or () if n.at > checkpoints[-1]]
        checkpoints = sorted(set(checkpoints))
    notices: list[Notice] = []
    pos = 0
    for at in checkpoints:
        batch = []
        while pos < len(messages) and messages[pos].received_at <= T0 + at:
            batch.append(messages[pos])
            pos += 1
        if batch:
            ev = pipeline.evaluate(batch)
            events.extend(ev.events)
            notices.extend(ev.notices)
        # The clock moves to each checkpoint as a live daemon's quiet-stream tick would.
        ev = pipeline.tick(T0 + at)
        events.extend(ev.events)
        notices.extend(ev.notices)
        for exp in (e for e in case.expect if e.at == at):
            result.failures.extend(_compare_state(exp.at, exp.alerts, pipeline.engine, by_name, scope))
    dead.close()
    result.failures.extend(f"input rejected by decode ({r})" for r in rejects)
    if case.notifications is not None:
        result.failures.extend(_notice_mismatch(case, notices, has_dispatch=dispatch is not None))
    if case.events is not None:
        wanted = {s.status for s in case.events} | {"firing", "resolved"}
        got = sorted(
            (round(e.event_time - T0, 3), e.rule, e.device_id, e.status.value)
            for e in events
            if e.status.value in wanted and not e.repeat and (scope is None or e.rule in scope)
        )
        want: list[tuple[float, str, str, str]] = sorted(
            (round(e.at, 3), e.rule, e.device, str(e.status)) for e in case.events
        )
        if got != want:
            result.failures.append(
                "events: expected " + _fmt_events(want) + "\n           got " + _fmt_events(got)
            )
        else:
            result.failures.extend(_text_mismatches(case.events, events))
    return result


def _dispatcher(spec: DispatchSpec, registry: Registry) -> Dispatcher:
    """The file's dispatch stage with one stand-in channel per receiver: a test states
    which receivers are told when, whatever channels they have."""
    receivers = tuple(r.model_copy(update={"channels": (ChannelSpec(type="test"),)}) for r in spec.receivers)
    # Work orders too: a test expects escalation steps as notifications at their times.
    sla = {str(k): v for k, v in spec.sla.items()}
    desk = Desk(spec.escalations, sla, spec.work_orders.close_after)
    spec = spec.model_copy(update={"receivers": receivers})
    return Dispatcher(spec, registry, Metrics(), per_recipient={}, desk=desk)


def _notice_mismatch(case: Case, notices: Sequence[Notice], *, has_dispatch: bool) -> list[str]:
    if not has_dispatch:
        return ["notifications: the test file has no `dispatch:` file to route with"]
    got = sorted((round(n.at - T0, 3), n.message.receiver) for n in notices)
    want = sorted((round(n.at, 3), n.receiver) for n in case.notifications or ())
    if got == want:
        return []

    def fmt(items: list[tuple[float, str]]) -> str:
        return "[" + ", ".join(f"{r} at {_fmt_s(t)}" for t, r in items) + "]" if items else "[] (none)"

    return [f"notifications: expected {fmt(want)}\n           got {fmt(got)}"]


def _text_mismatches(expected: Sequence[ExpectedEvent], events: Sequence[AlertEvent]) -> list[str]:
    """Each expected summary (per locale) the matching notification does not have."""
    by_key = {
        (round(e.event_time - T0, 3), e.rule, e.device_id, e.status.value): e for e in events if not e.repeat
    }
    failures = []
    for want in expected:
        event = by_key[round(want.at, 3), want.rule, want.device, str(want.status)]
        for locale, text in want.summary.items():
            got = event.text(locale)[0]
            if got != text:
                where = f"{want.status} {want.rule}/{want.device} at {_fmt_s(want.at)}"
                failures.append(f"events: {where}: {locale} summary {got!r}, expected {text!r}")
    return failures


def _fmt_events(items: Sequence[tuple[float, str, str, str]]) -> str:
    return (
        "[" + ", ".join(f"{s} {r}/{d} at {_fmt_s(t)}" for t, r, d, s in items) + "]" if items else "[] (none)"
    )


def _compare_state(
    at: float,
    expected: tuple[ExpectedAlert, ...],
    engine: Engine,
    by_name: dict[str, CompiledRule],
    scope: tuple[str, ...] | None,
) -> list[str]:
    with_pending = any(e.status == "pending" for e in expected)
    active = engine.active()
    got = collections.Counter(
        (a.rule, a.device_id, a.status.value)
        for a in active
        if (a.status is AlertStatus.FIRING or with_pending) and (scope is None or a.rule in scope)
    )
    want: collections.Counter[tuple[str, str, str]] = collections.Counter(
        (e.rule, e.device, str(e.status)) for e in expected
    )
    failures = []
    if got != want:
        missing = sorted((want - got).elements())
        extra = sorted((got - want).elements())
        parts = []
        if missing:
            parts.append("missing " + ", ".join(f"{s} {r}/{d}" for r, d, s in missing))
        if extra:
            parts.append("unexpected " + ", ".join(f"{s} {r}/{d}" for r, d, s in extra))
        failures.append(f"at {_fmt_s(at)}: " + "; ".join(parts))
    severities = {(a.rule, a.device_id): a.severity for a in active}
    for e in expected:
        problem = _alert_mismatch(e, by_name.get(e.rule), severities.get((e.rule, e.device)))
        if problem:
            failures.append(f"at {_fmt_s(at)}: {problem}")
    return failures


def _registry(spec: TestFile, source: str) -> Registry:
    devices = {
        device_id: {"community": "test", "grid": "g1", **entry} for device_id, entry in spec.devices.items()
    }
    return parse_registry({"devices": devices}, source=source)


def run_test_file(path: Path) -> FileResult:
    """Run every case of one test file. A broken test or rule file is an error, not a pass."""
    out = FileResult(path)
    try:
        spec = read_test_file(path)
        registry = _registry(spec, str(path))
        files = (
            [path.parent / p for p in spec.rule_files] if spec.rule_files else rule_files(path.parent.parent)
        )
        rules = load_rule_files(files, registry)
        dispatch = read_dispatch(path.parent / spec.dispatch).spec if spec.dispatch is not None else None
    except (RuleError, ConfigError) as exc:
        out.error = str(exc)
        return out
    families = {d.family for d in registry.by_id.values()}
    missing = sorted(f.value for f in families if f not in rules.by_family)
    if missing:
        out.error = f"{path}: no rules loaded for family {', '.join(missing)}"
        return out
    for case in spec.tests:
        if case.devices is None:
            out.cases.append(run_case(case, spec, registry, rules, dispatch))
            continue
        unknown = sorted(set(case.devices) - set(spec.devices))
        if unknown:
            out.cases.append(
                CaseResult(case.name, [f"devices: {', '.join(unknown)} not under the file's `devices:`"])
            )
            continue
        sub = spec.model_copy(update={"devices": {d: spec.devices[d] for d in case.devices}})
        sub_registry = _registry(sub, str(path))
        out.cases.append(run_case(case, sub, sub_registry, load_rule_files(files, sub_registry), dispatch))
    return out
