"""An ack that names its alert never takes effect before the reading that began it.

Acks and readings arrive on two subscriptions. One broker keeps their order; a clustered
broker after a failover does not: each subscription is its own consumer with its own
leader and redeliveries, so an ack can arrive ahead of the SOS press it answers (README,
"Clustered broker and failover"). Applied first, it would find nothing open, and the
alert would stay open. An ack naming the alert's `startsAt` cannot have been sent before
that reading was published, so where both are in one batch in the wrong order, the ack
is moved to just behind the reading. In publish order nothing moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import orjson

from sensord._types import RawMessage
from sensord.decode import TopicTemplate


def _time(value: object) -> float | None:
    """A payload's `ts` or an ack's `startsAt` as epoch seconds, None if neither form."""
    if type(value) is int or type(value) is float:
        ts = float(value)
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    else:
        return None
    return ts if math.isfinite(ts) else None


def _field(payload: bytes, name: str) -> object:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def acks_after_their_alerts(
    messages: Sequence[RawMessage], acks: TopicTemplate, readings: TopicTemplate
) -> list[RawMessage]:
    """`messages` with each ack that names `startsAt` moved behind the first reading of
    its device stamped then (within 1 ms, as startsAt is written), if that comes later."""
    wanted = _named_acks(messages, acks)
    if not wanted:
        return list(messages)
    behind = _moves(messages, wanted, acks, readings)
    moved = {i for ids in behind.values() for i in ids}
    out: list[RawMessage] = []
    for j, m in enumerate(messages):
        if j not in moved:
            out.append(m)
        out.extend(messages[i] for i in behind.get(j, ()))
    return out


def _named_acks(messages: Sequence[RawMessage], acks: TopicTemplate) -> dict[str, list[tuple[int, float]]]:
    """Device -> (index, startsAt) of each of its acks that names its alert."""
    wanted: dict[str, list[tuple[int, float]]] = {}
    for i, m in enumerate(messages):
        if m.topic.startswith(acks.prefix) and (parts := acks.parse(m.topic)) is not None:
            starts = _time(_field(m.payload, "startsAt"))
            if starts is not None:
                wanted.setdefault(parts.device_id, []).append((i, starts))
    return wanted


def _moves(
    messages: Sequence[RawMessage],
    wanted: dict[str, list[tuple[int, float]]],
    acks: TopicTemplate,
    readings: TopicTemplate,
) -> dict[int, list[int]]:
    """Reading index -> indexes of the acks that go right after it (those now before it)."""
    behind: dict[int, list[int]] = {}
    found: set[int] = set()
    for j, m in enumerate(messages):
        if m.topic.startswith(acks.prefix) or not any(d in m.topic for d in wanted):
            continue
        parts = readings.parse(m.topic)
        ts = _time(_field(m.payload, "ts")) if parts is not None and parts.device_id in wanted else None
        if parts is None or ts is None:
            continue
        for i, starts in wanted[parts.device_id]:
            if i not in found and abs(ts - starts) < 1e-3:
                found.add(i)
                if j > i:
                    behind.setdefault(j, []).append(i)
    return behind
