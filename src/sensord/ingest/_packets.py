"""MQTT 3.1.1 packets: the few sensord sends and the parser for what it receives.

Only what a subscriber with QoS 0/1 needs: CONNECT/CONNACK, SUBSCRIBE/SUBACK,
PUBLISH/PUBACK both ways, PINGREQ/PINGRESP, DISCONNECT.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0

CONNACK_REASONS = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker rejected the client id",
    3: "the broker is unavailable",
    4: "bad username or password",
    5: "not authorised",
}

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"


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


def connect(
    client_id: str, *, clean: bool, keepalive: int, username: str | None, password: str | None
) -> bytes:
    flags = (
        (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    )
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive) + _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return packet(CONNECT, body)


def subscribe(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_str(f) + bytes([q]) for f, q in filters)
    return packet(SUBSCRIBE, body)


def publish(topic: str, payload: bytes, *, qos: int, packet_id: int = 0, retain: bool = False) -> bytes:
    head = _str(topic) + (struct.pack("!H", packet_id) if qos else b"")
    return packet(PUBLISH | (qos << 1) | (1 if retain else 0), head + payload)


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


@dataclass(slots=True)
class Packet:
    """A parsed non-PUBLISH packet: type nibble, flags and body."""

    kind: int
    flags: int
    body: bytes


class Parser:
    """Incremental parser: feed bytes, get PUBLISH tuples and other packets out.

    PUBLISH is returned as (topic, payload, qos, packet_id) without building objects per
    field, since it is the hot path; partial packets wait in the buffer for more bytes.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[list[tuple[str, bytes, int, int]], list[Packet]]:
        buf = self._buf
        buf += data
        pubs: list[tuple[str, bytes, int, int]] = []
        others: list[Packet] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first = buf[pos]
            # remaining length: up to 4 bytes of base-128 varint
            length, mult, i = 0, 1, pos + 1
            while True:
                if i >= end:
                    self._compact(pos)
                    return pubs, others
                b = buf[i]
                length += (b & 0x7F) * mult
                i += 1
                if not b & 0x80:
                    break
                mult *= 128
                if mult > 128**3:
                    raise ValueError("malformed remaining length")
            if i + length > end:
                break
            if first & 0xF0 == PUBLISH:
                qos = (first >> 1) & 0x03
                tlen = (buf[i] << 8) | buf[i + 1]
                t_end = i + 2 + tlen
                topic = buf[i + 2 : t_end].decode("utf-8", "replace")
                if qos:
                    pid = (buf[t_end] << 8) | buf[t_end + 1]
                    t_end += 2
                else:
                    pid = 0
                pubs.append((topic, bytes(buf[t_end : i + length]), qos, pid))
            else:
                others.append(Packet(first & 0xF0, first & 0x0F, bytes(buf[i : i + length])))
            pos = i + length
        self._compact(pos)
        return pubs, others

    def _compact(self, pos: int) -> None:
        if pos:
            del self._buf[:pos]
