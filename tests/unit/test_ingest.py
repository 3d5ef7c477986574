"""Unit tests for the MQTT packet codec and reconnect backoff."""

from __future__ import annotations

import random

import pytest

from sensord._settings import ReconnectSettings
from sensord.ingest import _packets as p
from sensord.ingest import reconnect_delay


class TestParser:
    def test_many_publishes_in_one_chunk(self) -> None:
        """Several PUBLISH packets in one read come out in order with topic, payload, QoS and id."""
        data = p.publish("a/b", b"one", qos=1, packet_id=7) + p.publish("c", b"two", qos=0)
        pubs, others = p.Parser().feed(data)
        assert pubs == [("a/b", b"one", 1, 7), ("c", b"two", 0, 0)]
        assert others == []

    def test_packet_split_across_reads(self) -> None:
        """A packet cut anywhere (even inside the length bytes) is completed by the next read."""
        data = p.publish("t/x", b"y" * 300, qos=1, packet_id=9)  # 2-byte remaining length
        for cut in range(1, len(data)):
            parser = p.Parser()
            first, _ = parser.feed(data[:cut])
            second, _ = parser.feed(data[cut:])
            assert first + second == [("t/x", b"y" * 300, 1, 9)]

    def test_large_remaining_length(self) -> None:
        """Remaining lengths needing 3 bytes of varint decode correctly."""
        payload = b"z" * 20_000
        (pub,), _ = p.Parser().feed(p.publish("big", payload, qos=0))
        assert pub[1] == payload

    def test_control_packets(self) -> None:
        """CONNACK, SUBACK and PINGRESP come back as control packets with their bodies."""
        data = b"\x20\x02\x01\x00" + b"\x90\x03\x00\x01\x01" + b"\xd0\x00"
        _, others = p.Parser().feed(data)
        assert [(o.kind, o.body) for o in others] == [
            (p.CONNACK, b"\x01\x00"),
            (p.SUBACK, b"\x00\x01\x01"),
            (p.PINGRESP, b""),
        ]

    def test_malformed_length_raises(self) -> None:
        """A remaining length longer than four bytes is a protocol error."""
        with pytest.raises(ValueError, match="malformed"):
            p.Parser().feed(b"\x30\xff\xff\xff\xff\x01")

    def test_connect_encodes_credentials_and_persistent_session(self) -> None:
        """CONNECT without clean-session carries the client id, username and password."""
        pkt = p.connect("sensord", clean=False, keepalive=30, username="u", password="pw")
        assert pkt[0] == p.CONNECT
        flags = pkt[2 + 7]
        assert flags & 0x02 == 0
        assert flags & 0xC0 == 0xC0
        assert pkt.endswith(b"\x00\x07sensord\x00\x01u\x00\x02pw")

    def test_puback(self) -> None:
        """PUBACK carries the packet id big-endian."""
        assert p.puback(0x1234) == b"\x40\x02\x12\x34"


class TestBackoff:
    def test_capped_and_growing(self) -> None:
        """Reconnect delays stay within [initial/2, max] and grow with the attempt number."""
        s = ReconnectSettings(initial_s=0.5, max_s=30)
        rng = random.Random(3)
        delays = [reconnect_delay(a, s, rng) for a in range(40)]
        assert all(0.25 <= d <= 30 for d in delays)
        assert max(delays[:3]) < 2.0 < max(delays[10:])
