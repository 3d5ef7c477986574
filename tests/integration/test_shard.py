"""Several sensord instances sharing a district, as real processes on a real Mosquitto:
each community on one instance, alerts once, and a change of count (2 → 3) by the
documented procedure under traffic that loses no reading and repeats no alert."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from sensord._metrics import Metrics
from sensord._registry import parse_registry
from sensord._settings import BatchSettings, BrokerSettings, load_settings
from sensord._types import RawMessage
from sensord.ingest import MqttSource
from sensord.replay import replay
from sensord.rules import load_rules
from sensord.shard import owner
from sensord.testing import MosquittoServer, WebhookReceiver, free_port
from tests.integration._helpers import metrics, publish, ready, start_daemon, stop_daemon, wait_for

pytestmark = pytest.mark.integration

RULES = """\
family: wristband
params: {hr_high: 120}
rules:
  - name: sos
    kind: event
    when: sos
    resolve_after: 5s
    summary: SOS
  - name: hr_sustained
    when: heart_rate > hr_high
    for: 20s
    summary: HR {heart_rate}
"""
DEVICES_PER_COMMUNITY = 2
# The count changes CI does not run (3 -> 2), and longer traffic: README "Changing the
# number of instances" gives the command.
LONG_ONLY = pytest.mark.skipif(os.environ.get("SENSORD_SHARD_LONG") != "1", reason="SENSORD_SHARD_LONG=1")


def communities(count_from: int, count_to: int, n: int) -> list[str]:
    """n community names that give every instance, old and new, a share, and whose move
    involves every instance on the side with more of them (growing: each old instance
    gives; shrinking: each remaining one takes)."""
    names = [f"estate-{i:02d}" for i in range(200)]
    for start in range(150):
        pick = names[start : start + n]
        moves = [(owner(c, count_from), owner(c, count_to)) for c in pick]
        moves = [(a, b) for a, b in moves if a != b]
        shared = {owner(c, count_from) for c in pick} == set(range(count_from))
        shared &= {owner(c, count_to) for c in pick} == set(range(count_to))
        side = {a for a, _ in moves} if count_to > count_from else {b for _, b in moves}
        if shared and side == set(range(min(count_from, count_to))):
            return pick
    raise AssertionError("no such set of names")


def names_over(count: int, n: int) -> list[str]:
    """n community names that give each of `count` instances at least one."""
    names = [f"estate-{i:02d}" for i in range(200)]
    picks = (names[i : i + n] for i in range(150))
    return next(p for p in picks if {owner(c, count) for c in p} == set(range(count)))


def registry(names: list[str]) -> dict[str, Any]:
    return {
        "devices": {
            f"{c}-wb{i}": {"family": "wristband", "community": c, "grid": "g1"}
            for c in names
            for i in range(DEVICES_PER_COMMUNITY)
        }
    }


def config(tmp: Path, name: str, *, port: int, webhook: WebhookReceiver, shard: dict[str, Any] | None,
           state: str, alerts: dict[str, Any] | None = None) -> tuple[Path, int]:  # fmt: skip
    """One instance's config (registry, rules and webhook secret shared in tmp)."""
    http_port = free_port()
    cfg: dict[str, Any] = {
        "broker": {"host": "127.0.0.1", "port": port, "client_id": "sensord-it", "keepalive_s": 10},
        "registry": "devices.yaml",
        "rules_dir": "rules",
        "state_dir": str(tmp / state),
        "sinks": {"webhook": {"url": webhook.url, "secret": {"file": "webhook-secret"}, "timeout_s": 5}},
        "delivery": {"initial_backoff_s": 0.1, "max_backoff_s": 1.0},
        "http": {"host": "127.0.0.1", "port": http_port},
        "alerts": {"clock_grace_s": 3600, "community_silence_s": 0, **(alerts or {})},
        "log": {"format": "json", "level": "INFO"},
    }
    if shard is not None:
        cfg["shard"] = shard
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, http_port


def district(tmp: Path, names: list[str], webhook: WebhookReceiver, secret: str) -> None:
    (tmp / "devices.yaml").write_text(yaml.safe_dump(registry(names)))
    (tmp / "rules").mkdir()
    (tmp / "rules" / "wristband.yaml").write_text(RULES)
    (tmp / "webhook-secret").write_text(secret)
    del webhook


def sensord(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sensord", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def delivered(receiver: WebhookReceiver, want: set[str], *, stall_s: float = 20.0) -> None:
    """Wait until every alert in `want` was delivered, for as long as deliveries keep
    coming (a loaded machine delivers thousands slowly); fail once none came for stall_s."""
    last, since = -1, time.monotonic()
    while not set(ids(receiver)) >= want:
        count = len(receiver.delivered())
        if count != last:
            last, since = count, time.monotonic()
        if time.monotonic() - since > stall_s:
            missing = len(want - set(ids(receiver)))
            raise AssertionError(f"{missing} of {len(want)} alerts never came (nothing new for {stall_s} s)")
        time.sleep(0.1)


def all_ready(ports: list[int], what: str) -> None:
    for port in ports:
        wait_for(lambda port=port: ready(port), 20, what)  # type: ignore[misc]


def ids(receiver: WebhookReceiver) -> list[str]:
    return [r.headers.get("webhook-id", r.headers.get("Webhook-Id", "")) for r in receiver.delivered()]


@contextlib.contextmanager
def two_instances(
    tmp: Path,
    mosquitto: MosquittoServer,
    receiver: WebhookReceiver,
    secret: str,
    *,
    subscribe: str = "communities",
) -> Iterator[tuple[dict[int, list[str]], list[tuple[str, str]], list[int]]]:
    """Two sharded instances over six communities, ready: (each one's communities, every
    (community, device), their HTTP ports); stopped on leaving."""
    names = names_over(2, 6)
    district(tmp, names, receiver, secret)
    mine = {i: [c for c in names if owner(c, 2) == i] for i in range(2)}
    procs, ports = [], []
    try:
        for i in range(2):
            shard = {"index": i, "count": 2, "subscribe": subscribe}
            path, http = config(tmp, f"i{i}", port=mosquitto.port, webhook=receiver, shard=shard,
                                state=f"state{i}")  # fmt: skip
            procs.append(start_daemon(path, tmp / f"i{i}.log"))
            ports.append(http)
        all_ready(ports, "both instances ready")
        yield mine, [(c, f"{c}-wb{i}") for c in names for i in range(DEVICES_PER_COMMUNITY)], ports
    finally:
        for p in procs:
            stop_daemon(p)


class TestTwoInstances:
    def test_each_alert_once_and_each_community_on_its_owner(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """Two instances, an SOS from every device of every community: each SOS alert is
        delivered once (one instance took it); each instance took only its communities'
        readings; a reading sent on an instance's topics for the other's device is counted
        there as not_this_shard and raises nothing."""
        with two_instances(tmp_path, mosquitto, webhook_receiver, webhook_secret) as (mine, devices, ports):
            t0 = time.time() - 60
            stranger = f"{mine[1][0]}-wb0"  # instance 1's device, on instance 0's topics
            publish(mosquitto.port, [
                *((f"sensord/{c}/wristband/{d}/telemetry", {"sos": True, "ts": t0}) for c, d in devices),
                (f"sensord/{mine[0][0]}/wristband/{stranger}/telemetry", {"sos": True, "ts": t0 + 1}),
            ])  # fmt: skip
            wait_for(lambda: len(webhook_receiver.delivered()) >= len(devices), 20, "every SOS")
            wait_for(lambda: metrics(ports[0]).get('sensord_rejects_total{reason="not_this_shard"}') == 1,
                     10, "the stranger's reading rejected on instance 0")  # fmt: skip
            time.sleep(1.0)  # a second delivery of any SOS would have come by now
            got = sorted(r.body["device"] for r in webhook_receiver.delivered())
            assert got == sorted(d for _, d in devices)
            assert len(set(ids(webhook_receiver))) == len(devices)
            for i in range(2):
                taken = metrics(ports[i]).get('sensord_messages_in_total{family="wristband"}')
                assert taken == DEVICES_PER_COMMUNITY * len(mine[i])
                assert metrics(ports[i]).get("sensord_shard_communities") == len(mine[i])

    def test_subscribe_all_each_alert_once_and_the_rest_skipped(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """shard.subscribe: all. Both instances get every message: each SOS alert is still
        delivered once, each instance took only its communities' readings, and counted
        the other's as skipped, with no reject and no dead letter."""
        with two_instances(tmp_path, mosquitto, webhook_receiver, webhook_secret, subscribe="all") as (
            mine, devices, ports
        ):
            t0 = time.time() - 60
            publish(mosquitto.port, [(f"sensord/{c}/wristband/{d}/telemetry", {"sos": True, "ts": t0})
                                     for c, d in devices])  # fmt: skip
            wait_for(lambda: len(webhook_receiver.delivered()) >= len(devices), 20, "every SOS")
            for i in range(2):
                theirs = DEVICES_PER_COMMUNITY * len(mine[1 - i])
                wait_for(lambda i=i, n=theirs: metrics(ports[i]).get("sensord_shard_skipped_total") == n,  # type: ignore[misc]
                         10, f"instance {i} skipped the other's readings")  # fmt: skip
            time.sleep(1.0)  # a second delivery of any SOS would have come by now
            got = sorted(r.body["device"] for r in webhook_receiver.delivered())
            assert got == sorted(d for _, d in devices)
            assert len(set(ids(webhook_receiver))) == len(devices)
            for i in range(2):
                m = metrics(ports[i])
                taken = m.get('sensord_messages_in_total{family="wristband"}')
                assert taken == DEVICES_PER_COMMUNITY * len(mine[i])
                assert not any(k.startswith("sensord_rejects_total") and v for k, v in m.items())
                dead = tmp_path / f"state{i}" / "deadletter.jsonl"
                assert not dead.exists() or not dead.read_text().strip()

    def test_a_silent_community_is_one_alert_from_its_owner(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """One community falls silent while the others report: its owner raises the one
        community_silent alert (its devices all live there), nobody raises one for another
        community and no device alert stands in for it."""
        names = names_over(2, 4)
        district(tmp_path, names, webhook_receiver, webhook_secret)
        quiet = names[0]
        procs, ports = [], []
        silence = {
            "community_silence_s": 3, "community_min_devices": 2, "clock_grace_s": 0.5, "idle_tick_s": 0.3,
        }  # fmt: skip
        for i in range(2):
            path, http = config(
                tmp_path, f"i{i}", port=mosquitto.port, webhook=webhook_receiver,
                shard={"index": i, "count": 2}, state=f"state{i}", alerts=silence,
            )  # fmt: skip
            procs.append(start_daemon(path, tmp_path / f"i{i}.log"))
            ports.append(http)
        try:
            all_ready(ports, "both instances ready")
            for k in range(12):
                talking = names if k == 0 else names[1:]
                publish(mosquitto.port, [
                    (f"sensord/{c}/wristband/{c}-wb{i}/telemetry", {"heart_rate": 70, "ts": time.time()})
                    for c in talking for i in range(DEVICES_PER_COMMUNITY)
                ])  # fmt: skip
                time.sleep(0.5)
            wait_for(lambda: any(r.body["rule"] == "community_silent" for r in webhook_receiver.delivered()),
                     10, "the community alert")  # fmt: skip
            time.sleep(1.0)
            alerts = [
                (r.body["rule"], r.body["community"], r.body["status"]) for r in webhook_receiver.delivered()
            ]
            assert alerts == [("community_silent", quiet, "firing")]
            owner_port = ports[owner(quiet, 2)]
            firing = 'sensord_alert_transitions_total{rule="community_silent",state="firing"}'
            assert metrics(owner_port).get(firing) == 1
            assert metrics(ports[1 - owner(quiet, 2)]).get(firing) is None
        finally:
            for p in procs:
                stop_daemon(p)

    def test_two_instances_on_one_state_dir_are_refused(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """A second `sensord run` given the state_dir of a running one exits 2 saying so."""
        names = names_over(2, 2)
        district(tmp_path, names, webhook_receiver, webhook_secret)
        first, http = config(tmp_path, "a", port=mosquitto.port, webhook=webhook_receiver,
                             shard={"index": 0, "count": 2}, state="state")  # fmt: skip
        second, _ = config(tmp_path, "b", port=mosquitto.port, webhook=webhook_receiver,
                           shard={"index": 1, "count": 2}, state="state")  # fmt: skip
        proc = start_daemon(first, tmp_path / "a.log")
        try:
            wait_for(lambda: ready(http), 20, "the first instance ready")
            done = sensord("run", "-c", second)
            assert done.returncode == 2
            assert "is in use by sensord (pid" in done.stderr
        finally:
            stop_daemon(proc)


class Traffic(threading.Thread):
    """Every device reports every round (2 s of event time apart, ~10 rounds a second of
    wall time): an SOS press every 7 rounds, heart rate high for 15 rounds out of 30."""

    def __init__(self, port: int, devices: list[tuple[str, str]], t0: float) -> None:
        super().__init__(daemon=True)
        self.port, self.devices, self.t0 = port, devices, t0
        self.sent: list[RawMessage] = []
        self.stop = threading.Event()
        self.rounds = 0
        self.error: BaseException | None = None

    def body(self, n: int, k: int) -> dict[str, Any]:
        return {
            "ts": self.t0 + 2 * k,
            "sos": (k + n) % 7 == 0,
            "heart_rate": 130 if (k // 15 + n) % 2 else 80,
        }

    def run(self) -> None:
        try:
            asyncio.run(self._go())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    async def _go(self) -> None:
        client = MqttSource(BrokerSettings(port=self.port, client_id="it-traffic", subscriptions=()), None,
                            Metrics(), BatchSettings())  # fmt: skip
        runner = asyncio.create_task(client.run())
        await asyncio.wait_for(client.connected.wait(), 10)
        k = 0
        while not self.stop.is_set():
            await self.round(client, k, self.body)
            k += 1
            await asyncio.sleep(0.1)
        # The last round is far ahead: every timer of the stream falls due on every instance.
        await self.round(
            client, k + 60, lambda n, kk: {"ts": self.t0 + 2 * kk, "heart_rate": 80, "sos": False}
        )
        self.rounds = k
        await client.aclose()
        runner.cancel()

    async def round(self, client: MqttSource, k: int, body: Any) -> None:
        for n, (community, device) in enumerate(self.devices):
            topic = f"sensord/{community}/wristband/{device}/telemetry"
            payload = orjson.dumps(body(n, k))
            await client.publish(topic, payload, 1)
            self.sent.append(RawMessage(topic, payload, time.time()))


def expected_ids(tmp: Path, config_path: Path, messages: list[RawMessage]) -> set[str]:
    """The event ids one unsharded sensord gives for the same stream."""
    settings = load_settings(config_path)
    reg = parse_registry(yaml.safe_load((tmp / "devices.yaml").read_text()), source="devices.yaml")
    result = replay(messages, registry=reg, rules=load_rules(tmp / "rules", reg), settings=settings)
    return {e.event_id for e in result.events if e.status.value != "pending"}


def change_count(procs: list[subprocess.Popen[bytes]], old: list[Path], new: list[Path]) -> dict[str, float]:
    """The README's procedure: stop, begin, drain (in parallel), finish; seconds per step."""
    timings, mark = {}, time.monotonic()
    for p in procs:
        stop_daemon(p)
    olds, news = [str(p) for p in old], [str(p) for p in new]
    begun = sensord("shard", "begin", "--from", *olds, "--to", *news)
    assert begun.returncode == 0, begun.stderr
    timings["stop+begin"], mark = time.monotonic() - mark, time.monotonic()
    # Started too early, a new config is refused: a giver's must wait for its drain, a
    # taker's for finish.
    early = [subprocess.Popen([sys.executable, "-m", "sensord", "run", "-c", cfg], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for cfg in (news[0], news[-1])]  # fmt: skip
    for proc in early:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err.decode()[-2000:]
        assert "is under way" in err.decode()
    mark = time.monotonic()
    logs = [p.with_name(f"drain-{p.stem}.log") for p in old]
    drains = []
    for cfg, log in zip(olds, logs, strict=True):
        with log.open("wb") as out:
            drains.append(subprocess.Popen([sys.executable, "-m", "sensord", "shard", "drain", "-c", cfg],
                                           stdout=out, stderr=subprocess.STDOUT))  # fmt: skip
    for d, log in zip(drains, logs, strict=True):
        d.wait(timeout=300)
        assert d.returncode == 0, log.read_text()[-3000:]
    timings["drain"], mark = time.monotonic() - mark, time.monotonic()
    finished = sensord("shard", "finish", "--from", *olds, "--to", *news)
    assert finished.returncode == 0, finished.stderr
    timings["finish"] = time.monotonic() - mark
    return timings


def _explain(tmp: Path, config_path: Path, messages: list[RawMessage], receiver: WebhookReceiver) -> None:
    """On a failure: the alerts missing and those extra, against one sensord's replay."""
    settings = load_settings(config_path)
    reg = parse_registry(yaml.safe_load((tmp / "devices.yaml").read_text()), source="devices.yaml")
    result = replay(messages, registry=reg, rules=load_rules(tmp / "rules", reg), settings=settings)
    got = {r.headers.get("webhook-id", ""): r.body for r in receiver.delivered()}
    want = {e.event_id: e for e in result.events if e.status.value != "pending"}
    lines = [
        f"MISSING {e.rule} {e.device_id} {e.status.value} starts {e.starts_at - messages[0].received_at:.0f}"
        for e in sorted((want[i] for i in set(want) - set(got)), key=lambda e: e.event_time)
    ]
    extra = [b for i, b in got.items() if i not in want]
    lines += [f"EXTRA {b['rule']} {b['device']} {b['status']} {b['startsAt']}" for b in extra]
    print("\n".join(lines))  # noqa: T201 - why the test failed


class TestCountChange:
    @pytest.mark.parametrize(
        ("before", "after", "subscribe"),
        [
            (2, 3, "communities"),
            (2, 3, "all"),
            pytest.param(3, 2, "communities", marks=LONG_ONLY),
            pytest.param(1, 2, "communities", marks=LONG_ONLY),
        ],
    )
    def test_count_change_under_traffic_loses_nothing(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
        before: int,
        after: int,
        subscribe: str,
    ) -> None:
        """Instances under steady traffic change count by the README's procedure (stop,
        begin, drain, finish, start): the alerts delivered across all instances are exactly
        those one sensord gives for the whole stream (no reading lost, none twice, timers
        and presses that span the change fire once with their original start). Going down,
        the removed instance delivers its outbox and drops its broker session; from one
        instance without a shard, that instance becomes instance 0 with its session. With
        shard.subscribe: all, every session gets every message and the same holds.
        SENSORD_SHARD_SECONDS (default 2) is how long traffic runs before and after."""
        seconds = float(os.environ.get("SENSORD_SHARD_SECONDS", "2"))
        names = communities(before, after, int(os.environ.get("SENSORD_SHARD_COMMUNITIES", "6")))
        district(tmp_path, names, webhook_receiver, webhook_secret)
        # One instance before is one without a shard, as a box is before it is split.
        old, new = (
            [config(tmp_path, f"{side}{i}", port=mosquitto.port, webhook=webhook_receiver,
                    shard={"index": i, "count": n, "subscribe": subscribe} if n > 1 else None,
                    state=f"state{i}") for i in range(n)]
            for side, n in (("old", before), ("new", after))
        )  # fmt: skip
        devices = [(c, f"{c}-wb{i}") for c in names for i in range(DEVICES_PER_COMMUNITY)]
        traffic = Traffic(mosquitto.port, devices, time.time() - 3600)
        procs = [start_daemon(path, tmp_path / f"old{i}.log") for i, (path, _) in enumerate(old)]
        try:
            all_ready([h for _, h in old], "the old instances ready")
            traffic.start()
            time.sleep(seconds)
            timings = change_count(procs, [p for p, _ in old], [p for p, _ in new])
            mark = time.monotonic()
            procs = [start_daemon(path, tmp_path / f"new{i}.log") for i, (path, _) in enumerate(new)]
            all_ready([h for _, h in new], "the new instances ready")
            timings["start"] = time.monotonic() - mark
            time.sleep(seconds)
            seen = [metrics(http) for _, http in new]
            traffic.stop.set()
            traffic.join(30)
            assert traffic.error is None
            want = expected_ids(tmp_path, new[0][0], traffic.sent)
            try:
                delivered(webhook_receiver, want)
            except AssertionError:
                _explain(tmp_path, new[0][0], traffic.sent, webhook_receiver)
                raise
            time.sleep(1.0)  # an alert repeated under a new id would have come by now
        finally:
            traffic.stop.set()
            for p in procs:
                stop_daemon(p)
        got = ids(webhook_receiver)
        assert set(got) == want
        assert traffic.rounds > 15 * seconds
        # Each new instance serves its share, and those that took communities processed
        # them after the markers.
        assert all(m.get('sensord_messages_in_total{family="wristband"}', 0) > 0 for m in seen)
        takers = [i for i in range(after) if i >= before] or list(range(after))
        assert any("handover marker reached" in (tmp_path / f"new{i}.log").read_text() for i in takers)
        # What the old owners' sessions still held of a moved community after the drain is
        # the new owner's: rejected as handed_over, never as a device of no business here
        # (subscribing to all: every other instance's message is skipped instead).
        left = [m.get('sensord_rejects_total{reason="handed_over"}', 0) for m in seen]
        assert not any(m.get('sensord_rejects_total{reason="not_this_shard"}') for m in seen)
        if subscribe == "all":
            assert not any(left)
            assert all(m.get("sensord_shard_skipped_total", 0) > 0 for m in seen)
        print(  # noqa: T201 - the figures, shown with -s
            f"{before} -> {after}: rounds {traffic.rounds}, messages {len(traffic.sent)}, "
            f"alerts {len(want)}, deliveries {len(got)} ({len(got) - len(set(got))} again with the same id), "
            f"left to the new owner after the restart {left}, "
            f"seconds { ({k: round(v, 1) for k, v in timings.items()}) }"
        )


class TestCrash:
    def test_killing_one_instance_loses_and_repeats_nothing(
        self,
        tmp_path: Path,
        mosquitto: MosquittoServer,
        webhook_receiver: WebhookReceiver,
        webhook_secret: str,
    ) -> None:
        """Under traffic, one of two instances is killed (SIGKILL) and started again: the
        alerts across both are exactly those one sensord gives for the stream (its broker
        session kept its communities' messages meanwhile; the other instance went on)."""
        names = names_over(2, 6)
        district(tmp_path, names, webhook_receiver, webhook_secret)
        cfgs = [config(tmp_path, f"i{i}", port=mosquitto.port, webhook=webhook_receiver,
                       shard={"index": i, "count": 2}, state=f"state{i}") for i in range(2)]  # fmt: skip
        devices = [(c, f"{c}-wb{i}") for c in names for i in range(DEVICES_PER_COMMUNITY)]
        traffic = Traffic(mosquitto.port, devices, time.time() - 3600)
        procs = [start_daemon(path, tmp_path / f"i{i}.log") for i, (path, _) in enumerate(cfgs)]
        try:
            all_ready([h for _, h in cfgs], "both instances ready")
            traffic.start()
            time.sleep(1.5)
            procs[1].kill()
            procs[1].wait()
            time.sleep(1.0)
            procs[1] = start_daemon(cfgs[1][0], tmp_path / "i1.log")
            all_ready([cfgs[1][1]], "the killed instance back")
            time.sleep(1.5)
            traffic.stop.set()
            traffic.join(30)
            assert traffic.error is None
            want = expected_ids(tmp_path, cfgs[0][0], traffic.sent)
            delivered(webhook_receiver, want)
            time.sleep(1.0)
        finally:
            traffic.stop.set()
            for p in procs:
                stop_daemon(p)
        assert set(ids(webhook_receiver)) == want


class TestManyCommunities:
    def test_thousands_of_filters_go_in_packets_the_broker_takes(
        self, tmp_path: Path, mosquitto: MosquittoServer
    ) -> None:
        """3,000 community filters are subscribed in packets of 100 (one SUBACK of 3,000
        results would pass the 1,024-byte packet cap and close the connection); the next
        start with half of them unsubscribes the rest, in packets too."""
        session = tmp_path / "mqtt-session.json"
        every = [f"sensord/c{i:04d}/+/+/+" for i in range(3000)]

        async def body() -> tuple[set[str], set[str]]:
            first = await self._take(mosquitto.port, every, session, ["c2999", "c0000"])
            second = await self._take(mosquitto.port, every[:1500], session, ["c2999", "c1499"])
            return first, second

        first, second = asyncio.run(body())
        assert first == {"c2999", "c0000"}
        assert second == {"c1499"}

    @staticmethod
    async def _take(port: int, filters: list[str], session: Path, send: list[str]) -> set[str]:
        """Connect with these filters, publish to each community of `send`, and return the
        communities whose message arrived within 1.5 s."""
        settings = BrokerSettings(port=port, client_id="it-many", max_packet_bytes=1024, keepalive_s=10)
        batch = BatchSettings(max_wait_ms=20)
        source = MqttSource(settings, None, Metrics(), batch, session_file=session, filters=filters)
        runner = asyncio.create_task(source.run())
        got: set[str] = set()
        try:
            await asyncio.wait_for(source.connected.wait(), 20)
            messages = [(f"sensord/{c}/bin/b1/telemetry", {"fill_pct": 1}) for c in send]
            await asyncio.to_thread(publish, port, messages)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.5):
                    async for part in source.batches():
                        got |= {m.topic.split("/")[1] for m in part}
                        source.ack([m.token for m in part if m.token is not None])
        finally:
            await source.aclose()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        return got
