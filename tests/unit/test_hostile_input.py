"""Hostile input at the edges of decode and the ack path: each is rejected with a reason,
counted, and never costs the good messages of the same batch their alerts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensord._daemon import Daemon
from sensord._registry import parse_registry
from sensord._settings import DecodeSettings
from sensord._types import Family, RawMessage
from sensord.decode import Decoder
from tests.unit.test_template_errors import build

T0 = time.time() - 3600.0
TEMPLATE = "sensord/{community}/{family}/{device_id}/{kind}"


def reading(device: str, family: str, t: float, **body: Any) -> RawMessage:
    topic = f"sensord/maple-court/{family}/{device}/telemetry"
    return RawMessage(topic, orjson.dumps({"ts": T0 + t, **body}), T0 + t, None)


def raw(topic: str, payload: bytes) -> RawMessage:
    return RawMessage(topic, payload, T0, None)


def deep(n: int) -> bytes:
    return b'{"ts": 1, "fill_pct": ' + b"[" * n + b"]" * n + b"}"


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    d = build(tmp_path)
    yield d
    d.outbox.close()
    d.deadletter.close()


def reasons(daemon: Daemon) -> list[str]:
    daemon.deadletter.sync()
    return [orjson.loads(x)["reason"] for x in daemon.deadletter.path.read_text().splitlines()]


def rejects(daemon: Daemon, reason: str) -> float:
    return float(daemon.metrics.rejects.labels(reason)._value.get())


class TestDeepNesting:
    @pytest.mark.parametrize("depth", [9, 200, 1000, 3000])
    def test_deep_payload_is_too_deep_and_the_sos_beside_it_alerts(self, daemon: Daemon, depth: int) -> None:
        """A payload nested `depth` levels is rejected as `too_deep`; the SOS and the full
        bin in the same batch alert as usual (it used to take the batch down with it)."""
        ev = daemon.pipeline.evaluate(
            [
                reading("bin-01", "bin", 0, fill_pct=95),
                raw("sensord/maple-court/bin/bin-02/telemetry", deep(depth)),
                reading("wb-01", "wristband", 0, sos=True),
            ]
        )
        assert {e.rule for e in ev.events} == {"bin_full", "wristband_sos"}
        assert reasons(daemon) == ["too_deep"]

    def test_nested_value_within_the_limit_is_a_wrong_type(self, daemon: Daemon) -> None:
        """A field holding a nested array (within the depth limit) is `wrong_type`, with a
        short reason that does not print the structure."""
        ev = daemon.pipeline.evaluate([raw("sensord/maple-court/bin/bin-02/telemetry", deep(3))])
        assert ev.rejected == 1
        daemon.deadletter.sync()
        record = orjson.loads(daemon.deadletter.path.read_text().splitlines()[0])
        assert record["reason"] == "wrong_type"
        assert "a JSON array" in record["detail"]


class TestTopicLimits:
    @pytest.fixture
    def decoder(self) -> Decoder:
        registry = parse_registry(
            {"devices": {"bin-1": {"family": "bin", "community": "maple", "grid": "g1"}}}, source="test"
        )
        return Decoder(registry, DecodeSettings(max_route_cache_bytes=64 * 1024), TEMPLATE)

    def test_long_topic_level_is_bad_topic(self, decoder: Decoder) -> None:
        """A community level of 48 KB is `bad_topic` with the length in the reason."""
        res = decoder([raw(f"sensord/{'x' * 48_000}/bin/bin-1/telemetry", b'{"fill_pct": 1}')])
        assert [r.reason for r in res.rejects] == ["bad_topic"]
        assert res.rejects[0].detail == "topic of 48028 chars, limit 256"

    def test_route_cache_is_bounded_by_bytes(self, decoder: Decoder) -> None:
        """6,000 distinct topics with long (but allowed) community levels keep the route
        cache within its byte bound."""
        topics = [f"sensord/{i:05d}{'c' * 80}/bin/bin-1/telemetry" for i in range(6000)]
        msgs = [raw(t, b'{"fill_pct": 1}') for t in topics]
        res = decoder(msgs)
        assert res.accepted == 6000
        assert 0 < decoder.route_cache_bytes <= 64 * 1024
        assert len(decoder._routes) < 6000


class TestAcks:
    def test_ack_for_unregistered_device_is_rejected(self, daemon: Daemon) -> None:
        """An ack naming a device missing from the registry is `unknown_device`, counted."""
        topic = "sensord-dispatch/ack/maple-court/wristband/wb-99"
        ev = daemon.pipeline.evaluate([raw(topic, b'{"rule": "wristband_sos", "by": "desk"}')])
        assert (ev.rejected, ev.accepted) == (1, 0)
        assert rejects(daemon, "unknown_device") == 1

    @pytest.mark.parametrize(
        "body",
        [
            b'{"rule": 42}',
            b'{"rule": ["wristband_sos"]}',
            b'{"rule": "wristband_sos", "by": {"name": "x"}}',
            b'{"rule": "wristband_sos"}',
            b'{"rule": "wristband_sos", "by": ""}',
            b'{"rule": "wristband_sos", "by": "desk", "startsAt": "soon"}',
            b'{"rule": "wristband_sos", "by": "desk", "startsAt": "2026-09-21T12:00:00"}',
            b'{"rule": "no_such_rule", "by": "desk"}',
            b'"wristband_sos"',
            b"{not json",
            b'{"rule": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        ],
    )
    def test_malformed_ack_is_rejected_with_a_reason(self, daemon: Daemon, body: bytes) -> None:
        """An ack whose rule is not a known rule's name (text), whose `by` is missing, empty
        or not text, or whose startsAt is not an RFC 3339 time with a zone is `invalid_ack`,
        counted, and the SOS stays open."""
        daemon.pipeline.evaluate([reading("wb-01", "wristband", 0, sos=True)])
        ev = daemon.pipeline.evaluate([raw("sensord-dispatch/ack/maple-court/wristband/wb-01", body)])
        assert ev.events == []
        assert rejects(daemon, "invalid_ack") == 1
        assert any(a.rule == "wristband_sos" for a in daemon.pipeline.engine.active())


class TestFailuresAfterTheEngine:
    def test_failing_telemetry_hand_off_keeps_the_batch_events(self, daemon: Daemon) -> None:
        """A telemetry hand-off that raises after the engine changed state costs nothing:
        the bin and SOS alerts of the batch are still returned for the commit."""

        def broken(_batch: object) -> None:
            raise RuntimeError("telemetry queue exploded")

        daemon.pipeline._telemetry = broken
        batch = [reading("bin-01", "bin", 0, fill_pct=95), reading("wb-01", "wristband", 0, sos=True)]
        ev = daemon.pipeline.evaluate(batch)
        assert {e.rule for e in ev.events} == {"bin_full", "wristband_sos"}
        assert ev.rejected == 0

    def test_engine_failure_keeps_applied_families_and_dead_letters_the_rest(
        self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the engine fails on one family, the events of families already applied are
        kept and the failing family's messages are dead-lettered as `internal_error`."""
        engine = daemon.pipeline.engine
        real = engine.process

        def process(batch: Any) -> Any:
            if batch.family is Family.BIN:
                raise RuntimeError("a defect in a bin rule")
            return real(batch)

        monkeypatch.setattr(engine, "process", process)
        batch = [reading("wb-01", "wristband", 0, sos=True), reading("bin-01", "bin", 0, fill_pct=95)]
        ev = daemon.pipeline.evaluate(batch)
        assert [e.rule for e in ev.events] == ["wristband_sos"]
        assert reasons(daemon) == ["internal_error"]

    def test_decoder_failure_dead_letters_only_the_failing_message(
        self, daemon: Daemon, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A decoder defect triggered by one message: the batch is decoded message by message
        and only that message is dead-lettered; the SOS beside it alerts."""
        decoder = daemon.pipeline.decoder
        real = decoder.__call__

        def decode(messages: Any) -> Any:
            if any(b"poison" in m.payload for m in messages):
                raise RecursionError("maximum recursion depth exceeded")
            return real(messages)

        class Failing:
            topic = decoder.topic
            device = decoder.device

            def __call__(self, messages: Any) -> Any:
                return decode(messages)

        monkeypatch.setattr(daemon.pipeline, "decoder", Failing())
        poison = raw("sensord/maple-court/bin/bin-01/telemetry", b'{"fill_pct": 1, "note": "poison"}')
        ev = daemon.pipeline.evaluate([poison, reading("wb-01", "wristband", 0, sos=True)])
        assert [e.rule for e in ev.events] == ["wristband_sos"]
        assert reasons(daemon) == ["internal_error"]
