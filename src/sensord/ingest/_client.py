"""sensord's MQTT source: a small asyncio MQTT 3.1.1 client built for batches.

Why our own client: acknowledgement must wait until the alert events a message caused
are in the outbox, and that happens per batch. Library clients either acknowledge when a
per-message callback returns or need a task per message to defer it (bench/clients.py
measures the candidates; README design notes give the figures). Here PUBLISH packets
are parsed many per `data_received` call into a deque, the consumer takes them in
batches, and `ack(tokens)` writes all of a batch's PUBACKs in one write.

Queue policy: never drop. Above `high_water` queued messages the socket stops being
read (`pause_reading`), so the broker holds the rest (it keeps them for our persistent
session); reading resumes below `low_water`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Sequence

from pydantic import SecretStr

from sensord._errors import ConnectRefused, IngestError
from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings, ReconnectSettings, TlsSettings
from sensord._types import RawMessage
from sensord.ingest import _packets as p

log = logging.getLogger("sensord.ingest")


def reconnect_delay(attempt: int, settings: ReconnectSettings, rng: random.Random) -> float:
    """Capped exponential backoff, jittered: uniform in [initial_s/2, cap] (never zero)."""
    cap = min(settings.max_s, settings.initial_s * 2 ** min(attempt, 30))
    return rng.uniform(min(settings.initial_s, cap) / 2, cap)


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client TLS context from the CA and optional client certificate."""
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _Protocol(asyncio.Protocol):
    """One broker connection. Knows nothing of reconnecting."""

    def __init__(self, source: MqttSource, generation: int) -> None:
        self._source = source
        self.generation = generation
        self.parser = p.Parser()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self.suback: dict[int, asyncio.Future[bytes]] = {}
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_pingresp = time.monotonic()
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.connack.done():
            self.connack.set_exception(IngestError(f"connection closed before CONNACK: {exc}"))
        self._source._connection_lost(self)  # noqa: SLF001 - the protocol is the source's own part

    def data_received(self, data: bytes) -> None:
        try:
            pubs, others = self.parser.feed(data)
        except (ValueError, IndexError) as exc:
            log.error("malformed packet from broker; reconnecting", extra={"fields": {"error": str(exc)}})  # noqa: TRY400
            self.close()
            return
        if pubs:
            self._source._received(self, pubs)  # noqa: SLF001
        for pk in others:
            self._control(pk)

    def _control(self, pk: p.Packet) -> None:
        if pk.kind == p.CONNACK and not self.connack.done():
            self.connack.set_result((pk.body[0] & 1, pk.body[1]))
        elif pk.kind == p.SUBACK:
            pid = int.from_bytes(pk.body[:2], "big")
            fut = self.suback.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(pk.body[2:])
        elif pk.kind == p.PUBACK:
            self._source._puback(int.from_bytes(pk.body[:2], "big"))  # noqa: SLF001
        elif pk.kind == p.PINGRESP:
            self.last_pingresp = time.monotonic()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause(self) -> None:
        if self.transport is not None and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class MqttSource:
    """The broker as a source of message batches, with a persistent session."""

    def __init__(
        self,
        settings: BrokerSettings,
        password: SecretStr | None,
        metrics: Metrics,
        batch: BatchSettings,
        *,
        high_water: int | None = None,
    ) -> None:
        self._settings = settings
        self._password = password
        self._metrics = metrics
        self._batch = batch
        self._high = high_water or max(4 * batch.max_size, 10_000)
        self._low = self._high // 2
        self._queue: collections.deque[RawMessage] = collections.deque()
        self._has_data = asyncio.Event()
        self._proto: _Protocol | None = None
        self._generation = 0
        self._rng = random.Random()  # noqa: S311 - jitter, not crypto
        self._out_ids = 0
        self._pending_pubacks: dict[int, asyncio.Future[None]] = {}
        self._inflight = asyncio.Semaphore(1000)
        self.connected = asyncio.Event()
        self.progress = 0
        self.session_present = False
        self._closing = False

    # -- connection -------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, subscribe, and reconnect with backoff, until cancelled."""
        attempt = 0
        # Python 3.11's asyncio.wait_for can swallow a cancellation that arrives as its
        # inner future completes; `asyncio.timeout` does not, and `_closing` stops the loop
        # even if a cancellation was lost, so a stop never hangs on reconnecting.
        while not self._closing:
            try:
                proto = await self._connect()
                attempt = 0
                await self._serve(proto)
            except ConnectRefused as exc:
                log.error("broker refused the connection", extra={"fields": {"reason": str(exc)}})  # noqa: TRY400
            except (OSError, IngestError, TimeoutError, ssl.SSLError) as exc:
                log.warning(
                    "broker connection failed", extra={"fields": {"error": str(exc) or type(exc).__name__}}
                )
            self.connected.clear()
            self._metrics.connected.set(0)
            delay = reconnect_delay(attempt, self._settings.reconnect, self._rng)
            attempt += 1
            await asyncio.sleep(delay)

    async def _connect(self) -> _Protocol:
        s = self._settings
        loop = asyncio.get_running_loop()
        self._generation += 1
        gen = self._generation
        ctx = tls_context(s.tls) if s.tls is not None else None
        async with asyncio.timeout(10):
            _, proto = await loop.create_connection(lambda: _Protocol(self, gen), s.host, s.port, ssl=ctx)
        self._proto = proto
        password = self._password.get_secret_value() if self._password is not None else None
        # clean session off: the broker keeps our subscription and queues QoS 1 messages
        # while we are away (restart, crash), and redelivers what we had not acknowledged.
        proto.write(
            p.connect(
                s.client_id,
                clean=s.clean_session,
                keepalive=s.keepalive_s,
                username=s.username,
                password=password,
            )
        )
        async with asyncio.timeout(10):
            present, code = await proto.connack
        if code:
            proto.close()
            raise ConnectRefused(p.CONNACK_REASONS.get(code, f"CONNACK code {code}"))
        self.session_present = bool(present)
        self._drop_stale()
        await self._subscribe(proto)
        self.connected.set()
        self._metrics.connected.set(1)
        log.info(
            "connected to broker",
            extra={"fields": {"host": s.host, "port": s.port, "session_present": present}},
        )
        return proto

    async def _subscribe(self, proto: _Protocol) -> None:
        filters = [(f, self._settings.qos) for f in self._settings.subscriptions]
        if not filters:  # a publish-only client (simulator, dead-letter forwarder)
            return
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        proto.suback[1] = fut
        proto.write(p.subscribe(1, filters))
        async with asyncio.timeout(10):
            codes = await fut
        for (filt, _), code in zip(filters, codes, strict=False):
            if code == 0x80:
                proto.close()
                raise IngestError(f"broker refused subscription {filt!r} (check its ACL)")

    async def _serve(self, proto: _Protocol) -> None:
        """Keepalive until the connection closes."""
        interval = max(1.0, self._settings.keepalive_s / 2)
        while not proto.closed.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await asyncio.shield(proto.closed)
            if proto.closed.done():
                break
            if time.monotonic() - proto.last_pingresp > self._settings.keepalive_s * 1.5:
                log.warning("broker stopped answering pings; reconnecting")
                proto.close()
                break
            proto.write(p.PINGREQ_PACKET)
        raise IngestError("connection to broker lost")

    def _connection_lost(self, proto: _Protocol) -> None:
        if proto is self._proto:
            self.connected.clear()
            self._metrics.connected.set(0)
        for fut in self._pending_pubacks.values():
            if not fut.done():
                fut.set_exception(IngestError("connection lost before PUBACK"))
        self._pending_pubacks.clear()

    def _drop_stale(self) -> None:
        """QoS 1 messages of a dead connection will be redelivered; don't process them twice."""
        if self._queue:
            keep = [m for m in self._queue if m.token is None or (m.token >> 16) == self._generation]
            self._queue = collections.deque(keep)

    # -- receiving --------------------------------------------------------------------
    def _received(self, proto: _Protocol, pubs: list[tuple[str, bytes, int, int]]) -> None:
        now = time.time()
        gen = proto.generation << 16
        q = self._queue
        for topic, payload, qos, pid in pubs:
            q.append(RawMessage(topic, payload, now, (gen | pid) if qos else None))
        self.progress += len(pubs)
        self._has_data.set()
        if len(q) >= self._high:
            proto.pause()

    async def batches(self) -> AsyncIterator[list[RawMessage]]:
        """Batches cut at max_size, or max_wait_ms after the first message arrived."""
        max_size, wait = self._batch.max_size, self._batch.max_wait_ms / 1000
        while True:
            if not self._queue:
                self._has_data.clear()
                await self._has_data.wait()
            if len(self._queue) < max_size and wait > 0:
                deadline = time.monotonic() + wait
                while len(self._queue) < max_size:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._has_data.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await self._has_data.wait()
            q = self._queue
            n = min(max_size, len(q))
            out = [q.popleft() for _ in range(n)]
            if self._proto is not None and self._proto.paused and len(q) <= self._low:
                self._proto.resume()
            yield out

    def ack(self, tokens: Sequence[int]) -> None:
        """Acknowledge a batch's QoS 1 messages in one write; stale tokens are ignored."""
        proto = self._proto
        if not tokens or proto is None or proto.closed.done():
            return
        gen = proto.generation
        puback = p.puback
        data = b"".join(puback(t & 0xFFFF) for t in tokens if t >> 16 == gen)
        if data:
            proto.write(data)

    # -- publishing -------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish; with QoS 1, return once the broker has acknowledged it.

        In-flight QoS 1 messages are bounded (packet ids are 16-bit; see DOMAIN.md).
        """
        await self.connected.wait()
        proto = self._proto
        assert proto is not None
        if qos == 0:
            proto.write(p.publish(topic, payload, qos=0))
            return
        async with self._inflight:
            self._out_ids = self._out_ids % 65535 + 1
            while self._out_ids in self._pending_pubacks:
                self._out_ids = self._out_ids % 65535 + 1
            pid = self._out_ids
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._pending_pubacks[pid] = fut
            proto.write(p.publish(topic, payload, qos=1, packet_id=pid))
            await fut

    def _puback(self, pid: int) -> None:
        fut = self._pending_pubacks.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def aclose(self) -> None:
        """Disconnect cleanly (the session stays on the broker)."""
        self._closing = True
        proto = self._proto
        if proto is not None and not proto.closed.done():
            proto.write(p.DISCONNECT_PACKET)
            proto.close()
