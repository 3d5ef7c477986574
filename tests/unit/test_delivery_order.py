"""Delivery after an outage: per sink, life-safety first and each alert's events in order;
a sink backs off as a whole; a hung sink does not make an SOS wait behind a page; repeated
failures are logged per state change, counted per attempt."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from sensord._errors import RetryableSinkError
from sensord._metrics import Metrics
from sensord._settings import DeliverySettings, OutboxSettings
from sensord._types import AlertEvent, AlertStatus
from sensord.outbox import Outbox
from sensord.sinks import DeadLetter, deliver_forever
from tests.unit.test_sinks import event


class SwitchSink:
    """A webhook stand-in: `down` refuses (503), `hang` holds each call until its timeout,
    `up` takes one event per call. Records what it took and when."""

    batched = False

    def __init__(self, name: str = "hook", *, timeout_s: float = 0.2) -> None:
        self.name = name
        self.mode = "down"
        self.timeout_s = timeout_s
        self.got: list[AlertEvent] = []
        self.attempts = 0

    async def send(self, events: Sequence[AlertEvent]) -> None:
        self.attempts += 1
        await asyncio.sleep(0)  # a real sink awaits its I/O
        if self.mode == "hang":
            await asyncio.sleep(self.timeout_s)
            raise RetryableSinkError(self.name, "timeout")
        if self.mode == "down":
            raise RetryableSinkError(self.name, "HTTP 503")
        self.got.extend(events)

    async def aclose(self) -> None:
        return None


def alert_events(n_alerts: int, sos_every: int) -> list[AlertEvent]:
    """`firing` then `resolved` for each alert; every `sos_every`-th alert is life-safety."""
    out: list[AlertEvent] = []
    for a in range(n_alerts):
        ls = a % sos_every == 0
        firing = dataclasses.replace(event(a, life_safety=ls), event_id=f"f-{a}", fingerprint=f"fp-{a}")
        resolved = dataclasses.replace(firing, event_id=f"r-{a}", status=AlertStatus.RESOLVED)
        out += [firing, resolved]
    return out


async def run_worker(
    outbox: Outbox, sink: SwitchSink, settings: DeliverySettings, dl: DeadLetter, metrics: Metrics
) -> tuple[asyncio.Task[None], asyncio.Event]:
    wake = asyncio.Event()
    task = asyncio.create_task(
        deliver_forever(outbox, sink, settings, metrics, dl, wake=wake, rng=random.Random(7))
    )
    return task, wake


async def until(predicate: object, within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Outbox, DeadLetter, Metrics]]:
    metrics = Metrics()
    ob = Outbox(tmp_path / "o.sqlite3", ("hook",), OutboxSettings(), metrics)
    dl = DeadLetter(tmp_path / "dl.jsonl")
    yield ob, dl, metrics
    ob.close()
    dl.close()


class TestAfterAnOutage:
    def test_life_safety_first_and_order_per_alert(self, parts: tuple[Outbox, DeadLetter, Metrics]) -> None:
        """Events committed while the sink refuses arrive after recovery with every
        life-safety event before every ordinary one, and no `resolved` before its `firing`."""
        ob, dl, metrics = parts
        sink = SwitchSink()
        settings = DeliverySettings(initial_backoff_s=0.01, max_backoff_s=0.05)
        events = alert_events(60, sos_every=7)

        async def go() -> None:
            task, wake = await run_worker(ob, sink, settings, dl, metrics)
            for i in range(0, len(events), 4):  # committed over time, during the outage
                ob.commit(events[i : i + 4])
                wake.set()
                await asyncio.sleep(0.01)
            await until(lambda: sink.attempts >= 5)
            sink.mode = "up"
            await until(lambda: len(sink.got) == len(events))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        ls = [e.life_safety for e in sink.got]
        assert ls == sorted(ls, reverse=True), "an ordinary event went before a waiting life-safety one"
        seen: dict[str, list[str]] = {}
        for e in sink.got:
            seen.setdefault(e.fingerprint, []).append(e.status.value)
        assert all(v == ["firing", "resolved"] for v in seen.values())

    def test_sink_backs_off_as_a_whole(self, parts: tuple[Outbox, DeadLetter, Metrics]) -> None:
        """With many events waiting and the sink down, each backoff costs one attempt, not
        one per event."""
        ob, dl, metrics = parts
        sink = SwitchSink()
        settings = DeliverySettings(initial_backoff_s=0.05, max_backoff_s=0.05)
        ob.commit(alert_events(100, sos_every=10))

        async def go() -> None:
            task, _ = await run_worker(ob, sink, settings, dl, metrics)
            await asyncio.sleep(0.5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        # 0.5 s of backoffs of 25-50 ms: at most ~21 attempts, not hundreds.
        assert 3 <= sink.attempts <= 25
        assert metrics.delivery_failures.labels("hook", "retryable")._value.get() == sink.attempts


class TestHungSink:
    def test_new_sos_goes_next_and_a_timeout_backs_off_the_sink(
        self, parts: tuple[Outbox, DeadLetter, Metrics]
    ) -> None:
        """A page of ordinary events to a sink that hangs costs one timeout, not one per
        event; an SOS committed meanwhile is the first event delivered on recovery."""
        ob, dl, metrics = parts
        sink = SwitchSink(timeout_s=0.3)
        sink.mode = "hang"
        settings = DeliverySettings(initial_backoff_s=0.2, max_backoff_s=0.2, batch_size=500)
        ob.commit([event(n) for n in range(200)])

        async def go() -> None:
            task, wake = await run_worker(ob, sink, settings, dl, metrics)
            await until(lambda: sink.attempts == 1)
            ob.commit([event(999, life_safety=True)])
            wake.set()
            await asyncio.sleep(0.4)  # the hung attempt times out; the sink backs off
            assert sink.attempts == 1
            sink.mode = "up"
            await until(lambda: len(sink.got) >= 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        assert sink.got[0].event_id == "id-999"


class TestFailureLogging:
    def test_one_line_per_change_and_exact_counters(
        self, parts: tuple[Outbox, DeadLetter, Metrics], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Many failed attempts log one 'failing' line and one 'recovered' line (the
        minute summary does not come within a second); every attempt is counted."""
        ob, dl, metrics = parts
        sink = SwitchSink()
        settings = DeliverySettings(initial_backoff_s=0.002, max_backoff_s=0.004)
        ob.commit(alert_events(10, sos_every=3))
        caplog.set_level(logging.INFO, logger="sensord.delivery")

        async def go() -> None:
            task, _ = await run_worker(ob, sink, settings, dl, metrics)
            await until(lambda: sink.attempts >= 50)
            sink.mode = "up"
            await until(lambda: len(sink.got) == 20)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        messages = [r.getMessage() for r in caplog.records if r.name == "sensord.delivery"]
        assert len(messages) == 2
        assert messages[0].startswith("sink is failing")
        assert messages[1] == "sink recovered"
        failures = metrics.delivery_failures.labels("hook", "retryable")._value.get()
        assert failures == sink.attempts - 20


class SlowSink(SwitchSink):
    """Takes every event after `delay_s`; records how many calls were in flight at once
    and whether two events of one alert ever were."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.mode = "up"
        self.delay_s = delay_s
        self.in_flight: set[str] = set()
        self.most_in_flight = 0
        self.same_alert_overlap = False

    async def send(self, events: Sequence[AlertEvent]) -> None:
        fingerprints = {e.fingerprint for e in events}
        self.same_alert_overlap |= bool(fingerprints & self.in_flight)
        self.in_flight |= fingerprints
        self.most_in_flight = max(self.most_in_flight, len(self.in_flight))
        await asyncio.sleep(self.delay_s)
        self.in_flight -= fingerprints
        await super().send(events)


class TestFanOut:
    def test_a_backlog_goes_several_at_once_and_one_alert_in_order(
        self, parts: tuple[Outbox, DeadLetter, Metrics]
    ) -> None:
        """A backlog is sent with several requests in flight (at most 8), never two events
        of one alert at once, each alert's `firing` before its `resolved`."""
        ob, dl, metrics = parts
        sink = SlowSink(delay_s=0.01)
        events = alert_events(40, sos_every=5)
        ob.commit(events)

        async def go() -> None:
            task, _ = await run_worker(ob, sink, DeliverySettings(), dl, metrics)
            await until(lambda: len(sink.got) == len(events))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        assert 1 < sink.most_in_flight <= 8
        assert not sink.same_alert_overlap
        order = [(e.fingerprint, e.status.value) for e in sink.got]
        assert all(order.index((fp, "firing")) < order.index((fp, "resolved")) for fp, _ in order)
        assert ob.depth("hook") == 0


def distinct(first: int, n: int, *, life_safety: bool) -> list[AlertEvent]:
    """n firing events of n different alerts (ids id-first ...)."""
    return [
        dataclasses.replace(event(k, life_safety=life_safety), fingerprint=f"fp-{k}")
        for k in range(first, first + n)
    ]


class TestNewLifeSafetyDuringARound:
    def test_a_new_sos_overtakes_the_ordinary_waves_left_in_a_round(
        self, parts: tuple[Outbox, DeadLetter, Metrics]
    ) -> None:
        """An SOS committed while a round of ordinary events is being sent goes before the
        rest of that round: it arrives within the next two waves."""
        ob, dl, metrics = parts
        sink = SlowSink(delay_s=0.01)
        ob.commit(distinct(0, 200, life_safety=False))
        seen: dict[str, int] = {}

        async def go() -> None:
            task, wake = await run_worker(ob, sink, DeliverySettings(), dl, metrics)
            await until(lambda: len(sink.got) >= 20)
            seen["before"] = len(sink.got)
            ob.commit(distinct(999, 1, life_safety=True))
            wake.set()
            await until(lambda: any(e.event_id == "id-999" for e in sink.got))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        at = next(i for i, e in enumerate(sink.got) if e.event_id == "id-999")
        assert at <= seen["before"] + 2 * 8

    def test_a_stream_of_sos_does_not_break_a_round_of_older_sos(
        self, parts: tuple[Outbox, DeadLetter, Metrics]
    ) -> None:
        """While SOS events keep being committed, a round of older SOS events is sent to
        its end in waves, not broken off after each wave to re-read the queue: 200 waiting
        SOS take at most a few reads of the queue, and all arrive in commit order."""
        ob, dl, metrics = parts
        sink = SlowSink(delay_s=0.005)
        ob.commit(distinct(0, 200, life_safety=True))
        reads = 0
        real_due = ob.due

        def counted(name: str, limit: int) -> list[tuple[int, AlertEvent]]:
            nonlocal reads
            reads += 1
            return real_due(name, limit)

        ob.due = counted  # type: ignore[method-assign,assignment]

        async def go() -> None:
            task, wake = await run_worker(ob, sink, DeliverySettings(), dl, metrics)
            k = 1000
            while len([e for e in sink.got if int(e.event_id[3:]) < 200]) < 200:
                ob.commit(distinct(k, 1, life_safety=True))  # a new SOS every 2 ms
                k += 1
                wake.set()
                await asyncio.sleep(0.002)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(go())
        first = [int(e.event_id[3:]) for e in sink.got if int(e.event_id[3:]) < 200]
        assert first == list(range(200))
        assert reads <= 3
