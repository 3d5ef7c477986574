"""The MQTT codec against a hostile or broken peer: any split of a byte stream parses
the same, oversized packets are never buffered whole, malformed packets are refused;
and the packets sensord sends follow MQTT 3.1.1 (will, DUP, QoS 2 answers)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sensord._settings import BrokerSettings, SecretRef, Settings
from sensord.ingest import _packets as p

topics = st.text(st.characters(codec="utf-8", exclude_characters="+#\x00"), min_size=1, max_size=40)
publishes = st.tuples(topics, st.binary(max_size=3000), st.sampled_from([0, 1, 2]), st.integers(1, 65535))
controls = st.sampled_from(
    [b"\x20\x02\x01\x00", b"\x90\x03\x00\x01\x01", b"\xd0\x00", b"\x40\x02\x00\x07", b"\x62\x02\x00\x09"]
)


def stream(items: list[tuple[str, bytes, int, int] | bytes]) -> bytes:
    out = b""
    for it in items:
        if isinstance(it, bytes):
            out += it
        else:
            topic, payload, qos, pid = it
            out += p.publish(topic, payload, qos=qos, packet_id=pid if qos else 0)
    return out


def parse(
    data: bytes, cuts: list[int], cap: int = p.MAX_REMAINING, *, compiled: bool = True
) -> tuple[list[p.Publish], list[bytes], int]:
    parser = p.Parser(cap, compiled=compiled)
    pubs: list[p.Publish] = []
    others: list[bytes] = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for a, b in itertools.pairwise(bounds):
        got, ctl = parser.feed(data[a:b])
        pubs += got
        others += [bytes([o.kind | o.flags]) + o.body for o in ctl]
    return pubs, others, len(parser.oversized)


def outcome(data: bytes, cuts: list[int], cap: int, *, compiled: bool) -> object:
    """What a parser makes of a stream: its packets, or the error it closes on."""
    try:
        return parse(data, cuts, cap, compiled=compiled)
    except (ValueError, IndexError) as exc:
        return type(exc), str(exc)


class TestCompiledScanner:
    def test_the_scanner_is_built(self) -> None:
        """The C scanner was compiled at install (setup.py): without it the daemon falls
        back to the pure-Python parser, and these tests would compare it with itself."""
        assert p.COMPILED

    @settings(max_examples=500, deadline=None)
    @given(
        st.lists(st.one_of(publishes, controls), min_size=1, max_size=10),
        # (packet, offset into it, new value): mostly in the header, where the checks are.
        st.lists(
            st.tuples(
                st.integers(0, 9),
                # -1, -2: the packet id's two bytes (a PUBLISH's); 0-8: the header.
                st.one_of(st.integers(-2, 8), st.integers(0, 3000)),
                st.one_of(st.sampled_from([0x00, 0x01, 0x36, 0x7F, 0x80, 0xFF]), st.integers(0, 255)),
            ),
            max_size=4,
        ),
        st.lists(st.integers(0, 40_000)),
        st.sampled_from([64, 1024, p.MAX_REMAINING]),
    )
    def test_compiled_and_pure_parsers_agree_on_any_stream(
        self,
        items: list[tuple[str, bytes, int, int] | bytes],
        flips: list[tuple[int, int, int]],
        cuts: list[int],
        cap: int,
    ) -> None:
        """A valid stream with bytes overwritten (a broken or hostile broker: a QoS of 3,
        a packet id of 0, lengths that do not fit), cut anywhere, under any cap: the C
        scanner and the Python parser give the same packets, the same oversized records,
        or the same error."""
        starts: list[int] = []
        data = bytearray()
        for it in items:
            starts.append(len(data))
            data += stream([it])
        for k, offset, value in flips:
            at = starts[k % len(starts)] + offset
            if offset < 0 and not isinstance(it := items[k % len(items)], bytes):
                packet = stream([it])
                at = starts[k % len(starts)] + packet.index(it[0].encode()) + len(it[0].encode()) - offset - 1
            data[at % len(data)] = value
        got = bytes(data)
        assert outcome(got, cuts, cap, compiled=True) == outcome(got, cuts, cap, compiled=False)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=300), st.lists(st.integers(0, 300)))
    def test_compiled_and_pure_parsers_agree_on_garbage(self, data: bytes, cuts: list[int]) -> None:
        """Random bytes: the same packets or the same error from both parsers."""
        assert outcome(data, cuts, 128, compiled=True) == outcome(data, cuts, 128, compiled=False)


class TestAnySplit:
    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.one_of(publishes, controls), min_size=1, max_size=12), st.lists(st.integers(0, 40_000))
    )
    def test_any_split_parses_the_same(
        self, items: list[tuple[str, bytes, int, int] | bytes], cuts: list[int]
    ) -> None:
        """However the byte stream is cut into reads, the same packets come out, in order
        (the compiled scanner's and the pure parser's alike)."""
        data = stream(items)
        assert parse(data, cuts) == parse(data, [])
        assert parse(data, cuts, compiled=False) == parse(data, [])
        want = [
            (t, pl, q, pid if q else 0) for t, pl, q, pid in (i for i in items if not isinstance(i, bytes))
        ]
        assert parse(data, [])[0] == want

    @settings(max_examples=100, deadline=None)
    @given(st.lists(publishes, min_size=1, max_size=8), st.lists(st.integers(0, 40_000)))
    def test_oversized_split_anywhere_is_cut_the_same(
        self, items: list[tuple[str, bytes, int, int]], cuts: list[int]
    ) -> None:
        """With a cap, oversized PUBLISHes keep their topic and the first `cap` bytes of
        payload wherever the stream is cut, and the packets after them parse normally."""
        cap = 1024
        data = stream(list(items))
        pubs, _, n_over = parse(data, cuts, cap)
        assert (pubs, n_over) == parse(data, [], cap)[::2]
        assert len(pubs) == len(items)
        for (topic, payload, _, _), got in zip(items, pubs, strict=True):
            assert got[0] == topic
            head = 2 + len(topic.encode()) + 2
            assert got[1] == (payload[:cap] if head + len(payload) > cap else payload)


class TestCaps:
    def test_oversized_publish_is_not_buffered(self) -> None:
        """A 5 MB PUBLISH fed in 64 KB reads never holds more than the cap in the
        parser's buffer; its start comes out once, recorded as oversized with its size."""
        parser = p.Parser(16_384)
        data = p.publish("sensord/c/bin/b1/telemetry", b"x" * 5_000_000, qos=1, packet_id=3)
        data += p.publish("sensord/c/bin/b2/telemetry", b"{}", qos=1, packet_id=4)
        pubs: list[p.Publish] = []
        peak = 0
        for i in range(0, len(data), 65_536):
            got, _ = parser.feed(data[i : i + 65_536])
            pubs += got
            peak = max(peak, len(parser._buf))
        assert peak <= 16_384 + 65_536
        assert [(t, len(pl), pid) for t, pl, _, pid in pubs] == [
            ("sensord/c/bin/b1/telemetry", 16_384, 3),
            ("sensord/c/bin/b2/telemetry", 2, 4),
        ]
        assert [(o.topic, o.size) for o in parser.oversized] == [("sensord/c/bin/b1/telemetry", 5_000_000)]

    def test_oversized_control_packet_is_refused(self) -> None:
        """A control packet over the cap is a broken peer: ValueError (close)."""
        with pytest.raises(ValueError, match="over the"):
            p.Parser(1024).feed(b"\x90\x80\x80\x01")

    @pytest.mark.parametrize(
        ("data", "why"),
        [
            (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
            (b"\x30\x04\x00\x09ab", "topic length 9"),
            (b"\x30\x02\x00\x00", "topic length 0"),
            (b"\x32\x03\x00\x01a", "does not fit"),
            (b"\x32\x05\x00\x01a\x00\x00", "packet id 0"),
            (b"\x40\x03\x00\x01\x02", "3 bytes"),
            (b"\x20\x01\x00", "CONNACK"),
        ],
    )
    @pytest.mark.parametrize("compiled", [True, False], ids=["c-scanner", "pure"])
    def test_malformed_packets_are_refused(self, data: bytes, why: str, compiled: bool) -> None:
        """QoS 3, a topic that does not fit its packet, a QoS 1 id of 0 and control
        packets of the wrong size raise ValueError naming the fault."""
        with pytest.raises(ValueError, match=why):
            p.Parser(compiled=compiled).feed(data)


class TestOutgoing:
    def test_connect_carries_the_will(self) -> None:
        """CONNECT with a will sets the will flag, QoS and retain bits, and puts the will
        topic and message after the client id."""
        pkt = p.connect(
            "sd",
            clean=False,
            keepalive=30,
            username=None,
            password=None,
            will=p.Will("box/status", b"offline", 1, retain=True),
        )
        flags = pkt[2 + 7]
        assert flags & 0x04
        assert (flags >> 3) & 0x03 == 1
        assert flags & 0x20
        assert pkt.endswith(b"\x00\x02sd\x00\x0abox/status\x00\x07offline")

    def test_password_without_username_is_never_sent(self) -> None:
        """MQTT-3.1.2-22: CONNECT refuses a password without a user name."""
        with pytest.raises(ValueError, match="user name"):
            p.connect("sd", clean=True, keepalive=30, username=None, password="pw")

    def test_resent_publish_has_dup(self) -> None:
        """A QoS 1 PUBLISH sent again carries the DUP flag; QoS 0 never does."""
        assert p.publish("t", b"x", qos=1, packet_id=5, dup=True)[0] == 0x3A
        assert p.publish("t", b"x", qos=0, dup=True)[0] == 0x30

    def test_qos2_answers(self) -> None:
        """PUBREC and PUBCOMP carry the packet id; SUBSCRIBE and UNSUBSCRIBE set the
        reserved flag bits MQTT requires (0b0010)."""
        assert p.pubrec(0x0102) == b"\x50\x02\x01\x02"
        assert p.pubcomp(0x0102) == b"\x70\x02\x01\x02"
        assert p.subscribe(1, [("a", 1)])[0] == 0x82
        assert p.unsubscribe(2, ["a"])[0] == 0xA2


class TestBrokerConfig:
    def test_password_without_username_is_a_config_error(self) -> None:
        """`sensord check` refuses broker.password without broker.username."""
        with pytest.raises(ValidationError, match=r"without broker\.username"):
            BrokerSettings(password=SecretRef(file=Path("pw")))

    def test_packet_cap_must_exceed_payload_limit(self) -> None:
        """broker.max_packet_bytes at or below decode.max_payload_bytes is refused (an
        oversized message would then be cut below the limit and misjudged)."""
        with pytest.raises(ValidationError, match="max_packet_bytes"):
            Settings.model_validate(
                {"broker": {"max_packet_bytes": 4096}, "decode": {"max_payload_bytes": 8192}}
            )
