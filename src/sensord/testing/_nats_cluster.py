"""A three-node nats-server cluster with MQTT, for failover tests and the benchmark:
each node on free loopback ports (MQTT, NATS clients, routes, monitoring) in its own
folder, JetStream clustered, the MQTT streams and consumers replicated on every node.

The settings are those of `config/nats-cluster.conf` (the README's "Clustered broker"
section says why each one is needed); `mqtt_conf` adds to them.
None of this needs pytest.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx

from sensord.testing._servers import NatsServer, free_port

# The `mqtt` settings of config/nats-cluster.conf (a unit test keeps the two equal; the
# file says why each is needed): the MQTT streams and each subscription's consumer on all
# three nodes, on disk; a 4 s ack_wait, which sensord's broker.redelivery_wait_s (6 s in
# the tests) must exceed; room for what arrives while sensord gathers after a failover.
CLUSTER_MQTT = """\
  stream_replicas: 3
  consumer_replicas: 3
  consumer_memory_storage: false
  ack_wait: "4s"
  max_ack_pending: 20000
"""
DEFAULT_MAX_ACK_PENDING = 20000


@dataclass
class ClusterNode:
    """One node: its server (MQTT on `server.port`) and its route and monitoring ports."""

    server: NatsServer
    route_port: int
    http_port: int

    @property
    def mqtt_port(self) -> int:
        return self.server.port

    @property
    def name(self) -> str:
        return f"sensord-test-{self.server.port}"

    def running(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def jsz(self, timeout: float = 2) -> dict[str, Any]:
        """This node's /jsz with accounts, streams and consumers: who leads what, and
        what each consumer holds. Raises httpx.HTTPError or ValueError when it cannot."""
        r = httpx.get(
            f"http://127.0.0.1:{self.http_port}/jsz",
            params={"accounts": "true", "streams": "true", "consumers": "true"},
            timeout=timeout,
        )
        info: dict[str, Any] = r.json()
        return info

    def healthy(self) -> bool:
        """Caught up: see `health`."""
        return self.health() == "ok"

    def health(self) -> str:
        """`ok` once this node is current with the JetStream meta leader, every stream
        and consumer has a leader, and those this node leads have all their replicas
        current (only a leader knows); else the first thing that is not. The
        retained-message consumers (one per node, idle) are left out: after a restart
        nats-server 2.9.10 can report an idle consumer's replica behind for minutes,
        which its full /healthz then repeats, although nothing is waiting in it."""
        base = f"http://127.0.0.1:{self.http_port}"
        try:
            r = httpx.get(f"{base}/healthz", params={"js-server-only": "true"}, timeout=2)
            if r.status_code != 200:
                return str(r.json().get("error", r.text))
            info = self.jsz()
        except (httpx.HTTPError, ValueError) as exc:
            return f"no answer ({type(exc).__name__})"
        for account in info.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                lagging = _lagging(stream["name"], stream.get("cluster"), self.name)
                if lagging:
                    return lagging
                if stream["name"] == "$MQTT_rmsgs":
                    continue
                for consumer in stream.get("consumer_detail") or []:
                    what = f"{stream['name']} > {consumer['name']}"
                    lagging = _lagging(what, consumer.get("cluster"), self.name)
                    if lagging:
                        return lagging
        return "ok"


def _lagging(what: str, cluster: dict[str, Any] | None, node: str) -> str:
    if not cluster or not cluster.get("leader"):
        return f"{what} has no leader"
    if cluster["leader"] != node:
        return ""
    behind = [r["name"] for r in cluster.get("replicas") or [] if not r.get("current")]
    return f"{what}: replica on {behind[0]} is not current" if behind else ""


@dataclass
class NatsCluster:
    """Three (or `size`) nats-server nodes routed to each other, JetStream clustered."""

    workdir: Path
    size: int = 3
    mqtt_conf: str = ""
    name: str = "sensord-test"
    # CLUSTER_MQTT's, or lower for a session with more than three consumers: nats-server
    # refuses the subscriptions past 65535 summed per session (`sensord check` says so).
    max_ack_pending: int = DEFAULT_MAX_ACK_PENDING
    nodes: list[ClusterNode] = field(default_factory=list)

    def start(self, timeout: float = 60, attempts: int = 3) -> NatsCluster:
        """Start every node and wait until each reports itself healthy. A port found free
        can be taken by another process before its node binds it (the route ports are
        all chosen before the first node starts): then the cluster starts over on new
        ports, in emptied folders."""
        for attempt in range(attempts):
            try:
                return self._start(timeout)
            except RuntimeError as exc:
                if "address already in use" not in str(exc) or attempt == attempts - 1:
                    raise
                self.nodes.clear()
                for i in range(self.size):
                    shutil.rmtree(self.workdir / f"node{i}", ignore_errors=True)
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> NatsCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        routes = [free_port() for _ in range(self.size)]
        # Every node lists every route, itself included (it skips its own), so all nodes
        # have the same configuration apart from their ports.
        route_urls = ", ".join(f"nats-route://127.0.0.1:{p}" for p in routes)
        for i, route_port in enumerate(routes):
            http_port = free_port()
            server = NatsServer(
                self.workdir / f"node{i}",
                free_port(),
                mqtt_conf=CLUSTER_MQTT.replace(
                    f"max_ack_pending: {DEFAULT_MAX_ACK_PENDING}", f"max_ack_pending: {self.max_ack_pending}"
                )
                + self.mqtt_conf,
                extra_conf=(
                    f"http: 127.0.0.1:{http_port}\n"
                    f"cluster {{\n  name: {self.name}\n  listen: 127.0.0.1:{route_port}\n"
                    f"  routes: [{route_urls}]\n}}\n"
                ),
            )
            self.nodes.append(ClusterNode(server, route_port, http_port))
        try:
            for node in self.nodes:
                node.server.start()
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def mqtt_ports(self) -> list[int]:
        return [n.mqtt_port for n in self.nodes]

    def node_on(self, port: int) -> ClusterNode:
        """The node whose MQTT listener is `port`."""
        for node in self.nodes:
            if node.mqtt_port == port:
                return node
        raise KeyError(f"no node of the cluster listens for MQTT on {port}")

    def wait_healthy(self, timeout: float = 60) -> float:
        """Wait until every running node is healthy; returns the seconds it took."""
        t0 = time.monotonic()
        while not all(n.healthy() for n in self.nodes if n.running()):
            if time.monotonic() - t0 > timeout:
                states = {n.name: n.health() for n in self.nodes if n.running()}
                raise TimeoutError(f"the NATS cluster was not healthy within {timeout:.0f}s: {states}")
            time.sleep(0.1)
        return time.monotonic() - t0

    def leads(self) -> dict[str, list[str]]:
        """What each node leads, by node name, as a running node's /jsz reports it:
        `meta` (the JetStream meta group), `stream:NAME`, `consumer:STREAM/NAME`."""
        out: dict[str, list[str]] = {n.name: [] for n in self.nodes}
        for node in self.nodes:
            if not node.running():
                continue
            try:
                info = node.jsz()
            except (httpx.HTTPError, ValueError):
                continue
            _add_leads(out, info)
            return out
        return out

    def kill(self, node: ClusterNode) -> None:
        """SIGKILL one node, as a crash or a power cut would."""
        node.server.kill()

    def restart(self, node: ClusterNode) -> None:
        """Start a stopped node again on its ports with its data."""
        node.server.start()

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.server.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _add_leads(out: dict[str, list[str]], info: dict[str, Any]) -> None:
    meta = (info.get("meta_cluster") or {}).get("leader")
    if meta:
        out.setdefault(meta, []).append("meta")
    for account in info.get("account_details") or []:
        for stream in account.get("stream_detail") or []:
            leader = (stream.get("cluster") or {}).get("leader")
            if leader:
                out.setdefault(leader, []).append(f"stream:{stream['name']}")
            for consumer in stream.get("consumer_detail") or []:
                leader = (consumer.get("cluster") or {}).get("leader")
                if leader:
                    out.setdefault(leader, []).append(f"consumer:{stream['name']}/{consumer['name']}")


def start_nats_cluster(
    workdir: Path, *, size: int = 3, mqtt_conf: str = "", max_ack_pending: int = DEFAULT_MAX_ACK_PENDING
) -> NatsCluster:
    """Start a `size`-node NATS cluster with MQTT (see CLUSTER_MQTT) on free ports."""
    return NatsCluster(workdir, size, mqtt_conf, max_ack_pending=max_ack_pending).start()
