"""From alert events to notices: route each event, resolve its people, write the words,
and make one message per channel (per person, for a channel that texts each phone).

Runs inside the batch, before the commit: the notices are stored in the same outbox
transaction as the events that caused them, so a notification is durable before the
MQTT message behind it is acknowledged, and a batch processed again after a crash makes
the same message ids (they are derived from the event id), which the outbox ignores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple
from zoneinfo import ZoneInfo

import orjson

from sensord._metrics import Metrics
from sensord._registry import Registry
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.channels import Message, Recipient
from sensord.dispatch._group import Group, Groups
from sensord.dispatch._inhibit import Inhibitor
from sensord.dispatch._recipients import recipients
from sensord.dispatch._render import Text, render, render_group
from sensord.dispatch._routing import Routed, Router, alert_labels
from sensord.dispatch._silence import Silencer
from sensord.dispatch._spec import DispatchSpec
from sensord.dispatch._times import in_interval
from sensord.outbox import Notice, SilenceRow, WorkOrderRow, decode_event
from sensord.workorders import (
    TOLD,
    Change,
    Desk,
    Escalation,
    WorkOrder,
    change_data,
    escalation_title,
    observe_changes,
    update_words,
)

log = logging.getLogger("sensord.dispatch")


def message_id(event_id: str, sink: str, person: str = "") -> str:
    """Stable per (event, channel, person): the same after a crash and on every retry."""
    return hashlib.sha256(f"{event_id}\x1f{sink}\x1f{person}".encode()).hexdigest()[:24]


class _LabelsOf(Mapping[str, Mapping[str, str]]):
    """The labels of held alerts, worked out only for those looked at."""

    def __init__(self, held: Mapping[str, AlertEvent]) -> None:
        self._held = held

    def __getitem__(self, fp: str) -> Mapping[str, str]:
        return alert_labels(self._held[fp])

    def __iter__(self) -> Iterator[str]:
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)


class AckSeen(NamedTuple):
    """An MQTT ack the engine applied, and where it came among the batch's events."""

    pos: int  # how many of the batch's events came before it
    device_id: str
    rule: str
    by: str
    at: float


class Dispatcher:
    """Routes a batch's events to notices for the receivers' channels."""

    def __init__(  # noqa: PLR0913 - the stage's collaborators, all but two as keywords
        self,
        spec: DispatchSpec,
        registry: Registry,
        metrics: Metrics,
        *,
        per_recipient: Mapping[str, bool],
        builtin: tuple[str, ...] = (),
        desk: Desk | None = None,
        links: Callable[[str, float], str] | None = None,
        order_sink: str | None = None,
    ) -> None:
        """`per_recipient`: by channel queue name (Receiver.channel_sinks), whether that
        channel sends one message per person (SMS). `desk`: the work orders, opened for
        every firing alert that reaches a receiver. `links(work_order, at)`: the one-tap
        accept link put in a message. `order_sink`: the queue that takes every work-order
        change (InfluxDB)."""
        self.router = Router(spec, builtin=builtin)
        self._receivers = {r.name: r for r in spec.receivers}
        self._sinks = {r.name: r.channel_sinks() for r in spec.receivers}
        self._per_recipient = per_recipient
        self._registry = registry
        self._metrics = metrics
        self._tz = ZoneInfo(spec.timezone)
        self.groups = Groups()
        self._intervals = spec.time_intervals
        self.inhibitor = Inhibitor(spec.inhibit_rules)
        self.silencer = Silencer()
        # Returns the stored silences when they changed since the last call, else None
        # (the daemon asks the outbox; `sensord silence` writes there from another process).
        self.silence_source: Callable[[], Sequence[SilenceRow] | None] | None = None
        self.desk = desk
        self._links = links
        self._order_sink = order_sink
        self._rows: list[WorkOrderRow] = []

    def notices(
        self, events: Sequence[AlertEvent], clock: float | None = None, acks: Sequence[AckSeen] = ()
    ) -> list[Notice]:
        """The messages a batch's events make now: life-safety at once, ordinary ones
        into their groups, unless a silence or an inhibit rule holds them back; then the
        held alerts let go at `clock` (the stream's event time), and the groups due.
        `acks` accept work orders, in their place among the events."""
        if self.silence_source is not None and (rows := self.silence_source()) is not None:
            self.silencer.refresh(rows)
        out: list[Notice] = []
        pending = list(acks)
        for i, e in enumerate(events):
            while pending and pending[0].pos <= i:
                self._acknowledged(pending.pop(0))
            if e.status not in (AlertStatus.FIRING, AlertStatus.RESOLVED):
                continue
            if e.status is AlertStatus.RESOLVED and self.desk is not None:
                self.desk.cleared(e)
            labels = alert_labels(e)
            self.inhibitor.observe(e, labels)
            if e.status is AlertStatus.RESOLVED and (self.silencer.drop(e) or self.inhibitor.drop(e)):
                continue  # held back all along: never told, so nothing to close
            out.extend(self._admit(e, labels, e.event_time))
        for a in pending:
            self._acknowledged(a)
        out.extend(self._let_go(clock))
        if clock is not None:
            for g in self.groups.take_due(clock, self._muted):
                out.extend(self._grouped(g, clock))
        out.extend(self.work_order_notices(clock))
        return out

    def _acknowledged(self, a: AckSeen) -> None:
        if self.desk is not None:
            self.desk.acknowledged(a.device_id, a.rule, a.by, a.at)

    def work_order_notices(self, clock: float | None = None) -> list[Notice]:
        """The escalation steps due by `clock`, then the messages of every work-order
        change since the last call (an API action calls this without a clock)."""
        if self.desk is None:
            return []
        if clock is not None:
            self.desk.due(clock)
        taken = self.desk.take()
        self._rows.extend(taken.rows)
        out: list[Notice] = []
        for esc in taken.escalations:
            out.extend(self._escalate(esc))
        observe_changes(self._metrics, taken.changes, self.desk)
        for change in taken.changes:
            out.extend(self._tell(change))
        return out

    def work_order_rows(self) -> list[WorkOrderRow]:
        """The work orders changed since the last call, to commit."""
        rows, self._rows = self._rows, []
        return rows

    def _muted(self, g: Group, clock: float) -> bool:
        """Is the group's route in its quiet hours at `clock` (event time, local zone)?"""
        intervals = self._intervals
        if any(in_interval(intervals[name], clock, self._tz) for name in g.mute if name in intervals):
            return True
        return bool(g.active) and not any(
            in_interval(intervals[name], clock, self._tz) for name in g.active if name in intervals
        )

    def _let_go(self, clock: float | None) -> list[Notice]:
        """Held alerts that no silence (at `clock`) or inhibit rule holds any more."""
        out: list[Notice] = []
        if clock is not None and self.silencer.held:
            held = self.silencer.held
            for e in self.silencer.released(clock, {fp: alert_labels(h) for fp, h in held.items()}):
                out.extend(self._admit(e, alert_labels(e), clock))
        if self.inhibitor.held:
            held = self.inhibitor.held
            for e in self.inhibitor.released(_LabelsOf(held)):
                out.extend(self._route(e, alert_labels(e)))
        return out

    def _admit(self, e: AlertEvent, labels: dict[str, str], at: float) -> list[Notice]:
        """A firing alert through the silences and inhibit rules, then routed."""
        if e.status is AlertStatus.FIRING:
            if (silence := self.silencer.holding(e, labels, at)) is not None:
                self.silencer.hold(e)
                self._metrics.silenced.labels(e.rule).inc()
                if e.life_safety:
                    self._metrics.silenced_life_safety.inc()
                    log.warning(
                        "life-safety alert held by a silence made for it",
                        extra={"fields": {"rule": e.rule, "device_id": e.device_id, "silence": silence.row.id,
                                          "by": silence.row.created_by, "reason": silence.row.reason}},
                    )  # fmt: skip
                return []
            if (rule := self.inhibitor.holding(e, labels)) is not None:
                self.inhibitor.hold(e)
                self._metrics.inhibited.labels(e.rule).inc()
                log.info(
                    "alert held back by an inhibit rule; sent if it still fires when the rule lets go",
                    extra={"fields": {"rule": e.rule, "device_id": e.device_id, "reason": rule.reason}},
                )
                return []
        return self._route(e, labels)

    def _route(self, e: AlertEvent, labels: dict[str, str]) -> list[Notice]:
        out: list[Notice] = []
        routes = [r for r in self.router.route(labels, e.dispatch) if r.receiver in self._receivers]
        # Built-in receivers (sinks.webhook) have every event already: no message, no job.
        # An ordinary alert's work order opens when its group's message goes (after the
        # group wait, or after quiet hours): the clock starts when someone is told.
        order, extra = self._open(e, routes) if e.life_safety else (None, ())
        for routed in routes:
            receiver = self._receivers[routed.receiver]
            if e.status is AlertStatus.RESOLVED and not receiver.send_resolved:
                # Not told, but no longer firing: it must not be repeated with its group.
                self.groups.forget(e, routed, labels)
                continue
            if e.life_safety:
                out.extend(self._single(e, receiver.name, order))
            else:
                self.groups.add(e, routed, labels)
        for name in extra:  # the escalation policy's first step names more receivers
            if name in self._receivers:
                out.extend(self._single(e, name, order))
        return out

    def _open(self, e: AlertEvent, routes: Sequence[Routed]) -> tuple[WorkOrder | None, tuple[str, ...]]:
        """The work order of a firing alert that reaches receivers (opened or joined)."""
        if self.desk is None or e.status is not AlertStatus.FIRING or not routes:
            return None, ()
        policy = next((r.node.escalation for r in routes if r.node.escalation), None)
        return self.desk.open(e, [r.receiver for r in routes], policy, dataclasses.asdict(e))

    def state_changes(self) -> dict[str, bytes | None]:
        """Dispatch state changed since the last call (groups, inhibition), to commit with
        the batch."""
        return {**self.groups.changes(), **self.inhibitor.changes(), **self.silencer.changes()}

    def load(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """The state committed before a restart."""
        self.groups.load(body for key, body in rows if key.startswith("group\x1f"))
        for key, body in rows:
            if key.startswith("inhibit\x1f"):
                self.inhibitor.load(key.removeprefix("inhibit\x1f"), body)
            elif key.startswith("silence\x1f"):
                self.silencer.load(key.removeprefix("silence\x1f"), body)

    def _single(self, e: AlertEvent, name: str, order: WorkOrder | None = None) -> list[Notice]:
        receiver = self._receivers[name]
        people = self._people(name, [e])
        answer = order.id if order is not None else e.fingerprint
        words = render(
            e,
            locale=receiver.locale,
            tz=self._tz,
            sensitive=receiver.sensitive,
            answer_id=answer,
            redact=frozenset(receiver.redact),
        )
        ack = self._ack_of(order, e.event_time) if order is not None else e.fingerprint
        words = _with_link(words, ack, receiver.locale)
        notices = self._messages(name, e.event_id, words, people, (e.severity, e.life_safety, ack))
        return [dataclasses.replace(n, at=e.event_time) for n in notices]

    def _ack_of(self, order: WorkOrder, at: float) -> str:
        """Where to accept: a one-tap link when the API has a public address, else the id."""
        return self._links(order.id, at) if self._links is not None else order.id

    def _escalate(self, esc: Escalation) -> list[Notice]:
        """An escalation step: the alert again, to the step's receivers, saying why."""
        wo = esc.order
        e = decode_event(orjson.dumps(wo.event))
        out: list[Notice] = []
        for name in esc.receivers:
            receiver = self._receivers.get(name)
            if receiver is None:
                continue
            words = render(
                e, locale=receiver.locale, tz=self._tz, sensitive=receiver.sensitive, answer_id=wo.id,
                redact=frozenset(receiver.redact),
            )  # fmt: skip
            prefix, why = escalation_title(esc.entry, receiver.locale)
            title = prefix + words.title
            text = Text(title, f"{prefix}{why}\n{words.text}", f"**{prefix}{why}**\n{words.markdown}")
            ack = self._ack_of(wo, esc.entry.at)
            text = _with_link(text, ack, receiver.locale)
            people = self._people(name, [e])
            what = (e.severity, e.life_safety, ack)
            notices = self._messages(name, f"{wo.id}#{esc.index}", text, people, what)
            out.extend(dataclasses.replace(n, at=esc.entry.at) for n in notices)
        return out

    def _tell(self, change: Change) -> list[Notice]:
        """A work-order change: to InfluxDB (every one), and in words to the receivers
        that asked for state changes."""
        wo, entry = change.order, change.entry
        data = change_data(wo, entry)
        base = f"{wo.id}#{change.index}"
        out: list[Notice] = []
        if self._order_sink is not None:
            msg = Message(
                id=message_id(base, self._order_sink), receiver="work_orders", severity=Severity(wo.severity),
                life_safety=False, title=entry.action, text="", markdown="", data=data,
            )  # fmt: skip
            out.append(Notice(self._order_sink, msg, at=entry.at))
        if entry.action not in TOLD:
            return out
        e: AlertEvent | None = None
        for name in wo.receivers:
            receiver = self._receivers.get(name)
            if receiver is None or not receiver.work_order_updates:
                continue
            e = e or decode_event(orjson.dumps(wo.event))
            title, text = update_words(wo, entry, locale=receiver.locale, tz=self._tz)
            words = Text(title, text, f"**{title}**\n" + "\n".join(f"> {ln}" for ln in text.splitlines()))
            notices = self._messages(
                name, base, words, self._people(name, [e]), (Severity(wo.severity), False, wo.id)
            )
            out.extend(dataclasses.replace(n, at=entry.at, message=dataclasses.replace(n.message, data=data))
                       for n in notices)  # fmt: skip
        return out

    def _grouped(self, g: Group, clock: float) -> list[Notice]:
        receiver = self._receivers[g.receiver]
        events = sorted(g.alerts.values(), key=lambda e: (e.event_time, e.fingerprint))
        answer = hashlib.sha256(g.key.encode()).hexdigest()[:16]
        words = render_group(
            events, labels=g.labels, locale=receiver.locale, tz=self._tz, sensitive=receiver.sensitive,
            redact=frozenset(receiver.redact),
            answer_id=answer,
        )  # fmt: skip
        worst = max(
            (e.severity for e in events), key=lambda s: ("info", "warning", "critical").index(s.value)
        )
        people = self._people(g.receiver, events)
        notices = self._messages(g.receiver, f"{g.key}@{clock!r}", words, people, (worst, False, answer))
        out = [dataclasses.replace(n, at=clock) for n in notices]
        if self.desk is not None:
            for e in events:
                if e.status is AlertStatus.FIRING:
                    _, extra = self.desk.open(e, [g.receiver], g.escalation, dataclasses.asdict(e), clock)
                    out.extend(n for name in extra if name in self._receivers for n in self._single(e, name))
        return out

    def _people(self, name: str, events: Sequence[AlertEvent]) -> tuple[Recipient, ...]:
        """Everyone the receiver reaches for these alerts, each once."""
        receiver = self._receivers[name]
        found: dict[tuple[str, str | None], Recipient] = {}
        for e in events:
            for p in recipients(
                receiver, device_id=e.device_id, community=e.community, grid=e.grid, registry=self._registry
            ):
                found.setdefault((p.name, p.phone), p)
        return tuple(found.values())

    def _messages(
        self,
        name: str,
        base_id: str,
        words: Text,
        people: Sequence[Recipient],
        what: tuple[Severity, bool, str],
    ) -> list[Notice]:
        """One message per channel of the receiver (per phoned person for SMS)."""
        severity, life_safety, ack = what
        out: list[Notice] = []
        for sink in self._sinks[name]:
            per_person = self._per_recipient.get(sink, False)
            targets = (
                [(p.phone or "", (p,)) for p in people if p.phone] if per_person else [("", tuple(people))]
            )
            if per_person and not targets:
                self._metrics.unreachable.labels(name).inc()
            out.extend(
                Notice(
                    sink,
                    Message(
                        id=message_id(base_id, sink, person),
                        receiver=name,
                        severity=severity,
                        life_safety=life_safety,
                        title=words.title,
                        text=words.text,
                        markdown=words.markdown,
                        recipients=who,
                        ack=ack,
                    ),
                )
                for person, who in targets
            )
        self._metrics.notices.labels(name).inc(len(out))
        return out


def _with_link(words: Text, ack: str, locale: str) -> Text:
    """The one-tap accept link as the last line of the words, when there is one (chat
    robots and SMS show only the text; a webhook also has it in `ack`)."""
    if not ack.startswith(("https://", "http://")):
        return words
    label = "一键接单" if locale == "zh-CN" else "Accept"
    return Text(words.title, f"{words.text}\n{label}: {ack}", f"{words.markdown}\n[{label}]({ack})")
