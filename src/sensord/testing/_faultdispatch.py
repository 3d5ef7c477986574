"""The daemon SIGKILLed under load with dispatch on: every life-safety message of the
reference reaches the receiver's chat robot, and none other (a resurrected or doubled
alert would come under an id the reference does not have).

Message ids of life-safety alerts are derived from their event ids, so the offline
replay of the published stream (with the same dispatch file) knows them exactly; grouped
ordinary messages depend on where batches were cut and are not judged here.
"""

from __future__ import annotations

import random
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensord._settings import load_settings
from sensord._types import AlertStatus
from sensord.replay import Outgoing
from sensord.testing._faultruns import _rig, _settle, kill_under_load
from sensord.testing._faults import Workload, replay_published
from sensord.testing._platforms import WeComRobotServer
from sensord.workorders import WorkOrder, work_order_id

_ID = re.compile(r"编号 ([0-9a-f]{24})")


@dataclass
class DispatchRun:
    """What the robot got against what the reference says it should."""

    kills: int
    expected: int
    received: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # Work orders: the reference's against the daemon's outbox after the run.
    orders_expected: int = 0
    orders_missing: list[str] = field(default_factory=list)
    orders_unexpected: list[str] = field(default_factory=list)
    orders_reopened_twice: list[str] = field(default_factory=list)  # "opened" more than once

    def problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(
                f"{len(self.missing)} life-safety messages of the reference never arrived: {self.missing[:5]}"
            )
        if self.unexpected:
            out.append(
                f"{len(self.unexpected)} life-safety messages not in the reference: {self.unexpected[:5]}"
            )
        if self.orders_missing:
            out.append(f"{len(self.orders_missing)} work orders lost: {self.orders_missing[:5]}")
        if extra := self.orders_unexpected:
            out.append(f"{len(extra)} work orders not in the reference: {extra[:5]}")
        if twice := self.orders_reopened_twice:
            out.append(f"{len(twice)} work orders opened twice: {twice[:5]}")
        return out


def _spec(url: str) -> dict[str, Any]:
    return {
        "receivers": [{"name": "desk", "channels": [{"type": "wecom", "url": url}]}],
        "route": {"receiver": "desk", "group_wait": "0s"},
        "rule_dispatch": False,
    }


def reference_messages(config: Path, stream: list[Outgoing]) -> tuple[set[str], set[str]]:
    """The ids of the life-safety messages an offline replay of `stream` makes, and of
    the life-safety work orders it opens (each firing one reaches the desk at once; an
    ordinary alert's opens when its group is sent, which depends on where batches end)."""
    result = replay_published(config, stream, dispatch=True)
    orders = {
        work_order_id(e.fingerprint, e.starts_at)
        for e in result.events
        if e.status is AlertStatus.FIRING and e.life_safety
    }
    return {n.message.id for n in result.notices if n.message.life_safety}, orders


def _work_orders(config: Path) -> dict[str, int]:
    """The daemon's life-safety work orders (id → how many `opened` entries), read as
    another process."""
    settings = load_settings(config)
    path = settings.data_path(settings.outbox.path)
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT id, body FROM work_orders WHERE life_safety = 1").fetchall()
    finally:
        db.close()
    return {str(i): sum(h.action == "opened" for h in WorkOrder.decode(bytes(b)).history) for i, b in rows}


def _received(robot: WeComRobotServer) -> set[str]:
    """Ids of the life-safety messages the robot accepted (single alerts, 紧急)."""
    return {m.group(1) for a in robot.accepted if "紧急·" in a.text and (m := _ID.search(a.text))}


def dispatch_kills(work: Path, w: Workload, *, kills: int, seed: int = 3, drain_s: float = 60) -> DispatchRun:
    """SIGKILL the daemon `kills` times under load with a dispatch file routing every alert
    to one chat robot; judge the robot's life-safety messages against the reference."""
    t0 = time.monotonic()
    robot = WeComRobotServer(key="faults").start()
    try:
        with _rig(work, w, dispatch=_spec(robot.url)) as rig:
            stream = w.stream(rig.stream_start)
            want, orders = reference_messages(rig.daemon.config, stream)
            _, done, _ = kill_under_load(rig, w, stream, kills, random.Random(seed))  # noqa: S311 - seeded
            _settle(rig, lambda: want <= _received(robot), drain_s)
            got = _received(robot)
            opened = _work_orders(rig.daemon.config)
    finally:
        robot.stop()
    return DispatchRun(
        kills=done,
        expected=len(want),
        received=len(got),
        missing=sorted(want - got),
        unexpected=sorted(got - want),
        seconds=time.monotonic() - t0,
        orders_expected=len(orders),
        orders_missing=sorted(orders - set(opened)),
        orders_unexpected=sorted(set(opened) - orders),
        orders_reopened_twice=sorted(i for i, n in opened.items() if n != 1),
    )
