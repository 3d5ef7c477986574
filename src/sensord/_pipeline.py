"""One batch through the pipeline: decode → rules → alert events and checkpoint changes.

`Pipeline.evaluate` is the synchronous heart of the daemon, of `sensord replay` and of
`sensord rules test`: raw messages in, an `Evaluated` out that `commit` writes to the
outbox in one durable transaction.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import repeat
from operator import attrgetter
from typing import NamedTuple

import orjson

from sensord._ack_cuts import fold_back
from sensord._ack_order import acks_after_their_alerts
from sensord._errors import DecodeError
from sensord._logging import RateLimited
from sensord._metrics import Metrics
from sensord._types import AlertEvent, AlertStatus, Family, RawMessage, Reject
from sensord.alerts import TEMPLATE_ERROR, ActiveAlert, Engine, EngineResult, SnapshotState
from sensord.decode import ELSEWHERE, Decoder, DecodeResult, FamilyBatch, TopicTemplate, shown
from sensord.dispatch import AckSeen, Dispatcher
from sensord.outbox import Notice, Outbox, WorkOrderRow
from sensord.shard import HandoverGate
from sensord.sinks import DeadLetter

log = logging.getLogger("sensord")
_TOPIC = attrgetter("topic")
_FAMILIES = frozenset(f.value for f in Family)


@dataclass
class Evaluated:
    """What one batch produced, ready to be committed in one outbox transaction."""

    events: list[AlertEvent] = field(default_factory=list)
    # Each alert's checkpoint row after the batch (None: removed). Only the last change
    # of a fingerprint counts: an alert that fired and resolved in one batch is gone.
    checkpoint: dict[str, bytes | None] = field(default_factory=dict)
    tokens: list[int] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    # The engine's whole state after the batch, saved after the batch's commit: by
    # `commit` itself, or by the daemon on the snapshot's own thread (outbox._snapshot).
    snapshot: bytes | SnapshotState | None = None
    clock: float | None = None  # the event-time clock after the batch, kept with it
    notices: list[Notice] = field(default_factory=list)  # dispatch messages for the events
    groups: dict[str, bytes | None] = field(default_factory=dict)  # dispatch state changed
    acks: list[AckSeen] = field(default_factory=list)  # applied acks, for the work orders
    work_orders: list[WorkOrderRow] = field(default_factory=list)  # work orders changed
    shard: dict[str, bytes | None] = field(default_factory=dict)  # handover gate rows changed

    def drop(self, fingerprints: Iterable[str]) -> None:
        for fp in fingerprints:
            self.checkpoint[fp] = None


class ParsedAck(NamedTuple):
    """An acknowledgement, checked before the engine runs. It is dated when applied."""

    device_id: str
    rule: str
    by: str
    # The start of the alert it answers (`startsAt` of the notification), if given.
    starts_at: float | None
    message: RawMessage


def active_from_event(event: AlertEvent) -> ActiveAlert:
    """The checkpoint row an alert event leaves behind (pending or firing)."""
    firing = event.status is AlertStatus.FIRING
    return ActiveAlert(
        fingerprint=event.fingerprint,
        family=Family(event.family) if event.family in _FAMILIES else None,
        rule=event.rule,
        device_id=event.device_id,
        status=event.status,
        since=event.starts_at,
        fired_at=event.event_time if firing else None,
        last_notified=event.event_time if firing else None,
        severity=event.severity.value,
        community=event.community,
    )


def encode_active(active: ActiveAlert) -> bytes:
    # orjson writes dataclasses and enums itself, several times faster than asdict().
    return orjson.dumps(active)


def encode_active_event(event: AlertEvent) -> bytes:
    """`encode_active(active_from_event(event))`, the same bytes, without building the
    row: it is written for every transition, and an alert-heavy burst has many."""
    firing = event.status is AlertStatus.FIRING
    return orjson.dumps(
        {
            "fingerprint": event.fingerprint,
            "family": event.family if event.family in _FAMILIES else None,
            "rule": event.rule,
            "device_id": event.device_id,
            "status": event.status,
            "since": event.starts_at,
            "fired_at": event.event_time if firing else None,
            "last_notified": event.event_time if firing else None,
            "severity": event.severity,
            "community": event.community,
            "acked": False,
        }
    )


def decode_active(body: bytes) -> ActiveAlert:
    d = orjson.loads(body)
    d["family"] = Family(d["family"]) if d["family"] is not None else None
    d["status"] = AlertStatus(d["status"])
    return ActiveAlert(**d)


@dataclass
class _Step:
    """One run of a batch (readings or acks), prepared, and how far the engine got with it."""

    messages: list[RawMessage]
    decoded: DecodeResult | None = None
    acks: list[ParsedAck] = field(default_factory=list)
    applied: set[Family] = field(default_factory=set)
    done: bool = False


class Pipeline:
    """decode → rules → alerts for one batch. Holds the event-time watermark."""

    def __init__(  # noqa: PLR0913 - the stages are the arguments
        self,
        *,
        decoder: Decoder,
        engine: Engine,
        deadletter: DeadLetter,
        metrics: Metrics,
        ack_topic_template: str | None,
        ack_slack_s: float = 15.0,
        telemetry: Callable[[FamilyBatch], None] | None = None,
        dispatcher: Dispatcher | None = None,
        clock: Callable[[], float] = time.time,
        gate: HandoverGate | None = None,
    ) -> None:
        self.decoder = decoder
        # With a shard during a handover: which of a community's messages are processed here.
        self.gate = gate
        self._acks = TopicTemplate(ack_topic_template) if ack_topic_template is not None else None
        self._ack_slack_s = ack_slack_s
        self.engine = engine
        self._deadletter = deadletter
        self._metrics = metrics
        self._telemetry = telemetry
        self.dispatcher = dispatcher
        self._clock = clock
        self._unknown_log = RateLimited(log)
        self._stale_log = RateLimited(log)
        self._template_log = RateLimited(log)
        self.watermark = -math.inf

    def evaluate(self, messages: Sequence[RawMessage]) -> Evaluated:
        """Run one batch through decode and rules. Rejects are dead-lettered here.

        Messages take effect in arrival order: a run of readings, then the acks that came
        after them, then the next run, as if the batch had been cut at every ack. So an
        ack and a new SOS press in one batch give the same alerts as in two (applying the
        batch's readings first would make the press part of the alert the ack closes).

        Two phases. Decode and ack parsing change no state: an unexpected failure there is
        retried message by message, so only the message that fails is dead-lettered. Then
        the engine changes state: what it returned is kept whatever happens after, so the
        state change and its events are committed together; if the engine itself fails,
        the messages it had not applied yet are dead-lettered (replayable), never dropped.
        """
        out = Evaluated(tokens=[m.token for m in messages if m.token is not None])
        if self.gate is not None and self.gate.active:
            messages, out.shard = self.gate.filter(messages)
        steps = [self._prepare(run, out, acks=is_ack) for is_ack, run in self._runs(messages)]
        # Redeliveries behind newer messages must not become late readings at an ack's cut
        # (_ack_cuts). Should the engine then fail, a moved reading is dead-lettered (or not)
        # with the run it arrived in, not the run it was moved to.
        fold_back([s.decoded.batches for s in steps if s.decoded is not None])
        try:
            for i, step in enumerate(steps):
                if step.decoded is None and i > 0:
                    # Readings came before these acks: the clock moves as a cut here would.
                    self._advance(out)
                self._apply(step, out)
            self._advance(out)
        except Exception:
            log.exception("rule engine failed on a batch; what it applied is kept, the rest dead-lettered")
            self._dead_letter_unapplied(steps, out)
        self._metrics.batches.inc()
        self._metrics.batch_size.observe(len(messages))
        out.clock = self.watermark if math.isfinite(self.watermark) else None
        self._dispatch(out)
        return out

    def _runs(self, messages: Sequence[RawMessage]) -> list[tuple[bool, list[RawMessage]]]:
        """The batch as consecutive runs of readings and of acks, in arrival order (but an
        ack naming its alert never before the reading that began it: `_ack_order`)."""
        acks = self._acks
        # Most batches hold no ack at all: one prefix test per message, iterated in C (a
        # generator expression here was 2 % of an alert-heavy drain), says so.
        if acks is None or not any(map(str.startswith, map(_TOPIC, messages), repeat(acks.prefix))):
            return [(False, list(messages))] if messages else []
        runs: list[tuple[bool, list[RawMessage]]] = []
        for m in acks_after_their_alerts(messages, acks, self.decoder.topic):
            is_ack = self._is_ack(m)
            if runs and runs[-1][0] == is_ack:
                runs[-1][1].append(m)
            else:
                runs.append((is_ack, [m]))
        return runs

    def _prepare(self, run: list[RawMessage], out: Evaluated, *, acks: bool) -> _Step:
        """Phase one for a run: decode it (or parse its acks) and record its rejects."""
        if acks:
            parsed = self._parse_acks(run)
            rejects = [a for a in parsed if isinstance(a, Reject)]
            if self.decoder.skip_elsewhere:
                theirs = [r for r in rejects if r.reason in ELSEWHERE]
                if theirs:
                    self._metrics.shard_skipped.inc(len(theirs))
                    rejects = [r for r in rejects if r.reason not in ELSEWHERE]
            self._record_rejects(rejects)
            out.rejected += len(rejects)
            return _Step(run, acks=[a for a in parsed if not isinstance(a, Reject)])
        res = self._decode(run)
        if res.skipped:
            self._metrics.shard_skipped.inc(res.skipped)
        self._record_unknown(res.unknown)
        self._record_rejects(res.rejects)
        out.rejected += len(res.rejects)
        out.accepted += res.accepted
        return _Step(run, decoded=res)

    def _apply(self, step: _Step, out: Evaluated) -> None:
        """Phase two for a run: the engine takes it. `step` records how far it got."""
        if step.decoded is not None:
            self._absorb(out, self.engine.begin(step.decoded.batches.values()), None)
            for family, batch in step.decoded.batches.items():
                self._absorb(out, self.engine.process(batch), family)
                step.applied.add(family)
                self._after_family(batch)
            step.done = True
            return
        while step.acks:
            a = step.acks[0]
            at = self.ack_time(a.message.received_at)
            result = self.engine.acknowledge(a.device_id, a.rule, at, a.by, starts_at=a.starts_at)
            if not result.stale_acks:
                out.acks.append(AckSeen(len(out.events), a.device_id, a.rule, a.by, at))
            self._absorb(out, result, None)
            if result.stale_acks:
                self._metrics.stale_acks.labels(a.rule).inc(result.stale_acks)
                self._stale_log.warning(
                    a.device_id,
                    "acknowledgement of an earlier alert than the one open now; not applied to it",
                    {"device_id": a.device_id, "rule": a.rule, "starts_at": a.starts_at, "at": at},
                    self._clock(),
                )
            out.accepted += 1
            step.acks.pop(0)
        step.done = True

    def ack_time(self, received_at: float) -> float:
        """When an ack took effect: its receive time (a payload's time is never trusted),
        kept within [stream clock, clock + slack]. Before the clock it would predate the
        readings ahead of it; far after it, the ack waited in a backlog while sensord was
        down, and the readings around it date it better than the moment it was read."""
        wm = self.watermark
        if not math.isfinite(wm):
            return received_at
        return received_at if wm <= received_at <= wm + self._ack_slack_s else wm

    def _advance(self, out: Evaluated) -> None:
        if self.watermark > -math.inf:
            self._absorb(out, self.engine.advance(self.watermark), None)

    def _after_family(self, batch: FamilyBatch) -> None:
        """Clock, metrics and the best-effort telemetry hand-off for one applied family."""
        newest = float(batch.ts.max())
        self.watermark = max(self.watermark, newest)
        self._metrics.messages_in.labels(batch.family.value).inc(len(batch))
        self._metrics.ingest_lag.set(max(0.0, float(batch.received_at.max()) - newest))
        if self._telemetry is not None:
            try:
                self._telemetry(batch)
            except Exception:  # telemetry is history, never a reason to lose alerts
                log.exception("telemetry hand-off failed; alerts are unaffected")
                self._metrics.delivery_failures.labels("influx-telemetry", "error").inc()

    def _decode(self, messages: list[RawMessage]) -> DecodeResult:
        try:
            return self.decoder(messages)
        except Exception:
            log.exception("decode failed on a batch; decoding its messages one by one")
        bad: list[Reject] = []
        good: list[RawMessage] = []
        for m in messages:
            try:
                self.decoder([m])
            except Exception as exc:  # noqa: BLE001 - a defect; the message is kept in dead-letter
                detail = f"decode failed ({type(exc).__name__}); see the log and report it"
                bad.append(Reject(m.topic, m.payload, m.received_at, "internal_error", detail))
            else:
                good.append(m)
        res = self.decoder(good)
        res.rejects.extend(bad)
        return res

    def _dead_letter_unapplied(self, steps: list[_Step], out: Evaluated) -> None:
        """After an engine failure: every accepted message not yet applied, to dead-letter."""
        left: list[RawMessage] = []
        for step in steps:
            if step.done:
                continue
            if step.decoded is None:
                left += [a.message for a in step.acks]
                continue
            names = {f.value for f in set(step.decoded.batches) - step.applied}
            parse = self.decoder.topic.parse
            left += [m for m in step.messages if (p := parse(m.topic)) and p.family in names]
        detail = "the rule engine failed before applying this message; see the log, then replay it"
        rejects = [Reject(m.topic, m.payload, m.received_at, "internal_error", detail) for m in left]
        self._record_rejects(rejects)
        out.rejected += len(rejects)

    def tick(self, watermark: float) -> Evaluated:
        """Advance the event-time clock without readings (a quiet stream)."""
        out = Evaluated()
        self.watermark = max(self.watermark, watermark)
        self._absorb(out, self.engine.advance(self.watermark), None)
        out.clock = self.watermark if math.isfinite(self.watermark) else None
        self._dispatch(out)
        return out

    def _dispatch(self, out: Evaluated) -> None:
        """The receivers' messages for the batch's events. A failure here is a defect: it
        is logged and the events still go to the sinks (the webhook has every one)."""
        if self.dispatcher is None:
            return
        try:
            out.notices = self.dispatcher.notices(out.events, out.clock, out.acks)
            out.groups = self.dispatcher.state_changes()
            out.work_orders = self.dispatcher.work_order_rows()
        except Exception:
            log.exception("dispatch failed for a batch; its events still go to the sinks")
            self._metrics.delivery_failures.labels("dispatch", "error").inc()

    def _is_ack(self, m: RawMessage) -> bool:
        acks = self._acks
        # The cheap test first: this runs for every message.
        return acks is not None and m.topic.startswith(acks.prefix) and acks.parse(m.topic) is not None

    def _parse_acks(self, messages: list[RawMessage]) -> list[ParsedAck | Reject]:
        out: list[ParsedAck | Reject] = []
        for m in messages:
            try:
                out.append(self._parse_ack(m))
            except DecodeError as exc:
                out.append(Reject(m.topic, m.payload, m.received_at, exc.reason, exc.detail))
        return out

    def _parse_ack(self, m: RawMessage) -> ParsedAck:
        """`sensord-dispatch/ack/<community>/<family>/<device>` (broker.ack_topic_template)
        with {"rule": ..., "by": ..., "startsAt": ...}: the dispatch side acknowledged an
        alert. It travels in the stream, so a recording replays acknowledgements too.
        Raises DecodeError with the reason to reject it."""
        assert self._acks is not None
        parts = self._acks.parse(m.topic)
        assert parts is not None
        device = self.decoder.device(parts.device_id)
        elsewhere = self.decoder.elsewhere
        if device is None and elsewhere is not None and (owner := elsewhere(parts.device_id)):
            raise DecodeError(*owner)
        if device is None:
            raise DecodeError("unknown_device", f"ack for {shown(parts.device_id)}, not in the registry")
        where = (parts.community or device.entry.community, parts.family or device.family.value)
        if where != (device.entry.community, device.family.value):
            # The ACL may give a community's desk only its own community's ack topics.
            raise DecodeError(
                "invalid_ack",
                f"ack topic says {shown(where[0])}/{shown(where[1])}; {parts.device_id} is a "
                f"{device.family.value} in {device.entry.community}",
            )
        shape = (
            'an ack is a JSON object {"rule": "<rule name>", "by": "<who acknowledged>"} with an optional '
            '"startsAt" (the alert\'s, as notified)'
        )
        try:
            body = orjson.loads(m.payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid_ack", f"{shape}; not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise DecodeError("invalid_ack", f"{shape}; got {shown(body)}")
        rule, by, starts = body.get("rule"), body.get("by"), body.get("startsAt")
        if not isinstance(rule, str) or not isinstance(by, str) or not by.strip():
            got = f"{shown(rule)}, {shown(by)}"
            raise DecodeError("invalid_ack", f"{shape}; rule and by must be text, by not empty, got {got}")
        if not self.engine.has_rule(device.family, rule):
            raise DecodeError("invalid_ack", f"no rule {shown(rule)} for {device.family.value} devices")
        return ParsedAck(parts.device_id, rule, by.strip(), _starts_at(starts, shape), m)

    def _absorb(self, out: Evaluated, result: EngineResult, family: Family | None) -> None:
        events = result.events
        out.events.extend(events)
        out.drop(result.cancelled)
        if family is not None:
            if result.late:
                self._metrics.late_readings.labels(family.value).inc(result.late)
            self._metrics.rule_evaluations.labels(family.value).inc(result.evaluations)
        # Counted per batch: a label lookup per event is a measurable part of a burst.
        for (rule, status), n in Counter((ev.rule, ev.status.value) for ev in events).items():
            self._metrics.transitions.labels(rule, status).inc(n)
        for ev in events:
            if TEMPLATE_ERROR in ev.extra:
                self._metrics.template_errors.labels(ev.rule).inc()
                self._template_log.warning(
                    ev.rule,
                    "alert text template could not be filled; sent a plain text instead (fix the rule)",
                    {"rule": ev.rule, "error": ev.extra[TEMPLATE_ERROR]},
                    self._clock(),
                )
        # The checkpoint follows every transition, sent or held (a flapping alert), and
        # the rows that change without one (an acknowledged state alert).
        for ev in [*events, *result.held]:
            if ev.status is AlertStatus.RESOLVED:
                out.checkpoint[ev.fingerprint] = None
            else:
                out.checkpoint[ev.fingerprint] = encode_active_event(ev)
        for row in result.checkpoint:
            out.checkpoint[row.fingerprint] = encode_active(row)

    def _record_rejects(self, rejects: Sequence[Reject]) -> None:
        for r in rejects:
            self._metrics.rejects.labels(r.reason).inc()
            self._deadletter.reject(r)

    def _record_unknown(self, unknown: dict[Family, list[str]]) -> None:
        now = self._clock()
        for family, ids in unknown.items():
            self._metrics.unknown_devices.labels(family.value).inc(len(ids))
            for device_id in set(ids):
                self._unknown_log.warning(
                    device_id,
                    "message from a device missing from the registry; register it to get alerts",
                    {"device_id": device_id, "family": family.value},
                    now,
                )


def commit(outbox: Outbox, ev: Evaluated) -> None:
    """One durable outbox transaction for the batch's events and checkpoint changes."""
    upsert = [(fp, body) for fp, body in ev.checkpoint.items() if body is not None]
    delete = [fp for fp, body in ev.checkpoint.items() if body is None]
    outbox.commit(
        ev.events,
        upsert_active=upsert,
        delete_active=delete,
        clock=ev.clock,
        notices=ev.notices,
        # The handover gate's rows live beside the dispatch state, committed with the batch.
        groups={**ev.groups, **ev.shard} if ev.shard else ev.groups,
        work_orders=ev.work_orders,
    )
    if ev.snapshot is not None:  # after its checkpoint, so never ahead of it
        outbox.snapshots.save(ev.snapshot.encode() if isinstance(ev.snapshot, SnapshotState) else ev.snapshot)


def _starts_at(value: object, shape: str) -> float | None:
    """An ack's `startsAt` (RFC 3339 with its zone, as in the notification) in epoch seconds."""
    if value is None:
        return None
    when = None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            when = datetime.fromisoformat(value)
    if when is None or when.tzinfo is None:
        detail = f"{shape}; startsAt is not an RFC 3339 time with a zone: {shown(value)}"
        raise DecodeError("invalid_ack", detail)
    return when.timestamp()
