"""The MQTT client against a scripted broker that refuses the way RabbitMQ 3.10 does: by
closing the connection (a publish to a denied topic, a subscription to one), and by
unsubscribing only filters subscribed on the same connection; or as Mosquitto 2.0 does
a denied publish: PUBACK, then a close. The conformance suite (tests/conformance/)
checks the same against the real brokers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sensord._errors import PublishRefused, SubscribeRefused
from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings, ReconnectSettings, WillSettings
from sensord.ingest import MqttSource
from sensord.ingest import _packets as p


def _filters(body: bytes, *, with_qos: bool) -> list[str]:
    out, i = [], 2
    while i < len(body):
        (n,) = struct.unpack_from("!H", body, i)
        out.append(body[i + 2 : i + 2 + n].decode())
        i += 2 + n + (1 if with_qos else 0)
    return out


@dataclass
class ScriptedBroker:
    """Answers CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ and QoS 1 PUBLISH; closes the
    connection instead of answering a PUBLISH to `deny_publish` (after a PUBACK with
    `puback_denied`) or a SUBSCRIBE of a filter in `deny_subscribe`. `seen` records
    (connection number, packet, detail)."""

    deny_publish: set[str] = field(default_factory=set)
    puback_denied: bool = False
    # The first connection acknowledges no PUBLISH and closes after this many.
    swallow_first: int = 0
    deny_subscribe: set[str] = field(default_factory=set)
    # SUBACK 0x80 for every filter of the first this many SUBSCRIBEs, as nats-server
    # answers while a new cluster's JetStream has no leader yet.
    fail_subscribes: int = 0
    close_after_suback: bool = False
    session_present: bool = True
    seen: list[tuple[int, str, object]] = field(default_factory=list)
    connections: int = 0
    port: int = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = self.connections
        parser = p.Parser()
        try:
            while data := await reader.read(65536):
                pubs, others = parser.feed(data)
                for topic, _, qos, pid in pubs:
                    self.seen.append((n, "PUBLISH", topic))
                    if n == 1 and self.swallow_first:
                        swallowed = [k for c, k, _ in self.seen if c == 1 and k == "PUBLISH"]
                        if len(swallowed) >= self.swallow_first:
                            return
                        continue
                    if topic in self.deny_publish:
                        if qos and self.puback_denied:
                            writer.write(p.puback(pid))
                            await writer.drain()
                        return
                    if qos:
                        writer.write(p.puback(pid))
                for pk in others:
                    if not self._answer(n, pk, writer):
                        return
                await writer.drain()
        finally:
            writer.close()

    def _answer(self, n: int, pk: p.Packet, writer: asyncio.StreamWriter) -> bool:
        if pk.kind == p.CONNECT:
            self.seen.append((n, "CONNECT", None))
            writer.write(bytes([p.CONNACK, 2, int(self.session_present), 0]))
        elif pk.kind == p.SUBSCRIBE:
            filters = _filters(pk.body, with_qos=True)
            self.seen.append((n, "SUBSCRIBE", filters))
            if self.deny_subscribe & set(filters):
                return False
            if sum(k == "SUBSCRIBE" for _, k, _ in self.seen) <= self.fail_subscribes:
                writer.write(p.packet(p.SUBACK, pk.body[:2] + bytes([p.SUBACK_FAILURE] * len(filters))))
                return True
            writer.write(p.packet(p.SUBACK, pk.body[:2] + bytes([1] * len(filters))))
            return not self.close_after_suback
        elif pk.kind == p.UNSUBSCRIBE:
            self.seen.append((n, "UNSUBSCRIBE", _filters(pk.body, with_qos=False)))
            writer.write(p.packet(p.UNSUBACK, pk.body[:2]))
        elif pk.kind == p.PINGREQ:
            writer.write(b"\xd0\x00")
        return True

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedBroker]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        async with server:
            yield self


def source(broker: ScriptedBroker, *, session_file: Path | None = None, **kw: object) -> MqttSource:
    fields: dict[str, object] = {
        "port": broker.port,
        "client_id": "unit",
        "subscriptions": ("conf/#",),
        "ack_topic_template": None,
        "reconnect": ReconnectSettings(initial_s=0.02, max_s=0.1),
        **kw,
    }
    settings = BrokerSettings.model_validate(fields)
    src = MqttSource(settings, None, Metrics(), BatchSettings(), session_file=session_file)
    src._rng = random.Random(7)  # reproducible jitter
    return src


@contextlib.asynccontextmanager
async def running(src: MqttSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(src.run())
    try:
        yield task
    finally:
        await src.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def settled(src: MqttSource, *, quiet_s: float = 0.5, limit_s: float = 10) -> None:
    """Wait until the source has stayed connected on one connection for quiet_s."""
    async with asyncio.timeout(limit_s):
        while True:
            await src.connected.wait()
            generation = src._generation
            await asyncio.sleep(quiet_s)
            if src.connected.is_set() and src._generation == generation:
                return


class TestRefusedPublish:
    def test_refused_topic_fails_its_publish_and_ingest_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A QoS 1 publish whose topic makes the broker close the connection each time
        is given up after three closes: publish raises PublishRefused, an ERROR
        names the topic, later publishes to it fail at once without being sent, other
        topics still go out, and the connection then stays up."""
        broker = ScriptedBroker(deny_publish={"ops/dl"})

        async def body() -> tuple[str, int, int]:
            async with broker.running():
                src = source(broker)
                async with running(src):
                    await asyncio.wait_for(src.connected.wait(), 5)
                    with pytest.raises(PublishRefused) as refused:
                        await asyncio.wait_for(src.publish("ops/dl", b"x"), 10)
                    await settled(src)
                    sent = sum(1 for _, kind, t in broker.seen if kind == "PUBLISH" and t == "ops/dl")
                    with pytest.raises(PublishRefused):
                        await src.publish("ops/dl", b"y")
                    await asyncio.wait_for(src.publish("ops/ok", b"z"), 5)
                    again = sum(1 for _, kind, t in broker.seen if kind == "PUBLISH" and t == "ops/dl")
                    return str(refused.value), sent, again

        with caplog.at_level(logging.ERROR, "sensord.ingest"):
            reason, sent, again = asyncio.run(body())
        assert "'ops/dl'" in reason
        assert sent == again == 3  # the first send and two resends, each closed
        assert any("refuses a topic" in r.getMessage() for r in caplog.records)

    def test_refused_will_topic_stops_the_online_message(self) -> None:
        """When the broker closes the connection on the will's online message, sensord
        stops sending it after three connections and stays connected (before, every
        connection died at once and nothing was ingested)."""
        broker = ScriptedBroker(deny_publish={"box/status"})
        will = WillSettings(topic="box/status", online="online")

        async def body() -> tuple[int, int]:
            async with broker.running():
                src = source(broker, will=will)
                async with running(src):
                    await settled(src)
                    onlines = sum(1 for _, kind, t in broker.seen if kind == "PUBLISH" and t == "box/status")
                    return onlines, broker.connections

        onlines, connections = asyncio.run(body())
        assert onlines == 3
        assert connections == 4

    def test_acknowledged_then_closed_refuses_the_topic(self) -> None:
        """Mosquitto 2.0 acknowledges a denied QoS 1 publish and then closes the
        connection: each publish returns (the broker dropped it; MQTT 3.1.1 cannot say
        so), and after three such closes the topic is refused, so a stream of dead-letter
        records to it no longer costs a reconnect each."""
        broker = ScriptedBroker(deny_publish={"ops/dl"}, puback_denied=True)

        async def body() -> tuple[list[str], int]:
            async with broker.running():
                src = source(broker)
                async with running(src):
                    outcomes = []
                    for _ in range(4):
                        await asyncio.wait_for(src.connected.wait(), 10)
                        try:
                            await asyncio.wait_for(src.publish("ops/dl", b"x"), 10)
                            outcomes.append("returned")
                        except PublishRefused:
                            outcomes.append("refused")
                        await asyncio.sleep(0.05)
                    await settled(src)
                    return outcomes, broker.connections

        outcomes, connections = asyncio.run(body())
        assert outcomes == ["returned", "returned", "returned", "refused"]
        assert connections == 4

    def test_resent_publishes_go_one_at_a_time(self) -> None:
        """Three publishes in flight, the broker closing the connection at the second:
        after the loss they are resent one at a time (each confirmed by a PINGRESP
        before the next), so only the refused one is held against its topic; the other
        two are delivered."""
        broker = ScriptedBroker(deny_publish={"bad"})

        async def refused() -> tuple[list[BaseException | None], set[str]]:
            async with broker.running():
                src = source(broker)
                async with running(src):
                    await asyncio.wait_for(src.connected.wait(), 5)
                    sends = [asyncio.create_task(src.publish(t, b"x")) for t in ("good1", "bad", "good2")]
                    done = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 15)
                    return done, src._refused

        done, topics = asyncio.run(refused())
        assert [type(d).__name__ for d in done] == ["NoneType", "PublishRefused", "NoneType"]
        assert topics == {"bad"}


class TestPublishAcrossReconnect:
    def test_publish_waiting_for_a_slot_during_a_reconnect_is_sent(self) -> None:
        """With the 1,000 packet ids in flight, a publish waits for a slot; one freed
        while a new connection resends the others (one at a time) goes out on that
        connection too, instead of waiting unsent for the next reconnect."""
        broker = ScriptedBroker(swallow_first=1000)

        async def body() -> int:
            async with broker.running():
                src = source(broker)
                async with running(src):
                    await asyncio.wait_for(src.connected.wait(), 5)
                    sends = [asyncio.create_task(src.publish("ops/x", b"%d" % i)) for i in range(1001)]
                    await asyncio.wait_for(asyncio.gather(*sends), 20)
                    return src._generation

        assert asyncio.run(body()) == 2


class TestBackoff:
    def test_connections_closed_at_once_back_off(self) -> None:
        """A broker that closes every connection right after SUBACK gets a growing
        reconnect backoff (up to max_s), not a reconnect every initial_s."""
        broker = ScriptedBroker(close_after_suback=True)

        async def body() -> int:
            async with broker.running():
                src = source(broker, reconnect=ReconnectSettings(initial_s=0.02, max_s=0.4))
                async with running(src):
                    await asyncio.sleep(1)
            return broker.connections

        # A tight loop makes about 1 / 0.015 = 65 connections; backing off, about 8.
        assert asyncio.run(body()) < 20


class TestRefusedSubscription:
    def test_subscribe_answered_by_a_close_names_the_filters(self) -> None:
        """A broker that closes the connection instead of a SUBACK (RabbitMQ for a denied
        topic) gives SubscribeRefused naming the filters and what to check."""
        broker = ScriptedBroker(deny_subscribe={"secret/#"})

        async def body() -> str:
            async with broker.running():
                src = source(broker, subscriptions=("conf/#", "secret/#"))
                with pytest.raises(SubscribeRefused) as exc:
                    await asyncio.wait_for(src._connect(), 5)
                return str(exc.value)

        reason = asyncio.run(body())
        assert "'secret/#'" in reason
        assert "permissions" in reason

    def test_suback_failure_is_retried_until_granted(self, caplog: pytest.LogCaptureFixture) -> None:
        """SUBACK 0x80 (an ACL, or a new NATS cluster not ready yet): logged at ERROR as a
        refused subscription with both causes named, then retried with backoff until the
        broker grants it; the source ends up connected and subscribed."""
        broker = ScriptedBroker(fail_subscribes=3)

        async def body() -> bool:
            async with broker.running():
                src = source(broker)
                async with running(src):
                    await settled(src)
                    return src.connected.is_set()

        with caplog.at_level(logging.INFO, "sensord.ingest"):
            assert asyncio.run(body())
        refusals = [r for r in caplog.records if r.getMessage() == "broker refused the subscription"]
        assert len(refusals) == 3
        assert all(r.levelno == logging.ERROR for r in refusals)
        reason = refusals[0].fields["reason"]  # type: ignore[attr-defined]
        assert "'conf/#'" in reason
        assert "ACL" in reason
        assert "not be ready" in reason
        assert [k for _, k, _ in broker.seen].count("CONNECT") == 4


class TestSessionGoneWhileAway:
    def test_session_gone_after_a_restart_is_a_warning(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """sensord restarted (its session file from the last run is there) and the broker
        has no session for it (expired while it was down, as RabbitMQ's
        mqtt.subscription_ttl does): what the broker held is gone, said at WARNING, not
        taken for a first start."""
        session = tmp_path / "mqtt-session.json"
        session.write_text('{"filters": ["conf/#"]}')
        broker = ScriptedBroker(session_present=False)

        async def body() -> None:
            async with broker.running():
                src = source(broker, session_file=session)
                await asyncio.wait_for(src._connect(), 5)
                await src.aclose()

        with caplog.at_level(logging.INFO, "sensord.ingest"):
            asyncio.run(body())
        lost = [r for r in caplog.records if "lost our session" in r.getMessage()]
        assert [r.levelno for r in lost] == [logging.WARNING]

    def test_first_start_is_no_warning(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """Without a session file (a first start) no session on the broker is expected."""
        broker = ScriptedBroker(session_present=False)

        async def body() -> None:
            async with broker.running():
                src = source(broker, session_file=tmp_path / "mqtt-session.json")
                await asyncio.wait_for(src._connect(), 5)
                await src.aclose()

        with caplog.at_level(logging.INFO, "sensord.ingest"):
            asyncio.run(body())
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class TestDroppedFilters:
    def test_dropped_filter_is_subscribed_again_then_unsubscribed(self, tmp_path: Path) -> None:
        """A filter dropped from the config is subscribed on the new connection before it
        is unsubscribed: RabbitMQ 3.10 unsubscribes only what the same connection
        subscribed, and for other brokers it is the same subscription again."""
        session = tmp_path / "mqtt-session.json"
        session.write_text('{"filters": ["conf/#", "old/#"]}')
        broker = ScriptedBroker(session_present=True)

        async def body() -> list[tuple[str, object]]:
            async with broker.running():
                src = source(broker, session_file=session)
                await asyncio.wait_for(src._connect(), 5)
                await src.aclose()
            return [(kind, d) for _, kind, d in broker.seen if kind in ("SUBSCRIBE", "UNSUBSCRIBE")]

        assert asyncio.run(body()) == [
            ("SUBSCRIBE", ["old/#"]),
            ("UNSUBSCRIBE", ["old/#"]),
            ("SUBSCRIBE", ["conf/#"]),
        ]
