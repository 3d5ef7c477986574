"""The per-batch checkpoint is the authority on which alerts are open after a crash.

A crash is modelled as the process loop does it: batches are evaluated and committed to a
real SQLite outbox, the engine snapshot is taken at one point only, then everything in
memory is dropped and a new daemon restores from the same state folder.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensord._app import build_daemon
from sensord._daemon import Daemon
from sensord._pipeline import Evaluated, commit
from sensord._settings import parse_settings
from sensord._types import AlertEvent, AlertStatus, RawMessage
from sensord.sinks import MemorySink
from tests.unit.test_engine_state import batch, feed, make_engine, registry

ROOT = Path(__file__).resolve().parents[2]
T0 = time.time() - 3600.0


def settings_for(tmp_path: Path) -> Any:
    return parse_settings(
        {
            "registry": str(ROOT / "config" / "devices.yaml"),
            "rules_dir": str(ROOT / "rules"),
            "state_dir": str(tmp_path / "state"),
            "http": {"enabled": False},
        },
        source="test",
        config_dir=tmp_path,
    )


def reading(device: str, family: str, t: float, **body: Any) -> RawMessage:
    topic = f"sensord/maple-court/{family}/{device}/telemetry"
    return RawMessage(topic, orjson.dumps({"ts": T0 + t, **body}), T0 + t, None)


def ack(device: str, family: str, rule: str, t: float) -> RawMessage:
    topic = f"sensord-dispatch/ack/maple-court/{family}/{device}"
    return RawMessage(topic, orjson.dumps({"rule": rule, "by": "desk"}), T0 + t, None)


class Box:
    """One daemon's life on a state folder: feed batches, snapshot when told, crash."""

    def __init__(self, tmp_path: Path, opened: list[Box]) -> None:
        self.tmp_path = tmp_path
        self._opened = opened
        self.daemon: Daemon = asyncio.run(self._build())
        opened.append(self)
        self.daemon.restore()

    async def _build(self) -> Daemon:
        daemon, _ = await build_daemon(settings_for(self.tmp_path), sinks=[MemorySink("webhook")])
        return daemon

    def feed(self, *messages: RawMessage, snapshot: bool = False) -> list[AlertEvent]:
        ev: Evaluated = self.daemon.pipeline.evaluate(list(messages))
        if snapshot:
            ev.snapshot = self.daemon.pipeline.engine.snapshot()
        commit(self.daemon.outbox, ev)
        return ev.events

    def close(self) -> None:
        self.daemon.outbox.close()
        self.daemon.deadletter.close()

    def crash(self) -> Box:
        """Drop everything in memory (no stop-time snapshot) and start again."""
        self.close()
        self._opened.remove(self)
        return Box(self.tmp_path, self._opened)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    opened: list[Box] = []
    yield Box(tmp_path, opened)
    for b in opened:
        b.close()


def statuses(events: list[AlertEvent]) -> list[tuple[str, str, str]]:
    return [(e.rule, e.device_id, e.status.value) for e in events]


class TestCheckpointAuthority:
    def test_acked_sos_stays_resolved_after_crash(self, box: Box) -> None:
        """SOS, readings for 12 s, ack, crash, restart, ack again: one `resolved` only
        (the snapshot taken while it fired must not bring it back)."""
        fired = box.feed(reading("wb-01", "wristband", 0, sos=True), snapshot=True)
        assert statuses(fired) == [("wristband_sos", "wb-01", "firing")]
        for t in range(1, 13):
            box.feed(reading("wb-01", "wristband", t, sos=False, heart_rate=70))
        resolved = box.feed(ack("wb-01", "wristband", "wristband_sos", 12.5))
        assert statuses(resolved) == [("wristband_sos", "wb-01", "resolved")]
        box = box.crash()
        again = box.feed(ack("wb-01", "wristband", "wristband_sos", 13))
        assert again == []
        assert all(a.rule != "wristband_sos" for a in box.daemon.pipeline.engine.active())

    def test_ack_read_first_after_a_crash_is_dated_by_the_last_committed_clock(self, box: Box) -> None:
        """SOS after the last snapshot, crash, restart, and the ack (received long after,
        as from a backlog) is the first message: it closes the SOS at the clock of the last
        committed batch, as a daemon that never stopped would, not at the older snapshot's
        clock (which predates the SOS and would make the ack look stale)."""
        box.feed(reading("wb-01", "wristband", 0, sos=False, heart_rate=70), snapshot=True)
        box.feed(reading("wb-01", "wristband", 20, sos=True))
        box.feed(reading("wb-01", "wristband", 25, sos=False, heart_rate=70))
        box = box.crash()
        resolved = box.feed(ack("wb-01", "wristband", "wristband_sos", 3600))
        assert [(s, e.event_time - T0) for s, e in zip(statuses(resolved), resolved, strict=True)] == [
            (("wristband_sos", "wb-01", "resolved"), 25.0)
        ]

    def test_alert_fired_and_resolved_in_one_batch_leaves_no_row(self, box: Box) -> None:
        """An SOS pressed and acknowledged in the same batch leaves nothing open in the
        checkpoint (its last change wins), so a crash does not bring it back."""
        batch = [reading("wb-01", "wristband", 0, sos=True), ack("wb-01", "wristband", "wristband_sos", 1)]
        assert statuses(box.feed(*batch)) == [
            ("wristband_sos", "wb-01", "firing"),
            ("wristband_sos", "wb-01", "resolved"),
        ]
        box = box.crash()
        assert box.feed(ack("wb-01", "wristband", "wristband_sos", 2)) == []

    def test_state_alert_cleared_after_snapshot_stays_resolved(self, box: Box) -> None:
        """A bin emptied after the snapshot is not full again after a crash: the next
        reading below the clear level sends nothing."""
        assert statuses(box.feed(reading("bin-01", "bin", 0, fill_pct=90), snapshot=True)) == [
            ("bin_full", "bin-01", "firing")
        ]
        assert statuses(box.feed(reading("bin-01", "bin", 60, fill_pct=10))) == [
            ("bin_full", "bin-01", "resolved")
        ]
        box = box.crash()
        assert box.feed(reading("bin-01", "bin", 120, fill_pct=12)) == []

    def test_alert_fired_after_snapshot_is_open_after_crash(self, box: Box) -> None:
        """The other way: an SOS fired after the snapshot is still open after a crash, so a
        second SOS press sends nothing new and the ack resolves it with its first start."""
        box.feed(reading("wb-01", "wristband", 0, heart_rate=70), snapshot=True)
        fired = box.feed(reading("wb-01", "wristband", 5, sos=True))
        assert statuses(fired) == [("wristband_sos", "wb-01", "firing")]
        box = box.crash()
        pressed_again = [reading("wb-01", "wristband", t, sos=t == 7) for t in (6, 7)]
        assert box.feed(*pressed_again) == []
        resolved = box.feed(ack("wb-01", "wristband", "wristband_sos", 8))
        assert statuses(resolved) == [("wristband_sos", "wb-01", "resolved")]
        assert resolved[0].starts_at == fired[0].starts_at

    def test_acknowledged_state_alert_stays_acknowledged(self, box: Box) -> None:
        """An acknowledgement of a state alert (no event) is checkpointed too."""
        box.feed(reading("bin-01", "bin", 0, fill_pct=90), snapshot=True)
        assert box.feed(ack("bin-01", "bin", "bin_full", 10)) == []
        box = box.crash()
        rows = {a.rule: a for a in box.daemon.pipeline.engine.active()}
        assert rows["bin_full"].acked
        assert rows["bin_full"].status is AlertStatus.FIRING

    def test_community_silence_resolved_after_snapshot_stays_resolved(self, box: Box) -> None:
        """A community silence that fired before the snapshot and ended after it is not
        open again after a crash (community alerts are checkpointed too)."""
        box.feed(*(reading(d, "wristband", 0, heart_rate=70) for d in ("wb-01", "wb-02", "wb-03")))
        ev = box.daemon.pipeline.tick(T0 + 700)
        ev.snapshot = box.daemon.pipeline.engine.snapshot()
        commit(box.daemon.outbox, ev)
        assert ("community_silent", "", "firing") in statuses(ev.events)
        back = box.feed(reading("bin-01", "bin", 710, fill_pct=10))
        assert ("community_silent", "", "resolved") in statuses(back)
        box = box.crash()
        assert statuses(box.feed(reading("bin-01", "bin", 720, fill_pct=11))) == []


class TestEngineRestore:
    """The engine alone: snapshot, later transitions, restore(checkpoint rows)."""

    def test_level_changed_after_snapshot_takes_the_checkpoint_level(self, tmp_path: Path) -> None:
        """A multi-level alert that went critical → resolved after the snapshot is closed
        after a restore: the same low reading sends nothing."""
        reg = registry(1)
        eng = make_engine(tmp_path, reg)
        feed(eng, batch([(0, 0, {"heart_rate": 130})]))
        snap = eng.snapshot()
        dropped = feed(eng, batch([(0, 10, {"heart_rate": 100})]))
        assert ("hr_levels", "wb-0", "resolved") in statuses(dropped)
        rows = eng.active()
        fresh = make_engine(tmp_path, reg)
        fresh.load_snapshot(snap)
        fresh.restore(rows)
        assert [e for e in feed(fresh, batch([(0, 20, {"heart_rate": 100})])) if e.rule == "hr_levels"] == []

    def test_level_raised_after_snapshot_is_restored(self, tmp_path: Path) -> None:
        """A warning that became critical after the snapshot is critical after a restore:
        the next critical reading sends nothing, the drop to warning is one event."""
        reg = registry(1)
        eng = make_engine(tmp_path, reg)
        feed(eng, batch([(0, 0, {"heart_rate": 118})]))
        snap = eng.snapshot()
        feed(eng, batch([(0, 10, {"heart_rate": 130})]))
        rows = eng.active()
        fresh = make_engine(tmp_path, reg)
        fresh.load_snapshot(snap)
        fresh.restore(rows)
        assert [e for e in feed(fresh, batch([(0, 20, {"heart_rate": 131})])) if e.rule == "hr_levels"] == []
        down = [e for e in feed(fresh, batch([(0, 30, {"heart_rate": 116})])) if e.rule == "hr_levels"]
        assert [(e.status.value, e.severity.value) for e in down] == [("firing", "warning")]
