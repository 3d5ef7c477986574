"""Subscribing on a new connection: the configured filters in packets a broker takes, the
filters an earlier run had and the config no longer has dropped, and a refusal turned
into SubscribeRefused with what to check."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import orjson

from sensord._errors import IngestError, SubscribeRefused
from sensord.ingest import _packets as p
from sensord.ingest._connection import Connection

log = logging.getLogger("sensord.ingest")

# Packet ids of the n-th packet of each kind: 1 + 3n SUBSCRIBE, 2 + 3n UNSUBSCRIBE, 3 + 3n
# the SUBSCRIBE again of a dropped filter (see subscribe).
_SUBSCRIBE_ID, _UNSUBSCRIBE_ID, _RESUBSCRIBE_ID = 1, 2, 3
# Filters per SUBSCRIBE/UNSUBSCRIBE packet, and how long its answer may take. nats-server
# creates a replicated JetStream consumer per new filter before it answers, 2-4 s each on
# a three-node cluster (it gives up on one after 4 s): 16 filters can take a minute, and
# a shard's hundreds must not be one packet that times out and starts over every time.
_FILTERS_PER_PACKET = 16
_ANSWER_S, _ANSWER_PER_FILTER_S = 10.0, 5.0
_T = TypeVar("_T")


def _chunks(items: Sequence[_T]) -> list[Sequence[_T]]:
    return [items[i : i + _FILTERS_PER_PACKET] for i in range(0, len(items), _FILTERS_PER_PACKET)]


async def subscribe(
    proto: Connection, wanted: tuple[str, ...], qos: int, session_file: Path | None, *, present: bool
) -> None:
    """Subscribe `wanted` on a new connection, and unsubscribe what an earlier run
    subscribed (recorded in `session_file`) and the config no longer has, where the
    broker kept our session (`present`). Raises SubscribeRefused when it refuses one."""
    filters = [(f, qos) for f in wanted]
    gone = [f for f in _previous_filters(session_file) if f not in set(wanted)]
    if gone and present:
        # RabbitMQ 3.10 unsubscribes only filters subscribed on the same connection
        # (it keeps them per connection, not per session), so they are subscribed
        # again first. Elsewhere that replaces the subscription with itself (and may
        # bring its retained messages once).
        for n, part in enumerate(_chunks(gone)):
            again = p.subscribe(_RESUBSCRIBE_ID + 3 * n, [(f, qos) for f in part])
            await _request(proto, p.SUBACK, _RESUBSCRIBE_ID + 3 * n, again, list(part))
            drop = p.unsubscribe(_UNSUBSCRIBE_ID + 3 * n, list(part))
            await _request(proto, p.UNSUBACK, _UNSUBSCRIBE_ID + 3 * n, drop, list(part))
        log.info(
            "unsubscribed filters no longer in the config",
            extra={"fields": {"filters": gone[:50], "count": len(gone)}},
        )
    if not filters:  # a publish-only client (simulator, dead-letter forwarder)
        return
    codes = b""
    # A shard subscribes per community: hundreds of filters go in packets of at most
    # _FILTERS_PER_PACKET, so neither a SUBSCRIBE nor its SUBACK meets a broker's (or our
    # own max_packet_bytes) packet limit.
    for n, chunk in enumerate(_chunks(filters)):
        packet = p.subscribe(_SUBSCRIBE_ID + 3 * n, list(chunk))
        got = await _request(proto, p.SUBACK, _SUBSCRIBE_ID + 3 * n, packet, [f for f, _ in chunk])
        if len(got) != len(chunk):
            proto.close()
            raise IngestError(f"broker answered {len(got)} subscription results for {len(chunk)} filters")
        codes += got
    for (filt, want), code in zip(filters, codes, strict=True):
        if code == p.SUBACK_FAILURE:
            proto.close()
            # nats-server answers 0x80 too while a new cluster's JetStream has no leader
            # (its first 10-15 s), which the retry with backoff in run() rides out, and for
            # a filter past its session's max_ack_pending sum, which it does not.
            raise SubscribeRefused(
                f"broker refused subscription {filt!r} (SUBACK 0x80): its ACL may deny the filter, "
                "or a clustered broker may not be ready yet (nats-server refuses until JetStream "
                "has a leader, and refuses every filter past 65535 / mqtt.max_ack_pending "
                "consumers: `sensord check` gives the ceiling); retrying with backoff"
            )
        if code < want:
            log.error(
                "broker granted a lower QoS than asked: messages on this filter arrive at most once "
                "and a crash can lose them (check the broker's max_qos)",
                extra={"fields": {"filter": filt, "asked": want, "granted": code}},
            )
    _save_filters(session_file, wanted)


async def _request(
    proto: Connection, answer: int, packet_id: int, packet: bytes, filters: list[str]
) -> bytes:
    """Send a SUBSCRIBE or UNSUBSCRIBE and return its answer's codes."""
    fut = proto.expect(answer, packet_id)
    proto.write(packet)
    try:
        async with asyncio.timeout(_ANSWER_S + _ANSWER_PER_FILTER_S * len(filters)):
            return await fut
    except IngestError:
        # No SUBACK, the connection closed: how RabbitMQ refuses a filter its topic
        # permissions deny (it has no use for SUBACK's failure code).
        what = "SUBSCRIBE" if answer == p.SUBACK else "UNSUBSCRIBE"
        raise SubscribeRefused(
            f"the broker closed the connection instead of answering {what} {filters}: it may refuse "
            "one of these filters (RabbitMQ does so for a topic its permissions deny); check the "
            "permissions of sensord's user on the broker and the broker's log"
        ) from None


def _previous_filters(session_file: Path | None) -> list[str]:
    if session_file is None or not session_file.exists():
        return []
    try:
        got = orjson.loads(session_file.read_bytes()).get("filters", [])
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return []
    return [f for f in got if isinstance(f, str)]


def _save_filters(session_file: Path | None, filters: tuple[str, ...]) -> None:
    if session_file is None:
        return
    try:
        session_file.write_bytes(orjson.dumps({"filters": list(filters)}))
    except OSError as exc:
        log.warning("could not record the subscriptions", extra={"fields": {"error": str(exc)}})
