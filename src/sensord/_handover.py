"""Changing which instance serves which community, losing nothing (README: Changing the
number of instances): `sensord shard begin` and `sensord shard finish`; `sensord shard
drain` (in `_shard_cli`) runs between them.

    begin   (every instance stopped) the new owner's broker session subscribes to each
            community it takes, then a marker is published into each such community's
            device and ack topics; the gate rows (shard/_gate.py) tell the old owner to
            stop at the marker and the new owner to start after it
    drain   each old owner runs with its old config until it has passed its markers
    finish  (every instance stopped) the state of each moved community goes to its new
            owner: rule state (timers, windows, latest values) by device id, open alerts,
            waiting groups and holds, unfinished work orders, silences; each outbox that
            changes is first copied to `<outbox>.before-<handover>`

An instance is known by its outbox file: an old and a new config naming the same one are
the same instance before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from sensord._app import session_broker
from sensord._errors import ConfigError, IngestError, OutboxError
from sensord._metrics import Metrics
from sensord._pipeline import decode_active
from sensord._registry import Registry, load_registry
from sensord._settings import BatchSettings, BrokerSettings, Settings, load_settings
from sensord._state_lock import StateLock
from sensord.alerts import Engine
from sensord.dispatch import merge_state, state_by_community
from sensord.ingest import MqttSource
from sensord.outbox import AuditEntry, Outbox, SilenceRow, WorkOrderRow
from sensord.rules import load_rules
from sensord.shard import (
    FINISHED,
    PREFIX,
    GateRow,
    Shard,
    instance_filters,
    marker_payload,
    marker_topics,
    row_key,
    split_registry,
)


@dataclass
class Instance:
    """One instance as one config describes it (old or new side of a handover)."""

    config: Path
    settings: Settings
    registry: Registry  # this instance's part of the registry
    communities: frozenset[str]
    label: str
    db: Path  # its outbox: the instance's identity across the handover

    @property
    def trees(self) -> tuple[str, ...]:
        return ("devices", "acks") if self.settings.broker.ack_topic_template is not None else ("devices",)


def load_instance(config: Path) -> Instance:
    settings = load_settings(config)
    path = settings.input_path(settings.registry)
    registry = load_registry(path)
    if settings.shard is None:
        communities = frozenset(d.entry.community for d in registry.by_id.values())
        label = "the unsharded instance"
    else:
        split = split_registry(registry, Shard(settings.shard), source=str(path))
        registry, communities = split.registry, frozenset(split.communities)
        label = Shard(settings.shard).label
    db = settings.data_path(settings.outbox.path).resolve()
    return Instance(config, settings, registry, communities, f"{label} ({config.name})", db)


@dataclass
class Plan:
    """Who gives which community to whom. A community served by no old instance has no
    giver: its new owner starts it fresh."""

    old: list[Instance]
    new: list[Instance]
    moves: dict[str, tuple[Instance | None, Instance]] = field(default_factory=dict)
    unserved: list[str] = field(default_factory=list)  # in the new registry, served by nobody

    def gives(self, inst: Instance) -> list[str]:
        return sorted(c for c, (g, _) in self.moves.items() if g is not None and g.db == inst.db)

    def takes(self, inst: Instance) -> list[str]:
        return sorted(c for c, (_, t) in self.moves.items() if t.db == inst.db)

    def retiring(self, inst: Instance) -> bool:
        """An old instance no new config names: it hands over everything and stops for good."""
        return all(n.db != inst.db for n in self.new)

    def describe(self) -> list[str]:
        lines = []
        for c, (giver, taker) in sorted(self.moves.items()):
            src = giver.label if giver is not None else "nobody (starts fresh)"
            lines.append(f"  {c}: {src} -> {taker.label}")
        lines += [f"  {c}: served by no new instance" for c in self.unserved]
        return lines


def _owners(side: list[Instance], what: str) -> dict[str, Instance]:
    owners: dict[str, Instance] = {}
    seen: dict[Path, Instance] = {}
    for inst in side:
        if inst.db in seen:
            raise ConfigError(
                f"{what} configs {seen[inst.db].config} and {inst.config} share the outbox {inst.db}"
            )
        seen[inst.db] = inst
        for c in inst.communities:
            if c in owners:
                raise ConfigError(f"community {c} is served by both {owners[c].label} and {inst.label}")
            owners[c] = inst
    return owners


def make_plan(old_configs: Sequence[Path], new_configs: Sequence[Path]) -> Plan:
    """The moves from the old configs to the new ones; ConfigError if the change cannot be
    done in one handover."""
    plan = Plan([load_instance(c) for c in old_configs], [load_instance(c) for c in new_configs])
    for prior in plan.old:
        for later in plan.new:
            was, will = session_broker(prior.settings).client_id, session_broker(later.settings).client_id
            if prior.db == later.db and was != will:
                # What the broker queued for the old session would never be read.
                raise ConfigError(
                    f"the broker session of the instance of {prior.db} would change from {was!r} to "
                    f"{will!r}; keep its broker.client_id (and shard index) across a handover"
                )
    topics = {_topics(i.settings) for i in [*plan.old, *plan.new]}
    if len(topics) > 1:
        # The markers must lie in both the old and the new owner's subscriptions.
        raise ConfigError(
            "the old and new configs subscribe differently (broker.subscriptions, topic_template, "
            "ack_topic_template); change those in a handover of their own"
        )
    before, after = _owners(plan.old, "old"), _owners(plan.new, "new")
    for c, taker in after.items():
        giver = before.get(c)
        if giver is None or giver.db != taker.db:
            plan.moves[c] = (giver, taker)
    plan.unserved = sorted(set(before) - set(after))
    givers = {g.db for g, _ in plan.moves.values() if g is not None}
    both = sorted(str(t.db) for _, t in plan.moves.values() if t.db in givers)
    if both:
        # The new owner's session must be subscribed while it is stopped, and a giver runs
        # (drain) after that: an instance doing both would consume what it is to take.
        raise ConfigError(
            f"the instance of {both[0]} would both give and take communities in one handover; split the "
            "change in two (changing only shard.count never asks for this)"
        )
    return plan


def _topics(settings: Settings) -> tuple[object, ...]:
    b = settings.broker
    return (b.subscriptions, b.topic_template, b.ack_topic_template)


@contextlib.contextmanager
def _locked(plan: Plan, who: str) -> Iterator[None]:
    """Every involved state_dir locked: no instance may run meanwhile."""
    with contextlib.ExitStack() as stack:
        for state_dir in sorted({i.settings.state_dir.resolve() for i in [*plan.old, *plan.new]}):
            lock = StateLock(state_dir).acquire(who)
            stack.callback(lock.release)
        yield


def _outbox(inst: Instance) -> Outbox:
    return Outbox(inst.db, (), inst.settings.outbox, Metrics())


def _gate_rows(outbox: Outbox) -> dict[str, GateRow]:
    return {k: GateRow.decode(k, b) for k, b in outbox.dispatch_state() if k.startswith(PREFIX)
            and k.count("\x1f") == 3}  # fmt: skip


def _new_id() -> str:
    return time.strftime("h%Y%m%dT%H%M%S-") + secrets.token_hex(3)


def _finished(box: Outbox, handover: str) -> bool:
    return any(k == FINISHED + handover for k, _ in box.dispatch_state())


# -- begin ------------------------------------------------------------------------------


def begin(plan: Plan, *, out: list[str]) -> str:
    """Subscribe the new owners, write the gate rows, publish the markers. Returns the
    handover id. Run again after an interruption, it goes on with the same handover."""
    with _locked(plan, "sensord shard begin"):
        boxes = {i.db: _outbox(i) for i in [*plan.old, *plan.new] if plan.gives(i) or plan.takes(i)}
        try:
            handover = _current_handover(plan, boxes) or _new_id()
            for inst in plan.new:
                taken = plan.takes(inst)
                if taken:
                    asyncio.run(_subscribe_session(inst, taken))
                    out.append(f"subscribed {inst.label} to {len(taken)} communities")
            for db, box in boxes.items():
                box.commit([], groups=_begin_rows(plan, db, handover))
            markers = [(c, g, t) for c, (g, t) in sorted(plan.moves.items()) if g is not None]
            if markers:
                asyncio.run(_publish_markers(plan.new[0], markers, handover))
                out.append(f"published the markers of {len(markers)} communities")
        finally:
            for box in boxes.values():
                box.close()
    return handover


def _current_handover(plan: Plan, boxes: Mapping[Path, Outbox]) -> str | None:
    """The handover under way in these outboxes, if it is this plan's; ConfigError if
    another one is."""
    open_rows = [
        r for box in boxes.values() for r in _gate_rows(box).values() if r.role == "take" or not r.cut
    ]
    ids = {r.handover for r in open_rows}
    if not ids:
        return None
    mine = {(r.community, r.role) for r in open_rows}
    planned = {(c, "give") for c, (g, _) in plan.moves.items() if g is not None}
    planned |= {(c, "take") for c, (g, _) in plan.moves.items() if g is not None}
    if len(ids) > 1 or mine != planned:
        raise ConfigError(
            f"another handover is under way ({', '.join(sorted(ids))}); finish it (sensord shard drain, "
            "sensord shard finish) before starting one"
        )
    return ids.pop()


def _begin_rows(plan: Plan, db: Path, handover: str) -> dict[str, bytes | None]:
    rows: dict[str, bytes | None] = {}
    for c, (giver, taker) in plan.moves.items():
        if giver is None:
            continue
        if giver.db == db:
            for tree in giver.trees:
                row = GateRow("give", tree, c, handover, taker.label, retire=plan.retiring(giver))
                rows[row.key] = row.encode()
        if taker.db == db:
            for tree in taker.trees:
                rows[GateRow("take", tree, c, handover, giver.label).key] = GateRow(
                    "take", tree, c, handover, giver.label
                ).encode()
                # A cut left from an earlier handover of this community away from here.
                rows[row_key("give", tree, c)] = None
    return rows


async def _subscribe_session(inst: Instance, communities: Sequence[str]) -> None:
    """The instance's own broker session subscribes to what it takes, so the broker keeps
    those communities' messages for it from now on. Nothing delivered is acknowledged:
    the broker sends it again when the instance connects."""
    broker = session_broker(inst.settings).model_copy(update={"will": None})
    filters = instance_filters(inst.settings, communities)
    source = MqttSource(broker, inst.settings.secret("broker.password"), Metrics(), BatchSettings(),
                        filters=filters)  # fmt: skip
    await _connected(source)


async def _publish_markers(
    inst: Instance, markers: Sequence[tuple[str, Instance, Instance]], handover: str
) -> None:
    """Each moved community's markers, published QoS 1 once every new owner subscribed."""
    broker = inst.settings.broker.model_copy(
        update={"client_id": f"sensord-handover-{handover}"[:64], "clean_session": True, "will": None}
    )
    password = inst.settings.secret("broker.password")
    source = MqttSource(broker, password, Metrics(), BatchSettings(), filters=())

    async def publish() -> None:
        for community, giver, taker in markers:
            body = marker_payload(handover, community, giver.label, taker.label)
            for topic in marker_topics(taker.settings, community).values():
                await source.publish(topic, body, qos=1)

    await _connected(source, publish)


async def drop_session(broker: BrokerSettings, password: SecretStr | None) -> None:
    """Connect once with a clean session: the broker forgets the session of an instance
    that serves nothing any more, and stops queueing for it."""
    clean = broker.model_copy(update={"clean_session": True, "will": None})
    await _connected(MqttSource(clean, password, Metrics(), BatchSettings(), filters=()))


async def _connected(source: MqttSource, then: object = None) -> None:
    runner = asyncio.create_task(source.run(), name="handover-connection")
    try:
        async with asyncio.timeout(30):
            await source.connected.wait()
            if callable(then):
                await then()
    except TimeoutError:
        raise IngestError("the broker did not answer within 30 s (is it up? see broker.host/port)") from None
    finally:
        await source.aclose()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner


# -- finish -----------------------------------------------------------------------------


@dataclass
class _Written:
    """What finish writes into one outbox, in one transaction."""

    snapshot: bytes | None = None
    clock: float | None = None
    upsert: list[tuple[str, bytes]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    state: dict[str, bytes | None] = field(default_factory=dict)
    orders: list[WorkOrderRow] = field(default_factory=list)
    drop_orders: list[str] = field(default_factory=list)
    silences: list[SilenceRow] = field(default_factory=list)
    audit: list[AuditEntry] = field(default_factory=list)


def finish(plan: Plan, *, out: list[str]) -> str | None:
    """Move every moved community's state to its new owner. Returns the handover id
    (None: nothing to hand over). ConfigError when a giver has not passed its markers."""
    with _locked(plan, "sensord shard finish"):
        boxes = {i.db: _outbox(i) for i in [*plan.old, *plan.new]}
        try:
            handover = _check_drained(plan, boxes)
            if handover is None:
                return None
            done = [db for db, box in boxes.items() if _finished(box, handover)]
            if done:
                if len(done) == len(boxes):
                    out.append(f"handover {handover} was finished already")
                    return handover
                raise ConfigError(
                    f"handover {handover} was finished for {', '.join(map(str, done))} only; restore the "
                    f"copies <outbox>.before-{handover} of every outbox and run finish again"
                )
            writes = _compute(plan, boxes)
            for db, box in boxes.items():
                _backup(box, db, handover)
            for db, w in writes.items():
                box = boxes[db]
                box.commit(
                    [], upsert_active=w.upsert, delete_active=w.delete, clock=w.clock,
                    groups={**w.state, FINISHED + handover: b"1"}, work_orders=w.orders, audit=w.audit,
                    before=lambda box=box, w=w: (box.work_orders.remove(w.drop_orders),  # type: ignore[misc]
                                                 box.silences.copy_in(w.silences)),
                )  # fmt: skip
                if w.snapshot is not None:  # after the checkpoint it goes with, as the daemon saves it
                    box.snapshots.save(w.snapshot)
                out.append(f"{db}: {len(w.upsert)} open alerts in, {len(w.delete)} out; "
                           f"{len(w.orders)} work orders in, {len(w.drop_orders)} out")  # fmt: skip
        finally:
            for box in boxes.values():
                box.close()
    return handover


def _check_drained(plan: Plan, boxes: Mapping[Path, Outbox]) -> str | None:
    ids: set[str] = set()
    for c, (giver, _) in sorted(plan.moves.items()):
        if giver is None:
            continue
        rows = _gate_rows(boxes[giver.db])
        for tree in giver.trees:
            row = rows.get(row_key("give", tree, c))
            if row is None:
                raise ConfigError(
                    f"{giver.label} has no handover of community {c}: run `sensord shard begin` first"
                )
            if not row.cut:
                raise ConfigError(
                    f"{giver.label} has not passed the handover marker of community {c} ({tree}): run "
                    f"`sensord shard drain -c {giver.config}` first"
                )
            ids.add(row.handover)
    if len(ids) > 1:
        raise ConfigError(f"the givers passed the markers of different handovers ({', '.join(sorted(ids))})")
    return ids.pop() if ids else None


def _backup(box: Outbox, db: Path, handover: str) -> None:
    """A copy of the outbox and its engine snapshot as they were, beside them: finish is
    undone by putting them back."""
    target = db.with_name(f"{db.name}.before-{handover}")
    try:
        src = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        dst = sqlite3.connect(target)
        with contextlib.closing(src), contextlib.closing(dst):
            src.backup(dst)
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot copy {db} to {target}: {exc}") from None
    blob = box.snapshots.load()
    if blob is not None:
        snap = box.snapshots.path
        snap.with_name(f"{snap.name}.before-{handover}").write_bytes(blob)


def _engine(inst: Instance, box: Outbox | None) -> Engine:
    """An instance's rule engine as it stood when it stopped (offline: no broker)."""
    rules = load_rules(inst.settings.input_path(inst.settings.rules_dir), inst.registry)
    engine = Engine(rules, inst.registry, inst.settings.alerts)
    if box is not None:
        blob = box.snapshot()
        if blob is not None:
            engine.load_snapshot(blob)
        engine.restore([decode_active(b) for b in box.active_rows()])
    return engine


def _compute(plan: Plan, boxes: Mapping[Path, Outbox]) -> dict[Path, _Written]:
    """Everything to write, read before anything is written (an outbox may be a giver's
    and a new instance's at once)."""
    old_by_db = {i.db: i for i in plan.old}
    olds: dict[Path, Engine] = {}
    # Every outbox gets the finished row, so a second run knows the handover is done.
    writes: dict[Path, _Written] = {db: _Written() for db in boxes}
    for inst in plan.new:
        prior = old_by_db.get(inst.db)
        if not plan.takes(inst) and not (prior is not None and plan.gives(prior)):
            continue  # its share is unchanged: its snapshot still fits
        engine = _engine(inst, None)
        sources: dict[Path, list[str]] = {}
        for c in inst.communities:
            move = plan.moves.get(c)
            src = move[0] if move is not None else prior
            if src is not None:
                sources.setdefault(src.db, []).append(c)
        w = _Written()
        for db, communities in sources.items():
            if db not in olds:
                olds[db] = _engine(old_by_db[db], boxes[db])
            engine.adopt(olds[db], communities)
            if db != inst.db:
                _take(w, boxes[db], set(communities), old_by_db[db].label)
        if prior is not None:
            _give(w, boxes[inst.db], set(plan.gives(prior)), plan)
        _dedup_silences(w, boxes[inst.db].silences.all())
        w.snapshot = engine.snapshot()
        own = boxes[inst.db].stream_clock()
        clocks = [t for db in sources if (t := boxes[db].stream_clock()) is not None]
        w.clock = own if own is not None else (min(clocks) if clocks else None)
        writes[inst.db] = w
    return writes


def _take(w: _Written, src: Outbox, communities: set[str], giver: str) -> None:
    """What the new owner takes from one giver's outbox."""
    for body in src.active_rows():
        row = decode_active(body)
        if row.community in communities:
            w.upsert.append((row.fingerprint, body))
    for key, body in src.dispatch_state():
        for c, part in (state_by_community(key, body) or {}).items():
            if c in communities:
                mine = w.state.get(key)
                w.state[key] = merge_state(key, mine, part) if mine is not None else part
    now = time.time()
    for order in src.work_orders.unfinished_rows():
        if order.community in communities:
            w.orders.append(order)
            w.audit.append(AuditEntry(now, "sensord shard finish", "operator", "handed_over_in", order.id,
                                      {"from": giver}, ""))  # fmt: skip
    w.silences += [s for s in src.silences.all() if s.ends_at > now]


def _give(w: _Written, box: Outbox, given: set[str], plan: Plan) -> None:
    """What a kept instance no longer holds after giving `given` away."""
    for body in box.active_rows():
        row = decode_active(body)
        if row.community in given:
            w.delete.append(row.fingerprint)
    for key, body in box.dispatch_state():
        parts = state_by_community(key, body)
        if not parts or not set(parts) & given:
            continue
        kept = [b for c, b in parts.items() if c not in given]
        merged: bytes | None = None
        for b in kept:
            merged = b if merged is None else merge_state(key, merged, b)
        w.state[key] = merged
    now = time.time()
    for order in box.work_orders.unfinished_rows():
        if order.community in given:
            w.drop_orders.append(order.id)
            taker = plan.moves[order.community][1].label
            w.audit.append(AuditEntry(now, "sensord shard finish", "operator", "handed_over_out", order.id,
                                      {"to": taker}, ""))  # fmt: skip


def _dedup_silences(w: _Written, existing: Sequence[SilenceRow]) -> None:
    have = {(s.matchers, s.starts_at, s.ends_at, s.created_by, s.comment) for s in existing}
    out = []
    for s in w.silences:
        key = (s.matchers, s.starts_at, s.ends_at, s.created_by, s.comment)
        if key not in have:
            have.add(key)
            out.append(s)
    w.silences = out


def gate_summary(box: Outbox) -> list[str]:
    """The gate rows of one outbox, for `sensord shard status`."""
    out = []
    for r in sorted(_gate_rows(box).values(), key=lambda r: (r.community, r.tree)):
        if r.role == "take":
            state = f"take from {r.peer}: waiting for the marker"
        else:
            state = f"give to {r.peer}: " + ("marker passed" if r.cut else "waiting for the marker")
        out.append(f"  {r.community} ({r.tree}): {state} [{r.handover}]")
    return out
