"""`sensord shard begin|drain|finish|status`, and the assignment `sensord check` prints
(README: Several instances, Changing the number of instances)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter
from pathlib import Path

from sensord._errors import ConfigError, SensordError
from sensord._logging import configure_logging
from sensord._metrics import Metrics
from sensord._registry import Registry
from sensord._settings import LogSettings, Settings, load_settings
from sensord._state_lock import StateLock
from sensord.outbox import Outbox
from sensord.shard import (
    NATS_SESSION_ACK_LIMIT,
    PREFIX,
    GateRow,
    Shard,
    assignment,
    jetstream_consumers,
    shard_filters,
    split_registry,
)

log = logging.getLogger("sensord")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    shard = sub.add_parser("shard", help="several instances: hand communities over when the count changes")
    cmds = shard.add_subparsers(dest="shard_command", required=True)
    for name, text in (
        ("begin", "(instances stopped) subscribe the new owners and publish the handover markers"),
        ("finish", "(instances stopped, drained) move each moved community's state to its new owner"),
    ):
        cmd = cmds.add_parser(name, help=text)
        cmd.add_argument("--from", dest="old", type=Path, nargs="+", required=True, help="current configs")
        cmd.add_argument("--to", dest="new", type=Path, nargs="+", required=True, help="every new config")
        if name == "begin":
            cmd.add_argument("--dry-run", action="store_true", help="print the moves and change nothing")
    drain = cmds.add_parser("drain", help="run an old instance until it has passed its handover markers")
    drain.add_argument("-c", "--config", type=Path, required=True, help="the instance's current config")
    drain.add_argument("--max-wait", type=float, default=600.0, metavar="S", help="give up after S seconds")
    status = cmds.add_parser("status", help="the handover rows of one instance")
    status.add_argument("-c", "--config", type=Path, required=True)


def shard_command(args: argparse.Namespace) -> int:
    from sensord import _handover  # noqa: PLC0415 - loads the engine; only for this command

    try:
        if args.shard_command == "drain":
            return _drain(args.config, args.max_wait)
        if args.shard_command == "status":
            return _status(args.config)
        plan = _handover.make_plan(args.old, args.new)
        print("moves:" if plan.moves else "no community changes instance")
        for line in plan.describe():
            print(line)
        out: list[str] = []
        if args.shard_command == "begin":
            if args.dry_run or not plan.moves:
                return 0
            handover = _handover.begin(plan, out=out)
            _print(out)
            print(f"handover {handover} begun; next: `sensord shard drain -c CONFIG` for each of")
            for inst in plan.old:
                if plan.gives(inst):
                    print(f"  {inst.config}")
            return 0
        done = _handover.finish(plan, out=out)
        _print(out)
        print("nothing to hand over" if done is None else f"handover {done} finished; start the new configs")
    except SensordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _print(lines: list[str]) -> None:
    for line in lines:
        print(line)


def _gate_rows(settings: Settings) -> list[GateRow]:
    box = Outbox(settings.data_path(settings.outbox.path), (), settings.outbox, Metrics())
    try:
        rows = box.dispatch_state()
        return [GateRow.decode(k, b) for k, b in rows if k.startswith(PREFIX) and k.count("\x1f") == 3]
    finally:
        box.close()


def _status(config: Path) -> int:
    from sensord._handover import gate_summary  # noqa: PLC0415

    settings = load_settings(config)
    path = settings.data_path(settings.outbox.path)
    if not path.is_file():
        print(f"no outbox at {path} yet: nothing handed over")
        return 0
    box = Outbox(path, (), settings.outbox, Metrics())
    try:
        lines = gate_summary(box)
    finally:
        box.close()
    print("\n".join(lines) if lines else "no handover rows")
    return 0


def _drain(config: Path, max_wait: float) -> int:
    configure_logging(LogSettings())
    settings = load_settings(config)
    configure_logging(settings.log)
    rows = [r for r in _gate_rows(settings) if r.role == "give"]
    if not any(not r.cut for r in rows):
        print("nothing to drain: no handover marker is awaited here")
        return 0
    retire = any(r.retire for r in rows)
    lock = StateLock(settings.state_dir).acquire("sensord shard drain")
    try:
        ok = asyncio.run(_drain_daemon(settings, max_wait, retire=retire))
    finally:
        lock.release()
    return 0 if ok else 1


async def _drain_daemon(settings: Settings, max_wait: float, *, retire: bool) -> bool:
    """The daemon with its current config, until its markers have passed (and, for an
    instance that serves nothing afterwards, its outbox is delivered and its broker
    session dropped)."""
    from sensord._app import build_daemon, session_broker  # noqa: PLC0415
    from sensord._daemon import run_until_cancelled  # noqa: PLC0415
    from sensord._handover import drop_session  # noqa: PLC0415

    daemon, http = await build_daemon(settings)
    gate = daemon.pipeline.gate
    assert gate is not None
    runner = asyncio.create_task(run_until_cancelled(daemon), name="drain")
    deadline, told = time.monotonic() + max_wait, 0.0

    def waiting() -> list[str]:
        out = [f"marker of {r.community} ({r.tree})" for r in gate.open_gives()]
        if retire:
            depth = daemon.health()[1]["outbox_depth"]
            assert isinstance(depth, dict)
            out += [f"{n} deliveries to {sink}" for sink, n in depth.items() if n]
        return out

    try:
        while (left := waiting()) and not runner.done() and time.monotonic() < deadline:
            if time.monotonic() - told > 10:
                told = time.monotonic()
                log.info("drain: waiting", extra={"fields": {"for": left[:10], "count": len(left)}})
            await asyncio.sleep(0.1)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        if http is not None:
            await http.aclose()
    if left:
        print(f"error: still waiting for {', '.join(left[:10])}; run drain again", file=sys.stderr)
        return False
    if retire:
        await drop_session(session_broker(settings), settings.secret("broker.password"))
        print("drained; this instance serves nothing after the handover: its broker session is dropped")
    else:
        print("drained: the handover markers have passed")
    return True


def check_share(settings: Settings, registry: Registry) -> None:
    """The registry splits for this shard (community names, the reserved device id), as
    `sensord run` would split it; ConfigError with the reason if not."""
    if settings.shard is not None:
        split_registry(registry, Shard(settings.shard), source=str(settings.input_path(settings.registry)))


def check_lines(settings: Settings, registry: Registry) -> list[str]:
    """What `sensord check` prints about the shard: the assignment for the configured
    count (community → instance, devices per instance), or this instance's list."""
    if settings.shard is None:
        return []
    shard = Shard(settings.shard)
    per_community = Counter(d.entry.community for d in registry.by_id.values())
    client_id = shard.client_id(settings.broker.client_id)
    if settings.shard.communities is not None:
        listed = set(settings.shard.communities)
        lines = [f"shard: {shard.label} (broker client id {client_id})"]
        lines += [f"  {c}\t{per_community.get(c, 0)} devices" for c in sorted(listed)]
        lines += [f"  warning: {c} is not in the registry" for c in sorted(listed - set(per_community))]
        others = sorted(set(per_community) - listed)
        if others:
            lines.append(f"  served elsewhere: {len(others)} communities, "
                         f"{sum(per_community[c] for c in others)} devices")  # fmt: skip
        return lines
    count = settings.shard.count
    assert count is not None
    owners = assignment(per_community, count)
    lines = [f"shard: {shard.label} (broker client id {client_id}); assignment of {count} instances:"]
    lines += [f"  {c}\tinstance {i}\t{per_community[c]} devices" for c, i in owners.items()]
    for i in range(count):
        mine = [c for c, o in owners.items() if o == i]
        mark = "  <- this instance" if i == settings.shard.index else ""
        devices = sum(per_community[c] for c in mine)
        lines.append(f"  instance {i}: {len(mine)} communities, {devices} devices{mark}")
    if not any(o == settings.shard.index for o in owners.values()):
        lines.append("  warning: this instance serves no community of the registry")
    return lines


def subscription_lines(settings: Settings, registry: Registry) -> list[str]:
    """What `sensord check` prints about the subscriptions: how many filters this instance
    subscribes, and the ceiling they put on a nats-server cluster's mqtt.max_ack_pending
    (one setting for every session, so the instance with the most filters sets it)."""
    if settings.shard is None or settings.shard.subscribe == "all":
        most = mine = settings.broker.filters
    elif settings.shard.communities is not None:
        most = mine = shard_filters(settings, settings.shard.communities)
    else:
        count, index = settings.shard.count, settings.shard.index
        assert count is not None
        assert index is not None
        owners = assignment(Counter(d.entry.community for d in registry.by_id.values()), count)
        each = [shard_filters(settings, [c for c, o in owners.items() if o == i]) for i in range(count)]
        mine = each[index]
        most = max(each, key=jetstream_consumers)
    consumers = jetstream_consumers(most)
    busiest = " for the busiest instance" if consumers > jetstream_consumers(mine) else ""
    if not consumers:
        return [f"  subscriptions: {len(mine)} filters"]
    line = (
        f"  subscriptions: {len(mine)} filters; on nats-server (a JetStream consumer per filter, two for one "
        f"ending in '/#'; {NATS_SESSION_ACK_LIMIT} unacknowledged messages per session in all) "
        f"{consumers} consumers{busiest}, so its "
        f"mqtt.max_ack_pending must be at most {NATS_SESSION_ACK_LIMIT // consumers}"
    )
    return [line]


def refuse_foreign_silence(settings: Settings, matchers: list[str]) -> None:
    """A silence of one community belongs on the instance serving it."""
    if settings.shard is None:
        return
    shard = Shard(settings.shard)
    for m in matchers:
        key, sep, value = m.partition("=")
        value = value.strip().strip('"')
        if sep and key.strip() == "community" and not value.startswith("~") and not shard.owns(value):
            raise ConfigError(
                f"community {value} is served by {shard.owner_of(value)}, not by this instance "
                f"({shard.label}): add the silence with that instance's config"
            )
