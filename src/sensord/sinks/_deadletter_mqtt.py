"""Forwarding dead-letter records to an MQTT topic, beside the JSON-lines file.

The file is the record of truth (written and flushed first); the topic is for whoever
watches the box live. Records wait in a bounded queue so a slow or absent broker never
blocks the pipeline; when it is full the oldest record is dropped and counted. A broker
that refuses the topic (the client raises PublishRefused) costs the records their copy
on the topic, counted; the file has them.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Protocol

import orjson

from sensord._errors import PublishRefused
from sensord._metrics import Metrics


class Publisher(Protocol):
    """What the forwarder needs of an MQTT client."""

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None: ...


class DeadLetterForwarder:
    """`offer` is the DeadLetter's `on_record` hook; `run` publishes until cancelled."""

    def __init__(self, topic: str, metrics: Metrics, *, max_queued: int = 10_000) -> None:
        self.topic = topic
        self._metrics = metrics
        self._queue: collections.deque[bytes] = collections.deque(maxlen=max_queued)
        self._ready = asyncio.Event()

    def offer(self, record: dict[str, Any]) -> None:
        if len(self._queue) == self._queue.maxlen:
            self._metrics.delivery_failures.labels("deadletter-mqtt", "dropped").inc()
        self._queue.append(orjson.dumps(record, default=str))
        self._ready.set()

    async def run(self, client: Publisher) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                # Popped first: a full queue drops from the left while we wait on the broker.
                # A record lost here on shutdown is still in the file.
                try:
                    await client.publish(self.topic, self._queue.popleft(), 1)
                except PublishRefused:
                    self._metrics.delivery_failures.labels("deadletter-mqtt", "refused").inc()
