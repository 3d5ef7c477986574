"""Scale benchmark: 1, 2 and 3 sensord instances (real `sensord run` processes, each
with `shard: {index: i, count: n}`, its own state_dir and `broker.hosts` listing the
three nodes, its own node first) against a three-node NATS cluster (MQTT, JetStream R3),
side by side in one run, with one instance on a single Mosquitto as the reference; then
the cost of a broker node's death.

    .venv/bin/python bench/scale.py                   # ~6 min: 40,000 messages
    .venv/bin/python bench/scale.py --instances 1,3 --messages 120000 --html out/
    .venv/bin/python bench/scale.py --subscribe communities   # what nats-server does to that

The instances run with `shard.subscribe: all` by default (each subscribes to every
community's topics and skips the other instances' messages), the mode for nats-server;
`--subscribe communities` gives them per-community subscriptions, whose many consumers
nats-server 2.9.10 delivers out of order under a backlog (README, "Clustered broker and
failover", point 4). The cluster's mqtt.max_ack_pending is 20,000, or lower where the
busiest instance's filters would pass nats-server's 65,535 per session.

Capacity: a backlog of the drain benchmark's device mix (six families, 12,000 devices
over 48 communities, 1 % of the messages shaped to change an alert) is published QoS 1
through one node while every instance is stopped (their sessions exist), then all the
instances start at once and drain it. An instance's msg/s runs from its start line in its
log to the last change of its processed count (/healthz, sampled every 20 ms), once every
count has settled and the cluster holds nothing unacknowledged; the total from the first
start to the last instance done. A backlog, not a steady stream: one publisher gets only
3-5 k msg/s acknowledged by the cluster on 2 cores, so a stream would measure it.

Failover: with the largest instance count (2 or 3), the same messages are published as a
steady stream (`--rate`) through a node instance 0 does not use; at 40 % of it the node
instance 0 is connected to (its /healthz `broker`) gets SIGKILL. Measured: the longest
time without a new processed count of the instances on that node and of the others (from
the kill on), the longest wait between two of the publisher's acknowledgements, how long
after the last one the instances were done, and the readings processed twice (taken off
the session more often than published; with `subscribe: all` every instance takes every
message, its own and the skipped others'). Instances
run with `broker.redelivery_wait_s` 6 there (the cluster's `ack_wait` is 4 s); 0 in the
capacity runs, whose clean starts have nothing to redeliver. `late`: readings older than
their device's last one (sensord_late_readings), which the rules skip.

Every run checks the alert events of all its instances' outboxes against the Mosquitto
reference: the same event ids (none missing, none extra) and no alert transition under
two ids.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from _alertshare import shape
from _backlog import messages, publish_backlog, registry_doc, scenario
from _plots import table, write_index
from _scale_rig import (
    Broker,
    Instance,
    Sampler,
    Stream,
    longest_gap,
    mosquitto,
    nats_cluster,
    start_all,
    stop_all,
    write_registry,
)
from sensord._types import Family
from sensord.shard import owner

REDELIVERY_WAIT_S = 6.0  # above the cluster's mqtt.ack_wait of 4 s (sensord.testing)
Load = tuple[float, float, float]


@dataclass(frozen=True)
class Backlog:
    msgs: list[tuple[str, bytes]]
    registry: Path
    per_community: dict[str, int]  # messages
    devices: dict[str, int]  # per community


@dataclass(frozen=True)
class Share:
    """One instance's share and what it did with it."""

    communities: int
    devices: int
    expected: int
    handled: int  # messages it processes or skips: its share, or all of them (subscribe: all)
    processed: int
    msg_s: float
    late: int  # readings older than their device's last one, not applied (sensord_late_readings)


@dataclass(frozen=True)
class Check:
    """The run's alert events against the reference."""

    events: int
    missing: int
    extra: int
    twice: int  # transitions (fingerprint, status, starts_at) under more than one id

    def __str__(self) -> str:
        if self.missing == self.extra == self.twice == 0:
            return f"{self.events:,} = ref"
        return f"{self.events:,}: {self.missing} missing, {self.extra} extra, {self.twice} under 2 ids"


@dataclass(frozen=True)
class CapacityRow:
    broker: str
    instances: int
    publish_msg_s: float
    total_msg_s: float
    shares: list[Share]
    check: Check
    load: Load


@dataclass(frozen=True)
class FailoverRow:
    instances: int
    rate: float
    node: str
    on_node: list[int]  # the instances connected to it when it was killed
    killed_at_s: float  # into the stream
    no_ingest_s: float  # the longest pause of the instances on that node, from the kill
    others_pause_s: float | None  # the longest pause of the other instances (None: none)
    publisher_pause_s: float  # the longest wait between two acknowledgements
    tail_s: float  # from the last acknowledgement to every instance done
    processed_twice: list[int]  # per instance: processed less published
    late: list[int]
    check: Check
    load: Load


def make_backlog(work: Path, devices: int, n: int, communities: int, share: float) -> Backlog:
    sc = scenario(devices_per_family=max(1, devices // len(Family)), messages=n, communities=communities)
    msgs = messages(sc, n, start_ts=time.time() - 3600)
    if len(msgs) < n:
        raise SystemExit(f"the scenario gave {len(msgs)} of {n} messages")
    shaped, _ = shape(msgs, share)
    doc = registry_doc(sc)
    write_registry(work / "devices.yaml", doc)
    per_community = collections.Counter(t.split("/")[1] for t, _ in shaped)
    devs = collections.Counter(e["community"] for e in doc["devices"].values())
    return Backlog(shaped, work / "devices.yaml", dict(per_community), dict(devs))


def instances_for(broker: Broker, n: int, bl: Backlog, tag: str, wait_s: float) -> list[Instance]:
    folder = bl.registry.parent / tag
    return [
        Instance(folder / f"i{i}", i, n, broker.ports, bl.registry, f"scale-{tag}", wait_s, broker.subscribe)
        for i in range(n)
    ]


def shares_of(bl: Backlog, n: int) -> list[tuple[int, int, int]]:
    """Per instance index: (communities, devices, messages of the backlog)."""
    out = [[0, 0, 0] for _ in range(n)]
    for c, devs in bl.devices.items():
        o = owner(c, n)
        out[o][0] += 1
        out[o][1] += devs
        out[o][2] += bl.per_community.get(c, 0)
    return [(a, b, m) for a, b, m in out]


def handled(broker: Broker, bl: Backlog, n: int) -> list[int]:
    """Per instance: the messages it takes off its session (processed, or skipped as
    another instance's): its share, or the whole backlog with `shard.subscribe: all`."""
    if broker.subscribe == "all":
        return [len(bl.msgs)] * n
    return [m for _, _, m in shares_of(bl, n)]


def check(instances: Sequence[Instance], reference: set[str] | None) -> tuple[Check, set[str]]:
    rows = [r for inst in instances for r in inst.events()]
    ids = {r[0] for r in rows}
    per_transition = collections.Counter((fp, status, starts) for _, fp, status, starts in rows)
    twice = sum(1 for k in per_transition.values() if k > 1)
    ref = ids if reference is None else reference
    return Check(len(ids), len(ref - ids), len(ids - ref), twice), ids


def capacity(broker: Broker, n: int, bl: Backlog, reference: set[str] | None) -> tuple[CapacityRow, set[str]]:
    """Sessions made, the backlog published, then every instance started to drain it."""
    tag = f"{broker.kind}-{n}"
    insts = instances_for(broker, n, bl, tag, 0.0)
    shares = shares_of(bl, n)
    expected = handled(broker, bl, n)
    try:
        start_all(insts)  # subscribes their sessions, so the broker queues for them
        stop_all(insts)
        publish_s = publish_backlog(broker.ports[0], bl.msgs, 1)
        sampler = Sampler(insts)
        try:
            start_all(insts)
            sampler.wait(expected, broker, timeout=900)
        finally:
            sampler.stop()
        late = [int(inst.metric("sensord_late_readings_total")) for inst in insts]
    finally:
        stop_all(insts)
    out: list[Share] = []
    starts = [inst.started_at() for inst in insts]
    for (comms, devs, m), h, tr, start, k in zip(shares, expected, sampler.traces, starts, late, strict=True):
        assert start is not None
        done = tr.changes[-1][0] if tr.changes else start
        out.append(Share(comms, devs, m, h, tr.processed, m / max(done - start, 1e-9) if m else 0.0, k))
    first = min(s for s in starts if s is not None)
    last = max(tr.changes[-1][0] for tr in sampler.traces if tr.changes)
    chk, ids = check(insts, reference)
    row = CapacityRow(
        broker=broker.kind,
        instances=n,
        publish_msg_s=len(bl.msgs) / publish_s,
        total_msg_s=len(bl.msgs) / (last - first),
        shares=out,
        check=chk,
        load=os.getloadavg(),
    )
    return row, ids


def failover(broker: Broker, n: int, bl: Backlog, rate: float, reference: set[str]) -> FailoverRow:
    """A steady stream to n instances; instance 0's node killed at 40 % of it."""
    insts = instances_for(broker, n, bl, f"failover-{n}", REDELIVERY_WAIT_S)
    expected = handled(broker, bl, n)
    try:
        start_all(insts)
        nodes = [str(inst.health().get("broker")) for inst in insts]
        victim = int(nodes[0].rsplit(":", 1)[1])
        others = [p for p in broker.ports if p != victim]
        sampler = Sampler(insts)
        try:
            stream = Stream(others[-1], bl.msgs, rate)
            while stream.counts[0] == 0 and stream.proc.is_alive():  # spawned, connected
                time.sleep(0.01)
            t0 = time.time()
            duration = len(bl.msgs) / rate
            time.sleep(max(0.0, t0 + 0.4 * duration - time.time()))
            nodes = [str(inst.health().get("broker")) for inst in insts]  # a start may have moved one
            killed = time.time()
            broker.kill(victim)
            stream.join(timeout=duration * 4 + 120)
            done = sampler.wait(expected, broker, timeout=600, settle_s=3.0)
        finally:
            sampler.stop()
        late = [int(inst.metric("sensord_late_readings_total")) for inst in insts]
    finally:
        stop_all(insts)
    end = float(stream.counts[3])
    on_victim = [i for i, node in enumerate(nodes) if node == f"127.0.0.1:{victim}"]
    gaps = [longest_gap(tr.changes, killed - 0.5, done) for tr in sampler.traces]
    chk, _ = check(insts, reference)
    return FailoverRow(
        instances=n,
        rate=rate,
        node=f"127.0.0.1:{victim}",
        on_node=on_victim,
        killed_at_s=killed - t0,
        no_ingest_s=max(gaps[i] for i in on_victim),
        others_pause_s=max((g for i, g in enumerate(gaps) if i not in on_victim), default=None),
        publisher_pause_s=float(stream.counts[2]),
        tail_s=max(0.0, done - end),
        processed_twice=[tr.processed - m for tr, m in zip(sampler.traces, expected, strict=True)],
        late=late,
        check=chk,
        load=os.getloadavg(),
    )


CAPACITY_HEAD = (
    "broker", "inst", "publish msg/s", "total msg/s", "per instance msg/s", "communities", "devices",
    "processed twice", "late", "alert events", "load 1/5/15",
)  # fmt: skip


def _load(load: Load) -> str:
    return " ".join(f"{x:.2f}" for x in load)


def capacity_cells(r: CapacityRow) -> list[str]:
    label = "Mosquitto" if r.broker == "mosquitto" else "NATS x3"
    return [
        label,
        str(r.instances),
        f"{r.publish_msg_s:,.0f}",
        f"{r.total_msg_s:,.0f}",
        " / ".join(f"{s.msg_s:,.0f}" for s in r.shares),
        " / ".join(str(s.communities) for s in r.shares),
        " / ".join(f"{s.devices:,}" for s in r.shares),
        " / ".join(f"{s.processed - s.handled:,}" for s in r.shares),
        " / ".join(f"{s.late:,}" for s in r.shares),
        str(r.check),
        _load(r.load),
    ]


FAILOVER_HEAD = (
    "inst", "rate", "killed at", "on it", "their pause", "others' pause", "publisher pause",
    "done after last ack", "processed twice", "late", "alert events", "load 1/5/15",
)  # fmt: skip


def failover_cells(r: FailoverRow) -> list[str]:
    return [
        str(r.instances),
        f"{r.rate:,.0f}/s",
        f"{r.killed_at_s:.1f} s",
        ",".join(f"i{i}" for i in r.on_node),
        f"{r.no_ingest_s:.2f} s",
        "-" if r.others_pause_s is None else f"{r.others_pause_s:.2f} s",
        f"{r.publisher_pause_s:.2f} s",
        f"{r.tail_s:.2f} s",
        " / ".join(f"{k:,}" for k in r.processed_twice),
        " / ".join(f"{k:,}" for k in r.late),
        str(r.check),
        _load(r.load),
    ]


def print_table(head: Sequence[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)), flush=True)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=40_000, help="backlog size (default 40,000)")
    ap.add_argument("--devices", type=int, default=12_000, help="devices over the six families (12,000)")
    ap.add_argument("--communities", type=int, default=48, help="communities of the devices (48)")
    ap.add_argument("--instances", type=_ints, default=[1, 2, 3], help="instance counts (1,2,3)")
    ap.add_argument("--alert-share", type=float, default=1.0, help="%% of messages changing an alert (1)")
    ap.add_argument("--rate", type=float, default=2000.0, help="msg/s of the failover stream (2,000)")
    ap.add_argument("--no-failover", action="store_true", help="capacity only")
    ap.add_argument("--subscribe", choices=("all", "communities"), default="all",
                    help="the instances' shard.subscribe on the cluster (all)")  # fmt: skip
    ap.add_argument("--html", type=Path, help="write DIR/index.html with the tables")
    ap.add_argument("--keep", type=Path, help="work in DIR and keep it (logs, outboxes, broker data)")
    args = ap.parse_args()
    if not args.instances or min(args.instances) < 1 or max(args.instances) > 3:
        ap.error("--instances: counts from 1 to 3 (the cluster has three nodes)")
    return args


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    args = parse_args()
    cap: list[CapacityRow] = []
    fo: FailoverRow | None = None
    with contextlib.ExitStack() as stack:
        work = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sensord-scale-")))
        work.mkdir(parents=True, exist_ok=True)
        bl = make_backlog(work, args.devices, args.messages, args.communities, args.alert_share)
        print(
            f"backlog: {len(bl.msgs):,} messages, {sum(bl.devices.values()):,} devices, "
            f"{len(bl.devices)} communities, alert share {args.alert_share:g} %",
            flush=True,
        )
        runs: list[tuple[str, int]] = [("mosquitto", 1)] + [("nats", n) for n in args.instances]
        reference: set[str] | None = None
        for kind, n in runs:
            folder = work / f"broker-{kind}-{n}"
            broker = (
                mosquitto(folder)
                if kind == "mosquitto"
                else nats_cluster(folder, list(bl.devices), n, args.subscribe)
            )
            try:
                row, ids = capacity(broker, n, bl, reference)
            finally:
                broker.stop()
            reference = ids if reference is None else reference
            cap.append(row)
            print_table(CAPACITY_HEAD, [capacity_cells(row)])
        n_fo = max(args.instances)
        if not args.no_failover and n_fo >= 2 and reference is not None:
            broker = nats_cluster(work / "b-failover", list(bl.devices), n_fo, args.subscribe)
            try:
                fo = failover(broker, n_fo, bl, args.rate, reference)
            finally:
                broker.stop()
    print(f"\n{len(bl.msgs):,} messages QoS 1, {os.cpu_count()} cores; alert events against Mosquitto's")
    print_table(CAPACITY_HEAD, [capacity_cells(r) for r in cap])
    if fo is not None:
        print(f"\nfailover: node {fo.node} (instance 0's) killed under a steady stream")
        print_table(FAILOVER_HEAD, [failover_cells(fo)])
    if args.html is not None:
        sections = ["<h2>Capacity</h2>", table(CAPACITY_HEAD, [capacity_cells(r) for r in cap])]
        if fo is not None:
            sections += ["<h2>Failover</h2>", table(FAILOVER_HEAD, [failover_cells(fo)])]
        print(f"wrote {write_index(args.html, 'sensord scale benchmark', sections)}")


if __name__ == "__main__":
    main()
