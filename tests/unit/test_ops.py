"""`sensord outbox status|purge`: a removed sink's queue is visible and purged only on
an operator's word."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from sensord._cli import main
from sensord._metrics import Metrics
from sensord._registry import parse_registry
from sensord._settings import OutboxSettings, Settings
from sensord._types import RawMessage
from sensord.outbox import Outbox
from sensord.replay import read_recording, replay
from sensord.rules import load_rules
from tests.unit.test_sinks import event

ROOT = Path(__file__).resolve().parents[2]
DEVICES = {"bin-1": {"family": "bin", "community": "maple", "grid": "g1"}}
WB_NEW = {"family": "wristband", "community": "maple", "grid": "g1"}


def config(tmp_path: Path) -> Path:
    """A config with the webhook only: the influx sink has been removed."""
    (tmp_path / "secret").write_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
    cfg = tmp_path / "sensord.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "sinks:\n  webhook: {url: 'http://127.0.0.1:9/alerts', secret: {file: secret}}\n"
    )
    return cfg


def fill(tmp_path: Path) -> None:
    """What the daemon left behind while InfluxDB was still configured."""
    ob = Outbox(tmp_path / "state" / "outbox.sqlite3", ("influx", "webhook"), OutboxSettings(), Metrics())
    ob.commit([event(1), event(2, life_safety=True), event(3)])
    ob.close()


class TestOutboxCommands:
    def test_status_lists_the_removed_sink(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """status shows each sink's waiting and life-safety counts, and says which sink
        is no longer configured."""
        fill(tmp_path)
        assert main(["outbox", "status", "-c", str(config(tmp_path))]) == 0
        out = capsys.readouterr().out.splitlines()
        influx = next(line for line in out if line.startswith("influx"))
        assert influx.split()[1:3] == ["3", "1"]
        assert "not configured" in influx
        webhook = next(line for line in out if line.startswith("webhook"))
        assert webhook.split()[1:3] == ["3", "1"]

    def test_purge_drops_only_a_removed_sink(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """purge refuses a configured sink (exit 1) and drops a removed one's queue."""
        fill(tmp_path)
        cfg = str(config(tmp_path))
        assert main(["outbox", "purge", "-c", cfg, "--sink", "webhook"]) == 1
        assert main(["outbox", "purge", "-c", cfg, "--sink", "influx"]) == 0
        assert "purged 3 deliveries of sink 'influx' (1 life-safety)" in capsys.readouterr().out
        ob = Outbox(tmp_path / "state" / "outbox.sqlite3", ("webhook",), OutboxSettings(), Metrics())
        assert [(q.sink, q.waiting) for q in ob.queues()] == [("webhook", 3)]
        ob.close()


class TestDeadLetterExport:
    def test_unregistered_device_messages_replay_once_registered(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An SOS from a wristband not yet in the registry is dead-lettered as
        unknown_device; exported and replayed with the device registered, it alerts."""
        before = parse_registry({"devices": DEVICES}, source="t")
        rules = load_rules(ROOT / "rules", before)
        dead = tmp_path / "deadletter.jsonl"
        settings = Settings.model_validate({"decode": {"max_clock_skew_s": 0}})
        topic = "sensord/maple/wristband/wb-new/telemetry"
        sos = RawMessage(topic, orjson.dumps({"ts": 1_790_000_000, "sos": True}), 1_790_000_000.5)
        other = RawMessage("sensord/maple/bin/bin-1/telemetry", b"{bad", 1_790_000_001.0)
        first = replay([sos, other], registry=before, rules=rules, settings=settings, deadletter=dead)
        assert first.events == []
        out = tmp_path / "again.jsonl.gz"
        assert main(["deadletter", "export", str(dead), "--reason", "unknown_device", "--out", str(out)]) == 0
        assert f"wrote 1 messages to {out}" in capsys.readouterr().out
        again = list(read_recording(out))
        assert [(m.topic, m.payload) for m in again] == [(sos.topic, sos.payload)]
        registered = parse_registry({"devices": {**DEVICES, "wb-new": WB_NEW}}, source="t")
        rules = load_rules(ROOT / "rules", registered)
        second = replay(again, registry=registered, rules=rules, settings=settings)
        assert [(e.rule, e.device_id) for e in second.events] == [("wristband_sos", "wb-new")]
