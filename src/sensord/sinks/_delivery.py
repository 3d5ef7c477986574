"""Per-sink delivery worker: outbox → sink, with capped, jittered exponential backoff.

Each sink has its own worker, so a dead InfluxDB never holds up the dispatch webhook.
The outbox hands out life-safety events first. A retryable failure holds the events
until their backoff passes (honouring a sink's Retry-After); a permanent refusal sends
them to dead-letter with the reason, and they are not tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence

from sensord._errors import OutboxError, PermanentSinkError, RetryableSinkError
from sensord._metrics import Metrics
from sensord._settings import DeliverySettings
from sensord._types import AlertEvent
from sensord.outbox import Outbox
from sensord.sinks._base import Sink
from sensord.sinks._deadletter import DeadLetter

log = logging.getLogger("sensord.delivery")


def backoff(attempts: int, settings: DeliverySettings, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, initial * 2**attempts)]."""
    cap = min(settings.max_backoff_s, settings.initial_backoff_s * (2 ** min(attempts, 30)))
    return rng.uniform(settings.initial_backoff_s / 2, max(cap, settings.initial_backoff_s))


class _Worker:
    def __init__(  # noqa: PLR0913, PLR0917 - the worker's collaborators
        self,
        outbox: Outbox,
        sink: Sink,
        settings: DeliverySettings,
        metrics: Metrics,
        deadletter: DeadLetter,
        rng: random.Random,
    ) -> None:
        self.outbox, self.sink, self.settings = outbox, sink, settings
        self.metrics, self.deadletter, self.rng = metrics, deadletter, rng
        self.name = sink.name

    async def step(self) -> bool:
        """Deliver what is due now; False when nothing was due."""
        due = self.outbox.due(self.name, self.settings.batch_size, time.time())
        if not due:
            return False
        groups = [due] if self.sink.batched else [[d] for d in due]
        for group in groups:
            await self._deliver(group)
        self.metrics.outbox_depth.labels(self.name).set(self.outbox.depth(self.name))
        return True

    async def _deliver(self, group: Sequence[tuple[int, AlertEvent, int]]) -> None:
        seqs = [s for s, _, _ in group]
        events = [e for _, e, _ in group]
        self.metrics.delivery_attempts.labels(self.name).inc()
        try:
            await self.sink.send(events)
        except RetryableSinkError as exc:
            attempts = max(a for _, _, a in group)
            delay = max(backoff(attempts, self.settings, self.rng), exc.retry_after or 0.0)
            self.outbox.retry_later(self.name, seqs, time.time() + delay)
            self.metrics.delivery_failures.labels(self.name, "retryable").inc()
            log.warning(
                "delivery failed; will retry",
                extra={
                    "fields": {
                        "sink": self.name,
                        "events": len(seqs),
                        "retry_in_s": round(delay, 2),
                        "error": exc.reason,
                    }
                },
            )
        except PermanentSinkError as exc:
            if len(group) > 1:
                # One bad event must not take the batch with it: find it by sending singly.
                for item in group:
                    await self._deliver([item])
                return
            self.metrics.delivery_failures.labels(self.name, "permanent").inc()
            self.deadletter.undeliverable(events[0], self.name, exc.reason)
            self.outbox.ack(self.name, seqs)
            log.error(  # noqa: TRY400 - the reason is the message; no traceback helps here
                "sink refused an alert event; written to dead-letter",
                extra={"fields": {"sink": self.name, "event_id": events[0].event_id, "error": exc.reason}},
            )
        else:
            self.outbox.ack(self.name, seqs)
            self.metrics.delivered.labels(self.name).inc(len(seqs))


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
    """Deliver until cancelled. `wake` is set by whoever commits new events."""
    worker = _Worker(outbox, sink, settings, metrics, deadletter, rng or random.Random())  # noqa: S311 - jitter, not crypto
    try:
        while True:
            wake.clear()  # cleared before looking, so a commit made meanwhile is not missed
            try:
                busy = await worker.step()
            except OutboxError as exc:
                log.error("outbox read failed", extra={"fields": {"sink": sink.name, "error": str(exc)}})  # noqa: TRY400
                busy = False
            if busy:
                continue
            nxt = outbox.next_due_at(sink.name)
            timeout = None if nxt is None else max(0.01, nxt - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
    finally:
        with contextlib.suppress(Exception):
            await sink.aclose()
