"""Per-sink delivery worker: outbox → sink, backing off per sink when it fails.

Each sink has its own worker, so a dead InfluxDB never holds up the dispatch webhook.

Order. The outbox hands out every waiting life-safety event first, then the rest in
commit order. A round stops at the first retryable failure, and the whole sink backs
off: the events stay where they are, so after an outage the sink gets its waiting
life-safety events first and the events of one alert in the order they happened (a
`resolved` never overtakes its `firing`). Before each wave of ordinary events the worker
checks whether a new life-safety event was committed; if so it goes next.

Fan-out. A sink that takes one event per request gets the round's first event alone,
then waves of up to `_FAN_OUT` requests at once, each for a different alert and never
life-safety and ordinary events in one wave; the next wave starts when the whole wave was
taken. So a backlog drains at several events per round trip, and a sink that is down or
hangs still costs one attempt per backoff. Acknowledgements go to the outbox's writer
thread, one transaction per `_ACK_EVERY` items and at the end of each round.

Backoff. After n consecutive failed attempts the sink waits a time drawn uniformly
from [cap/2, cap], cap = min(max_backoff_s, initial_backoff_s * 2^(n-1)), or longer if the
sink said so (Retry-After). New events do not cut a backoff short: a sink that is down
is not hammered by a busy stream.

A permanent refusal sends that one event to dead-letter and the round goes on.
Repeated failures are logged once when a sink starts failing, as a summary every
`_SUMMARY_EVERY_S` while it keeps failing, and once when it recovers; the metrics count
every attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Sequence
from typing import Generic, Protocol, TypeVar

from sensord._errors import OutboxError, PermanentSinkError, RetryableSinkError
from sensord._metrics import Metrics
from sensord._settings import DeliverySettings
from sensord._types import AlertEvent
from sensord.channels import Channel, Message
from sensord.outbox import Outbox
from sensord.sinks._base import Sink
from sensord.sinks._deadletter import DeadLetter

log = logging.getLogger("sensord.delivery")
T = TypeVar("T")
_SUMMARY_EVERY_S = 60.0
# Requests in flight at once to one sink, each for a different alert: with a backlog, a
# sink answering in a few ms takes hundreds of events a second.
_FAN_OUT = 8
# Acknowledge at least this often within a round (and always at its end), so a crash in
# a long round sends only this many again.
_ACK_EVERY = 50


def backoff(failures: int, settings: DeliverySettings, rng: random.Random) -> float:
    """Seconds to wait after `failures` consecutive failed attempts: uniform in [cap/2, cap]."""
    cap = min(settings.max_backoff_s, settings.initial_backoff_s * (2 ** min(max(failures - 1, 0), 30)))
    return rng.uniform(cap / 2, cap)


class _Health:
    """A sink's failure streak: drives the backoff and keeps the log to state changes."""

    def __init__(self, name: str, outbox: Outbox) -> None:
        self.name = name
        self.outbox = outbox
        self.failures = 0
        self.retry_at = 0.0
        self.since: float | None = None
        self.reason = ""
        self._summary_at = 0.0
        self._permanent = 0
        self._permanent_logged_at = -_SUMMARY_EVERY_S

    def failed(self, reason: str, wait_s: float, now: float) -> None:
        self.failures += 1
        self.retry_at = now + wait_s
        self.reason = reason
        if self.since is None:
            self.since = self._summary_at = now
            log.warning(
                "sink is failing; retrying with backoff (one line per change and a summary every minute)",
                extra={"fields": {"sink": self.name, "error": reason, "retry_in_s": round(wait_s, 2)}},
            )
        elif now - self._summary_at >= _SUMMARY_EVERY_S:
            self._summary_at = now
            log.warning(
                "sink still failing",
                extra={
                    "fields": {
                        "sink": self.name,
                        "failing_for_s": round(now - self.since, 1),
                        "failed_attempts": self.failures,
                        "waiting": self.outbox.depth(self.name),
                        "waiting_life_safety": self.outbox.waiting_life_safety(self.name),
                        "error": reason,
                    }
                },
            )

    def succeeded(self, now: float) -> None:
        if self.since is not None:
            log.info(
                "sink recovered",
                extra={
                    "fields": {
                        "sink": self.name,
                        "failed_for_s": round(now - self.since, 1),
                        "failed_attempts": self.failures,
                    }
                },
            )
        self.failures, self.retry_at, self.since = 0, 0.0, None

    def refused(self, item_id: str, reason: str, now: float) -> None:
        """A permanent refusal: logged at most once a minute per sink, with a count."""
        self._permanent += 1
        if now - self._permanent_logged_at >= _SUMMARY_EVERY_S:
            self._permanent_logged_at = now
            log.error(
                "sink refused alert events; written to dead-letter",
                extra={
                    "fields": {
                        "sink": self.name,
                        "event_id": item_id,
                        "refused_so_far": self._permanent,
                        "error": reason,
                    }
                },
            )


class _Target(Protocol[T]):
    """What a worker delivers to: an event sink or a dispatch channel, with its queue."""

    name: str
    batched: bool

    def due(self, limit: int) -> list[tuple[int, T]]: ...

    def ack(self, seqs: Sequence[int]) -> None: ...

    def lane(self, item: T) -> tuple[str | None, bool]:
        """(what must stay in order with it, None: everything; whether it is life-safety)."""
        ...

    async def send(self, items: Sequence[T]) -> None: ...

    def refuse(self, item: T, reason: str) -> str:
        """Dead-letter one item the target refused for good; returns its id for the log."""
        ...

    async def aclose(self) -> None: ...


class _SinkTarget:
    """An event sink: every alert event, from the outbox's deliveries."""

    def __init__(self, outbox: Outbox, sink: Sink, deadletter: DeadLetter) -> None:
        self.outbox, self.sink, self.deadletter = outbox, sink, deadletter
        self.name, self.batched = sink.name, sink.batched

    def due(self, limit: int) -> list[tuple[int, AlertEvent]]:
        return self.outbox.due(self.name, limit)

    def ack(self, seqs: Sequence[int]) -> None:
        self.outbox.ack(self.name, seqs)

    def lane(self, item: AlertEvent) -> tuple[str | None, bool]:
        return item.fingerprint, item.life_safety  # an alert's events keep their order

    async def send(self, items: Sequence[AlertEvent]) -> None:
        await self.sink.send(items)

    def refuse(self, item: AlertEvent, reason: str) -> str:
        self.deadletter.undeliverable(item, self.name, reason)
        return item.event_id

    async def aclose(self) -> None:
        await self.sink.aclose()


class _ChannelTarget:
    """A dispatch channel: the messages routed to it, one per attempt."""

    batched = False

    def __init__(self, outbox: Outbox, channel: Channel, deadletter: DeadLetter) -> None:
        self.outbox, self.channel, self.deadletter = outbox, channel, deadletter
        self.name = channel.name

    def due(self, limit: int) -> list[tuple[int, Message]]:
        return self.outbox.due_notices(self.name, limit)

    def ack(self, seqs: Sequence[int]) -> None:
        self.outbox.ack_notices(self.name, seqs)

    def lane(self, item: Message) -> tuple[str | None, bool]:
        return None, item.life_safety  # a channel's messages go one at a time, in order

    async def send(self, items: Sequence[Message]) -> None:
        for m in items:
            await self.channel.send(m)

    def refuse(self, item: Message, reason: str) -> str:
        self.deadletter.undeliverable_message(item, self.name, reason)
        return item.id

    async def aclose(self) -> None:
        await self.channel.aclose()


class _Worker(Generic[T]):
    def __init__(
        self,
        outbox: Outbox,
        target: _Target[T],
        settings: DeliverySettings,
        metrics: Metrics,
        rng: random.Random,
    ) -> None:
        self.outbox, self.target, self.settings = outbox, target, settings
        self.metrics, self.rng = metrics, rng
        self.name = target.name
        self.health = _Health(target.name, outbox)
        self._taken: list[int] = []  # delivered (or refused) in this round, not yet acknowledged

    async def step(self) -> bool:
        """One round: deliver what waits, in order, until done, a failure or a new
        life-safety event. False when nothing was waiting."""
        epoch = self.outbox.life_safety_epoch
        due = self.target.due(self.settings.batch_size)
        if not due:
            return False
        waves = [[due]] if self.target.batched else self._waves(due)
        try:
            for wave in waves:
                if self.outbox.life_safety_epoch != epoch and not self._life_safety(wave):
                    # A new life-safety event was committed: it goes before these ordinary
                    # ones. Older life-safety ones still in the round go first anyway (at
                    # hundreds of SOS a second, breaking off every wave for the next one
                    # re-read and re-decoded a whole page to send eight).
                    break
                sent = await asyncio.gather(*(self._deliver(group) for group in wave))
                if not all(sent):
                    break  # the sink backs off as a whole; the rest keep their place
                if len(self._taken) >= _ACK_EVERY:
                    await self._ack_taken()
        finally:
            # Before the next `due`, which must not hand out what the sink already has.
            await self._ack_taken()
        self.metrics.outbox_depth.labels(self.name).set(self.outbox.depth(self.name))
        return True

    def _life_safety(self, wave: list[list[tuple[int, T]]]) -> bool:
        """Whether a wave is of life-safety items (a wave never mixes the two)."""
        return self.target.lane(wave[0][0][1])[1]

    def _waves(self, due: list[tuple[int, T]]) -> list[list[list[tuple[int, T]]]]:
        """One item per request, sent in waves of up to `_FAN_OUT` at once. The round's
        first item goes alone (a sink that is down or hanging costs one attempt per
        backoff), and a wave never holds two items of one alert (their order stays) nor
        mixes life-safety with ordinary items (life-safety stays first)."""
        waves: list[list[list[tuple[int, T]]]] = [[[due[0]]]]
        lanes: set[str] = set()
        life_safety: bool | None = None
        for item in due[1:]:
            lane, ls = self.target.lane(item[1])
            wave = waves[-1]
            if lane is None or lane in lanes or ls != life_safety or len(wave) >= _FAN_OUT or len(waves) == 1:
                waves.append(wave := [])
                lanes, life_safety = set(), ls
            wave.append([item])
            if lane is not None:
                lanes.add(lane)
        return waves

    async def _ack_taken(self) -> None:
        """Remove what the sink took (or refused for good) from its queue, in one
        transaction on the outbox's writer thread: the event loop does not wait for the
        fsync, and a crash before it only sends those again (receivers de-duplicate)."""
        seqs, self._taken = self._taken, []
        if seqs:
            await self.outbox.run_in_writer(functools.partial(self.target.ack, seqs))

    async def _deliver(self, group: Sequence[tuple[int, T]]) -> bool:
        """Send one group; False when the sink failed in a way worth retrying."""
        seqs = [s for s, _ in group]
        items = [e for _, e in group]
        self.metrics.delivery_attempts.labels(self.name).inc()
        try:
            await self.target.send(items)
        except RetryableSinkError as exc:
            delay = max(backoff(self.health.failures + 1, self.settings, self.rng), exc.retry_after or 0.0)
            self.metrics.delivery_failures.labels(self.name, "retryable").inc()
            self.health.failed(exc.reason, delay, time.time())
            return False
        except PermanentSinkError as exc:
            if len(group) > 1:
                # One bad event must not take the batch with it: find it by sending singly.
                for item in group:
                    if not await self._deliver([item]):
                        return False
                return True
            self.metrics.delivery_failures.labels(self.name, "permanent").inc()
            item_id = self.target.refuse(items[0], exc.reason)
            self._taken += seqs
            self.health.refused(item_id, exc.reason, time.time())
            return True
        self._taken += seqs
        self.metrics.delivered.labels(self.name).inc(len(seqs))
        self.health.succeeded(time.time())
        return True


async def deliver_forever(  # noqa: PLR0913 - collaborators are passed in
    outbox: Outbox,
    sink: Sink,
    settings: DeliverySettings,
    metrics: Metrics,
    deadletter: DeadLetter,
    *,
    wake: asyncio.Event,
    rng: random.Random | None = None,
) -> None:
    """Deliver alert events to `sink` until cancelled. `wake` is set by whoever commits."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
    await _run(_Worker(outbox, _SinkTarget(outbox, sink, deadletter), settings, metrics, rng), settings, wake)


async def deliver_channel_forever(  # noqa: PLR0913 - collaborators are passed in
    outbox: Outbox,
    channel: Channel,
    settings: DeliverySettings,
    metrics: Metrics,
    deadletter: DeadLetter,
    *,
    wake: asyncio.Event,
    rng: random.Random | None = None,
) -> None:
    """Deliver the messages routed to a dispatch channel until cancelled, exactly as
    events go to a sink: life-safety first, in order, backing off as a whole."""
    rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
    target = _ChannelTarget(outbox, channel, deadletter)
    await _run(_Worker(outbox, target, settings, metrics, rng), settings, wake)


async def _run(worker: _Worker[T], settings: DeliverySettings, wake: asyncio.Event) -> None:
    try:
        while True:
            wait_s = worker.health.retry_at - time.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # backing off as a whole; new events wait too
                continue
            wake.clear()  # cleared before looking, so a commit made meanwhile is not missed
            try:
                busy = await worker.step()
            except OutboxError as exc:
                log.error("outbox read failed", extra={"fields": {"sink": worker.name, "error": str(exc)}})  # noqa: TRY400
                busy = False
                worker.health.retry_at = time.time() + settings.initial_backoff_s
            if not busy:
                await wake.wait()
    finally:
        with contextlib.suppress(Exception):
            await worker.target.aclose()
