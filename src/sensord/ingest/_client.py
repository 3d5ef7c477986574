"""sensord's MQTT source: a small asyncio MQTT 3.1.1 client built for batches.

Why our own client: acknowledgement must wait until the alert events a message caused
are in the outbox, and that happens per batch. Library clients either acknowledge when a
per-message callback returns or need a task per message to defer it (bench/clients.py
measures the candidates; README design notes give the figures). Here PUBLISH packets
are parsed many per `data_received` call into a deque, the consumer takes them in
batches, and `ack(tokens)` writes all of a batch's PUBACKs (PUBRECs for QoS 2) in one
write.

Queue policy: never drop. Above `receive_maximum` messages held (queued, or handed out
and not yet acknowledged) the socket stops being read, so the broker holds the rest for
our persistent session; reading resumes below half of it.

Sessions (MQTT 3.1.1, 4.4): when the broker kept our session it redelivers every
message we had not acknowledged, so those still queued from the old connection are
dropped here (their acks could not reach it anyway). When it lost the session nothing
comes back: the queued messages are kept and processed, nothing to acknowledge, and the
loss is logged at WARNING. Our own unacknowledged QoS 1 publishes are resent with DUP.

Refusals without a refusal code: MQTT 3.1.1 cannot refuse a PUBLISH, so a broker may
close the connection instead (RabbitMQ for a topic its permissions deny, also for a
SUBSCRIBE; Mosquitto 2.0 right after its PUBACK). Each of our publishes is confirmed by
a PINGREQ behind it (`Connection`), and those resent on a new connection go one at a
time; a topic left unconfirmed by `_REFUSED_AFTER` closes in a row is refused
(PublishRefused, logged at ERROR) and ingest goes on. The reconnect backoff starts over
only after a connection that lasted, so a broker that closes every connection at once
is not hammered.
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
from pathlib import Path

from pydantic import SecretStr

from sensord._errors import ConnectRefused, IngestError, PublishRefused, SubscribeRefused
from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerHost, BrokerSettings
from sensord._types import RawMessage
from sensord.decode import filter_matches
from sensord.ingest import _packets as p
from sensord.ingest._connection import Connection, Failover, tls_context, tls_failure
from sensord.ingest._subscribe import subscribe

log = logging.getLogger("sensord.ingest")

# A connection that lasted this long was a working one: the backoff starts over after it.
_STABLE_S = 10.0
# Connections the broker closed with our publish to one topic unconfirmed, in a row,
# before the topic counts as refused (one could be a broker restart at that moment).
_REFUSED_AFTER = 3


class MqttSource:
    """The broker as a source of message batches, with a persistent session."""

    def __init__(  # noqa: PLR0913 - the client's collaborators
        self,
        settings: BrokerSettings,
        password: SecretStr | None,
        metrics: Metrics,
        batch: BatchSettings,
        *,
        high_water: int | None = None,
        session_file: Path | None = None,
        filters: Sequence[str] | None = None,
    ) -> None:
        self._settings = settings
        # What to subscribe to: the settings' filters, or (a shard) its communities' own.
        self._filters = tuple(filters) if filters is not None else settings.filters
        self._password = password
        self._metrics = metrics
        self._batch = batch
        self._high = high_water or max(settings.receive_maximum, batch.max_size)
        self._low = self._high // 2
        self._session_file = session_file
        self._queue: collections.deque[RawMessage] = collections.deque()
        self._has_data = asyncio.Event()
        self._proto: Connection | None = None
        self._generation = 0
        self._rng = random.Random()  # noqa: S311 - jitter, not crypto
        self._out_ids = 0
        # Our QoS 1 publishes the broker has not acknowledged: resent on reconnect.
        self._outgoing: dict[int, tuple[str, bytes, bool, asyncio.Future[None]]] = {}
        self._inflight = asyncio.Semaphore(1000)
        self._strikes: dict[str, int] = {}  # topic -> connections closed on its publish, in a row
        self._refused: set[str] = set()
        self._handed_out = 0  # messages in batches not yet acknowledged
        self.connected = asyncio.Event()
        self.progress = 0
        self.session_present = False
        # A session file means an earlier run subscribed: a broker without our session
        # lost it (RabbitMQ's mqtt.subscription_ttl, Mosquitto's persistent_client_expiration
        # while sensord was down), and the messages it held for us with it.
        self._had_session = session_file is not None and session_file.exists()
        self.node: BrokerHost | None = None  # the node of the last connection that came up
        # Until then (time.monotonic()), what arrives is gathered for one batch: see
        # BrokerSettings.redelivery_wait_s.
        self._hold_until = 0.0
        self._hold_filters: set[str] = set()  # filters whose first message of the hold came
        self._closing = False

    # -- connection -------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, subscribe, and reconnect with backoff, until cancelled; on the loss
        of a connection the next node of `broker.hosts` is tried first (`Failover`)."""
        failover = Failover(self._settings.endpoints, self._settings.reconnect, self._rng)
        # Python 3.11's asyncio.wait_for can swallow a cancellation that arrives as its
        # inner future completes; `asyncio.timeout` does not, and `_closing` stops the loop
        # even if a cancellation was lost, so a stop never hangs on reconnecting.
        while not self._closing:
            node = failover.node
            up_since: float | None = None
            try:
                proto = await self._connect(node)
                up_since = time.monotonic()
                await self._serve(proto)
            except (ConnectRefused, SubscribeRefused) as exc:
                self._metrics.broker_connect_failures.labels(node.label).inc()
                fields = {"broker": node.label, "reason": str(exc)}
                what = "subscription" if isinstance(exc, SubscribeRefused) else "connection"
                log.error("broker refused the %s", what, extra={"fields": fields})  # noqa: TRY400
            except (OSError, IngestError, TimeoutError, ssl.SSLError) as exc:
                if up_since is None:
                    self._metrics.broker_connect_failures.labels(node.label).inc()
                log.warning(
                    "broker connection lost" if up_since is not None else "broker connection failed",
                    extra={"fields": {"broker": node.label, "error": str(exc) or type(exc).__name__}},
                )
            if self._proto is not None:
                self._proto.close()
            self.connected.clear()
            self._metrics.connected.set(0)
            # A broker that closes each new connection at once (a refused publish, another
            # client taking our id over and over) gets a growing backoff, not a tight loop:
            # only a connection that lasted _STABLE_S counts as one that was up.
            stable = up_since is not None and time.monotonic() - up_since >= _STABLE_S
            if stable:
                failover.up()
            delay = failover.down(was_up=stable)
            if delay:
                await asyncio.sleep(delay)

    async def _connect(self, node: BrokerHost | None = None) -> Connection:
        """One connection attempt to `node` (default: the first listed), subscribed."""
        s = self._settings
        node = node or s.endpoints[0]
        loop = asyncio.get_running_loop()
        self._generation += 1
        gen = self._generation
        ctx = tls_context(s.tls) if s.tls is not None else None
        # Each node's certificate is checked against that node's own name.
        server_name = (node.tls_server_name or node.host) if ctx is not None else None
        try:
            async with asyncio.timeout(10):
                _, proto = await loop.create_connection(
                    lambda: Connection(self, gen, s.max_packet_bytes),
                    node.host,
                    node.port,
                    ssl=ctx,
                    server_hostname=server_name,
                )
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
            if ctx is None:
                raise
            raise tls_failure(exc, node.host, node.port) from None
        self._proto = proto
        password = self._password.get_secret_value() if self._password is not None else None
        will = None
        if s.will is not None:
            will = p.Will(s.will.topic, s.will.payload.encode(), s.will.qos, s.will.retain)
        # clean session off: the broker keeps our subscription and queues QoS 1 messages
        # while we are away (restart, crash), and redelivers what we had not acknowledged.
        proto.write(
            p.connect(
                s.client_id,
                clean=s.clean_session,
                keepalive=s.keepalive_s,
                username=s.username,
                password=password,
                will=will,
            )
        )
        async with asyncio.timeout(10):
            present, code = await proto.connack
        if code:
            proto.close()
            raise ConnectRefused(p.CONNACK_REASONS.get(code, f"CONNACK code {code}"))
        self.session_present = bool(present)
        self._after_connack()
        self._hold_for_redeliveries()
        await subscribe(
            proto, self._filters, self._settings.qos, self._session_file, present=self.session_present
        )
        await self._send_own(proto)
        # Only now may reading pause: the SUBACK and PINGRESPs above come behind the
        # messages the broker sends first.
        proto.established = True
        self.connected.set()
        self._metrics.connected.set(1)
        self._now_on(node)
        return proto

    def _now_on(self, node: BrokerHost) -> None:
        """Metrics and log of the node in use; a different node than the last is a failover."""
        previous, self.node = self.node, node
        for other in self._settings.endpoints:
            self._metrics.broker_node.labels(other.label).set(1 if other == node else 0)
        fields: dict[str, object] = {"broker": node.label, "session_present": self.session_present}
        if previous is not None and previous != node:
            self._metrics.broker_failovers.inc()
            fields["previous"] = previous.label
            log.warning("failed over to another broker node", extra={"fields": fields})
        else:
            log.info("connected to broker", extra={"fields": fields})

    def _after_connack(self) -> None:
        """Apply what the broker said about our session to the messages still queued."""
        gen = self._generation

        def stale(m: RawMessage) -> bool:
            return m.token is not None and (m.token >> 16) != gen

        n_stale = sum(1 for m in self._queue if stale(m))
        if self.session_present:
            if n_stale:  # the broker redelivers them; processing these too would be twice
                self._queue = collections.deque(m for m in self._queue if not stale(m))
        elif not self._settings.clean_session:
            # Nothing will come back: process what we have, with nothing to acknowledge.
            self._queue = collections.deque(
                RawMessage(m.topic, m.payload, m.received_at) if stale(m) else m for m in self._queue
            )
            if self._had_session:
                log.warning(
                    "the broker lost our session: messages it held for sensord are gone (readings may be "
                    "missing); those already received are kept",
                    extra={"fields": {"kept": n_stale}},
                )
            else:
                log.info("no session on the broker yet (first start, or the broker lost it)")
        self._had_session = not self._settings.clean_session

    def _hold_for_redeliveries(self) -> None:
        """With the session present, a broker that redelivers only after its ack timeout
        (nats-server) sends what it had sent the last connection behind newer messages,
        which the rules would skip as late readings. So what arrives is gathered into one
        batch, which the rules sort per device, until `redelivery_wait_s` has passed
        since the connect and since the first message of each subscription: a cluster
        delivers nothing on a subscription whose consumer is electing a new leader, and
        that leader redelivers shortly after it starts delivering again."""
        wait = self._settings.redelivery_wait_s
        self._hold_filters.clear()
        if not (self.session_present and wait > 0):
            self._hold_until = 0.0
            return
        self._hold_until = time.monotonic() + wait
        log.info(
            "gathering messages for the broker's redeliveries before processing them",
            extra={"fields": {"seconds": wait}},
        )

    def _extend_hold(self, topic: str, now: float) -> None:
        """The first message of a subscription during the hold: wait from it on."""
        for f in self._settings.filters:
            if f not in self._hold_filters and filter_matches(f, topic):
                self._hold_filters.add(f)
                self._hold_until = max(self._hold_until, now + self._settings.redelivery_wait_s)
                return

    async def _send_own(self, proto: Connection) -> None:
        """Our own publishes on a new connection: the QoS 1 ones the broker had not
        acknowledged (MQTT-4.4.0-1: same ids, DUP set), then the will's online message.
        One at a time (a round trip each; the daemon has one or two), so that a broker
        that closes the connection for one of them shows which."""
        for pid, (topic, payload, retain, _) in list(self._outgoing.items()):
            if pid in self._outgoing:  # not refused meanwhile
                again = p.publish(topic, payload, qos=1, packet_id=pid, retain=retain, dup=True)
                await self._confirm(proto, topic, again)
        will = self._settings.will
        if will is not None and will.online is not None and will.topic not in self._refused:
            online = p.publish(will.topic, will.online.encode(), qos=0, retain=will.retain)
            await self._confirm(proto, will.topic, online)

    async def _confirm(self, proto: Connection, topic: str, packet: bytes) -> None:
        proto.publish_own(packet, topic)
        try:
            async with asyncio.timeout(10):
                await proto.confirmed()
        except IngestError:
            raise IngestError(f"the broker closed the connection on sensord's publish to {topic!r}") from None

    def _confirmed(self, topics: tuple[str, ...]) -> None:
        for topic in topics:
            self._strikes.pop(topic, None)

    def _strike(self, topic: str) -> None:
        n = self._strikes[topic] = self._strikes.get(topic, 0) + 1
        if n < _REFUSED_AFTER:
            return
        self._refused.add(topic)
        err = PublishRefused(
            f"the broker closed the connection each of the last {n} times sensord published to {topic!r}: "
            "it refuses that topic (check the permissions of sensord's user on the broker); sensord "
            "publishes there no more until restarted"
        )
        log.error("broker refuses a topic sensord publishes to", extra={"fields": {"reason": str(err)}})
        for pid, (t, _, _, fut) in list(self._outgoing.items()):
            if t == topic:
                del self._outgoing[pid]
                if not fut.done():
                    fut.set_exception(err)

    async def _serve(self, proto: Connection) -> None:
        """Keepalive until the connection closes."""
        keepalive = self._settings.keepalive_s
        interval = max(1.0, keepalive / 2)
        while not proto.closed.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await asyncio.shield(proto.closed)
            if proto.closed.done():
                break
            if proto.silent_for() > keepalive * 1.5:
                log.warning("broker sent nothing for 1.5 x keepalive; reconnecting")
                proto.close()
                break
            proto.ping()
        raise IngestError("connection to broker lost")

    def _connection_lost(self, proto: Connection, suspects: set[str]) -> None:
        """`suspects`: topics of our publishes the broker closed the connection on before
        confirming them."""
        if proto is self._proto:
            self.connected.clear()
            self._metrics.connected.set(0)
        if not self._closing:
            for topic in sorted(suspects):
                self._strike(topic)

    # -- receiving --------------------------------------------------------------------
    def _received(self, proto: Connection, pubs: list[p.Publish]) -> None:
        now = time.time()
        gen = proto.generation << 16
        q = self._queue
        if self._hold_until and len(self._hold_filters) < len(self._settings.filters):
            mono = time.monotonic()
            for pub in pubs:
                self._extend_hold(pub[0], mono)
        # Every PUBLISH is kept, even one under a QoS 1 packet id not yet acknowledged:
        # the broker resending it (nats-server after its ack_wait), or (nats-server 2.9.10)
        # another message under a reused id, which must not be dropped. Only the first
        # copy carries the token: one PUBACK answers the id, and a second, sent later,
        # could acknowledge a new message the broker had meanwhile given that id before
        # it was processed. What the broker then still waits for, it sends again.
        unacked = proto.unacked
        for topic, payload, qos, pid in pubs:
            token = None
            if qos == 1:
                if pid not in unacked:
                    unacked.add(pid)
                    token = gen | pid
            elif qos:
                token = gen | pid
            q.append(RawMessage(topic, payload, now, token))
        self.progress += len(pubs)
        self._has_data.set()
        if len(q) + self._handed_out >= self._high:
            proto.pause()

    def _oversized(self, packets: list[p.Oversized]) -> None:
        cap = self._settings.max_packet_bytes
        for o in packets:
            self._metrics.oversized_packets.inc()
            log.warning(
                "PUBLISH larger than broker.max_packet_bytes: its start is kept for the dead-letter "
                "(too_large), the rest dropped",
                extra={"fields": {"topic": o.topic[:200], "bytes": o.size, "cap": cap}},
            )

    async def batches(self) -> AsyncIterator[list[RawMessage]]:
        """Batches cut at max_size, or max_wait_ms after the first message arrived."""
        max_size, wait = self._batch.max_size, self._batch.max_wait_ms / 1000
        while True:
            if not self._queue:
                self._has_data.clear()
                await self._has_data.wait()
            if self._settings.redelivery_wait_s and not self.connected.is_set():
                # What the lost connection brought waits for the next connect: redelivered
                # then (session present) it is gathered with the rest, and an ack cannot
                # take effect ahead of a reading of another subscription lost in flight.
                await self.connected.wait()
                continue
            if self._hold_until:
                out = await self._gathered()
                if out:
                    yield out
                continue
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
            self._handed_out += sum(1 for m in out if m.token is not None)
            self._maybe_resume()
            yield out

    async def _gathered(self) -> list[RawMessage]:
        """Wait out the hold (a reconnect meanwhile starts a new one), then everything
        received, as one batch whatever its size, so its readings are sorted together."""
        # Polled, not an event: the deadline itself moves when a reconnect starts a new hold.
        while (left := self._hold_until - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)
        self._hold_until = 0.0
        self._hold_filters.clear()
        out = list(self._queue)
        self._queue.clear()
        self._handed_out += sum(1 for m in out if m.token is not None)
        self._maybe_resume()
        return out

    def _maybe_resume(self) -> None:
        proto = self._proto
        if proto is not None and proto.paused and len(self._queue) + self._handed_out <= self._low:
            proto.resume()

    def ack(self, tokens: Sequence[int]) -> None:
        """Acknowledge a batch's messages in one write; stale tokens are ignored."""
        self._handed_out = max(0, self._handed_out - len(tokens))
        proto = self._proto
        if tokens and proto is not None and not proto.closed.done():
            gen = proto.generation
            proto.ack([t & 0xFFFF for t in tokens if t >> 16 == gen])
        self._maybe_resume()

    # -- publishing -------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, qos: int = 1, *, retain: bool = False) -> None:
        """Publish; with QoS 1, return once the broker has acknowledged it, across
        reconnects (it is resent with DUP on each). In-flight QoS 1 messages are bounded
        (packet ids are 16-bit; see DOMAIN.md). A topic the broker refuses raises
        PublishRefused."""
        self._check_refused(topic)
        if qos == 0:
            await self.connected.wait()
            if self._proto is not None:
                self._proto.publish_own(p.publish(topic, payload, qos=0, retain=retain), topic)
            return
        async with self._inflight:
            # Added to _outgoing only while connected, so written at once: a new connection
            # resends what it found there before it counts as connected.
            await self.connected.wait()
            self._check_refused(topic)
            self._out_ids = self._out_ids % 65535 + 1
            while self._out_ids in self._outgoing:
                self._out_ids = self._out_ids % 65535 + 1
            pid = self._out_ids
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._outgoing[pid] = (topic, payload, retain, fut)
            if self._proto is not None and self.connected.is_set():
                packet = p.publish(topic, payload, qos=1, packet_id=pid, retain=retain)
                self._proto.publish_own(packet, topic)
            try:
                await fut
            finally:
                self._outgoing.pop(pid, None)

    def _check_refused(self, topic: str) -> None:
        if topic in self._refused:
            raise PublishRefused(f"not sent: the broker refuses publishes to {topic!r} (an ERROR said so)")

    def _puback(self, pid: int) -> None:
        entry = self._outgoing.get(pid)
        if entry is not None and not entry[3].done():
            entry[3].set_result(None)

    async def aclose(self) -> None:
        """Say goodbye: the will's offline payload (a clean stop does not trigger the
        will), then DISCONNECT. The session stays on the broker."""
        self._closing = True
        proto = self._proto
        if proto is None or proto.closed.done():
            return
        will = self._settings.will
        if will is not None and will.topic not in self._refused:
            proto.write(p.publish(will.topic, will.payload.encode(), qos=0, retain=will.retain))
        proto.write(p.DISCONNECT_PACKET)
        if proto.transport is not None:
            # Let the transport flush the DISCONNECT before the socket closes.
            proto.transport.close()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(2):
                    await asyncio.shield(proto.closed)
