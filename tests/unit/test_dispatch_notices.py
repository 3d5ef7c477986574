"""Dispatch notices (issue 9, points 1, 2 and 9 in part): from events to messages per
receiver channel, kept in the outbox, delivered by the same worker as events."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sensord._errors import PermanentSinkError, RetryableSinkError
from sensord._metrics import Metrics
from sensord._registry import parse_registry
from sensord._settings import DeliverySettings, OutboxSettings
from sensord._types import AlertEvent, AlertStatus, Severity
from sensord.channels import Message
from sensord.dispatch import Dispatcher, spec_from
from sensord.outbox import Notice, Outbox, SilenceRow
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


T_BIN = 1_790_000_000.0  # event time of the bin alerts


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
        later = T_BIN + 30
        en = next(n for n in dispatcher().notices([bin_full()], later) if n.sink == "sanitation/feishu")
        assert en.message.title.startswith("[WARNING FIRING]")
        assert zh.startswith("【紧急·告警】")

    def test_receiver_reads_the_rule_text_in_its_language(self) -> None:
        """A zh-CN receiver gets the rule's zh-CN summary, an en receiver the English one."""
        e = dataclasses.replace(
            bin_full(), texts={"en": ("Bin bin-1 full", ""), "zh-CN": ("垃圾桶 bin-1 已满", "")}
        )
        got = {n.sink: n.message.title for n in dispatcher().notices([e], T_BIN + 30)}
        assert "垃圾桶 bin-1 已满" in got["grid_worker/wecom"]
        assert "Bin bin-1 full" in got["sanitation/feishu"]

    def test_resolved_only_to_receivers_that_want_it(self) -> None:
        """`send_resolved: false` (sanitation) gets the firing but not the resolved."""
        d = dispatcher()
        d.notices([bin_full()], T_BIN + 30)
        sinks = {n.sink for n in d.notices([bin_full(AlertStatus.RESOLVED)], T_BIN + 400)}
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


def bins(
    n: int, *, grid: str = "g1", at: float = T_BIN, status: AlertStatus = AlertStatus.FIRING
) -> list[AlertEvent]:
    return [
        dataclasses.replace(
            bin_full(status), event_id=f"ev-bin-{grid}-{i}-{status.value}", fingerprint=f"fp-bin-{grid}-{i}",
            device_id=f"bin-{i}", grid=grid, summary=f"Bin bin-{i} full", event_time=at + i, starts_at=at + i,
        )
        for i in range(n)
    ]  # fmt: skip


def sanitation(notices: list[Notice]) -> list[Notice]:
    return [n for n in notices if n.sink == "sanitation/feishu"]


class TestGrouping:
    """Ordinary alerts gathered per receiver, route and group_by labels (issue 9, point 4)."""

    def test_twelve_bins_in_one_grid_are_one_message_after_group_wait(self) -> None:
        """Nothing before group_wait (30 s, event time); then one message listing all twelve."""
        d = dispatcher()
        assert sanitation(d.notices(bins(12), T_BIN + 20)) == []
        sent = sanitation(d.notices([], T_BIN + 41))
        assert len(sent) == 1
        assert sent[0].message.title.startswith("[WARNING] 12 alerts")
        assert sum(line.startswith("- Bin") for line in sent[0].message.text.splitlines()) == 12

    def test_other_labels_make_another_group(self) -> None:
        """group_by [community, grid, rule] (the default): bins of two grids are two messages."""
        d = dispatcher()
        sent = sanitation(d.notices([*bins(2), *bins(3, grid="g2")], T_BIN + 60))
        assert sorted(len(n.message.text.splitlines()) for n in sent) == [4, 5]

    def test_changes_wait_for_group_interval_and_resolved_are_told_once(self) -> None:
        """After a send, a change goes out only group_interval (5 min) later; a resolved
        alert is listed once and then leaves the group."""
        d = dispatcher()
        d.notices(bins(2), T_BIN + 40)

        def grid(notices: list[Notice]) -> list[Notice]:  # the grid worker wants resolves
            return [n for n in notices if n.sink == "grid_worker/wecom"]

        assert grid(d.notices(bins(1, status=AlertStatus.RESOLVED), T_BIN + 100)) == []
        later = grid(d.notices([], T_BIN + 40 + 300))
        assert len(later) == 1
        assert "[已恢复]" in later[0].message.text
        assert {k.split("\x1f")[0]: set(g.alerts) for k, g in d.groups.open.items()} == {
            "grid_worker": {"fp-bin-g1-1"},
            "sanitation": {"fp-bin-g1-1"},  # send_resolved: false, yet bin-0 left its group
        }

    def test_unchanged_firing_group_is_repeated_after_repeat_interval(self) -> None:
        """A group still firing and unchanged is sent again after repeat_interval (4 h)."""
        d = dispatcher()
        d.notices(bins(2), T_BIN + 40)
        assert sanitation(d.notices([], T_BIN + 3600)) == []
        assert len(sanitation(d.notices([], T_BIN + 40 + 4 * 3600))) == 1

    def test_life_safety_is_never_grouped(self) -> None:
        """An SOS goes out in the batch it fired in, with no clock at all."""
        assert {n.sink for n in dispatcher().notices([sos()])} >= {"desk/wecom"}

    def test_waiting_group_survives_a_restart(self, tmp_path: Path) -> None:
        """Group state committed with the batch is restored: the message after a crash is
        the one (same id) a daemon that never stopped would send."""
        steady = dispatcher()
        steady.notices(bins(3), T_BIN + 10)
        want = [n.message.id for n in sanitation(steady.notices([], T_BIN + 45))]
        first = dispatcher()
        first.notices(bins(3), T_BIN + 10)
        ob = outbox(tmp_path)
        ob.commit([], groups=first.state_changes())
        again = dispatcher()
        again.load(ob.dispatch_state())
        ob.close()
        assert want
        assert [n.message.id for n in sanitation(again.notices([], T_BIN + 45))] == want


INHIBIT = spec_from(
    {
        "receivers": [{"name": "ops", "channels": [{"type": "wecom"}]}],
        "route": {"receiver": "ops", "group_wait": "0s"},
        "inhibit_rules": [
            {
                "source_matchers": ['rule="community_silent"'],
                "target_matchers": ['rule="bin_silent"'],
                "equal": ["community"],
                "reason": "gateway down",
            }
        ],
    }
)


def silent(rule: str, community: str, at: float, status: AlertStatus = AlertStatus.FIRING) -> AlertEvent:
    return dataclasses.replace(
        bin_full(status), rule=rule, fingerprint=f"fp-{rule}-{community}", community=community,
        event_id=f"ev-{rule}-{community}-{status.value}-{at}", event_time=at, starts_at=at, dispatch=(),
    )  # fmt: skip


class TestInhibition:
    """Symptoms held back while their cause fires, and told after (issue 9, point 5)."""

    def d(self) -> Dispatcher:
        return Dispatcher(INHIBIT, REGISTRY, Metrics(), per_recipient={})

    def test_source_holds_targets_of_its_community_only(self) -> None:
        """While maple is silent, maple's bin_silent is held; river's is sent."""
        d = self.d()
        d.notices([silent("community_silent", "maple", T_BIN)], T_BIN)
        sent = d.notices(
            [silent("bin_silent", "maple", T_BIN + 1), silent("bin_silent", "river", T_BIN + 1)], T_BIN + 1
        )
        assert [("maple" in n.message.text, "river" in n.message.text) for n in sent] == [(False, True)]
        assert set(d.inhibitor.held) == {"fp-bin_silent-maple"}

    def test_held_alert_still_firing_is_sent_when_the_source_ends(self) -> None:
        """The community comes back; its bin that is still silent is told then."""
        d = self.d()
        d.notices(
            [silent("community_silent", "maple", T_BIN), silent("bin_silent", "maple", T_BIN + 1)], T_BIN + 1
        )
        back = d.notices([silent("community_silent", "maple", T_BIN + 9, AlertStatus.RESOLVED)], T_BIN + 9)
        assert any("Bin" in n.message.text for n in back)
        assert d.inhibitor.held == {}

    def test_held_alert_that_ends_while_held_is_never_told(self) -> None:
        """A bin silent only during the outage: no firing, no resolved, nothing."""
        d = self.d()
        d.notices(
            [silent("community_silent", "maple", T_BIN), silent("bin_silent", "maple", T_BIN + 1)], T_BIN + 1
        )
        quiet = d.notices([silent("bin_silent", "maple", T_BIN + 5, AlertStatus.RESOLVED)], T_BIN + 5)
        ended = d.notices([silent("community_silent", "maple", T_BIN + 9, AlertStatus.RESOLVED)], T_BIN + 9)
        assert [n for n in quiet + ended if "Bin" in n.message.title] == []

    def test_life_safety_is_never_held(self) -> None:
        """A life-safety alert matching the targets still goes out at once."""
        d = self.d()
        d.notices([silent("community_silent", "maple", T_BIN)], T_BIN)
        sos_like = dataclasses.replace(silent("bin_silent", "maple", T_BIN + 1), life_safety=True)
        assert d.notices([sos_like], T_BIN + 1)

    def test_inhibition_state_survives_a_restart(self, tmp_path: Path) -> None:
        """Sources and held alerts are committed with the batch and restored."""
        d = self.d()
        d.notices(
            [silent("community_silent", "maple", T_BIN), silent("bin_silent", "maple", T_BIN + 1)], T_BIN + 1
        )
        ob = outbox(tmp_path)
        ob.commit([], groups=d.state_changes())
        again = self.d()
        again.load(ob.dispatch_state())
        ob.close()
        assert set(again.inhibitor.sources) == {"fp-community_silent-maple"}
        assert set(again.inhibitor.held) == {"fp-bin_silent-maple"}


def row(
    sid: int, matchers: tuple[str, ...], start: float, end: float, *, life_safety: bool = False
) -> SilenceRow:
    return SilenceRow(
        sid,
        matchers,
        start,
        end,
        "王工",
        "lift maintenance",
        start,
        life_safety,
        "drill" if life_safety else "",
    )


class TestSilences:
    """Maintenance windows hold alerts back and tell them after (issue 9, point 6)."""

    def d(self, *rows: SilenceRow) -> Dispatcher:
        d = dispatcher()
        d.silence_source = lambda: list(rows)
        return d

    def test_silenced_alert_is_held_and_told_when_the_silence_ends(self) -> None:
        """A bin full inside the window is not sent; still full after it ends, it is."""
        d = self.d(row(1, ('family="bin"',), T_BIN - 10, T_BIN + 100))
        assert d.notices([bin_full()], T_BIN + 50) == []
        assert set(d.silencer.held) == {"fp-bin"}
        after = sanitation(d.notices([], T_BIN + 101)) + sanitation(d.notices([], T_BIN + 140))
        assert len(after) == 1

    def test_alert_that_ends_while_silenced_is_never_told(self) -> None:
        """Fired and cleared during the window: no message at all, before or after."""
        d = self.d(row(1, ('family="bin"',), T_BIN - 10, T_BIN + 100))
        d.notices([bin_full()], T_BIN + 5)
        later = d.notices(
            [dataclasses.replace(bin_full(AlertStatus.RESOLVED), event_time=T_BIN + 20)], T_BIN + 200
        )
        assert later == []

    def test_a_silence_does_not_hold_life_safety_unless_made_for_it(self) -> None:
        """An SOS goes out through an ordinary silence; one made with the flag holds it (counted)."""
        assert dispatcher().notices([sos()])  # baseline: sent
        plain = self.d(row(1, ('family="wristband"',), T_BIN - 10, T_BIN + 100))
        assert plain.notices([sos()], T_BIN) != []
        metrics = Metrics()
        flagged = Dispatcher(
            SPEC, REGISTRY, metrics, per_recipient={"grid_worker/sms": True}, builtin=("webhook",)
        )
        flagged.silence_source = lambda: [
            row(2, ('family="wristband"',), T_BIN - 10, T_BIN + 100, life_safety=True)
        ]
        assert flagged.notices([sos()], T_BIN) == []
        assert metrics.silenced_life_safety._value.get() == 1

    def test_silence_applies_by_event_time_only_inside_its_window(self) -> None:
        """An alert stamped before the window starts is sent (a replay decides the same way)."""
        d = self.d(row(1, ('family="bin"',), T_BIN + 100, T_BIN + 200))
        assert sanitation(d.notices([bin_full()], T_BIN + 40)) != []

    def test_held_by_silence_survives_a_restart(self, tmp_path: Path) -> None:
        """Alerts a silence holds are committed with the batch and restored."""
        d = self.d(row(1, ('family="bin"',), T_BIN - 10, T_BIN + 100))
        d.notices([bin_full()], T_BIN + 5)
        ob = outbox(tmp_path)
        ob.commit([], groups=d.state_changes())
        again = dispatcher()
        again.load(ob.dispatch_state())
        ob.close()
        assert set(again.silencer.held) == {"fp-bin"}


# 2026-12-01 23:00 in Shanghai (UTC+8) is 15:00 UTC.
NIGHT = 1_796_137_200.0  # 2026-12-01T15:00:00Z


def quiet(on_mute: str = "defer", **route: Any) -> Dispatcher:
    spec = spec_from(
        {
            "receivers": [{"name": "sanitation", "channels": [{"type": "feishu"}]}],
            "time_intervals": {
                "night": [{"times": ["22:00-07:00"]}],
                "weekend": [{"weekdays": ["saturday:sunday"]}],
            },
            "route": {"receiver": "sanitation", "group_wait": "0s", "mute_time_intervals": ["night"],
                      "on_mute": on_mute, **route},
        }
    )  # fmt: skip
    return Dispatcher(spec, REGISTRY, Metrics(), per_recipient={})


class TestQuietHours:
    """Routes' quiet hours in local time (issue 9, point 7)."""

    def test_bin_at_night_is_deferred_to_the_morning(self) -> None:
        """Full at 23:00 local: nothing until 07:00, then the message."""
        d = quiet()
        e = dataclasses.replace(bin_full(), event_time=NIGHT, starts_at=NIGHT)
        assert d.notices([e], NIGHT) == []
        assert d.notices([], NIGHT + 7 * 3600) == []  # 06:00
        assert len(d.notices([], NIGHT + 8 * 3600)) == 1  # 07:00

    def test_on_mute_drop_sends_nothing(self) -> None:
        """on_mute: drop marks the message sent without sending it: nothing comes at the
        end of the night for it (only a repeat, repeat_interval after it, would)."""
        d = quiet("drop", repeat_interval="12h")
        e = dataclasses.replace(bin_full(), event_time=NIGHT, starts_at=NIGHT)
        assert d.notices([e], NIGHT) == []
        assert d.notices([], NIGHT + 8 * 3600) == []
        assert d.groups.dropped == 1
        assert len(d.notices([], NIGHT + 12 * 3600)) == 1  # the repeat, at 11:00

    def test_active_intervals_send_only_inside_them(self) -> None:
        """active_time_intervals [weekend]: a Tuesday's bin waits for Saturday."""
        d = quiet(mute_time_intervals=[], active_time_intervals=["weekend"])
        tuesday_noon = NIGHT - 11 * 3600  # 2026-12-01 is a Tuesday; 12:00 local
        e = dataclasses.replace(bin_full(), event_time=tuesday_noon, starts_at=tuesday_noon)
        assert d.notices([e], tuesday_noon) == []
        saturday = tuesday_noon + 4 * 86400
        assert len(d.notices([], saturday)) == 1

    def test_life_safety_is_never_muted(self) -> None:
        """An SOS at night goes out at once."""
        spec = spec_from({"receivers": [{"name": "desk", "channels": [{"type": "wecom"}]}],
                          "time_intervals": {"night": [{"times": ["22:00-07:00"]}]},
                          "route": {"receiver": "desk", "mute_time_intervals": ["night"]}})  # fmt: skip
        d = Dispatcher(spec, REGISTRY, Metrics(), per_recipient={})
        e = dataclasses.replace(sos(), event_time=NIGHT, starts_at=NIGHT)
        assert len(d.notices([e], NIGHT)) == 1


def test_redact_hides_chosen_readings_from_a_sensitive_receiver() -> None:
    """`redact: [heart_rate, coordinates]` on a sensitive receiver: the SOS reading stays,
    heart rate and coordinates go (issue 9, point 9)."""
    family = {"name": "family", "sensitive": True, "redact": ["heart_rate", "coordinates"]}
    receivers = [{**family, "channels": [{"type": "wecom"}]}]
    spec = spec_from({"receivers": receivers, "route": {"receiver": "family"}})
    [n] = Dispatcher(spec, REGISTRY, Metrics(), per_recipient={}).notices([sos()])
    assert "sos=True" in n.message.text
    assert "heart_rate" not in n.message.text
    assert "lat=" not in n.message.text
