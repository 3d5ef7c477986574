"""Unit tests for rule hot reload (SIGHUP) in the daemon, with an in-memory source and sink."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensord._app import build_daemon
from sensord._daemon import Daemon
from sensord._settings import parse_settings
from sensord._types import AlertStatus, RawMessage
from sensord.sinks import MemorySink
from sensord.testing import MemorySource

ROOT = Path(__file__).resolve().parents[2]
_tokens = iter(range(1, 1_000_000))


def msg(device: str, **fields: Any) -> RawMessage:
    body = {"ts": time.time(), **fields}
    return RawMessage(
        f"sensord/maple-court/wristband/{device}/telemetry", orjson.dumps(body), time.time(), next(_tokens)
    )


async def until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def run(
    tmp_path: Path,
    body: Callable[[Daemon, MemorySource, MemorySink, Path], Awaitable[None]],
    **extra: Any,
) -> None:
    """Start a daemon on a private copy of the shipped rules, run `body`, stop it."""
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules, ignore=shutil.ignore_patterns("tests"))
    settings = parse_settings(
        {
            "registry": str(ROOT / "config" / "devices.yaml"),
            "rules_dir": str(rules),
            "state_dir": str(tmp_path / "state"),
            "http": {"enabled": False},
            **extra,
        },
        source="test",
        config_dir=tmp_path,
    )
    sink, source = MemorySink("webhook"), MemorySource()

    async def go() -> None:
        daemon, _ = await build_daemon(settings, sinks=[sink])
        daemon.source = source
        task = asyncio.create_task(daemon.run())
        try:
            await body(daemon, source, sink, rules)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            daemon.outbox.close()
            daemon.deadletter.close()

    asyncio.run(go())


def statuses(sink: MemorySink, rule: str) -> list[tuple[str, AlertStatus]]:
    return [(e.device_id, e.status) for e in sink.events if e.rule == rule]


def test_invalid_rule_file_keeps_old_rules(tmp_path: Path) -> None:
    """A reload with a broken file fails, is counted, and the running rules keep alerting."""

    async def body(daemon: Daemon, source: MemorySource, sink: MemorySink, rules: Path) -> None:
        (rules / "bin.yaml").write_text("family: bin\nrules:\n  - name: x\n    when: fill_percent > 1\n")
        assert not await daemon.reload_rules()
        assert daemon.metrics.rule_reloads.labels("error")._value.get() == 1
        source.put([msg("wb-01", sos=True)])
        await until(lambda: bool(sink.events), "an SOS alert under the old rules")
        assert statuses(sink, "wristband_sos") == [("wb-01", AlertStatus.FIRING)]

    run(tmp_path, body)


def test_removed_rule_resolves_its_firing_alerts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Removing a rule resolves its firing alerts (no open dispatch job) and logs the diff."""

    async def body(daemon: Daemon, source: MemorySource, sink: MemorySink, rules: Path) -> None:
        source.put([msg("wb-01", sos=True)])
        await until(lambda: bool(sink.events), "the SOS alert")
        text = (rules / "wristband.yaml").read_text()
        start = text.index("  # Why: the resident pressed SOS")
        end = text.index("  # Why: a fall")
        (rules / "wristband.yaml").write_text(text[:start] + text[end:])
        with caplog.at_level(logging.INFO, logger="sensord"):
            assert await daemon.reload_rules()
        await until(lambda: len(sink.events) == 2, "the resolved event")
        assert statuses(sink, "wristband_sos") == [
            ("wb-01", AlertStatus.FIRING),
            ("wb-01", AlertStatus.RESOLVED),
        ]
        record = next(r for r in caplog.records if r.getMessage() == "rules reloaded")
        fields = record.fields  # type: ignore[attr-defined]
        assert fields["removed"] == ["wristband/wristband_sos"]
        assert fields["added"] == fields["changed"] == []

    run(tmp_path, body)


def test_changed_threshold_reports_would_fire_and_keeps_other_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Lowering hr_high reports the device the new limit would alert on; an unchanged
    rule's firing alert is kept (a further SOS reading does not page again)."""

    async def body(daemon: Daemon, source: MemorySource, sink: MemorySink, rules: Path) -> None:
        source.put([msg("wb-01", sos=True), msg("wb-03", heart_rate=115.0)])
        await until(lambda: bool(sink.events), "the SOS alert")
        path = rules / "wristband.yaml"
        path.write_text(path.read_text().replace("hr_high: 120", "hr_high: 112"))
        with caplog.at_level(logging.INFO, logger="sensord"):
            assert await daemon.reload_rules()
        fields = next(r for r in caplog.records if r.getMessage() == "rules reloaded").fields  # type: ignore[attr-defined]
        assert fields["changed"] == ["wristband/heart_rate_abnormal"]
        assert fields["would_fire"] == ["wristband/heart_rate_abnormal@wb-03"]
        source.put([msg("wb-01", sos=True)])
        await until(lambda: len(source.acked) == 3, "the second batch")
        assert statuses(sink, "wristband_sos") == [("wb-01", AlertStatus.FIRING)]

    run(tmp_path, body)


def test_rules_watch_reloads_on_file_change(tmp_path: Path) -> None:
    """With rules_watch_s set, editing a rule file reloads the rules without SIGHUP."""

    async def body(daemon: Daemon, source: MemorySource, sink: MemorySink, rules: Path) -> None:
        before = daemon.metrics.rule_reloads.labels("ok")._value.get()
        await asyncio.sleep(0.2)  # the watcher has taken its first look
        path = rules / "wristband.yaml"
        path.write_text(path.read_text().replace("hr_high: 120", "hr_high: 111"))
        await until(lambda: daemon.metrics.rule_reloads.labels("ok")._value.get() == before + 1, "a reload")

    run(tmp_path, body, rules_watch_s=0.05)
