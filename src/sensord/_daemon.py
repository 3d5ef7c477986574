"""The daemon: wiring of ingest → decode → rules → alerts → outbox → sinks.

`Pipeline.evaluate` is the synchronous heart: one batch of raw messages in, alert events
and checkpoint changes out. `Daemon` runs it in an asyncio TaskGroup of named tasks:

    ingest          the broker connection (reconnects with capped, jittered backoff)
    process         batches → Pipeline → outbox commit → PUBACK (durable before acknowledged)
    deliver:<sink>  one per sink, reads the outbox, retries with backoff
    telemetry       best-effort telemetry writes to InfluxDB (never through the outbox)
    watchdog        READY=1 once connected and the outbox is open; WATCHDOG=1 while healthy
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import orjson

from sensord._errors import DecodeError, OutboxError, RuleError
from sensord._logging import RateLimited
from sensord._metrics import Metrics
from sensord._registry import Registry
from sensord._settings import Settings
from sensord._systemd import Notifier
from sensord._types import AlertEvent, AlertStatus, Family, RawMessage, Reject
from sensord.alerts import TEMPLATE_ERROR, ActiveAlert, Engine, EngineResult
from sensord.decode import Decoder, DecodeResult, FamilyBatch, shown
from sensord.outbox import Outbox
from sensord.rules import load_rules
from sensord.sinks import DeadLetter, Sink, deliver_forever

log = logging.getLogger("sensord")
# The topic kind that carries an acknowledgement from the dispatch side.
ACK_KIND = "ack"
_FAMILIES = frozenset(f.value for f in Family)


class Source(Protocol):
    """Where batches of raw messages come from: the broker, or a recording in replay."""

    connected: asyncio.Event

    async def run(self) -> None: ...

    def batches(self) -> AsyncIterator[list[RawMessage]]: ...

    def ack(self, tokens: Sequence[int]) -> None: ...


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
    snapshot: bytes | None = None

    def drop(self, fingerprints: Iterable[str]) -> None:
        for fp in fingerprints:
            self.checkpoint[fp] = None


class ParsedAck(NamedTuple):
    """An acknowledgement, checked before the engine runs."""

    device_id: str
    rule: str
    ts: float
    by: str
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


def decode_active(body: bytes) -> ActiveAlert:
    d = orjson.loads(body)
    d["family"] = Family(d["family"]) if d["family"] is not None else None
    d["status"] = AlertStatus(d["status"])
    return ActiveAlert(**d)


class Pipeline:
    """decode → rules → alerts for one batch. Holds the event-time watermark."""

    def __init__(  # noqa: PLR0913 - the stages are the arguments
        self,
        *,
        decoder: Decoder,
        engine: Engine,
        deadletter: DeadLetter,
        metrics: Metrics,
        telemetry: Callable[[FamilyBatch], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.decoder = decoder
        self.engine = engine
        self._deadletter = deadletter
        self._metrics = metrics
        self._telemetry = telemetry
        self._clock = clock
        self._unknown_log = RateLimited(log)
        self._template_log = RateLimited(log)
        self.watermark = -math.inf

    def evaluate(self, messages: Sequence[RawMessage]) -> Evaluated:
        """Run one batch through decode and rules. Rejects are dead-lettered here.

        Two phases. Decode and ack parsing change no state: an unexpected failure there is
        retried message by message, so only the message that fails is dead-lettered. Then
        the engine changes state: what it returned is kept whatever happens after, so the
        state change and its events are committed together; if the engine itself fails,
        the messages it had not applied yet are dead-lettered (replayable), never dropped.
        """
        out = Evaluated(tokens=[m.token for m in messages if m.token is not None])
        readings = [m for m in messages if not self._is_ack(m)]
        acks: list[ParsedAck | Reject] = []
        if len(readings) < len(messages):
            acks = self._parse_acks([m for m in messages if self._is_ack(m)])
        res = self._decode(readings)
        self._record_unknown(res.unknown)
        self._record_rejects(res.rejects)
        out.rejected = len(res.rejects) + sum(1 for a in acks if isinstance(a, Reject))
        out.accepted = res.accepted
        valid_acks = [a for a in acks if not isinstance(a, Reject)]
        self._record_rejects([a for a in acks if isinstance(a, Reject)])
        applied: set[Family] = set()
        try:
            self._absorb(out, self.engine.begin(res.batches.values()), None)
            for family, batch in res.batches.items():
                self._absorb(out, self.engine.process(batch), family)
                applied.add(family)
                self._after_family(batch)
            while valid_acks:
                a = valid_acks[0]
                self._absorb(out, self.engine.acknowledge(a.device_id, a.rule, a.ts, a.by), None)
                out.accepted += 1
                valid_acks.pop(0)
            if self.watermark > -math.inf:
                self._absorb(out, self.engine.advance(self.watermark), None)
        except Exception:
            log.exception("rule engine failed on a batch; what it applied is kept, the rest dead-lettered")
            unapplied = [a.message for a in valid_acks]
            self._dead_letter_unapplied(readings, set(res.batches) - applied, unapplied, out)
        self._metrics.batches.inc()
        self._metrics.batch_size.observe(len(messages))
        return out

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

    def _dead_letter_unapplied(
        self,
        readings: list[RawMessage],
        families: set[Family],
        acks: list[RawMessage],
        out: Evaluated,
    ) -> None:
        names = {f.value for f in families}
        left = [m for m in readings if (p := self.decoder.topic.parse(m.topic)) and p.family in names]
        detail = "the rule engine failed before applying this message; see the log, then replay it"
        rejects = [Reject(m.topic, m.payload, m.received_at, "internal_error", detail) for m in left + acks]
        self._record_rejects(rejects)
        out.rejected += len(rejects)

    def tick(self, watermark: float) -> Evaluated:
        """Advance the event-time clock without readings (a quiet stream)."""
        out = Evaluated()
        self.watermark = max(self.watermark, watermark)
        self._absorb(out, self.engine.advance(self.watermark), None)
        return out

    def _is_ack(self, m: RawMessage) -> bool:
        if not m.topic.endswith(ACK_KIND):
            return False  # the cheap test first: this runs for every message
        parts = self.decoder.topic.parse(m.topic)
        return parts is not None and parts.kind == ACK_KIND

    def _parse_acks(self, messages: list[RawMessage]) -> list[ParsedAck | Reject]:
        out: list[ParsedAck | Reject] = []
        for m in messages:
            try:
                out.append(self._parse_ack(m))
            except DecodeError as exc:
                out.append(Reject(m.topic, m.payload, m.received_at, exc.reason, exc.detail))
        return out

    def _parse_ack(self, m: RawMessage) -> ParsedAck:
        """`<prefix>/<community>/<family>/<device>/ack` with {"rule": ..., "by": ..., "ts": ...}:
        the dispatch side acknowledged an alert. It travels in the stream, so a recording
        replays acknowledgements too. Raises DecodeError with the reason to reject it."""
        parts = self.decoder.topic.parse(m.topic)
        assert parts is not None
        device = self.decoder.device(parts.device_id)
        if device is None:
            raise DecodeError("unknown_device", f"ack for {shown(parts.device_id)}, not in the registry")
        shape = 'an ack is a JSON object {"rule": "<rule name>", "by": "<who>", "ts": <epoch seconds>}'
        try:
            body = orjson.loads(m.payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError("invalid_ack", f"{shape}; not JSON: {exc}") from None
        if not isinstance(body, dict):
            raise DecodeError("invalid_ack", f"{shape}; got {shown(body)}")
        rule, by, ts = body.get("rule"), body.get("by", ""), body.get("ts", m.received_at)
        if not isinstance(rule, str) or not isinstance(by, str):
            got = f"{shown(rule)}, {shown(by)}"
            raise DecodeError("invalid_ack", f"{shape}; rule and by must be text, got {got}")
        if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
            raise DecodeError("invalid_ack", f"{shape}; ts must be a number, got {shown(ts)}")
        if not self.engine.has_rule(device.family, rule):
            raise DecodeError("invalid_ack", f"no rule {shown(rule)} for {device.family.value} devices")
        return ParsedAck(parts.device_id, rule, float(ts), by, m)

    def _absorb(self, out: Evaluated, result: EngineResult, family: Family | None) -> None:
        events = result.events
        out.events.extend(events)
        out.drop(result.cancelled)
        if family is not None:
            if result.late:
                self._metrics.late_readings.labels(family.value).inc(result.late)
            self._metrics.rule_evaluations.labels(family.value).inc(result.evaluations)
        for ev in events:
            self._metrics.transitions.labels(ev.rule, ev.status.value).inc()
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
                out.checkpoint[ev.fingerprint] = encode_active(active_from_event(ev))
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
    outbox.commit(ev.events, upsert_active=upsert, delete_active=delete, snapshot=ev.snapshot)


class Daemon:
    """Runs the pipeline against a source and delivers to sinks until cancelled."""

    def __init__(  # noqa: PLR0913 - the daemon's collaborators are passed in, not built here
        self,
        settings: Settings,
        *,
        registry: Registry,
        pipeline: Pipeline,
        source: Source,
        outbox: Outbox,
        sinks: Sequence[Sink],
        deadletter: DeadLetter,
        metrics: Metrics,
        notifier: Notifier | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pipeline = pipeline
        self.source = source
        self.outbox = outbox
        self.sinks = list(sinks)
        self.deadletter = deadletter
        self.metrics = metrics
        self.notifier = notifier or Notifier()
        self._wake = {s.name: asyncio.Event() for s in self.sinks}
        self._busy_since: float | None = None
        self._last_batch = time.monotonic()
        self.processed = 0
        # Extra named coroutines to run beside the pipeline (the telemetry writer).
        self.background: list[Coroutine[object, object, None]] = []
        # Held while a batch goes evaluate → commit → ack, and while rules are swapped, so
        # a reload lands between batches and no message is evaluated by a half-built engine.
        self._batch_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[bool]] = set()
        self._last_snapshot = time.monotonic()
        self._last_message = time.monotonic()

    def _maybe_snapshot(self, ev: Evaluated) -> None:
        if time.monotonic() - self._last_snapshot >= self.settings.alerts.snapshot_every_s:
            ev.snapshot = self.pipeline.engine.snapshot()
            self._last_snapshot = time.monotonic()

    def _rules_stamp(self) -> tuple[tuple[str, int, int], ...]:
        rules_dir = self.settings.input_path(self.settings.rules_dir)
        out = []
        for path in sorted(rules_dir.glob("*.y*ml")):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((path.name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    async def _watch_rules(self) -> None:
        """Reload when a rule file is added, removed or changed (polled: no inotify
        dependency, and an editor's save-by-rename is seen the same way)."""
        stamp = self._rules_stamp()
        while True:
            await asyncio.sleep(self.settings.rules_watch_s)
            now = self._rules_stamp()
            if now != stamp:
                stamp = now
                log.info("rule files changed; reloading")
                await self.reload_rules()

    async def _clock_loop(self) -> None:
        """Move the event-time clock in a quiet stream: once no message has arrived for
        `idle_tick_s`, to the wall clock less `clock_grace_s`. Never while messages flow,
        so a backlog drained after a restart is judged by its own timestamps."""
        alerts = self.settings.alerts
        while True:
            await asyncio.sleep(alerts.idle_tick_s / 2)
            if time.monotonic() - self._last_message < alerts.idle_tick_s:
                continue
            async with self._batch_lock:
                wall = time.time() - alerts.clock_grace_s
                if wall <= self.pipeline.watermark:
                    continue
                try:
                    ev = self.pipeline.tick(wall)
                except Exception:  # a defect must not end the daemon (and crash-loop it)
                    log.exception("the event-time clock failed to advance the rules; will try again")
                    continue
                self._maybe_snapshot(ev)
                await self._commit(ev)
            if ev.events:
                for wake in self._wake.values():
                    wake.set()

    def request_reload(self) -> None:
        """SIGHUP: reload the rule files between batches (see `reload_rules`)."""
        task = asyncio.get_running_loop().create_task(self.reload_rules(), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload_rules(self) -> bool:
        """Load the rule files again. If any is invalid the old rules stay in force and
        the reason is logged and counted; otherwise the new rules take over the alert
        state, firing alerts of removed rules resolve, and the diff is logged."""
        rules_dir = self.settings.input_path(self.settings.rules_dir)
        try:
            rules = load_rules(rules_dir, self.registry)
        except RuleError as exc:
            self.metrics.rule_reloads.labels("error").inc()
            log.error(  # noqa: TRY400 - the reason is the message; a traceback would hide it
                "rule reload failed; the previous rules stay in force",
                extra={"fields": {"error": str(exc)}},
            )
            return False
        except Exception as exc:  # a defect in loading must not end the daemon
            self.metrics.rule_reloads.labels("error").inc()
            log.exception(
                "rule reload failed unexpectedly; the previous rules stay in force",
                extra={"fields": {"error": f"{type(exc).__name__}: {exc}"[:300]}},
            )
            return False
        async with self._batch_lock:
            old = self.pipeline.engine
            engine = Engine(rules, self.registry, self.settings.alerts)
            now = self.pipeline.watermark if math.isfinite(self.pipeline.watermark) else time.time()
            diff = engine.take_over(old, now)
            ev = Evaluated(events=diff.events)
            ev.drop([*diff.cancelled, *(e.fingerprint for e in diff.events)])
            await self._commit(ev)
            self.pipeline.engine = engine
        self.metrics.rule_reloads.labels("ok").inc()
        for e in diff.events:
            self.metrics.transitions.labels(e.rule, e.status.value).inc()
        if diff.events:
            for wake in self._wake.values():
                wake.set()
        log.info(
            "rules reloaded",
            extra={
                "fields": {
                    "rules": rules.rule_count,
                    "added": diff.added,
                    "removed": diff.removed,
                    "changed": diff.changed,
                    "would_resolve": diff.would_resolve,
                    "would_fire": diff.would_fire,
                    "resolved_for_removed_rules": len(diff.events),
                }
            },
        )
        return True

    def restore(self) -> int:
        """Reload the engine: the last whole-state snapshot (timers, cooldowns, windows),
        then the alert checkpoint written with every batch, which is never older."""
        blob = self.outbox.snapshot()
        if blob is not None:
            rules = self.pipeline.engine.load_snapshot(blob)
            log.info("engine state restored", extra={"fields": {"rules_restored": rules}})
            self.pipeline.watermark = max(self.pipeline.watermark, self.pipeline.engine.origin)
        rows = [decode_active(b) for b in self.outbox.active_rows()]
        self.pipeline.engine.restore(rows)
        self._last_snapshot = time.monotonic()
        return len(rows)

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy when connected and no batch is stuck."""
        connected = self.source.connected.is_set()
        stuck = self._busy_since is not None and time.monotonic() - self._busy_since > 10
        detail: dict[str, object] = {
            "broker_connected": connected,
            "processing_stuck": stuck,
            "messages_processed": self.processed,
            "outbox_depth": {s.name: self.outbox.depth(s.name) for s in self.sinks},
        }
        return connected and not stuck, detail

    async def run(self) -> None:
        """Run every task until cancelled (SIGTERM) or one fails."""
        restored = self.restore()
        log.info("sensord starting", extra={"fields": {"restored_active_alerts": restored}})
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.source.run(), name="ingest")
            tg.create_task(self._process_loop(), name="process")
            for sink in self.sinks:
                tg.create_task(
                    deliver_forever(
                        self.outbox,
                        sink,
                        self.settings.delivery,
                        self.metrics,
                        self.deadletter,
                        wake=self._wake[sink.name],
                    ),
                    name=f"deliver:{sink.name}",
                )
            tg.create_task(self._watchdog(), name="watchdog")
            tg.create_task(self._clock_loop(), name="clock")
            if self.settings.rules_watch_s > 0:
                tg.create_task(self._watch_rules(), name="rules-watch")
            for i, coro in enumerate(self.background):
                tg.create_task(coro, name=f"background:{i}")

    async def _process_loop(self) -> None:
        async for messages in self.source.batches():
            self._last_message = time.monotonic()
            async with self._batch_lock:
                self._busy_since = time.monotonic()
                try:
                    ev = self._evaluate(messages)
                    self._maybe_snapshot(ev)
                    await self._commit(ev)
                    # The batch's dead letters are durable before its messages are
                    # acknowledged: one fsync per batch, after the outbox's own.
                    self.deadletter.sync()
                    self.source.ack(ev.tokens)
                finally:
                    self._busy_since = None
            self.processed += len(messages)
            self._last_batch = time.monotonic()
            if ev.events:
                for wake in self._wake.values():
                    wake.set()

    def _evaluate(self, messages: list[RawMessage]) -> Evaluated:
        try:
            return self.pipeline.evaluate(messages)
        except Exception:
            # A defect must not lose the batch or wedge the session: the messages go to
            # dead-letter (replayable) and the daemon carries on with the next batch.
            log.exception("batch failed in the pipeline; messages sent to dead-letter")
            for m in messages:
                self.deadletter.reject(
                    Reject(m.topic, m.payload, m.received_at, "internal_error", "pipeline error; see the log")
                )
                self.metrics.rejects.labels("internal_error").inc()
            return Evaluated(tokens=[m.token for m in messages if m.token is not None])

    async def _commit(self, ev: Evaluated) -> None:
        delay = 0.5
        while True:
            try:
                commit(self.outbox, ev)
            except OutboxError as exc:
                # The disk failed (a full outbox never refuses: it sheds per sink). The
                # batch stays unacknowledged at the broker until the write goes through.
                log.error("outbox write failed; retrying", extra={"fields": {"error": str(exc)}})  # noqa: TRY400
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                return

    async def _watchdog(self) -> None:
        await self.source.connected.wait()
        self.notifier.ready("connected; outbox open")
        log.info("sensord ready", extra={"fields": {"broker": self.settings.broker.host}})
        interval = (self.notifier.watchdog_s or 10.0) / 3
        while True:
            await asyncio.sleep(interval)
            ok, _ = self.health()
            # Ping only while the ingest loop is not stuck on a batch; a wedged loop makes
            # systemd restart us, and unacknowledged messages are redelivered.
            if ok or not self.source.connected.is_set():
                self.notifier.watchdog()
            for sink in self.sinks:
                self.metrics.outbox_depth.labels(sink.name).set(self.outbox.depth(sink.name))


async def run_until_cancelled(daemon: Daemon) -> None:
    """Run the daemon; on cancellation (SIGTERM) tell systemd we are stopping."""
    try:
        await daemon.run()
    finally:
        daemon.notifier.stopping()
        # Every task has stopped; the engine state goes to disk so timers, cooldowns and
        # windows carry on after the restart.
        try:
            commit(daemon.outbox, Evaluated(snapshot=daemon.pipeline.engine.snapshot()))
        except Exception:  # stopping anyway; the per-batch checkpoint stands
            log.warning("could not save the engine state on stop", exc_info=True)
        with contextlib.suppress(Exception):
            daemon.outbox.close()
        daemon.deadletter.close()
