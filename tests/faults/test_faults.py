"""Fault injection against real processes (Mosquitto, InfluxDB, the daemon, a webhook
receiver): the short versions of the scenarios `bench/faults.py` runs long.

Each run is judged against an offline replay of the very stream that was published (see
`sensord.testing`): what a daemon that never failed would have sent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord.testing import Run, Workload, broker_kills, daemon_kills, dispatch_kills, sinks_down

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# ~300 devices in three families, one reading each per tick; 0.5 s of wall time per tick.
CI_LOAD = Workload(wristbands=150, fire=50, bins=100, ticks=50, wall_tick_s=0.5)


def _explain(run: Run, problems: list[str]) -> str:
    return f"{run.name}: {run.row()}\n" + "\n".join(problems)


def test_daemon_sigkill_under_load_loses_and_repeats_no_life_safety_alert(tmp_path: Path) -> None:
    """SIGKILLed three times at seeded random points under QoS 1 load with SOS presses,
    acknowledgements and smoke alarms, and restarted each time, the daemon delivers every
    life-safety transition of the reference, invents none, and never sends one
    (rule, device, status, startsAt) under two webhook ids: an acknowledged alert that
    came back after the crash would be resolved a second time under a new id."""
    run = daemon_kills(tmp_path, CI_LOAD, kills=3, seed=1)
    problems = run.problems()
    assert run.kills == 3
    assert run.findings.expected_ls > 50, "the workload raised too few life-safety alerts to judge"
    assert not problems, _explain(run, problems)


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_sinks_down_under_load_deliver_all_in_order_life_safety_first(tmp_path: Path, mode: str) -> None:
    """With the webhook answering 503 (or holding each request past the sink's timeout)
    and InfluxDB stopped for 20 s under load, every event of the reference arrives once
    per id after recovery and nothing else does, each fingerprint's events arrive in
    event-time order (never `resolved` before its `firing`), every life-safety event
    waiting at recovery arrives before any waiting ordinary event, and InfluxDB gets
    every event too."""
    run = sinks_down(tmp_path, CI_LOAD, mode=mode, outage_s=20)
    problems = run.problems()
    assert run.findings.waiting_ls > 0, "no life-safety event was waiting at recovery"
    assert run.findings.waiting_ordinary > 0, "no ordinary event was waiting at recovery"
    assert not problems, _explain(run, problems)


def test_broker_sigkill_under_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Mosquitto (persistence on, saving every change) SIGKILLed twice under QoS 1 load
    and started again on the same port: every message it acknowledged to the publisher
    produces exactly the alerts of the reference, once per webhook id, and no others."""
    run = broker_kills(tmp_path, CI_LOAD, kills=2, seed=2)
    problems = run.problems()
    assert run.acked >= run.published
    assert not problems, _explain(run, problems)


def test_daemon_sigkill_with_dispatch_loses_and_doubles_no_life_safety_message(tmp_path: Path) -> None:
    """With a dispatch file routing every alert to a chat robot, the daemon SIGKILLed
    twice under load still brings the robot every life-safety message of the reference
    (ids derived from the events, so a resurrected or doubled alert would show as an id
    the reference does not have), and none other; and the outbox holds exactly the
    reference's life-safety work orders, each opened once (none lost to a kill, none
    doubled)."""
    run = dispatch_kills(tmp_path, CI_LOAD, kills=2, seed=3)
    assert run.kills == 2
    assert run.expected > 50, "the workload raised too few life-safety alerts to judge"
    assert run.orders_expected > 50, "the workload opened too few work orders to judge"
    assert not run.problems(), f"{run}"
