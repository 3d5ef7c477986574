"""The handover gate: where one community's messages stop on the old instance and start
on the new one, cut by a marker message both receive (README: Changing the number of
instances).

`sensord shard begin` subscribes the new owner's broker session to the community, then
publishes a marker on the community's device topics and one on its ack topics. From then
on the broker queues each of that community's messages for both sessions, and the marker
sits at the same place in both queues: brokers keep one queue per session, in routing
order. So the old owner processes the community's messages up to its marker and none
after (`give`), and the new owner none before its marker and every one after (`take`):
each message is processed exactly once, by one owner.

The gate's rows live in the outbox (dispatch_state, keys `shard\\x1f…`) and change only in
the transaction of the batch that moved them, so a crash between batches neither
re-processes nor skips a message: what was not committed is redelivered and cut again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from sensord._metrics import Metrics
from sensord._types import RawMessage
from sensord.decode import TopicTemplate
from sensord.shard._assign import MARKER_DEVICE

log = logging.getLogger("sensord.shard")

PREFIX = "shard\x1f"
FINISHED = f"{PREFIX}finished\x1f"  # + handover id: `sensord shard finish` moved its state
TREES = ("devices", "acks")


def row_key(role: str, tree: str, community: str) -> str:
    """The dispatch_state key of one gate row: role `give` or `take`."""
    return f"{PREFIX}{role}\x1f{tree}\x1f{community}"


@dataclass
class GateRow:
    """One community's handover on one topic tree, as this instance sees it."""

    role: str  # give: processed here up to the marker; take: processed here after it
    tree: str
    community: str
    handover: str
    peer: str  # the other side, in words
    cut: bool = False  # give: the marker has passed
    retire: bool = False  # give: this instance serves nothing after the handover

    @property
    def key(self) -> str:
        return row_key(self.role, self.tree, self.community)

    def encode(self) -> bytes:
        return orjson.dumps(
            {"handover": self.handover, "peer": self.peer, "cut": self.cut, "retire": self.retire}
        )

    @classmethod
    def decode(cls, key: str, body: bytes) -> GateRow:
        role, tree, community = key.removeprefix(PREFIX).split("\x1f", 2)
        d = orjson.loads(body)
        return cls(role, tree, community, str(d["handover"]), str(d.get("peer", "")),
                   bool(d.get("cut")), bool(d.get("retire")))  # fmt: skip


def marker_payload(handover: str, community: str, giver: str, taker: str) -> bytes:
    return orjson.dumps({"handover": handover, "community": community, "from": giver, "to": taker})


class HandoverGate:
    """Filters each batch by the handover rows of this instance; idle (one truth test per
    batch) when there are none."""

    def __init__(self, topic_template: str, ack_template: str | None, metrics: Metrics) -> None:
        self._devices = TopicTemplate(topic_template)
        self._acks = TopicTemplate(ack_template) if ack_template is not None else None
        self._metrics = metrics
        self.rows: dict[tuple[str, str], GateRow] = {}  # (tree, community) → row
        # Communities handed over from here that this instance no longer serves → the new
        # owner: what the session still holds of them is not looked at message by message
        # here (the gate stays idle) but rejected as `handed_over` by decode.
        self.handed_over: dict[str, str] = {}
        self._finished: set[str] = set()  # handovers whose state `sensord shard finish` moved

    def load(self, rows: Iterable[tuple[str, bytes]], *, served: set[str] | None = None) -> None:
        """The committed rows; `served`: the communities this instance serves now (None:
        every one), so a finished give of one it no longer serves costs nothing per message."""
        for key, body in rows:
            if key.startswith(FINISHED):
                self._finished.add(key.removeprefix(FINISHED))
            if key.startswith(PREFIX) and key.count("\x1f") == 3:
                row = GateRow.decode(key, body)
                if row.role == "give" and row.cut and served is not None and row.community not in served:
                    self.handed_over[row.community] = row.peer
                    continue
                self.rows[row.tree, row.community] = row

    def refusal(self, served: set[str] | None) -> str | None:
        """Why this instance must not start with a config serving `served` (None: every
        community): a community it still has to give (its old config must drain first),
        or one it takes before its state was moved (`finish` first)."""
        for r in sorted(self.rows.values(), key=lambda r: (r.community, r.tree)):
            if r.role == "give" and not r.cut and served is not None and r.community not in served:
                return (
                    f"handover {r.handover} is under way: community {r.community} must first be drained here "
                    "with the current config (sensord shard drain -c CURRENT_CONFIG)"
                )
            if r.role == "take" and r.handover not in self._finished:
                return (
                    f"handover {r.handover} is under way: community {r.community} comes here once "
                    "`sensord shard finish` has moved its state"
                )
        return None

    @property
    def active(self) -> bool:
        return bool(self.rows)

    def open_gives(self) -> list[GateRow]:
        """Communities this instance still processes until their marker comes."""
        return [r for r in self.rows.values() if r.role == "give" and not r.cut]

    def waiting_takes(self) -> list[GateRow]:
        """Communities whose marker this instance has not seen yet."""
        return [r for r in self.rows.values() if r.role == "take"]

    def filter(self, messages: Sequence[RawMessage]) -> tuple[list[RawMessage], dict[str, bytes | None]]:
        """The messages to process, and the gate rows this batch changed."""
        keep: list[RawMessage] = []
        changes: dict[str, bytes | None] = {}
        for m in messages:
            where = self._where(m.topic)
            row = self.rows.get(where[:2]) if where is not None else None
            if row is None or where is None:
                keep.append(m)
                continue
            if where[2] == MARKER_DEVICE:
                self._marker(row, m, changes)
            elif row.role == "give" and not row.cut:
                keep.append(m)
            else:
                # give after the marker, or take before it: the other owner processes it.
                self._metrics.handed_over.labels(row.role).inc()
        return keep, changes

    def _marker(self, row: GateRow, m: RawMessage, changes: dict[str, bytes | None]) -> None:
        try:
            handover = orjson.loads(m.payload).get("handover")
        except (orjson.JSONDecodeError, AttributeError):
            handover = None
        if handover != row.handover:
            log.warning(
                "handover marker of another handover ignored",
                extra={"fields": {"community": row.community, "tree": row.tree, "marker": str(handover)[:80],
                                  "expected": row.handover}},
            )  # fmt: skip
            self._metrics.handed_over.labels("stray_marker").inc()
            return
        if row.role == "give":
            if row.cut:
                return  # a redelivered copy
            row.cut = True
            changes[row.key] = row.encode()
            log.info(
                "handover marker passed: the community's later messages are the new owner's",
                extra={"fields": {"community": row.community, "tree": row.tree, "to": row.peer}},
            )
            return
        del self.rows[row.tree, row.community]
        changes[row.key] = None
        log.info(
            "handover marker reached: the community's messages are processed here from now on",
            extra={"fields": {"community": row.community, "tree": row.tree, "from": row.peer}},
        )

    def _where(self, topic: str) -> tuple[str, str, str] | None:
        """(tree, community, device id) of a topic, or None when it fits neither template."""
        acks = self._acks
        if acks is not None and topic.startswith(acks.prefix):
            parts = acks.parse(topic)
            if parts is not None:
                return "acks", parts.community, parts.device_id
        parts = self._devices.parse(topic)
        return ("devices", parts.community, parts.device_id) if parts is not None else None
