"""Unit tests for broker failover: `broker.hosts` in the settings, the order in which
nodes are tried and when the backoff waits (`Failover`), and the gathering of
redeliveries after a reconnect."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from sensord._errors import ConfigError
from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerHost, BrokerSettings, ReconnectSettings, load_settings
from sensord._types import RawMessage
from sensord.ingest import Failover, MqttSource, reconnect_delay
from sensord.ingest._connection import Connection
from sensord.ingest._packets import Publish
from sensord.testing._nats_cluster import CLUSTER_MQTT
from tests.unit.test_config import write_config

A, B, C = (BrokerHost(host=h, port=1883) for h in ("a.example", "b.example", "c.example"))
BACKOFF = ReconnectSettings(initial_s=1.0, max_s=8.0)
Script = list[tuple[float, list[Publish]]]  # (seconds to wait, then these PUBLISHes received)


class TestHostsSetting:
    def test_hosts_absent_is_the_one_host_and_port(self) -> None:
        """Without `hosts`, the one node is `host:port`, as before."""
        s = BrokerSettings(host="broker.lan", port=8883)
        assert [n.label for n in s.endpoints] == ["broker.lan:8883"]

    def test_hosts_are_tried_in_the_order_given(self, tmp_path: Path) -> None:
        """`broker.hosts` in YAML gives the nodes in order, port 1883 by default."""
        cfg = write_config(tmp_path, "broker:\n  hosts: [{host: n1, port: 1884}, {host: n2}]\n")
        assert [n.label for n in load_settings(cfg).broker.endpoints] == ["n1:1884", "n2:1883"]

    def test_host_and_hosts_that_disagree_are_refused(self, tmp_path: Path) -> None:
        """`host`/`port` beside a `hosts` list that does not start with them is a config
        error that says which to keep."""
        cfg = write_config(tmp_path, "broker:\n  host: old\n  hosts: [{host: n1}, {host: n2}]\n")
        with pytest.raises(ConfigError, match=r"broker.host/port \(old:1883\) and broker.hosts"):
            load_settings(cfg)

    def test_host_equal_to_the_first_of_hosts_is_accepted(self) -> None:
        """`host`/`port` naming the first node of `hosts` is consistent."""
        s = BrokerSettings(host="n1", port=1884, hosts=(BrokerHost(host="n1", port=1884), B))
        assert s.endpoints == (BrokerHost(host="n1", port=1884), B)

    def test_a_node_listed_twice_is_refused(self) -> None:
        """The same host:port twice in `hosts` is a mistake, reported as such."""
        with pytest.raises(ValueError, match="lists a node twice"):
            BrokerSettings(hosts=(A, B, A))


class TestFailover:
    def test_loss_of_a_connection_moves_to_the_next_node_at_once(self) -> None:
        """After a connection to A that was up is lost, B is tried without waiting."""
        f = Failover((A, B, C), BACKOFF, random.Random(1))
        f.up()
        assert f.down(was_up=True) == 0.0
        assert f.node == B

    def test_backoff_only_after_a_whole_round_failed(self) -> None:
        """A lost, then B and C failing: no wait before B or C; the wait comes before A
        again, and grows with each further failed round."""
        f = Failover((A, B, C), BACKOFF, random.Random(1))
        f.up()
        waits = [f.down(was_up=True), f.down(was_up=False), f.down(was_up=False)]
        assert waits[:2] == [0.0, 0.0]
        assert 0.5 <= waits[2] <= 1.0
        assert f.node == A
        second = [f.down(was_up=False) for _ in range(3)]
        assert second[:2] == [0.0, 0.0]
        assert 1.0 <= second[2] <= 2.0

    def test_a_connection_that_comes_up_resets_the_backoff(self) -> None:
        """After rounds of failures, a node that comes up makes the next loss free of waiting."""
        f = Failover((A, B), BACKOFF, random.Random(1))
        for _ in range(6):
            f.down(was_up=False)
        f.up()
        assert f.down(was_up=True) == 0.0
        assert 0.5 <= f.down(was_up=False) <= 1.0

    def test_one_node_waits_before_every_attempt_as_before(self) -> None:
        """With one node, a loss waits initial_s/2..initial_s and failures back off: the
        reconnect behaviour from before `hosts` existed."""
        f = Failover((A,), BACKOFF, random.Random(1))
        f.up()
        waits = [f.down(was_up=True)] + [f.down(was_up=False) for _ in range(5)]
        rng = random.Random(1)
        assert waits == [reconnect_delay(attempt, BACKOFF, rng) for attempt in range(6)]
        assert f.node == A

    def test_rotation_wraps_around(self) -> None:
        """Nodes are tried A, B, C, A, ... whatever happened."""
        f = Failover((A, B, C), BACKOFF, random.Random(1))
        seen = [f.node]
        for i in range(5):
            f.down(was_up=i % 2 == 0)
            seen.append(f.node)
        assert seen == [A, B, C, A, B, C]


class _FakeConnection:
    """Stands in for `Connection` where only the generation and flow control matter."""

    generation = 1
    paused = False

    def __init__(self) -> None:
        self.unacked: set[int] = set()

    def pause(self) -> None:
        self.paused = True


class TestPacketIdCopies:
    def test_a_second_copy_under_an_unacknowledged_id_is_kept_without_a_token(self) -> None:
        """Two PUBLISHes under one QoS 1 packet id before its PUBACK are both handed out,
        only the first with a token (one PUBACK answers the id); once acknowledged, the
        id is new again and a PUBLISH under it carries a token."""

        async def body() -> list[tuple[bytes, int | None]]:
            src = MqttSource(BrokerSettings(), None, Metrics(), BatchSettings(max_wait_ms=0))
            conn = Connection(src, 1, 1024)
            src._proto = conn
            src._received(conn, [("t/a", b"first", 1, 9), ("t/a", b"copy", 1, 9)])
            src.ack([1 << 16 | 9])
            src._received(conn, [("t/a", b"new", 1, 9)])
            return [(m.payload, m.token) for m in src._queue]

        assert asyncio.run(body()) == [(b"first", 1 << 16 | 9), (b"copy", None), (b"new", 1 << 16 | 9)]


class TestRedeliveryGathering:
    @staticmethod
    def _source(wait: float, max_size: int = 5000) -> MqttSource:
        settings = BrokerSettings(
            redelivery_wait_s=wait, subscriptions=("t/+",), ack_topic_template="ack/{device_id}"
        )
        return MqttSource(settings, None, Metrics(), BatchSettings(max_size=max_size, max_wait_ms=1))

    @staticmethod
    async def _first_batch(src: MqttSource, script: Script) -> tuple[list[bytes], float]:
        """Feed `script` ((delay, publishes) in turn) and return the first batch handed out
        and the seconds from the connect to it."""
        conn = _FakeConnection()
        src.connected.set()
        t0 = time.monotonic()

        async def feed() -> None:
            for delay, pubs in script:
                await asyncio.sleep(delay)
                src._received(conn, pubs)  # type: ignore[arg-type]

        feeder = asyncio.create_task(feed())
        batch: list[bytes] = []
        async for got in src.batches():
            batch = [m.payload for m in got]
            break
        await feeder
        return batch, time.monotonic() - t0

    def test_messages_after_a_reconnect_are_one_batch_none_dropped(self) -> None:
        """With `redelivery_wait_s`, what arrives after a reconnect with the session
        present is handed out as one batch once the wait is over (larger than max_size),
        including a different message under a packet id still unacknowledged (which
        nats-server 2.9.10 sends while the first is gathered)."""
        src = self._source(0.3, max_size=2)
        src.session_present = True
        src._hold_for_redeliveries()
        script: Script = [
            (0.0, [("t/a", b"new-1", 1, 1), ("t/a", b"new-2", 1, 2)]),
            # The broker's redeliveries, behind newer messages; then id 2 again.
            (0.05, [("t/a", b"old-1", 1, 7), ("t/a", b"old-2", 1, 2)]),
        ]
        batch, waited = asyncio.run(self._first_batch(src, script))
        assert batch == [b"new-1", b"new-2", b"old-1", b"old-2"]
        assert waited >= 0.3

    def test_first_message_of_another_subscription_extends_the_wait(self) -> None:
        """A subscription whose first message comes late (its consumer was electing a
        leader) is waited for from that message on."""
        src = self._source(0.3)
        src.session_present = True
        src._hold_for_redeliveries()
        script: Script = [
            (0.0, [("t/a", b"reading", 1, 1)]),
            (0.2, [("ack/d1", b"ack", 1, 2)]),
        ]
        batch, waited = asyncio.run(self._first_batch(src, script))
        assert batch == [b"reading", b"ack"]
        assert waited >= 0.5

    def test_messages_of_a_lost_connection_wait_for_the_next_connect(self) -> None:
        """With `redelivery_wait_s`, what the lost connection brought is not handed out
        while disconnected (the next connect decides: redelivered, or kept)."""

        async def body() -> tuple[bool, list[bytes]]:
            src = self._source(0.3)
            src._received(_FakeConnection(), [("t/a", b"before-the-loss", 1, 1)])  # type: ignore[arg-type]
            async def first() -> list[RawMessage]:
                async for batch in src.batches():
                    return batch
                return []

            early = asyncio.create_task(first())
            await asyncio.sleep(0.2)
            waited = not early.done()
            src.connected.set()
            batch = await asyncio.wait_for(early, 5)
            return waited, [m.payload for m in batch]

        assert asyncio.run(body()) == (True, [b"before-the-loss"])

    def test_no_gathering_without_the_session(self) -> None:
        """A connect where the broker had no session (nothing to redeliver) holds nothing."""
        src = self._source(5.0)
        src.session_present = False
        src._hold_for_redeliveries()
        assert src._hold_until == 0.0


def _settings_of(block: str) -> dict[str, str]:
    """`key: value` lines of a nats-server block, comments and `listen` aside."""
    out = {}
    for raw in block.splitlines():
        line = raw.split("#", 1)[0].strip()
        if ":" in line and not line.startswith(("listen", "tls")):
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip()
    return out


def test_shipped_cluster_config_has_the_tested_mqtt_settings() -> None:
    """config/nats-cluster.conf's `mqtt` block holds exactly the settings the cluster
    tests and the benchmark run with (CLUSTER_MQTT)."""
    text = (Path(__file__).resolve().parents[2] / "config" / "nats-cluster.conf").read_text()
    block = text.split("\nmqtt {", 1)[1].split("\n}", 1)[0]
    assert _settings_of(block) == _settings_of(CLUSTER_MQTT)
    assert "stream_replicas" in _settings_of(CLUSTER_MQTT)
