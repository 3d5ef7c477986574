"""Unit tests for the daemon's processing loop with an in-memory source and sink."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import orjson

from sensord._app import build_daemon
from sensord._settings import parse_settings
from sensord._types import AlertEvent, AlertStatus, RawMessage
from sensord.sinks import MemorySink
from sensord.testing import MemorySource

ROOT = Path(__file__).resolve().parents[2]


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


def msg(token: int, device: str, family: str, body: dict[str, Any]) -> RawMessage:
    topic = f"sensord/maple-court/{family}/{device}/telemetry"
    return RawMessage(topic, orjson.dumps(body), time.time(), token)


async def run_until(daemon: Any, done: Any, within_s: float = 5.0) -> None:
    """Run the daemon until done() holds (polled: the daemon has no event for it) or within_s."""
    task = asyncio.create_task(daemon.run())
    try:
        deadline = time.monotonic() + within_s
        while not done() and time.monotonic() < deadline:  # noqa: ASYNC110 - polling a plain predicate
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        daemon.outbox.close()
        daemon.deadletter.close()


class TestProcessLoop:
    def test_ack_only_after_outbox_commit(self, tmp_path: Path) -> None:
        """A batch's tokens are acknowledged only after its alert events are committed."""
        now = time.time()
        batch = [
            msg(1, "wb-01", "wristband", {"ts": now, "sos": True}),
            msg(2, "bin-01", "bin", {"ts": now, "fill_pct": 20}),
        ]
        sink = MemorySink("webhook")
        source = MemorySource([batch])
        seen: list[tuple[int, list[str]]] = []

        async def scenario() -> None:
            daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[sink])
            daemon.source = source
            real_commit = daemon.outbox.commit

            def spy(events: list[AlertEvent], **kw: Any) -> None:
                seen.append((len(source.acked), [e.rule for e in events]))
                real_commit(events, **kw)

            daemon.outbox.commit = spy  # type: ignore[method-assign,assignment]
            await run_until(daemon, lambda: bool(sink.events))

        asyncio.run(scenario())
        assert seen[0] == (0, ["wristband_sos"])  # nothing acknowledged when committing
        assert source.acked == [1, 2]
        assert [(e.rule, e.status) for e in sink.events] == [("wristband_sos", AlertStatus.FIRING)]

    def test_bad_message_does_not_block_batch(self, tmp_path: Path) -> None:
        """Malformed JSON and an unknown device are acknowledged, both kept in dead-letter with
        their reasons (the unknown device's message can be replayed once it is registered);
        the good SOS still alerts."""
        now = time.time()
        batch = [
            RawMessage("sensord/maple-court/wristband/wb-01/telemetry", b"{not json", now, 1),
            msg(2, "wb-99", "wristband", {"ts": now, "sos": True}),
            msg(3, "wb-02", "wristband", {"ts": now, "sos": True}),
        ]
        sink = MemorySink("webhook")
        source = MemorySource([batch])

        async def scenario() -> None:
            daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[sink])
            daemon.source = source
            await run_until(daemon, lambda: bool(sink.events) and len(source.acked) == 3)

        asyncio.run(scenario())
        assert source.acked == [1, 2, 3]
        assert [e.device_id for e in sink.events] == ["wb-02"]
        dead = (tmp_path / "state" / "deadletter.jsonl").read_text().splitlines()
        assert [orjson.loads(d)["reason"] for d in dead] == ["invalid_json", "unknown_device"]

    def test_dead_letters_are_synced_before_the_ack(self, tmp_path: Path) -> None:
        """A batch's dead-letter records are fsynced after the outbox commit and before its
        messages are acknowledged."""
        batch = [RawMessage("sensord/maple-court/wristband/wb-01/telemetry", b"{oops", time.time(), 1)]
        sink = MemorySink("webhook")
        source = MemorySource([batch])
        order: list[str] = []

        async def scenario() -> None:
            daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[sink])
            daemon.source = source
            real_sync, real_ack = daemon.deadletter.sync, source.ack

            def sync() -> None:
                order.append("sync")
                real_sync()

            def ack(tokens: Any) -> None:
                order.append("ack")
                real_ack(tokens)

            daemon.deadletter.sync = sync  # type: ignore[method-assign]
            source.ack = ack  # type: ignore[method-assign]
            await run_until(daemon, lambda: source.acked == [1])

        asyncio.run(scenario())
        assert order[:2] == ["sync", "ack"]


class TestSecondaryTasks:
    def test_a_failing_background_task_is_restarted_not_fatal(self, tmp_path: Path) -> None:
        """A secondary task that raises (the dead-letter forwarder when the broker
        restarts mid-publish, say) is logged, counted and started again; the daemon
        keeps processing and the source is closed cleanly on stop."""
        now = time.time()
        sink = MemorySink("webhook")
        source = MemorySource([[msg(1, "wb-01", "wristband", {"ts": now, "sos": True})]])
        runs: list[int] = []

        async def flaky() -> None:
            runs.append(1)
            if len(runs) == 1:
                raise ConnectionResetError("broker went away mid-publish")
            await asyncio.sleep(3600)

        async def scenario() -> tuple[float, bool]:
            daemon, _ = await build_daemon(settings_for(tmp_path), sinks=[sink])
            daemon.source = source
            daemon.background.append(("flaky", flaky))
            await run_until(daemon, lambda: len(runs) >= 2 and bool(sink.events), within_s=10)
            return daemon.metrics.background_failures.labels("flaky")._value.get(), source.closed

        failures, closed = asyncio.run(scenario())
        assert len(runs) == 2
        assert failures == 1
        assert [e.rule for e in sink.events] == ["wristband_sos"]
        assert closed
