"""Dispatch notices (issue 9, points 1, 2 and 9 in part): from events to messages per
receiver channel, kept in the outbox, delivered by the same worker as events."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._metrics import Metrics
from sensord._registry import parse_registry
from sensord._settings import DeliverySettings, OutboxSettings
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.channels import Message
from sensord.dispatch import Dispatcher, spec_from
from sensord.outbox import Notice, Outbox
from sensord.sinks import DeadLetter, deliver_channel_forever

REGISTRY = parse_registry(
    {
        "devices": {
            "wb-1": {
                "family": "wristband",
                "community": "maple",
                "grid": "g1",
                "contacts": {"女儿": "+86 139 9"},
            },
            "bin-1": {"family": "bin", "community": "maple", "grid": "g1", "building": "1"},
        },
        "grids": {"g1": {"workers": [{"name": "张伟", "phone": "+86 138 1"}, {"name": "李娜"}]}},
    },
    source="test",
)
SPEC = spec_from(
    {
        "receivers": [
            {"name": "desk", "sensitive": True, "channels": [{"type": "wecom"}]},
            {"name": "grid_worker", "recipients": "grid", "channels": [{"type": "wecom"}, {"type": "sms"}]},
            {"name": "sanitation", "send_resolved": False, "locale": "en", "channels": [{"type": "feishu"}]},
        ],
        "route": {
            "receiver": "webhook",
            "routes": [
                {"matchers": ['family="bin"'], "receiver": "sanitation"},
                {"matchers": ['family="wristband"'], "receiver": "desk"},
            ],
        },
    }
)


def sos(status: AlertStatus = AlertStatus.FIRING, event_id: str = "ev-1") -> AlertEvent:
    return AlertEvent(
        event_id=event_id, fingerprint="fp-sos", status=status, rule="wristband_sos",
        severity=Severity.CRITICAL,
        life_safety=True, family="wristband", device_id="wb-1", community="maple", grid="g1",
        location={"building": "3", "lat": 31.2, "lon": 121.4}, labels={}, summary="SOS wb-1", description="",
        readings={"sos": True, "heart_rate": 120}, dispatch=("grid_worker",), starts_at=1_790_000_000.0,
        ends_at=None, event_time=1_790_000_000.0,
    )  # fmt: skip


def bin_full(status: AlertStatus = AlertStatus.FIRING) -> AlertEvent:
    return dataclasses.replace(
        sos(status, "ev-bin"), rule="bin_full", severity=Severity.WARNING, life_safety=False, family="bin",
        device_id="bin-1", location={"building": "1"}, readings={"fill_pct": 93.0}, summary="Bin bin-1 full",
        dispatch=("grid_worker",), fingerprint="fp-bin",
    )  # fmt: skip


def dispatcher(metrics: Metrics | None = None) -> Dispatcher:
    per = {"grid_worker/sms": True}
    return Dispatcher(SPEC, REGISTRY, metrics or Metrics(), per_recipient=per, builtin=("webhook",))


class TestNotices:
    def test_sos_reaches_each_receiver_channel(self) -> None:
        """The desk's chat, the grid worker's chat and one SMS per worker with a phone."""
        got = [(n.sink, [p.name for p in n.message.recipients]) for n in dispatcher().notices([sos()])]
        assert got == [
            ("desk/wecom", []),
            ("grid_worker/wecom", ["张伟", "李娜"]),
            ("grid_worker/sms", ["张伟"]),
        ]

    def test_ids_are_stable_and_distinct(self) -> None:
        """The same event gives the same message ids (a batch redone after a crash); each
        channel and person has its own."""
        a = [n.message.id for n in dispatcher().notices([sos()])]
        b = [n.message.id for n in dispatcher().notices([sos()])]
        assert a == b
        assert len(set(a)) == len(a)

    def test_only_a_sensitive_receiver_sees_readings_and_coordinates(self) -> None:
        """The desk (sensitive) gets heart rate and coordinates; the grid worker gets neither."""
        by_sink = {n.sink: n.message.text for n in dispatcher().notices([sos()])}
        for part in ("heart_rate=120", "lat=31.2"):
            assert part in by_sink["desk/wecom"]
            assert part.split("=")[0] not in by_sink["grid_worker/wecom"]

    def test_locale_and_severity_words(self) -> None:
        """zh-CN receivers read 紧急/告警; an en receiver reads English."""
        zh = dispatcher().notices([sos()])[0].message.title
        en = next(
            n for n in dispatcher().notices([bin_full()]) if n.sink == "sanitation/feishu"
        ).message.title
        assert zh.startswith("【紧急·告警】")
        assert en.startswith("[WARNING FIRING]")

    def test_resolved_only_to_receivers_that_want_it(self) -> None:
        """`send_resolved: false` (sanitation) gets the firing but not the resolved."""
        sinks = {n.sink for n in dispatcher().notices([bin_full(AlertStatus.RESOLVED)])}
        assert "sanitation/feishu" not in sinks
        assert "grid_worker/wecom" in sinks

    def test_pending_and_builtin_webhook_make_no_notice(self) -> None:
        """Pending events notify nobody; the built-in webhook receiver has the event already."""
        pending = dataclasses.replace(sos(), status=AlertStatus.PENDING)
        assert dispatcher().notices([pending]) == []
        lift = dataclasses.replace(sos(), family="lift", dispatch=())
        assert dispatcher().notices([lift]) == []  # lands on the root: webhook

    def test_sms_with_nobody_to_text_is_counted(self) -> None:
        """A per-person channel with no phone among the people is counted as unreachable."""
        spec = spec_from({"receivers": [{"name": "family", "channels": [{"type": "sms"}]}],
                          "route": {"receiver": "family"}})  # fmt: skip
        metrics = Metrics()
        d = Dispatcher(spec, REGISTRY, metrics, per_recipient={"family/sms": True})
        assert d.notices([sos()]) == []
        assert metrics.unreachable.labels("family")._value.get() == 1


def outbox(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "o.sqlite3", ["webhook"], OutboxSettings(), Metrics(), channels=["desk/wecom"])


class TestOutboxNotices:
    def test_notices_are_committed_with_the_events_once(self, tmp_path: Path) -> None:
        """Notices are stored in the events' transaction; the same ids again are ignored."""
        ob = outbox(tmp_path)
        notices = [n for n in dispatcher().notices([bin_full(), sos()]) if n.sink == "desk/wecom"]
        ob.commit([sos()], notices=notices)
        ob.commit([sos()], notices=notices)
        assert [m.id for _, m in ob.due_notices("desk/wecom", 10)] == [n.message.id for n in notices]
        assert ob.depth("desk/wecom") == 1
        ob.close()

    def test_life_safety_messages_first_and_they_survive_a_reopen(self, tmp_path: Path) -> None:
        """A channel's waiting life-safety message goes before older ordinary ones, after a restart too."""
        ob = outbox(tmp_path)
        msg = dispatcher().notices([sos()])[0].message
        ordinary = dataclasses.replace(msg, id="m-old", life_safety=False)
        ob.commit([], notices=[Notice("desk/wecom", ordinary)])
        ob.commit([], notices=[Notice("desk/wecom", msg)])
        ob.close()
        again = outbox(tmp_path)
        assert [m.id for _, m in again.due_notices("desk/wecom", 10)] == [msg.id, "m-old"]
        assert again.depth("desk/wecom") == 2
        again.close()

    def test_removed_channel_is_orphaned_and_purged(self, tmp_path: Path) -> None:
        """Messages of a channel no longer configured are kept, listed, and dropped by purge."""
        ob = outbox(tmp_path)
        ob.commit([], notices=[Notice("gone/sms", dispatcher().notices([sos()])[0].message)])
        ob.close()
        ob = outbox(tmp_path)
        assert ob.orphaned == {"gone/sms": 1}
        assert ob.purge("gone/sms") == 1
        assert ob.due_notices("gone/sms", 10) == []
        ob.close()


class FlakyChannel:
    """Fails as scripted (retryable / permanent), then accepts; records what it took."""

    per_recipient = False

    def __init__(self, name: str, script: list[str]) -> None:
        self.name, self.script, self.took = name, script, list[str]()

    async def send(self, message: Message) -> None:
        if self.script:
            what = self.script.pop(0)
            if what == "retry":
                raise RetryableSinkError(self.name, "503")
            raise PermanentSinkError(self.name, "bad token")
        self.took.append(message.id)

    async def aclose(self) -> None:
        return None


def test_channel_worker_retries_and_dead_letters(tmp_path: Path) -> None:
    """A channel's worker retries a 503 (backing off), dead-letters a permanent refusal
    with its reason, and delivers the rest in order, life-safety first."""
    ob = outbox(tmp_path)
    base = dispatcher().notices([sos()])[0].message
    msgs = [dataclasses.replace(base, id=f"m{i}", life_safety=i == 2) for i in range(3)]
    ob.commit([], notices=[Notice("desk/wecom", m) for m in msgs])
    channel = FlakyChannel("desk/wecom", ["retry", "refuse"])
    dl = DeadLetter(tmp_path / "dl.jsonl")
    settings = DeliverySettings(initial_backoff_s=0.01, max_backoff_s=0.02)

    async def run() -> None:
        task = asyncio.create_task(
            deliver_channel_forever(ob, channel, settings, Metrics(), dl, wake=asyncio.Event())
        )
        for _ in range(200):
            if ob.depth("desk/wecom") == 0:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    dl.close()
    # m2 (life-safety) was tried first: 503, then refused for good; then m0, m1.
    assert channel.took == ["m0", "m1"]
    record = (tmp_path / "dl.jsonl").read_text()
    assert '"m2"' in record
    assert "bad token" in record
    ob.close()
