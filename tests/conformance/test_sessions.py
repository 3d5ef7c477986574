"""Our MQTT client against real brokers we did not write (Mosquitto with the shipped
settings, nats-server's MQTT, RabbitMQ's MQTT plugin): persistent sessions across
restarts of either side, a session the broker lost, redelivery, keep-alive while reading
is paused, our own QoS 1 publishes resent after a reconnect, broker-initiated
disconnects, the will and its retained status."""

from __future__ import annotations

import asyncio
import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from sensord._settings import WillSettings
from sensord.ingest import MqttSource
from tests.conformance.conftest import Broker, SharedRabbit, payloads, running, take, take_all

pytestmark = pytest.mark.integration


async def wait_for(cond: Callable[[], bool], limit_s: float = 20) -> None:
    """Poll `cond` (state of the client under test, which has no event for it)."""
    async with asyncio.timeout(limit_s):
        while not cond():  # noqa: ASYNC110 - polling a condition of the code under test
            await asyncio.sleep(0.05)


class TestPersistentSession:
    def test_messages_queued_while_away_arrive(self, broker: Broker) -> None:
        """Messages published while sensord is stopped arrive when it comes back, and
        the broker says it kept the session."""

        async def body() -> tuple[bool, set[bytes]]:
            first = broker.source()
            async with running(first):
                pass
            await asyncio.to_thread(broker.publish, "conf/a", payloads(300))
            again = broker.source()
            async with running(again):
                got = await take(again, 300)
                return again.session_present, {m.payload for m in got}

        present, got = asyncio.run(body())
        assert present
        assert got == set(payloads(300))

    def test_unacknowledged_are_redelivered_after_a_crash(self, broker: Broker) -> None:
        """Messages received but not acknowledged when the connection dies abruptly come
        again on the next connection."""

        async def body() -> set[bytes]:
            src = broker.source()
            async with running(src):
                await asyncio.to_thread(broker.publish, "conf/a", payloads(100))
                await take(src, 100, ack=False)
                assert src._proto is not None
                assert src._proto.transport is not None
                src._proto.transport.abort()
            again = broker.source()
            async with running(again):
                return {m.payload for m in await take(again, 100)}

        assert asyncio.run(body()) == set(payloads(100))

    def test_session_survives_a_broker_restart(self, broker: Broker) -> None:
        """A broker restart (with its data kept) keeps the session: the messages
        received but not acknowledged before it come again, what is published after it
        arrives, and the broker says the session was present."""

        async def body() -> tuple[bool, set[bytes]]:
            src = broker.source()
            async with running(src):
                await asyncio.to_thread(broker.publish, "conf/a", payloads(100))
                await take(src, 100, ack=False)
                await asyncio.to_thread(broker.restart)
                await wait_for(lambda: src._generation >= 2 and src.connected.is_set())
                await asyncio.to_thread(broker.publish, "conf/a", payloads(100, 100))
                got = await take_all(src, set(payloads(200)), limit_s=40)
                return src.session_present, got

        present, got = asyncio.run(body())
        assert present
        assert got == set(payloads(200))

    def test_session_lost_by_the_broker_keeps_what_was_received(
        self, broker: Broker, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When the broker comes back without our session, the messages already received
        (not yet processed) are processed, not dropped waiting for a redelivery that
        will never come, and the loss is logged at WARNING."""

        async def body() -> set[bytes]:
            src = broker.source()
            async with running(src):
                await asyncio.to_thread(broker.publish, "conf/a", payloads(100))
                await wait_for(lambda: src.progress >= 100)
                await asyncio.to_thread(broker.lose_sessions)
                await wait_for(lambda: src._generation >= 2 and src.connected.is_set())
                assert not src.session_present
                return {m.payload for m in await take(src, 100, limit_s=10)}

        with caplog.at_level(logging.WARNING, "sensord.ingest"):
            got = asyncio.run(body())
        assert got == set(payloads(100))
        assert any("lost our session" in r.getMessage() for r in caplog.records)


class TestBackpressure:
    def test_keepalive_holds_while_reading_is_paused(self, broker: Broker) -> None:
        """A consumer stalled for longer than 1.5 x keep-alive with reading paused does
        not make the client drop a healthy connection; everything arrives after."""

        async def body() -> tuple[int, float, set[bytes]]:
            src = broker.source(keepalive_s=5, high_water=100)
            paused = 0.0
            async with running(src):
                await asyncio.to_thread(broker.publish, "conf/a", payloads(2000))
                for _ in range(120):  # the consumer is stuck 12 s (a full outbox, say)
                    await asyncio.sleep(0.1)
                    paused += 0.1 if src._proto is not None and src._proto.paused else 0
                # nats-server sends again what was held longer than its ack_wait: repeats.
                got = await take_all(src, set(payloads(2000)))
                return src._generation, paused, got

        generation, paused, got = asyncio.run(body())
        assert paused > 7.5, "reading was not paused for longer than 1.5 x keep-alive"
        assert generation == 1, "the client reconnected although the broker was fine"
        assert got == set(payloads(2000))

    def test_reconnect_with_a_full_queue_completes_the_subscribe(self, broker: Broker) -> None:
        """After a connection drop with a full queue, the redelivered messages do not
        stop the SUBACK from being read: the client is connected again at once, not in a
        loop of subscribe timeouts."""

        async def body() -> tuple[int, set[bytes]]:
            src = broker.source(high_water=100)
            async with running(src):
                await asyncio.to_thread(broker.publish, "conf/a", payloads(500))
                await wait_for(lambda: src.progress >= 100)
                assert src._proto is not None
                assert src._proto.transport is not None
                src._proto.transport.abort()
                await wait_for(lambda: src._generation >= 2 and src.connected.is_set(), 15)
                got = {m.payload for m in await take(src, 500)}
                return src._generation, got

        generation, got = asyncio.run(body())
        assert generation == 2
        assert got >= set(payloads(500))


class TestPublishing:
    def test_qos1_publishes_survive_a_broker_restart(self, broker: Broker) -> None:
        """QoS 1 messages we publish while the broker restarts are resent on the new
        connection (DUP) and every publish returns; the subscriber gets all of them."""

        async def body() -> set[bytes]:
            sub = broker.source(client_id="conf-sub")
            pub = broker.source(client_id="conf-pub", subscriptions=())
            async with running(sub), running(pub):
                sends = [asyncio.create_task(pub.publish(broker.topic("conf/p"), m)) for m in payloads(200)]
                await asyncio.sleep(0.05)
                await asyncio.to_thread(broker.restart)
                await asyncio.wait_for(asyncio.gather(*sends), 30)
                return {m.payload for m in await take(sub, 200)}

        assert asyncio.run(body()) >= set(payloads(200))


class TestBrokerDisconnect:
    def test_taken_over_session_comes_back(self, broker: Broker) -> None:
        """When the broker closes our connection (another client took the client id
        over), the client reconnects and receives what is published after."""

        async def body() -> tuple[int, set[bytes]]:
            src: MqttSource = broker.source()
            async with running(src):
                await asyncio.to_thread(
                    subprocess.run,
                    [
                        "mosquitto_sub",
                        "-p",
                        str(broker.port),
                        "-i",
                        broker.client_id("sensord-conf"),
                        "-c",
                        "-q",
                        "1",
                        "-t",
                        broker.topic("conf/x"),
                        "-W",
                        "1",
                    ],
                    check=False,
                    timeout=20,
                    capture_output=True,
                )
                await wait_for(lambda: src._generation >= 2 and src.connected.is_set(), 20)
                await asyncio.to_thread(broker.publish, "conf/a", payloads(50))
                return src._generation, {m.payload for m in await take(src, 50)}

        generation, got = asyncio.run(body())
        assert generation >= 2
        assert got == set(payloads(50))

    def test_rabbitmq_operator_closing_every_connection(self, rabbitmq: SharedRabbit) -> None:
        """`rabbitmqctl close_all_connections` (an operator's maintenance step; Mosquitto
        2.0 and nats-server 2.9 have no such command): sensord reconnects to its session,
        gets again what it had not acknowledged, then what is published after."""
        broker = rabbitmq.broker()

        async def body() -> tuple[bool, set[bytes]]:
            src = broker.source()
            async with running(src):
                await asyncio.to_thread(broker.publish, "conf/a", payloads(50))
                await take(src, 50, ack=False)
                await asyncio.to_thread(rabbitmq.node.ctl, "close_all_connections", "maintenance")
                await wait_for(lambda: src._generation >= 2 and src.connected.is_set())
                await asyncio.to_thread(broker.publish, "conf/a", payloads(50, 50))
                return src.session_present, await take_all(src, set(payloads(100)))

        present, got = asyncio.run(body())
        assert present
        assert got == set(payloads(100))


class TestSubscriptions:
    def test_filters_dropped_from_the_config_are_unsubscribed(self, broker: Broker, tmp_path: Path) -> None:
        """A filter the previous run subscribed (kept in the persistent session) and the
        config no longer has is unsubscribed: its messages stop arriving."""
        session = tmp_path / "mqtt-session.json"

        async def body() -> set[str]:
            old = broker.source(subscriptions=("conf/#", "old/#"), session_file=session)
            async with running(old):
                pass
            new = broker.source(session_file=session)
            async with running(new):
                await asyncio.to_thread(broker.publish, "old/x", [b"stale"])
                await asyncio.to_thread(broker.publish, "conf/a", [b"fresh"])
                got = await take(new, 1)
                await asyncio.sleep(1)
                got += list(new._queue)
                return {m.topic for m in got}

        assert asyncio.run(body()) == {broker.topic("conf/a")}


class TestWill:
    def test_will_tells_of_a_death_and_of_a_clean_stop(self, broker: Broker) -> None:
        """With a will configured, a subscriber on its topic sees `online` on connect,
        `offline` from the broker when the connection dies without DISCONNECT, and
        `offline` again on a clean stop."""
        status = broker.topic("box/status")
        will = WillSettings(topic=status, payload="offline", online="online", retain=False)
        watcher = subprocess.Popen(
            ["mosquitto_sub", "-p", str(broker.port), "-t", status, "-q", "1", "-W", "30"],
            stdout=subprocess.PIPE,
        )

        async def body() -> None:
            await asyncio.sleep(0.5)
            src = broker.source(will=will, keepalive_s=5)
            async with running(src):
                await asyncio.sleep(0.5)
                assert src._proto is not None
                assert src._proto.transport is not None
                src._proto.transport.abort()  # died: the broker sends the will
                await asyncio.sleep(1.0)
                await wait_for(src.connected.is_set)
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.5)

        try:
            asyncio.run(body())
        finally:
            watcher.terminate()
            out, _ = watcher.communicate(timeout=10)
        assert out.decode().split() == ["online", "offline", "online", "offline"]

    def test_retained_status_is_what_a_late_watcher_sees(self, broker: Broker) -> None:
        """With the will retained (the default), a watcher subscribing after sensord
        died gets `offline` at once, and after sensord is back, `online`. RabbitMQ 3.10
        delivers a retained message only to a subscription to its exact topic
        (documented; wildcards get none), so the dispatch side subscribes to the exact
        status topic, as here."""
        status = broker.topic("box/status")
        will = WillSettings(topic=status, payload="offline", online="online")
        assert will.retain

        def late_watcher(topic: str) -> str:
            cmd = ["mosquitto_sub", "-p", str(broker.port), "-t", topic, "-q", "1", "-C", "1", "-W", "2"]
            return subprocess.run(cmd, capture_output=True, timeout=20, check=False).stdout.decode().strip()

        async def body() -> tuple[str, str, str]:
            dead = broker.source(will=will, keepalive_s=5)
            async with running(dead):
                assert dead._proto is not None
                assert dead._proto.transport is not None
                dead._closing = True  # no reconnect: the box is gone
                dead._proto.transport.abort()  # died: the broker publishes the will, retained
                await asyncio.sleep(0.3)
            after_death = await asyncio.to_thread(late_watcher, status)
            async with running(broker.source(will=will, keepalive_s=5)):
                back = await asyncio.to_thread(late_watcher, status)
                wildcard = await asyncio.to_thread(late_watcher, broker.topic("box/+"))
            return after_death, back, wildcard

        after_death, back, wildcard = asyncio.run(body())
        assert (after_death, back) == ("offline", "online")
        assert wildcard == ("" if broker.name == "rabbitmq" else "online")
