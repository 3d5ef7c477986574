"""The daemon: wiring of ingest → decode → rules → alerts → outbox → sinks.

`Pipeline.evaluate` (in `_pipeline`) is the synchronous heart: one batch of raw messages
in, alert events and checkpoint changes out. `Daemon` runs it in an asyncio TaskGroup of
named tasks:

    ingest          the broker connection (reconnects with capped, jittered backoff)
    process         batches → Pipeline → outbox commit → PUBACK (durable before acknowledged);
                    a batch is evaluated while the one before it is written (outbox._chain)
    deliver:<sink>  one per sink, reads the outbox, retries with backoff
    telemetry       best-effort telemetry writes to InfluxDB (never through the outbox)
    watchdog        READY=1 once connected and the outbox is open; WATCHDOG=1 while healthy
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sensord._errors import OutboxError, RuleError
from sensord._metrics import Metrics
from sensord._pipeline import Evaluated, Pipeline, commit, decode_active
from sensord._registry import Registry
from sensord._settings import Settings
from sensord._systemd import Notifier
from sensord._types import RawMessage, Reject
from sensord.alerts import Engine, SnapshotState
from sensord.channels import Channel
from sensord.ingest import SCANNER_COMPILED, parser_line
from sensord.outbox import CommitChain, Outbox
from sensord.rules import load_rules
from sensord.sinks import DeadLetter, Sink, deliver_channel_forever, deliver_forever

log = logging.getLogger("sensord")


@dataclass(frozen=True, slots=True)
class RuleReload:
    """The last rule reload, for the operator console: when (wall clock), whether the new
    rules took over (else why not), and which rules it added, removed or changed."""

    at: float
    ok: bool
    error: str = ""
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


class Source(Protocol):
    """Where batches of raw messages come from: the broker, or a recording in replay."""

    connected: asyncio.Event

    async def run(self) -> None: ...

    def batches(self) -> AsyncIterator[list[RawMessage]]: ...

    def ack(self, tokens: Sequence[int]) -> None: ...

    async def aclose(self) -> None: ...


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
        channels: Sequence[Channel] = (),
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.pipeline = pipeline
        self.source = source
        self.outbox = outbox
        self.sinks = list(sinks)
        # Dispatch channels: each receiver's WeCom robot, SMS gateway, … with its own queue.
        self.channels = list(channels)
        self.deadletter = deadletter
        self.metrics = metrics
        self.notifier = notifier or Notifier()
        names = [s.name for s in self.sinks] + [c.name for c in self.channels]
        self._wake = {name: asyncio.Event() for name in names}
        self._busy_since: float | None = None
        self._last_batch = time.monotonic()
        self.processed = 0
        # Extra named tasks beside the pipeline (the telemetry writer, the dead-letter
        # forwarder), each a factory so a failure restarts it instead of ending the daemon.
        self.background: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        # Held while a batch is evaluated and its commit queued, and while rules are
        # swapped, so a reload lands between batches and no message is evaluated by a
        # half-built engine. Batch commits land in order on the outbox's writer thread;
        # everyone else holding the lock first waits for them (`batch_lock`).
        self._batch_lock = asyncio.Lock()
        self._chain = CommitChain(outbox)
        # A batch this big means messages waited for the loop: commits then overlap the
        # next batch's evaluation (`_process_loop`).
        # None: overlapping is off (batch.overlap_commits), every commit lands first.
        self._backlog_batch = max(1, settings.batch.max_size // 4) if settings.batch.overlap_commits else None
        self._settled_lock = SettledLock(self._batch_lock, self._chain)
        self._reloads: set[asyncio.Task[bool]] = set()
        self.last_reload: RuleReload | None = None  # since this process started
        self._last_snapshot = time.monotonic()
        self._last_message = time.monotonic()

    @property
    def batch_lock(self) -> SettledLock:
        """Held by whatever changes alert or work-order state (a reload, an API action);
        once taken, every batch commit queued before has landed, so a write made under
        it lands after the batches whose engine state it saw."""
        return self._settled_lock

    def wake_all(self) -> None:
        """New messages are in the outbox: every delivery worker looks now."""
        for wake in self._wake.values():
            wake.set()

    def _maybe_snapshot(self) -> SnapshotState | None:
        """A copy of the engine now, in step with this batch's checkpoint, when one is due."""
        if time.monotonic() - self._last_snapshot < self.settings.alerts.snapshot_every_s:
            return None
        return self.pipeline.engine.snapshot_state()

    def _save_snapshot(self, state: SnapshotState | None) -> None:
        """After the batch's commit: encode and save on the snapshot's own thread, so
        neither this batch's alerts nor the next batch wait for it (outbox._snapshot)."""
        if state is not None:
            # A save still under way (a slow disk) skips this one: the next is due in
            # snapshot_every_s, and the checkpoint of open alerts went with the commit.
            self.outbox.snapshots.save_later(state.encode)
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
                state = self._maybe_snapshot()
                await self._commit(ev)
                self._save_snapshot(state)
            if ev.events or ev.notices:  # a group falls due on the clock alone
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
            self.last_reload = RuleReload(time.time(), ok=False, error=str(exc))
            log.error(  # noqa: TRY400 - the reason is the message; a traceback would hide it
                "rule reload failed; the previous rules stay in force",
                extra={"fields": {"error": str(exc)}},
            )
            return False
        except Exception as exc:  # a defect in loading must not end the daemon
            self.metrics.rule_reloads.labels("error").inc()
            self.last_reload = RuleReload(time.time(), ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
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
        self.last_reload = RuleReload(time.time(), ok=True, added=diff.added, removed=diff.removed,
                                      changed=diff.changed)  # fmt: skip
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
        clock = self.outbox.stream_clock()
        if clock is not None:
            # The snapshot's clock can be seconds older than the last batch committed.
            self.pipeline.watermark = max(self.pipeline.watermark, clock)
        rows = [decode_active(b) for b in self.outbox.active_rows()]
        self.pipeline.engine.restore(rows)
        dispatcher = self.pipeline.dispatcher
        if dispatcher is not None:
            dispatcher.load(self.outbox.dispatch_state())
            if dispatcher.desk is not None:
                # Unfinished work orders with their escalation timers, as last committed.
                orders = dispatcher.desk.load(self.outbox.work_orders.unfinished())
                log.info("work orders restored", extra={"fields": {"unfinished": orders}})
        self._last_snapshot = time.monotonic()
        return len(rows)

    def health(self) -> tuple[bool, dict[str, object]]:
        """Healthy when connected and no batch is stuck."""
        connected = self.source.connected.is_set()
        stuck = self._busy_since is not None and time.monotonic() - self._busy_since > 10
        stuck = stuck or self._chain.waiting_s() > 10  # a commit that does not land
        node = getattr(self.source, "node", None)  # a replay's source has no broker node
        detail: dict[str, object] = {
            "broker_connected": connected,
            "broker": node.label if node is not None else None,
            "processing_stuck": stuck,
            "messages_processed": self.processed,
            "outbox_depth": {name: self.outbox.depth(name) for name in self._wake},
        }
        return connected and not stuck, detail

    async def run(self) -> None:
        """Run every task until cancelled (SIGTERM) or one fails."""
        restored = self.restore()
        # What start-up built (registry, rules, engine arrays, imports) lives as long as the
        # process: out of the collector's sight, a full collection no longer walks it and
        # stops the event loop for ~100 ms (11,000 devices), a latency spike every few s.
        gc.freeze()
        log.info("sensord starting", extra={"fields": {"restored_active_alerts": restored}})
        if not SCANNER_COMPILED:
            log.warning("MQTT parser: %s", parser_line())
        try:
            await self._run_tasks()
        finally:
            # A clean DISCONNECT (and the will's offline message), so the broker does not
            # wait out the keep-alive and the dispatch side hears of a stop, not a death.
            with contextlib.suppress(Exception):
                await self.source.aclose()

    async def _run_tasks(self) -> None:
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
            for channel in self.channels:
                tg.create_task(
                    deliver_channel_forever(
                        self.outbox,
                        channel,
                        self.settings.delivery,
                        self.metrics,
                        self.deadletter,
                        wake=self._wake[channel.name],
                    ),
                    name=f"deliver:{channel.name}",
                )
            tg.create_task(self._watchdog(), name="watchdog")
            tg.create_task(self._clock_loop(), name="clock")
            if self.settings.rules_watch_s > 0:
                tg.create_task(self._watch_rules(), name="rules-watch")
            for name, factory in self.background:
                tg.create_task(self._supervise(name, factory), name=name)

    async def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run a secondary task; if it fails, log it and start it again after a backoff.
        Only the pipeline's own tasks may end the daemon."""
        delay = 1.0
        while True:
            try:
                await factory()
                return
            except Exception as exc:
                log.error(  # noqa: TRY400 - the traceback is in the exc_info below
                    "background task failed; restarting it",
                    extra={"fields": {"task": name, "error": repr(exc), "retry_s": delay}},
                    exc_info=exc,
                )
                self.metrics.background_failures.labels(name).inc()
            else:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    async def _process_loop(self) -> None:
        landing: asyncio.Task[None] | None = None
        async for messages in self.source.batches():
            self._last_message = time.monotonic()
            async with self._batch_lock:
                self._busy_since = time.monotonic()
                try:
                    ev = self._evaluate(messages)
                    state = self._maybe_snapshot()
                    # Queued now; landed and acknowledged in order while the next batch is
                    # evaluated: the rule engine no longer waits out every commit.
                    before, landing = (
                        landing,
                        self._chain.submit(
                            functools.partial(commit, self.outbox, ev),
                            functools.partial(self._landed, ev, state, len(messages)),
                        ),
                    )
                finally:
                    self._busy_since = None
            # A commit's unexpected failure ends the loop here, as it always did.
            if self._backlog_batch is None or len(messages) < self._backlog_batch:
                # Steady traffic: wait for this commit before the next batch. The writer
                # thread then has the GIL to itself and lands the commit soonest, and an
                # alert is delivered as early as it can be (latency, not throughput).
                await asyncio.shield(landing)
            elif before is not None:
                # Behind the stream (a backlog, a burst): the next batch is evaluated
                # while this one is written, with at most one commit in flight.
                await asyncio.shield(before)

    def _landed(self, ev: Evaluated, state: SnapshotState | None, n: int) -> None:
        """A batch's commit is durable: its snapshot, dead letters and acknowledgement."""
        self._save_snapshot(state)
        # The batch's dead letters are durable before its messages are acknowledged: one
        # fsync per batch, after the outbox's own.
        self.deadletter.sync()
        self.source.ack(ev.tokens)
        self.processed += n
        self._last_batch = time.monotonic()
        if ev.events or ev.notices:
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
        """Commit the batch on the outbox's writer thread and return once it is durable.
        The event loop keeps reading the broker meanwhile; nothing is acknowledged before
        this returns (the caller holds the batch lock across it and acks after). Batch
        commits queued before it land first."""
        await self._chain.settle()
        delay = 0.5
        while True:
            try:
                await self.outbox.run_in_writer(functools.partial(commit, self.outbox, ev))
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
        node = getattr(self.source, "node", None)
        log.info("sensord ready", extra={"fields": {"broker": node.label if node is not None else None}})
        interval = (self.notifier.watchdog_s or 10.0) / 3
        while True:
            await asyncio.sleep(interval)
            ok, _ = self.health()
            # Ping only while the ingest loop is not stuck on a batch; a wedged loop makes
            # systemd restart us, and unacknowledged messages are redelivered.
            if ok or not self.source.connected.is_set():
                self.notifier.watchdog()
            for name in self._wake:
                self.metrics.outbox_depth.labels(name).set(self.outbox.depth(name))


async def run_until_cancelled(daemon: Daemon) -> None:
    """Run the daemon; on cancellation (SIGTERM) tell systemd we are stopping."""
    try:
        await daemon.run()
    finally:
        daemon.notifier.stopping()
        # Every task has stopped; the engine state goes to disk so timers, cooldowns and
        # windows carry on after the restart. A batch commit still on the writer thread
        # (its task was cancelled while waiting) lands first: the snapshot never runs ahead.
        daemon.outbox.finish_writes()
        daemon.outbox.snapshots.finish()  # a snapshot being saved lands before the last one
        try:
            commit(daemon.outbox, Evaluated(snapshot=daemon.pipeline.engine.snapshot()))
        except Exception:  # stopping anyway; the per-batch checkpoint stands
            log.warning("could not save the engine state on stop", exc_info=True)
        with contextlib.suppress(Exception):
            daemon.outbox.close()
        daemon.deadletter.close()


class SettledLock:
    """The batch lock as everyone but the ingest loop takes it: acquired, and then every
    batch commit already queued has landed, so a write made under it never lands before
    the batches whose engine state it saw."""

    def __init__(self, lock: asyncio.Lock, chain: CommitChain) -> None:
        self._lock = lock
        self._chain = chain

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            await self._chain.settle()
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()
