"""`sensord outbox status|purge`: a removed sink's queue is visible and purged only on
an operator's word."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord._cli import main
from sensord._metrics import Metrics
from sensord._settings import OutboxSettings
from sensord.outbox import Outbox
from tests.unit.test_sinks import event


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
