"""Acknowledgements take effect where they are in the stream: an ack and the readings
around it give the same alerts however the stream is cut into batches, and an ack
stamped before the alert it names began does not close that alert."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from sensord._metrics import Metrics
from sensord._pipeline import Pipeline
from sensord._registry import parse_registry
from sensord._settings import AlertSettings, DecodeSettings
from sensord._types import AlertEvent, RawMessage
from sensord.alerts import Engine
from sensord.decode import Decoder
from sensord.rules import load_rules
from sensord.sinks import DeadLetter

T0 = 1_700_000_000.0
TOPIC = "sensord/{community}/{family}/{device_id}/{kind}"
RULES = """\
family: wristband
rules:
  - name: sos
    kind: event
    when: sos
    resolve_after: 10m
    life_safety: true
    summary: sos
"""


Make = Callable[..., tuple[Pipeline, Metrics]]


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Make]:
    """Builds pipelines over `devices` wristbands, each in its own folder; closes them after."""
    opened: list[DeadLetter] = []

    def build(devices: int = 1) -> tuple[Pipeline, Metrics]:
        folder = tmp_path / f"p{len(opened)}"
        (folder / "rules").mkdir(parents=True)
        (folder / "rules" / "wristband.yaml").write_text(RULES)
        devs = {f"wb-{i}": {"family": "wristband", "community": "c0", "grid": "g"} for i in range(devices)}
        reg = parse_registry({"devices": devs}, source="test")
        opened.append(DeadLetter(folder / "dl.jsonl"))
        metrics = Metrics()
        p = Pipeline(
            decoder=Decoder(reg, DecodeSettings(max_clock_skew_s=0), TOPIC),
            engine=Engine(load_rules(folder / "rules", reg), reg, AlertSettings(community_silence_s=0)),
            deadletter=opened[-1],
            metrics=metrics,
        )
        return p, metrics

    yield build
    for d in opened:
        d.close()


def reading(t: float, *, sos: bool, dev: int = 0) -> RawMessage:
    body = orjson.dumps({"ts": T0 + t, "sos": sos, "heart_rate": 70})
    return RawMessage(f"sensord/c0/wristband/wb-{dev}/telemetry", body, T0 + t)


def ack(t: float, dev: int = 0) -> RawMessage:
    body = orjson.dumps({"ts": T0 + t, "rule": "sos", "by": "desk"})
    return RawMessage(f"sensord/c0/wristband/wb-{dev}/ack", body, T0 + t)


def shape(events: list[AlertEvent]) -> list[tuple[str, str, float]]:
    return [(e.device_id, e.status.value, e.event_time - T0) for e in events]


def test_press_after_an_ack_in_the_same_batch_fires(make: Make) -> None:
    """An SOS acknowledged, released and pressed again, all in one batch: the second
    press opens a new alert (it is not swallowed by the alert the ack closes)."""
    p, _ = make()
    first = p.evaluate([reading(0, sos=True)])
    second = p.evaluate([reading(5, sos=False), ack(8), reading(10, sos=True)])
    assert shape(first.events + second.events) == [
        ("wb-0", "firing", 0.0),
        ("wb-0", "resolved", 8.0),
        ("wb-0", "firing", 10.0),
    ]


def test_stale_ack_does_not_close_a_newer_alert(make: Make) -> None:
    """A retried ack stamped before the open alert began (it was for the previous one)
    changes nothing and is counted; the new SOS stays open until its own expiry."""
    p, metrics = make()
    p.evaluate([reading(0, sos=True)])
    p.evaluate([ack(5)])
    again = p.evaluate([reading(6, sos=False), reading(10, sos=True)])
    late = p.evaluate([ack(5)])
    expiry = p.tick(T0 + 700)
    assert shape(again.events) == [("wb-0", "firing", 10.0)]
    assert late.events == []
    assert metrics.stale_acks.labels("sos")._value.get() == 1
    assert shape(expiry.events) == [("wb-0", "resolved", 610.0)]


def test_events_do_not_depend_on_where_acks_fall_in_batches(make: Make) -> None:
    """A random stream of presses, releases and acks (some retried) for five wristbands
    gives the same event ids cut into batches anywhere as one message at a time."""
    rng = random.Random(3)
    stream: list[RawMessage] = []
    t = 0.0
    for _ in range(400):
        t += rng.uniform(0.5, 3.0)
        dev = rng.randrange(5)
        if rng.random() < 0.25:
            stream.append(ack(t - rng.choice([0.0, 0.0, 20.0]), dev))
        else:
            stream.append(reading(t, sos=rng.random() < 0.3, dev=dev))
    one_by_one, _ = make(devices=5)
    want = [e.event_id for m in stream for e in one_by_one.evaluate([m]).events]
    for seed in range(4):
        cut_p, _ = make(devices=5)
        cuts = sorted(random.Random(seed).sample(range(1, len(stream)), 12))
        got: list[str] = []
        for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += [e.event_id for e in cut_p.evaluate(stream[a:b]).events]
        assert got == want, f"cuts {cuts}"
    assert len(want) > 40, "too few alerts to prove anything"
