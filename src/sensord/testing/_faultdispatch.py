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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensord.replay import Outgoing
from sensord.testing._faultruns import _rig, _settle, kill_under_load
from sensord.testing._faults import Workload, replay_published
from sensord.testing._platforms import WeComRobotServer

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
        return out


def _spec(url: str) -> dict[str, Any]:
    return {
        "receivers": [{"name": "desk", "channels": [{"type": "wecom", "url": url}]}],
        "route": {"receiver": "desk", "group_wait": "0s"},
        "rule_dispatch": False,
    }


def reference_messages(config: Path, stream: list[Outgoing]) -> set[str]:
    """The ids of the life-safety messages an offline replay of `stream` makes."""
    result = replay_published(config, stream, dispatch=True)
    return {n.message.id for n in result.notices if n.message.life_safety}


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
            want = reference_messages(rig.daemon.config, stream)
            _, done, _ = kill_under_load(rig, w, stream, kills, random.Random(seed))  # noqa: S311 - seeded
            _settle(rig, lambda: want <= _received(robot), drain_s)
            got = _received(robot)
    finally:
        robot.stop()
    return DispatchRun(
        kills=done,
        expected=len(want),
        received=len(got),
        missing=sorted(want - got),
        unexpected=sorted(got - want),
        seconds=time.monotonic() - t0,
    )
