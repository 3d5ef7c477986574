"""Acknowledgements take effect where they are in the stream: an ack and the readings
around it give the same alerts however the stream is cut into batches, and an ack
for an earlier alert does not close the one open now."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
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
from sensord.sinks import DeadLetter, webhook_body

T0 = 1_700_000_000.0
TOPIC = "sensord/{community}/{family}/{device_id}/{kind}"
ACK_TOPIC = "sensord-dispatch/ack/{community}/{family}/{device_id}"
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
            ack_topic_template=ACK_TOPIC,
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


def ack(t: float, dev: int = 0, *, starts_at: float | None = None) -> RawMessage:
    """An ack received at t, naming the alert that began at `starts_at` if given."""
    body: dict[str, object] = {"rule": "sos", "by": "desk"}
    if starts_at is not None:
        body["startsAt"] = datetime.fromtimestamp(T0 + starts_at, UTC).isoformat()
    return RawMessage(f"sensord-dispatch/ack/c0/wristband/wb-{dev}", orjson.dumps(body), T0 + t)


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


def test_press_redelivered_behind_another_devices_ack_fires(make: Make) -> None:
    """After a restart, a broker that redelivers on its ack timeout (nats-server) sends an
    unacknowledged SOS press behind a newer reading of its wristband, and an ack of another
    device came in between: the press still fires (it used to be cut into a later run than
    the newer reading and dropped as a late reading: the SOS was lost)."""
    p, metrics = make(devices=2)
    p.evaluate([reading(0, sos=False, dev=0), reading(0, sos=False, dev=1)])
    batch = p.evaluate([reading(20, sos=False, dev=0), ack(21, dev=1), reading(10, sos=True, dev=0)])
    assert shape(batch.events) == [("wb-0", "firing", 10.0)]
    assert metrics.late_readings.labels("wristband")._value.get() == 0


def test_press_redelivered_behind_its_own_ack_takes_effect_before_it(make: Make) -> None:
    """The redelivered press (older than a reading of its wristband that came before the
    ack) was published before that ack: it takes effect before it, so the ack closes it."""
    p, _ = make()
    p.evaluate([reading(0, sos=False)])
    batch = p.evaluate([reading(20, sos=False), ack(21), reading(10, sos=True)])
    assert shape(batch.events) == [("wb-0", "firing", 10.0), ("wb-0", "resolved", 21.0)]


def test_reading_older_than_the_last_batch_is_still_late(make: Make) -> None:
    """Only readings cut apart within one batch are moved: one older than what an earlier
    batch applied is a late reading as before (counted, not applied)."""
    p, metrics = make()
    p.evaluate([reading(20, sos=False)])
    batch = p.evaluate([ack(21), reading(10, sos=True)])
    assert batch.events == []
    assert metrics.late_readings.labels("wristband")._value.get() == 1


def test_stale_ack_does_not_close_a_newer_alert(make: Make) -> None:
    """A retried ack naming the previous alert (its startsAt) changes nothing and is
    counted; the new SOS stays open until its own expiry."""
    p, metrics = make()
    p.evaluate([reading(0, sos=True)])
    p.evaluate([ack(5, starts_at=0)])
    again = p.evaluate([reading(6, sos=False), reading(10, sos=True)])
    late = p.evaluate([ack(12, starts_at=0)])
    expiry = p.tick(T0 + 700)
    assert shape(again.events) == [("wb-0", "firing", 10.0)]
    assert late.events == []
    assert metrics.stale_acks.labels("sos")._value.get() == 1
    assert shape(expiry.events) == [("wb-0", "resolved", 610.0)]


def test_ack_naming_its_alert_ahead_of_the_press_in_a_batch_closes_it(make: Make) -> None:
    """A batch where an ack naming its alert (startsAt) came before the press it answers
    (two subscriptions out of order after a broker failover): the ack takes effect just
    behind the press, so the alert closes; a later press in the batch still fires."""
    p, _ = make()
    batch = p.evaluate(
        [
            ack(4, starts_at=2),
            reading(1, sos=False),
            reading(2, sos=True),
            reading(3, sos=False),
            reading(6, sos=True),
        ]
    )
    assert [(d, s) for d, s, _ in shape(batch.events)] == [
        ("wb-0", "firing"),
        ("wb-0", "resolved"),
        ("wb-0", "firing"),
    ]


def test_ack_without_starts_at_ahead_of_the_press_is_not_moved(make: Make) -> None:
    """An ack that does not name its alert keeps its place: before the press it closes
    nothing, and the alert the press opens stays open."""
    p, _ = make()
    batch = p.evaluate([ack(4), reading(1, sos=False), reading(2, sos=True)])
    assert shape(batch.events) == [("wb-0", "firing", 2.0)]


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
            # Some received "before" the stream clock (a device clock ahead): dated at it.
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


def rejected(metrics: Metrics, reason: str) -> float:
    return float(metrics.rejects.labels(reason)._value.get())


class TestAckIntake:
    """Only the dispatch side acknowledges, and sensord dates what it says (issue 8, item 10)."""

    def test_ack_on_the_device_topic_is_rejected_and_the_sos_stays_open(self, make: Make) -> None:
        """A well-formed ack on the device's own topic (a device closing its own SOS) is
        `ack_on_device_topic`, counted, and changes nothing."""
        p, metrics = make()
        p.evaluate([reading(0, sos=True)])
        body = orjson.dumps({"rule": "sos", "by": "desk"})
        ev = p.evaluate([RawMessage("sensord/c0/wristband/wb-0/ack", body, T0 + 5)])
        assert (ev.events, ev.rejected) == ([], 1)
        assert rejected(metrics, "ack_on_device_topic") == 1
        assert [a.rule for a in p.engine.active()] == ["sos"]

    def test_payload_time_is_ignored_and_the_receive_time_dates_the_ack(self, make: Make) -> None:
        """An ack claiming a time (`ts`) is dated at its receive time: a forged early time
        cannot make it look answered sooner, nor a late one push it past resolve_after."""
        p, _ = make()
        p.evaluate([reading(0, sos=True), reading(4, sos=False)])
        body = orjson.dumps({"rule": "sos", "by": "desk", "ts": T0 + 1e6})
        ev = p.evaluate([RawMessage("sensord-dispatch/ack/c0/wristband/wb-0", body, T0 + 9)])
        assert shape(ev.events) == [("wb-0", "resolved", 9.0)]
        assert ev.events[0].readings["acknowledged_by"] == "desk"

    def test_ack_received_long_after_the_stream_clock_is_dated_by_it(self, make: Make) -> None:
        """An ack read from a backlog (received an hour after the readings around it) is
        dated at the stream clock, not an hour later past resolve_after."""
        p, _ = make()
        ev = p.evaluate([reading(0, sos=True), reading(30, sos=False), ack(3600)])
        assert shape(ev.events) == [("wb-0", "firing", 0.0), ("wb-0", "resolved", 30.0)]

    def test_ack_within_the_slack_after_the_clock_keeps_its_receive_time(self, make: Make) -> None:
        """In a quiet stream the ack's receive time is the truth, up to ack_slack_s (15 s)
        past the last reading."""
        p, _ = make()
        ev = p.evaluate([reading(0, sos=True), reading(2, sos=False), ack(14)])
        assert shape(ev.events)[-1] == ("wb-0", "resolved", 14.0)

    def test_ack_received_before_the_clock_is_dated_at_it_not_stale(self, make: Make) -> None:
        """Devices whose clocks run ahead put the stream clock after our receive time; the
        ack is dated at the clock, so it still closes the alert it answers."""
        p, metrics = make()
        p.evaluate([reading(20, sos=True)])
        ev = p.evaluate([ack(5)])
        assert shape(ev.events) == [("wb-0", "resolved", 20.0)]
        assert metrics.stale_acks.labels("sos")._value.get() == 0

    def test_starts_at_as_notified_names_the_open_alert(self, make: Make) -> None:
        """`startsAt` copied from the webhook body closes exactly that alert."""
        p, _ = make()
        fired = p.evaluate([reading(0.1234, sos=True)]).events
        starts = webhook_body(fired[0])["startsAt"]
        body = orjson.dumps({"rule": "sos", "by": "desk", "startsAt": starts})
        ev = p.evaluate([RawMessage("sensord-dispatch/ack/c0/wristband/wb-0", body, T0 + 3)])
        assert shape(ev.events) == [("wb-0", "resolved", 3.0)]

    @pytest.mark.parametrize(
        ("topic", "body"),
        [
            ("sensord-dispatch/ack/c9/wristband/wb-0", b'{"rule": "sos", "by": "desk"}'),
            ("sensord-dispatch/ack/c0/bin/wb-0", b'{"rule": "sos", "by": "desk"}'),
            ("sensord-dispatch/ack/c0/wristband/wb-0", b'{"rule": "sos"}'),
            ("sensord-dispatch/ack/c0/wristband/wb-0", b'{"rule": "sos", "by": " "}'),
        ],
    )
    def test_ack_naming_another_place_or_nobody_is_invalid(self, make: Make, topic: str, body: bytes) -> None:
        """An ack whose topic names another community or family than the registry's (an
        ACL may give a desk only its own community), or that does not say who acted, is
        `invalid_ack` and the SOS stays open."""
        p, metrics = make()
        p.evaluate([reading(0, sos=True)])
        ev = p.evaluate([RawMessage(topic, body, T0 + 5)])
        assert (ev.events, rejected(metrics, "invalid_ack")) == ([], 1)
