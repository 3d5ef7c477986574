"""One broker connection (an asyncio Protocol): packets in, the source told; no
reconnecting here. Also the TLS context, the reconnect backoff and the choice of the
next broker node (failover)."""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
import time
from typing import TYPE_CHECKING

from sensord._errors import IngestError
from sensord._settings import BrokerHost, ReconnectSettings, TlsSettings
from sensord.ingest import _packets as p

if TYPE_CHECKING:
    from sensord.ingest._client import MqttSource

log = logging.getLogger("sensord.ingest")


def reconnect_delay(attempt: int, settings: ReconnectSettings, rng: random.Random) -> float:
    """Capped exponential backoff, jittered: uniform in [initial_s/2, cap] (never zero)."""
    cap = min(settings.max_s, settings.initial_s * 2 ** min(attempt, 30))
    return rng.uniform(min(settings.initial_s, cap) / 2, cap)


class Failover:
    """Which broker node to try next and how long to wait before it (sans I/O).

    A connection that was up and is lost, or an attempt that fails, moves on to the next
    node at once: the node just lost is the one most likely down, and a cluster's other
    nodes hold our session. Only once every node of a round has failed does the capped,
    jittered backoff wait, growing per failed round and reset by a connection that comes
    up, so a broker down as a whole is not hammered. With one node that is the plain
    backoff: a wait before every new attempt, initial_s/2 to initial_s after a loss."""

    def __init__(
        self, nodes: tuple[BrokerHost, ...], reconnect: ReconnectSettings, rng: random.Random
    ) -> None:
        if not nodes:
            raise ValueError("no broker node to connect to")
        self._nodes = nodes
        self._reconnect = reconnect
        self._rng = rng
        self._index = 0
        self._failed_in_round = 0
        self._rounds = 0  # rounds of failures since a connection was last up

    @property
    def node(self) -> BrokerHost:
        """The node to try now."""
        return self._nodes[self._index]

    def up(self) -> None:
        """The connection to `node` came up: the backoff starts over."""
        self._rounds = 0
        self._failed_in_round = 0

    def down(self, *, was_up: bool) -> float:
        """The connection to `node` ended (`was_up`) or the attempt failed: move to the
        next node; returns the seconds to wait before trying it."""
        # A node just lost counts as the first failure of a new round.
        self._failed_in_round = 1 if was_up else self._failed_in_round + 1
        self._index = (self._index + 1) % len(self._nodes)
        if self._failed_in_round < len(self._nodes):
            return 0.0
        self._failed_in_round = 0
        delay = reconnect_delay(self._rounds, self._reconnect, self._rng)
        self._rounds += 1
        return delay


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """A client TLS context from the CA and optional client certificate."""
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file is not None:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_failure(exc: BaseException, host: str, port: int) -> IngestError:
    """A TLS connect failure in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return IngestError(
            f"TLS to {host}:{port}: the broker's certificate was not accepted ({exc.verify_message}); "
            "check broker.tls.ca_file and that the host name matches the certificate"
        )
    return IngestError(
        f"TLS handshake with {host}:{port} failed ({type(exc).__name__}: {exc}); "
        "the port may not speak TLS (is it the broker's plain listener?)"
    )


class Connection(asyncio.Protocol):
    """One broker connection. Liveness is judged by what the broker sent: every byte
    read counts, and while reading is paused (backpressure) nothing is judged, since
    the broker's answers wait unread in the socket.

    Our own publishes are confirmed by a PINGREQ written after them: brokers handle a
    connection's packets in order, and one that refuses a publish by closing the
    connection (RabbitMQ; Mosquitto 2.0 just after its PUBACK) never answers it. One
    PINGREQ is out at a time, carrying the topics published before it; when the broker
    closes the connection, the topics not yet confirmed are reported as suspects."""

    def __init__(self, source: MqttSource, generation: int, max_packet: int) -> None:
        self._source = source
        self.generation = generation
        self.parser = p.Parser(max_packet)
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[tuple[int, int]] = loop.create_future()
        self.acks: dict[tuple[int, int], asyncio.Future[bytes]] = {}  # (kind, packet id)
        self.closed: asyncio.Future[None] = loop.create_future()
        self.last_heard = time.monotonic()
        self.paused = False
        # Reading is never paused before the subscription is confirmed: the broker sends
        # queued messages right after CONNACK, and the SUBACK is behind them.
        self.established = False
        # QoS 2 received: delivered, PUBREC not yet sent (it goes with the batch's acks).
        self.qos2_held: set[int] = set()
        # QoS 2 received: PUBREC sent, waiting for PUBREL (a DUP of these is not new).
        self.qos2_released: set[int] = set()
        self.pings: collections.deque[tuple[str, ...]] = collections.deque()  # topics per PINGREQ out
        self.unpinged: list[str] = []  # topics published since the last PINGREQ
        self._settled: asyncio.Future[None] | None = None
        self.closed_by_us = False
        # QoS 1 received and not yet acknowledged: a PUBLISH under one of these ids is a
        # further copy, processed but not acknowledged again (MqttSource._received).
        self.unacked: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.connack.done():
            self.connack.set_exception(IngestError(f"connection closed before CONNACK: {exc}"))
        for fut in (*self.acks.values(), self._settled):
            if fut is not None and not fut.done():
                fut.set_exception(IngestError("connection closed while waiting for the broker"))
        suspects = set() if self.closed_by_us else self.unconfirmed()
        self._source._connection_lost(self, suspects)  # noqa: SLF001 - the connection is the source's own part

    def data_received(self, data: bytes) -> None:
        self.last_heard = time.monotonic()
        try:
            pubs, others = self.parser.feed(data)
        except (ValueError, IndexError) as exc:
            log.error(  # noqa: TRY400 - the reason is the message; no traceback helps
                "malformed packet from the broker; closing the connection",
                extra={"fields": {"error": str(exc)}},
            )
            self.close()
            return
        if self.parser.oversized:
            self._source._oversized(self.parser.oversized)  # noqa: SLF001
            self.parser.oversized = []
        if pubs:
            self._source._received(self, self._new_only(pubs))  # noqa: SLF001
        for pk in others:
            self._control(pk)

    def _new_only(self, pubs: list[p.Publish]) -> list[p.Publish]:
        """QoS 2: a PUBLISH whose id is still held or released is a DUP, not a new message."""
        if not any(q == 2 for _, _, q, _ in pubs):
            return pubs
        out: list[p.Publish] = []
        for pub in pubs:
            pid = pub[3]
            if pub[2] == 2:
                if pid in self.qos2_released:
                    self.write(p.pubrec(pid))
                    continue
                if pid in self.qos2_held:
                    continue
                self.qos2_held.add(pid)
            out.append(pub)
        return out

    def _control(self, pk: p.Packet) -> None:
        if pk.kind == p.CONNACK and not self.connack.done():
            self.connack.set_result((pk.body[0] & 1, pk.body[1]))
        elif pk.kind == p.PINGRESP:
            self._pingresp()
        elif pk.kind in (p.SUBACK, p.UNSUBACK):
            fut = self.acks.pop((pk.kind, pk.packet_id), None)
            if fut is not None and not fut.done():
                fut.set_result(pk.body[2:])
        elif pk.kind == p.PUBACK:
            self._source._puback(pk.packet_id)  # noqa: SLF001
        elif pk.kind == p.PUBREL:
            # MQTT-4.3.3-2: answer PUBCOMP, even for an id we no longer know.
            self.qos2_released.discard(pk.packet_id)
            self.write(p.pubcomp(pk.packet_id))

    def publish_own(self, packet: bytes, topic: str) -> None:
        """Write one of our own PUBLISH packets, to be confirmed by a PINGREQ."""
        self.write(packet)
        self.unpinged.append(topic)
        if not self.pings:
            self.ping()

    def ping(self) -> None:
        """PINGREQ (keep-alive, and confirmation of what was published before it)."""
        self.write(p.PINGREQ_PACKET)
        self.pings.append(tuple(self.unpinged))
        self.unpinged = []

    def _pingresp(self) -> None:
        if self.pings:
            topics = self.pings.popleft()
            if topics:
                self._source._confirmed(topics)  # noqa: SLF001
        if self.unpinged and not self.pings:
            self.ping()
        if not self.pings and self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def unconfirmed(self) -> set[str]:
        """Topics of our publishes on this connection that no PINGRESP confirmed yet."""
        return {t for topics in self.pings for t in topics} | set(self.unpinged)

    async def confirmed(self) -> None:
        """Wait until every publish of ours so far is confirmed; IngestError if the
        connection closes first."""
        if self.pings or self.unpinged:
            self._settled = asyncio.get_running_loop().create_future()
            if not self.pings:
                self.ping()
            await self._settled

    def expect(self, kind: int, packet_id: int) -> asyncio.Future[bytes]:
        """A future for the SUBACK/UNSUBACK of `packet_id`."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.acks[kind, packet_id] = fut
        return fut

    def ack(self, pids: list[int]) -> None:
        """PUBACK (QoS 1) or PUBREC (QoS 2) for these received messages, in one write."""
        self.unacked.difference_update(pids)
        out = []
        for pid in pids:
            if pid in self.qos2_held:
                self.qos2_held.discard(pid)
                self.qos2_released.add(pid)
                out.append(p.pubrec(pid))
            else:
                out.append(p.puback(pid))
        self.write(b"".join(out))

    def silent_for(self) -> float:
        """Seconds since the broker last sent anything; 0 while we are not reading."""
        return 0.0 if self.paused else time.monotonic() - self.last_heard

    def write(self, data: bytes) -> None:
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause(self) -> None:
        if self.transport is not None and not self.paused and self.established:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and self.paused:
            self.paused = False
            # Whatever the broker sent meanwhile is in the socket: it was alive.
            self.last_heard = time.monotonic()
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed_by_us = True
        if self.transport is not None:
            self.transport.close()
