"""MQTT 3.1.1 packets: the ones sensord sends and the parser for what it receives.

A subscriber with QoS 0/1/2 receive flows and a QoS 0/1 publisher: CONNECT (with an
optional will)/CONNACK, SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK, PUBLISH/PUBACK both
ways, PUBREC/PUBREL/PUBCOMP for QoS 2 PUBLISH received, PINGREQ/PINGRESP, DISCONNECT.

The parser checks what it must to stay safe against a broken or hostile peer: a packet
larger than the cap is never buffered whole (a PUBLISH keeps its topic and the first
`cap` bytes of payload, the rest is skipped as it streams in), and a malformed packet
(QoS 3, a topic longer than the packet, a control packet of the wrong size) raises
`ValueError`, after which the connection must be closed (MQTT-4.8.0-1).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

_Scan = Callable[[bytearray, int, int], tuple[list["Publish"], int]]
try:  # the C scanner (setup.py); optional: without it the same parser runs in Python
    from sensord.ingest._scan import scan as _compiled_scan

    _scan: _Scan | None = _compiled_scan
except ImportError:  # pragma: no cover - only where no C compiler was found at install
    _scan = None

COMPILED = _scan is not None


def parser_line() -> str:
    """Which MQTT parser this install runs (`sensord check`, the daemon's start log)."""
    if COMPILED:
        return "compiled (the C scanner, src/sensord/ingest/_scan.c)"
    return (
        "pure Python: the C scanner was not built at install (it needs gcc and Python's headers; "
        "install them and reinstall sensord); about 1 us more per message"
    )

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
PUBREC, PUBREL, PUBCOMP = 0x50, 0x60, 0x70
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK = 0x80, 0x90, 0xA0, 0xB0
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0

CONNACK_REASONS = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker rejected the client id",
    3: "the broker is unavailable",
    4: "bad username or password",
    5: "not authorised",
}
SUBACK_FAILURE = 0x80

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
# The largest remaining length MQTT can express (four varint bytes).
MAX_REMAINING = 268_435_455
# Control packets sensord receives that carry exactly a packet id.
_ID_ONLY = frozenset({PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK})


class Will(NamedTuple):
    """The message the broker publishes for us if we vanish without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _varint(len(body)) + body


def connect(  # noqa: PLR0913 - the fields of CONNECT
    client_id: str,
    *,
    clean: bool,
    keepalive: int,
    username: str | None,
    password: str | None,
    will: Will | None = None,
) -> bytes:
    if password is not None and username is None:
        # MQTT-3.1.2-22: a password flag without a user name flag is a protocol error.
        raise ValueError("a password needs a user name")
    flags = (
        (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    )
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _str(client_id)
    if will is not None:
        body += _str(will.topic) + _str(will.payload)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return packet(CONNECT, body)


def subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_str(f) + bytes([q]) for f, q in filters)
    return packet(SUBSCRIBE | 0x02, body)


def unsubscribe(packet_id: int, filters: Sequence[str]) -> bytes:
    return packet(UNSUBSCRIBE | 0x02, struct.pack("!H", packet_id) + b"".join(_str(f) for f in filters))


def publish(  # noqa: PLR0913 - the fields of PUBLISH
    topic: str, payload: bytes, *, qos: int, packet_id: int = 0, retain: bool = False, dup: bool = False
) -> bytes:
    head = _str(topic) + (struct.pack("!H", packet_id) if qos else b"")
    return packet(PUBLISH | (0x08 if dup and qos else 0) | (qos << 1) | (1 if retain else 0), head + payload)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def pubrec(packet_id: int) -> bytes:
    return b"\x50\x02" + packet_id.to_bytes(2, "big")


def pubcomp(packet_id: int) -> bytes:
    return b"\x70\x02" + packet_id.to_bytes(2, "big")


@dataclass(slots=True)
class Packet:
    """A parsed non-PUBLISH packet: type nibble, flags and body."""

    kind: int
    flags: int
    body: bytes

    @property
    def packet_id(self) -> int:
        return int.from_bytes(self.body[:2], "big")


class Oversized(NamedTuple):
    """A PUBLISH larger than the cap: its topic, real size and the payload kept."""

    topic: str
    size: int
    qos: int
    packet_id: int


# (topic, payload, qos, packet id): PUBLISH in the hot path, no object per field.
Publish = tuple[str, bytes, int, int]


class Parser:
    """Incremental parser: feed bytes, get PUBLISH tuples and other packets out.

    Partial packets wait in the buffer for more bytes, except the tail of an oversized
    PUBLISH, which is counted down and dropped as it arrives. Any split of a byte
    stream into `feed` calls gives the same packets.
    """

    def __init__(self, max_packet: int = MAX_REMAINING, *, compiled: bool = True) -> None:
        self._buf = bytearray()
        # `compiled=False`: the pure-Python loop alone (the reference the tests hold the
        # C scanner to, and what runs where the extension could not be built).
        self._scan = _scan if compiled else None
        self._max = max_packet
        self._skip = 0  # bytes of an oversized packet still to drop
        self.oversized: list[Oversized] = []  # filled by feed; the caller clears it

    def feed(self, data: bytes) -> tuple[list[Publish], list[Packet]]:
        pubs: list[Publish] = []
        others: list[Packet] = []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        buf = self._buf
        buf += data
        pos, end = 0, len(buf)
        scan = self._scan
        while end - pos >= 2 and not self._skip:
            if scan is not None:
                # The run of plain PUBLISHes in C; it stops at any other packet, which
                # the loop below then takes as it would without the scanner.
                run, pos = scan(buf, pos, self._max)
                pubs += run
                if end - pos < 2:
                    break
            first = buf[pos]
            head = _remaining(buf, pos + 1, end)
            if head is None:
                break
            length, i = head
            if length > self._max:
                got = self._oversized(first, buf, i, end, length)
                if got is None:
                    break  # wait for the topic and the kept payload
                pubs.append(got)
                kept = min(end - i, length)
                self._skip = length - kept
                pos = i + kept
                continue
            if i + length > end:
                break
            if first & 0xF0 == PUBLISH:
                pubs.append(_publish(first, buf, i, i + length))
            else:
                others.append(_control(first, bytes(buf[i : i + length])))
            pos = i + length
        self._compact(pos)
        return pubs, others

    def _oversized(self, first: int, buf: bytearray, i: int, end: int, length: int) -> Publish | None:
        """The kept part of an oversized PUBLISH once it is in the buffer, else None."""
        if first & 0xF0 != PUBLISH:
            raise ValueError(f"control packet of {length} bytes (over the {self._max}-byte cap)")
        if end - i < 2:
            return None
        tlen = (buf[i] << 8) | buf[i + 1]
        qos = (first >> 1) & 0x03
        head = 2 + tlen + (2 if qos else 0)
        if end - i < head + self._max:
            return None
        pub = _publish(first, buf, i, i + head + self._max)
        self.oversized.append(Oversized(pub[0], length - head, pub[2], pub[3]))
        return pub

    def _compact(self, pos: int) -> None:
        if pos:
            del self._buf[:pos]


def _remaining(buf: bytearray, i: int, end: int) -> tuple[int, int] | None:
    """The remaining length (1 to 4 bytes of base-128 varint) at i and where the body
    starts; None if the buffer ends inside it."""
    length, mult = 0, 1
    while i < end:
        b = buf[i]
        length += (b & 0x7F) * mult
        i += 1
        if not b & 0x80:
            return length, i
        mult *= 128
        if mult > 128**3:
            raise ValueError("malformed remaining length")
    return None


def _publish(first: int, buf: bytearray, start: int, stop: int) -> Publish:
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise ValueError("PUBLISH with QoS 3")
    if stop - start < 2:
        raise ValueError("PUBLISH too short for its topic length")
    tlen = (buf[start] << 8) | buf[start + 1]
    t_end = start + 2 + tlen
    if tlen == 0 or t_end + (2 if qos else 0) > stop:
        raise ValueError(f"PUBLISH topic length {tlen} does not fit its packet")
    topic = buf[start + 2 : t_end].decode("utf-8", "replace")
    pid = 0
    if qos:
        pid = (buf[t_end] << 8) | buf[t_end + 1]
        t_end += 2
        if pid == 0:
            raise ValueError("PUBLISH with QoS > 0 and packet id 0")
    return topic, bytes(buf[t_end:stop]), qos, pid


def _control(first: int, body: bytes) -> Packet:
    kind, flags = first & 0xF0, first & 0x0F
    if kind in _ID_ONLY and len(body) != 2:
        raise ValueError(f"packet type {kind >> 4} with {len(body)} bytes (2 expected)")
    if kind == CONNACK and len(body) != 2:
        raise ValueError(f"CONNACK with {len(body)} bytes (2 expected)")
    if kind == SUBACK and len(body) < 3:
        raise ValueError(f"SUBACK with {len(body)} bytes")
    return Packet(kind, flags, body)
