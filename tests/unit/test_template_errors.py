"""A summary template that cannot be filled never costs an alert: the event is sent with
a plain text, the error is counted, and the rest of the batch is untouched."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensord._app import build_daemon
from sensord._daemon import Daemon
from sensord._types import Family, RawMessage
from sensord.alerts import TEMPLATE_ERROR
from sensord.sinks import MemorySink
from tests.unit.test_checkpoint_authority import settings_for

T0 = time.time() - 3600.0


def reading(device: str, family: str, t: float, **body: Any) -> RawMessage:
    topic = f"sensord/maple-court/{family}/{device}/telemetry"
    return RawMessage(topic, orjson.dumps({"ts": T0 + t, **body}), T0 + t, None)


def break_template(daemon: Daemon, family: Family, rule_name: str, summary: str) -> None:
    """Swap in a template that raises when filled (as a typo that slipped past a check would)."""
    rules = daemon.pipeline.engine._rules.by_family[family].rules
    i = next(i for i, r in enumerate(rules) if r.name == rule_name)
    rules[i] = dataclasses.replace(rules[i], summary=summary)


def build(tmp_path: Path) -> Daemon:
    async def make() -> Daemon:
        daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[MemorySink("webhook")])
        return daemon

    return asyncio.run(make())


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    d = build(tmp_path)
    yield d
    d.outbox.close()
    d.deadletter.close()


class TestTemplateErrors:
    @pytest.mark.parametrize("summary", ["Bin {fill_pct.0f} full", "Bin {fill_pct[0]} full", "{fill_pct:%Q}"])
    def test_reading_driven_event_survives_a_broken_template(self, daemon: Daemon, summary: str) -> None:
        """A bin alert with a template that raises (attribute, index, bad spec) is still
        produced, with a plain text naming rule and device, beside the SOS of the same batch."""
        break_template(daemon, Family.BIN, "bin_full", summary)
        ev = daemon.pipeline.evaluate(
            [reading("bin-01", "bin", 0, fill_pct=91), reading("wb-01", "wristband", 0, sos=True)]
        )
        by_rule = {e.rule: e for e in ev.events}
        assert set(by_rule) == {"bin_full", "wristband_sos"}
        assert by_rule["bin_full"].summary.startswith("bin_full firing on bin-01")
        assert TEMPLATE_ERROR in by_rule["bin_full"].extra
        assert TEMPLATE_ERROR not in by_rule["wristband_sos"].extra
        assert daemon.metrics.template_errors.labels("bin_full")._value.get() == 1

    def test_timer_fired_event_survives_a_broken_template(self, daemon: Daemon) -> None:
        """A `for:` alert fired by the event-time clock (no reading) with a broken template
        still fires: the clock path renders through the same safe step."""
        break_template(daemon, Family.WRISTBAND, "heart_rate_abnormal", "{heart_rate.real.x}")
        daemon.pipeline.evaluate([reading("wb-01", "wristband", 0, heart_rate=150)])
        ev = daemon.pipeline.tick(T0 + 120)
        fired = [e for e in ev.events if e.rule == "heart_rate_abnormal"]
        assert [e.status.value for e in fired] == ["firing"]
        assert fired[0].summary.startswith("heart_rate_abnormal firing on wb-01")
