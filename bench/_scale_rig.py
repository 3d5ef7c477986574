"""The scale benchmark's rig (bench/scale.py): the brokers (one Mosquitto, or the
three-node NATS cluster of sensord.testing), `sensord run` instances as real processes
with `shard: {index, count}`, a sampler of their /healthz, a steady QoS 1 publisher in
its own process, and the alert events read back from each instance's outbox."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from _backlog import BENCH_CONF
from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings, parse_settings
from sensord.ingest import MqttSource
from sensord.shard import NATS_SESSION_ACK_LIMIT, assignment, instance_filters, jetstream_consumers
from sensord.testing import free_port, start_mosquitto
from sensord.testing._nats_cluster import DEFAULT_MAX_ACK_PENDING, NatsCluster, start_nats_cluster

ROOT = Path(__file__).resolve().parent.parent


# -- brokers -------------------------------------------------------------------------------
@dataclass
class Broker:
    """One broker (Mosquitto) or a cluster (NATS): its MQTT ports, node by node."""

    kind: str  # "mosquitto" | "nats"
    ports: list[int]
    _stop: Any
    _cluster: NatsCluster | None = None
    subscribe: str = "communities"  # the instances' shard.subscribe on this broker

    def kill(self, port: int) -> None:
        """SIGKILL the node listening on `port` (a crash or a power cut)."""
        assert self._cluster is not None, "only a cluster node is killed"
        self._cluster.kill(self._cluster.node_on(port))

    def stop(self) -> None:
        self._stop()

    def waiting(self) -> int | None:
        """NATS: the messages not yet acknowledged by a session (pending or delivered)
        over the MQTT sessions' consumers, as a running node sees them; None for
        Mosquitto, which keeps no such count."""
        if self._cluster is None:
            return None
        for node in self._cluster.nodes:
            if not node.running():
                continue
            try:
                info = node.jsz(timeout=5)
            except (httpx.HTTPError, ValueError):
                continue
            left = 0
            for account in info.get("account_details") or []:
                for stream in account.get("stream_detail") or []:
                    if stream["name"] != "$MQTT_msgs":
                        continue
                    for c in stream.get("consumer_detail") or []:
                        left += int(c.get("num_pending", 0)) + int(c.get("num_ack_pending", 0))
            return left
        return None


def mosquitto(work: Path) -> Broker:
    server = start_mosquitto(work / "mosquitto", extra_conf=BENCH_CONF)
    return Broker("mosquitto", [server.port], server.stop)


def nats_cluster(
    work: Path, communities: Sequence[str] = (), instances: int = 1, subscribe: str = "all"
) -> Broker:
    """The three-node cluster, its mqtt.max_ack_pending lowered where the busiest of
    `instances` sharded instances over `communities` would otherwise have subscriptions
    refused (nats-server sums it over a session's consumers, at most 65535)."""
    settings = parse_settings({"shard": {"index": 0, "count": instances, "subscribe": subscribe}},
                              source="bench", config_dir=ROOT)  # fmt: skip
    owners = assignment(communities, instances)
    most = max(
        (jetstream_consumers(instance_filters(settings, [c for c, o in owners.items() if o == i])
                             or settings.broker.filters)
         for i in range(instances)),
        default=0,
    )  # fmt: skip
    limit = min(DEFAULT_MAX_ACK_PENDING, NATS_SESSION_ACK_LIMIT // max(most, 1))
    print(f"  nats cluster for {instances} (shard.subscribe: {subscribe}): mqtt.max_ack_pending {limit} "
          f"({most} consumers on the busiest instance)", flush=True)  # fmt: skip
    cluster = start_nats_cluster(work / "nats", max_ack_pending=limit)
    return Broker("nats", cluster.mqtt_ports, cluster.stop, cluster, subscribe)


# -- the registry --------------------------------------------------------------------------
def write_registry(path: Path, doc: dict[str, Any]) -> None:
    """The registry document as YAML, line by line (yaml.dump takes seconds at 12,000
    devices; these keys and values need no quoting but the building, a string)."""
    with path.open("w", encoding="utf-8") as out:
        out.write("devices:\n")
        out.writelines(
            f"  {dev}:\n    family: {e['family']}\n    community: {e['community']}\n"
            f'    grid: {e["grid"]}\n    building: "{e["building"]}"\n'
            for dev, e in doc["devices"].items()
        )


# -- the instances -------------------------------------------------------------------------
@dataclass
class Instance:
    """`sensord run` with `shard: {index, count}`, its own state_dir and HTTP port, and
    `broker.hosts` listing every node, its own node first (instance i: node i mod n)."""

    folder: Path
    index: int
    count: int
    ports: Sequence[int]
    registry: Path
    client_id: str
    redelivery_wait_s: float = 0.0
    subscribe: str = "communities"
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    _log_from: int = 0

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        k = self.index % len(self.ports)
        hosts = [{"host": "127.0.0.1", "port": p} for p in [*self.ports[k:], *self.ports[:k]]]
        cfg = {
            "broker": {
                "hosts": hosts,
                "client_id": self.client_id,
                "redelivery_wait_s": self.redelivery_wait_s,
            },
            "registry": str(self.registry),
            "rules_dir": str(ROOT / "rules"),
            "state_dir": str(self.folder / "state"),
            "http": {"host": "127.0.0.1", "port": self.http_port},
            "log": {"format": "json", "level": "INFO"},
            "shard": {"index": self.index, "count": self.count, "subscribe": self.subscribe},
            # The backlog's readings are an hour old, and runs pause differently (a fresh
            # cluster takes seconds to create a session's consumers): the live-only idle
            # clock would move event time to the wall clock in a pause and make alerts
            # differ from run to run. Off, every run is judged by the readings' own times.
            "alerts": {"idle_tick_s": 86400},
        }
        self.config = self.folder / "sensord.yaml"
        self.config.write_text(yaml.safe_dump(cfg))
        self.url = f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        log_path = self.folder / "daemon.log"
        self._log_from = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensord", "run", "-c", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.folder,
            )  # fmt: skip

    def started_at(self) -> float | None:
        """When this start began to connect to the broker, its registry and state loaded
        (time.time(), from its log): a broker that has a backlog for the session sends it
        right after the CONNACK, before the subscriptions are renewed and the connection
        is logged."""
        with (self.folder / "daemon.log").open("rb") as log:
            log.seek(self._log_from)
            for line in log:
                if b'"sensord starting"' in line:
                    return float(orjson.loads(line)["ts"])
        return None

    def metric(self, name: str) -> float:
        """The sum of a metric's samples on /metrics (0 if absent or unreachable)."""
        try:
            text = httpx.get(f"{self.url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def health(self, client: httpx.Client | None = None) -> dict[str, Any]:
        try:
            get = client.get if client is not None else httpx.get
            body: dict[str, Any] = orjson.loads(get(f"{self.url}/healthz", timeout=2).content)
        except (httpx.HTTPError, orjson.JSONDecodeError):
            return {}
        return body

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def events(self) -> list[tuple[str, str, str, float]]:
        """(event_id, fingerprint, status, starts_at) of every alert event in the outbox
        (kept: no sink is configured, so none is ever delivered and forgotten)."""
        db = sqlite3.connect(self.folder / "state" / "outbox.sqlite3")
        try:
            rows = db.execute("SELECT event_id, body FROM events").fetchall()
        finally:
            db.close()
        out = []
        for event_id, body in rows:
            b = orjson.loads(body)
            out.append((event_id, b["fingerprint"], b["status"], float(b["starts_at"])))
        return out


def start_all(instances: Sequence[Instance], timeout: float = 180) -> None:
    """Start every instance at once; wait until each is connected and subscribed."""
    for inst in instances:
        inst.start()
    deadline = time.time() + timeout
    for inst in instances:
        while inst.health().get("broker_connected") is not True:
            assert inst.proc is not None
            if inst.proc.poll() is not None or time.time() > deadline:
                stop_all(instances)
                raise RuntimeError(f"instance {inst.index} did not connect; see {inst.folder / 'daemon.log'}")
            time.sleep(0.1)


def stop_all(instances: Sequence[Instance]) -> None:
    for inst in instances:
        with contextlib.suppress(Exception):
            inst.stop()


# -- sampling /healthz ---------------------------------------------------------------------
@dataclass
class Trace:
    """One instance's samples: each change of its processed count as (time.time(), count)."""

    changes: list[tuple[float, int]] = field(default_factory=list)
    node: str | None = None

    @property
    def processed(self) -> int:
        return self.changes[-1][1] if self.changes else 0

    def reached(self, n: int) -> float | None:
        """When the processed count first reached n."""
        return next((t for t, c in self.changes if c >= n), None)


class Sampler:
    """Polls every instance's /healthz every `interval` s on a thread of its own."""

    def __init__(self, instances: Sequence[Instance], interval: float = 0.02) -> None:
        self.instances = instances
        self.traces = [Trace() for _ in instances]
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                for inst, tr in zip(self.instances, self.traces, strict=True):
                    h = inst.health(client)
                    if not h:
                        continue
                    now = time.time()
                    tr.node = h.get("broker") or tr.node
                    n = int(h.get("messages_processed", 0))
                    if n != tr.processed:
                        tr.changes.append((now, n))
                self._stop.wait(self.interval)

    def wait(self, expected: Sequence[int], broker: Broker, timeout: float, settle_s: float = 2.0) -> float:
        """Until every instance has processed its expected count, nothing has changed
        for `settle_s` and the broker holds nothing for them; returns the time of the
        last change. Not the moment the counts reach what was published: a count includes
        the messages processed twice (a broker redelivers what was not acknowledged
        within its ack_wait), so it gets there before the last original is processed."""
        deadline = time.time() + timeout
        while True:
            now = time.time()
            if all(tr.processed >= e for tr, e in zip(self.traces, expected, strict=True)):
                last = max(tr.changes[-1][0] for tr in self.traces if tr.changes)
                if now - last >= settle_s:
                    waiting = broker.waiting()
                    if waiting is None or waiting == 0:
                        return last
            if now > deadline:
                got = [tr.processed for tr in self.traces]
                raise TimeoutError(f"instances processed {got} of {list(expected)} within {timeout:.0f}s")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def longest_gap(changes: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """The longest time between two changes of the processed count within [start, end]."""
    ts = [start, *(t for t, _ in changes if start < t < end), end]
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


# -- a steady publisher (its own process) --------------------------------------------------
async def _stream(port: int, msgs: list[tuple[str, bytes]], rate: float, counts: Any) -> None:
    client_id = f"scale-pub-{os.getpid()}"
    settings = BrokerSettings(port=port, client_id=client_id, subscriptions=(), clean_session=True)
    pub = MqttSource(settings, None, Metrics(), BatchSettings())
    runner = asyncio.create_task(pub.run())
    await asyncio.wait_for(pub.connected.wait(), 30)
    acked, last_ack, gap = 0, time.time(), 0.0

    def on_ack(_: asyncio.Task[None]) -> None:
        nonlocal acked, last_ack, gap
        now = time.time()
        gap, last_ack, acked = max(gap, now - last_ack), now, acked + 1

    tasks: set[asyncio.Task[None]] = set()
    sent, t0 = 0, time.perf_counter()
    while sent < len(msgs):
        due = min(len(msgs), int(rate * (time.perf_counter() - t0)) + 1)
        while sent < due:
            task = asyncio.create_task(pub.publish(*msgs[sent], 1))
            task.add_done_callback(on_ack)
            task.add_done_callback(tasks.discard)
            tasks.add(task)
            sent += 1
        counts[0], counts[1] = sent, acked
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    counts[0], counts[1], counts[2], counts[3] = sent, acked, gap, time.time()
    await pub.aclose()
    runner.cancel()


def _publisher(port: int, msgs: list[tuple[str, bytes]], rate: float, counts: Any) -> None:
    asyncio.run(_stream(port, msgs, rate, counts))


class Stream:
    """Publishes `msgs` QoS 1 at `rate` msg/s through one node, in a process of its own so
    its CPU does not slow the sampling. `counts`: sent, acknowledged, the longest wait
    between two acknowledgements (s), and time.time() once all were acknowledged."""

    def __init__(self, port: int, msgs: list[tuple[str, bytes]], rate: float) -> None:
        ctx = mp.get_context("spawn")
        self.counts = ctx.Array("d", 4)
        self.proc = ctx.Process(target=_publisher, args=(port, msgs, rate, self.counts), daemon=True)
        self.proc.start()

    def join(self, timeout: float) -> None:
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            raise TimeoutError(f"the publisher did not finish within {timeout:.0f}s: {self.counts[:]}")
