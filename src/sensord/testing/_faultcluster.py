"""Broker failover under load: the daemon connected to a three-node NATS cluster
(`broker.hosts` listing every node), a seeded workload published through another node,
and the node the daemon is connected to SIGKILLed (then started again) while it runs.

Judged exactly against an offline replay of the published stream: every event of the
reference delivered, once per id, nothing else. Measured per kill: how long no message
was processed, and from how long after the kill on a new reading's alert reached the
webhook within `ALERT_DELAY_S` of its publication again.
Used by `tests/faults` (one kill) and `bench/failover.py` (several).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import random
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sensord.replay import Outgoing
from sensord.testing._faultcheck import Delivery, Key, event_key, judge
from sensord.testing._faultruns import Run, settle
from sensord.testing._faults import Daemon, Publisher, Workload, daemon_config, reference, wait_until
from sensord.testing._nats_cluster import ClusterNode, NatsCluster, start_nats_cluster
from sensord.testing._servers import MosquittoServer, Received, WebhookReceiver, start_mosquitto

# A firing alert is "on time" once it reaches the webhook this soon after its reading
# was published (a few batch cuts and one delivery on a busy 2-core box).
ALERT_DELAY_S = 2.0
# The daemon's gathering after a reconnect: above the cluster's `ack_wait` (4 s in
# CLUSTER_MQTT), with a margin for the new consumer leader's first redelivery check.
REDELIVERY_WAIT_S = 6.0


# (published at, delay to the webhook, rule, device) of one firing alert.
Delay = tuple[float, float, str, str]


@dataclass
class Kill:
    """One SIGKILL of the node the daemon was connected to (or of the daemon), and what it cost."""

    node: str  # host:port of its MQTT listener
    leads: list[str]  # what it led: meta, stream:NAME, consumer:STREAM/NAME
    at: float  # time.monotonic()
    no_ingest_s: float = 0.0  # longest time without a message processed, from the kill on
    caught_up_s: float | None = None  # until as many processed since the kill as published
    back_on_time_s: float | None = None  # new readings alerted on within ALERT_DELAY_S from then on
    worst_alert_delay_s: float = 0.0  # of readings published in the 30 s after the kill
    failed_over_to: str = ""

    def row(self) -> dict[str, object]:
        back = self.back_on_time_s
        return {"node": self.node, "led": ",".join(sorted({x.split(":")[0] for x in self.leads})) or "-",
                "failed over to": self.failed_over_to, "no ingest s": round(self.no_ingest_s, 1),
                "backlog drained s": "-" if self.caught_up_s is None else round(self.caught_up_s, 1),
                "on time again s": "-" if back is None else round(back, 1),
                "worst alert delay s": round(self.worst_alert_delay_s, 1)}


@dataclass
class ClusterRun(Run):
    """A cluster failover run: the judged outcome and the figures of each kill."""

    per_kill: list[Kill] = field(default_factory=list)
    failovers: float = 0.0  # sensord_broker_failovers at the end
    # Resolutions by an ack delivered under another id than the reference's: the ack came
    # later relative to the readings than it was published, so it is dated later.
    acks_redated: int = 0
    # Transitions not resolved by an ack delivered under another id than the reference's
    # (a reading skipped as late would do that).
    other_ids: list[Key] = field(default_factory=list)
    # (published, delay to the webhook) of each firing alert, published as seconds since
    # the first message, and the kills as seconds since then too.
    alert_delays: list[tuple[float, float]] = field(default_factory=list, repr=False)
    kills_at: list[float] = field(default_factory=list, repr=False)
    processed: list[tuple[float, int]] = field(default_factory=list, repr=False)  # (same clock, count)
    stream: list[Outgoing] = field(default_factory=list, repr=False)  # what was published
    # The firing alerts slowest to reach the webhook: (delay, rule, device, published), the
    # publication in seconds since the first message.
    slowest: list[tuple[float, str, str, float]] = field(default_factory=list)


class _Progress:
    """Samples in a thread the daemon's processed-message count and the messages the
    cluster acknowledged to the publisher: (time.monotonic(), processed, published)."""

    def __init__(self, daemon: Daemon, publisher: Publisher, every: float = 0.1) -> None:
        self.samples: list[tuple[float, int, int]] = []
        self._daemon, self._publisher, self._every = daemon, publisher, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="failover-progress", daemon=True)

    def start(self) -> _Progress:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _main(self) -> None:
        while not self._stop.wait(self._every):
            count = self._daemon.processed()
            if count:
                self.samples.append((time.monotonic(), count, self._publisher.acked))

    def longest_stall(self, start: float, within: float) -> float:
        """The longest time without the count growing, for stalls starting in
        [start, start + within]."""
        longest, since, last = 0.0, start, -1
        for t, count, _ in self.samples:
            if t < start:
                last = count
                continue
            if count != last:
                if since <= start + within:
                    longest = max(longest, t - since)
                since, last = t, count
        return longest

    def caught_up(self, start: float) -> float | None:
        """Seconds from `start` until the daemon had processed as many messages since
        then as were published since then (redelivered copies count too), or None."""
        before = [(n, a) for t, n, a in self.samples if t <= start]
        if not before:
            return None
        n0, a0 = before[-1]
        behind = False
        for t, n, a in self.samples:
            if t <= start:
                continue
            if n - n0 < a - a0 - 50:  # a batch cut's worth of slack
                behind = True
            elif behind:
                return t - start
        return None


def _published_at(publisher: Publisher, stream: list[Outgoing], w: Workload, event_time: str) -> float:
    """time.monotonic() when the reading stamped `event_time` was due to be published."""
    ts = datetime.fromisoformat(event_time).timestamp()
    return publisher.started_at + (ts - stream[0][0]) / w.tick_s * w.wall_tick_s


def _alert_delays(received: list[Received], publisher: Publisher, stream: list[Outgoing],
                  w: Workload) -> list[Delay]:
    """(published at, delay to the webhook, rule, device) of every firing alert delivered,
    first copy only."""
    seen: set[str] = set()
    out = []
    for r in sorted(received, key=lambda r: r.at):
        if not (r.valid and r.answered == 200) or r.body.get("status") != "firing":
            continue
        if r.headers["webhook-id"] in seen:
            continue
        seen.add(r.headers["webhook-id"])
        published = _published_at(publisher, stream, w, str(r.body["eventTime"]))
        out.append((published, r.at - published, str(r.body["rule"]), str(r.body["device"])))
    return sorted(out)


def _figures(kill: Kill, until: float, delays: list[Delay], progress: _Progress) -> None:
    kill.no_ingest_s = progress.longest_stall(kill.at, 15.0)
    kill.caught_up_s = progress.caught_up(kill.at)
    after = [(p, d) for p, d, _, _ in delays if kill.at <= p < until]
    kill.worst_alert_delay_s = max((d for p, d in after if p < kill.at + 30), default=0.0)
    late = [p for p, d in after if d > ALERT_DELAY_S]
    if after:
        kill.back_on_time_s = (max(late) - kill.at) if late else 0.0


@dataclass
class _Cluster:
    cluster: NatsCluster
    receiver: WebhookReceiver
    daemon: Daemon


@contextlib.contextmanager
def _rig(work: Path, w: Workload, redelivery_wait_s: float) -> Iterator[_Cluster]:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    cluster = start_nats_cluster(work / "nats")
    receiver = WebhookReceiver(secret).start()
    daemon = None
    try:
        hosts = [{"host": "127.0.0.1", "port": p} for p in cluster.mqtt_ports]
        config, http_port = daemon_config(
            work / "daemon", broker_port=cluster.mqtt_ports[0], registry=w.registry(),
            webhook_url=receiver.url, webhook_secret=secret,
            broker={"hosts": hosts, "redelivery_wait_s": redelivery_wait_s, "keepalive_s": 5,
                    "receive_maximum": 40000},
        )
        daemon = Daemon(config, http_port, work / "daemon" / "daemon.log")
        daemon.start()
        wait_until(daemon.ready, 60, "the daemon ready")
        yield _Cluster(cluster, receiver, daemon)
    finally:
        if daemon is not None:
            daemon.stop()
        receiver.stop()
        cluster.stop()


def _daemon_node(daemon: Daemon) -> int:
    broker = str(daemon.health().get("broker") or "")
    return int(broker.rsplit(":", 1)[1]) if ":" in broker else 0


def cluster_failover(  # noqa: PLR0913 - the scenario's knobs
    work: Path,
    w: Workload,
    *,
    kills: int,
    seed: int = 4,
    down_s: float | None = 3.0,
    redelivery_wait_s: float = REDELIVERY_WAIT_S,
    drain_s: float = 90,
    target: str = "node",
) -> ClusterRun:
    """Publish `w` (its acks naming their alert) through a node other than the daemon's
    and SIGKILL the daemon's node `kills` times at seeded points of the load (each
    started again `down_s` later, or never with None; the cluster caught up before the
    next kill). `target="daemon"`: SIGKILL the daemon instead, started again `down_s`
    later; the cluster redelivers what it had not acknowledged. `target="bridge"`: the
    readings go through an edge Mosquitto bridged into the cluster, and the node the
    bridge uses is killed (the publisher's node, not the daemon's; one kill)."""
    t0 = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 - reproducible kill points
    w = dataclasses.replace(w, ack_names_alert=True)
    with _rig(work, w, redelivery_wait_s) as rig:
        cluster, daemon = rig.cluster, rig.daemon
        stream = w.stream(time.time() - w.ticks * w.tick_s - 60)
        ref = reference(daemon.config, stream)
        ports = cluster.mqtt_ports
        first = ports.index(_daemon_node(daemon))
        order = ports[first + 1 :] + ports[: first + 1]  # the publisher starts on another node
        publisher, edge = _publisher(work, target, order, stream, w)
        progress = _Progress(daemon, publisher).start()
        span = w.ticks * w.wall_tick_s
        slots = [span * (0.2 + 0.65 * (k + rng.uniform(0.2, 0.8)) / kills) for k in range(kills)]
        done: list[Kill] = []
        for when in slots:
            wait_until(lambda when=when: time.monotonic() - t0 >= when, span + 120, "the kill point")
            wait_until(lambda: bool(daemon.health().get("broker_connected")), 60, "the daemon connected")
            cluster.wait_healthy(90)
            node = cluster.node_on(order[0] if target == "bridge" else _daemon_node(daemon))
            if target == "daemon":
                done.append(_kill_daemon(daemon, down_s or 0.0))
            else:
                done.append(_kill_node(cluster, daemon, node, down_s, follow=target == "node"))
        publisher.join(4 * span + 120)
        want = {event_key(e) for e in ref}
        settle(daemon, rig.receiver, lambda: want <= _delivered_keys(rig.receiver), drain_s)
        progress.stop()
        if edge is not None:
            edge.stop()
        findings = judge(rig.receiver.received, ref)
        ids = {r.headers["webhook-id"] for r in rig.receiver.delivered()}
        lost_ids = [e for e in ref if e.event_id not in ids]
        redated = [e for e in lost_ids if "acknowledged_by" in e.readings]
        delays = _alert_delays(rig.receiver.received, publisher, stream, w)
        for i, kill in enumerate(done):
            _figures(kill, done[i + 1].at if i + 1 < len(done) else float("inf"), delays, progress)
        run = ClusterRun(
            f"{target} SIGKILL on the cluster", findings, len(stream), publisher.acked, exact=True,
            resend_ok=target == "daemon",
            kills=len(done), resent=publisher.resent, seconds=time.monotonic() - t0,
            received=list(rig.receiver.received), reference=ref, per_kill=done,
            failovers=daemon.metrics().get("sensord_broker_failovers_total", 0.0),
            acks_redated=len(redated),
            alert_delays=[(p - publisher.started_at, d) for p, d, _, _ in delays],
            slowest=[(round(d, 1), rule, dev, round(p - publisher.started_at, 1))
                     for p, d, rule, dev in sorted(delays, key=lambda x: -x[1])[:8]],
            kills_at=[k.at - publisher.started_at for k in done],
            processed=[(t - publisher.started_at, n) for t, n, _ in progress.samples],
            stream=stream,
        )
        other = [event_key(e) for e in lost_ids if "acknowledged_by" not in e.readings]
        run.other_ids = other
        if other:
            run.notes.append(f"{len(other)} events not resolved by an ack delivered under another id "
                             f"than the reference's, e.g. {other[:5]}")
        return run


def _publisher(
    work: Path, target: str, order: list[int], stream: list[Outgoing], w: Workload
) -> tuple[Publisher, MosquittoServer | None]:
    """The stream's publisher: on order[0], the others after it; or, for the bridge
    target, on an edge Mosquitto that bridges into the cluster through order[0] first
    (so the node killed is the bridge's, not sensord's)."""
    if target != "bridge":
        return Publisher(order[0], stream, w.wall_tick_s, w.tick_s, more_ports=tuple(order[1:])).start(), None
    edge = _edge_bridge(work / "edge", order)
    return Publisher(edge.port, stream, w.wall_tick_s, w.tick_s).start(), edge


def _kill_node(cluster: NatsCluster, daemon: Daemon, node: ClusterNode, down_s: float | None, *,
               follow: bool) -> Kill:  # fmt: skip
    """SIGKILL one node (`follow`: the daemon's, waiting until it has moved), start it
    again down_s later (None: never), and wait until the daemon is connected."""
    kill = Kill(f"127.0.0.1:{node.mqtt_port}", cluster.leads().get(node.name, []), time.monotonic())
    cluster.kill(node)
    if follow:

        def moved() -> bool:
            return _daemon_node(daemon) not in (0, node.mqtt_port)

        with contextlib.suppress(TimeoutError):
            wait_until(moved, down_s or 60, "the daemon on another node")
    if down_s is not None:
        time.sleep(max(0.0, kill.at + down_s - time.monotonic()))
        cluster.restart(node)
    with contextlib.suppress(TimeoutError):
        wait_until(lambda: bool(daemon.health().get("broker_connected")), 60, "the daemon connected")
        kill.failed_over_to = str(daemon.health().get("broker") or "")
    return kill


def _edge_bridge(folder: Path, ports: list[int]) -> MosquittoServer:
    """An edge box's Mosquitto bridging the device and ack topics at QoS 1 into the
    cluster, its nodes tried in this order (the first while it is up)."""
    conf = (
        "connection district\n"
        f"address {' '.join(f'127.0.0.1:{p}' for p in ports)}\n"
        "round_robin false\n"
        "topic sensord/# out 1\n"
        "topic sensord-dispatch/# out 1\n"
        "cleansession false\n"
        "clientid edge-box\n"
        "bridge_protocol_version mqttv311\n"
        # nats-server refuses the private-bridge flag Mosquitto sets on the protocol level.
        "try_private false\n"
        "notifications false\n"
        "restart_timeout 1 2\n"
        "keepalive_interval 5\n"
    )
    edge = start_mosquitto(folder, extra_conf=conf)
    time.sleep(2.0)  # the bridge connected before the first reading
    return edge


def _kill_daemon(daemon: Daemon, down_s: float) -> Kill:
    """SIGKILL the daemon, start it again down_s later, wait until it is connected."""
    kill = Kill("sensord", [], time.monotonic())
    daemon.kill()
    time.sleep(down_s)
    daemon.start()
    wait_until(lambda: bool(daemon.health().get("broker_connected")), 60, "the daemon back")
    kill.failed_over_to = str(daemon.health().get("broker") or "")
    return kill


def _delivered_keys(receiver: WebhookReceiver) -> set[Key]:
    return {Delivery.of(r).key for r in receiver.delivered()}
