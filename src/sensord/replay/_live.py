"""Recording live traffic from a broker, and playing a recording back to one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings
from sensord._types import RawMessage
from sensord.ingest import MqttSource
from sensord.replay._progress import Progress
from sensord.replay._recording import RecordingWriter


@dataclass(frozen=True)
class Limits:
    """When a recording stops: whichever comes first (None: no limit)."""

    messages: int | None = None
    seconds: float | None = None
    bytes: int | None = None


async def record(
    settings: BrokerSettings,
    path: Path,
    limits: Limits,
    *,
    progress: bool = True,
    password: SecretStr | None = None,
) -> int:
    """Subscribe and write every message (receive time, topic, payload) until a limit or
    cancellation; returns how many were written. The file is complete at every line."""
    source = MqttSource(settings, password, Metrics(), BatchSettings(max_size=1000, max_wait_ms=50))
    runner = asyncio.create_task(source.run(), name="record-mqtt")
    show = Progress("recorded", limits.messages) if progress else None
    deadline = time.monotonic() + limits.seconds if limits.seconds is not None else None
    writer = RecordingWriter(path)
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                async with asyncio.timeout(left):
                    batch = await anext(source.batches())
            except TimeoutError:
                break
            for m in batch:
                writer.write(m.received_at, m.topic, m.payload)
            source.ack([m.token for m in batch if m.token is not None])
            if show is not None:
                show.add(len(batch))
            if (limits.messages is not None and writer.messages >= limits.messages) or (
                limits.bytes is not None and writer.bytes >= limits.bytes
            ):
                break
    finally:
        writer.close()
        await source.aclose()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        if show is not None:
            show.done()
    return writer.messages


# (receive or event time, topic, payload, QoS): one message to publish.
Outgoing = tuple[float, str, bytes, int]


async def publish_stream(  # noqa: PLR0913 - a field tester's knobs
    stream: Iterable[Outgoing],
    settings: BrokerSettings,
    *,
    speed: float | None,
    origin: float | None = None,
    max_inflight: int = 1000,
    total: int | None = None,
    progress: bool = True,
    password: SecretStr | None = None,
    on_message: Callable[[Outgoing], None] | None = None,
) -> int:
    """Publish messages in order, paced by their times at `speed` times real time from
    `origin` (default: the first message's time; None speed: as fast as the broker takes
    them). At most `max_inflight` QoS 1 messages are unacknowledged at once (packet ids
    are 16-bit; see DOMAIN.md)."""
    client = MqttSource(settings, password, Metrics(), BatchSettings())
    runner = asyncio.create_task(client.run(), name="publish-mqtt")
    inflight = asyncio.Semaphore(max_inflight)
    pending: set[asyncio.Task[None]] = set()
    show = Progress("published", total) if progress else None

    async def send(topic: str, payload: bytes, qos: int) -> None:
        try:
            await client.publish(topic, payload, qos)
        finally:
            inflight.release()

    count = 0
    wall0 = time.monotonic()
    try:
        async with asyncio.timeout(10):
            await client.connected.wait()
        for msg in stream:
            if speed:
                origin = msg[0] if origin is None else origin
                delay = wall0 + (msg[0] - origin) / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await inflight.acquire()
            task = asyncio.create_task(send(msg[1], msg[2], msg[3]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            count += 1
            if show is not None:
                show.add()
            if on_message is not None:
                on_message(msg)
        if pending:
            await asyncio.gather(*pending)
    finally:
        await client.aclose()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        if show is not None:
            show.done()
    return count


async def play(  # noqa: PLR0913 - a field tester's knobs
    messages: Iterable[RawMessage],
    settings: BrokerSettings,
    *,
    speed: float | None,
    qos: int = 1,
    max_inflight: int = 1000,
    total: int | None = None,
    progress: bool = True,
    password: SecretStr | None = None,
) -> int:
    """Publish recorded messages in file order (so in order per device), paced by their
    receive times at `speed` times real time (None: as fast as the broker takes them)."""
    return await publish_stream(
        ((m.received_at, m.topic, m.payload, qos) for m in messages),
        settings,
        speed=speed,
        max_inflight=max_inflight,
        total=total,
        progress=progress,
        password=password,
    )
