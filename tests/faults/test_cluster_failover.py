"""Broker failover against a real three-node nats-server cluster: the short version of
`bench/failover.py`. The daemon lists every node in `broker.hosts`; the node it is
connected to is SIGKILLed under steady QoS 1 load published through another node."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sensord.testing import Workload, _nats_cluster, cluster_failover, free_port

pytestmark = [pytest.mark.faults, pytest.mark.integration]

# ~300 devices in three families, one reading each per tick (600 msg/s), 20 s of load.
CI_LOAD = Workload(wristbands=150, fire=50, bins=100, ticks=40, wall_tick_s=0.5)


def test_killed_cluster_node_loses_and_repeats_no_alert(tmp_path: Path) -> None:
    """The cluster node the daemon is connected to is SIGKILLed under QoS 1 load (and
    stays down): the daemon fails over to another node with its session, and every message the cluster
    acknowledged to the publisher produces exactly the alerts of the reference (an
    offline replay of the published stream): none missing, none extra, none under two
    webhook ids, and every event but an ack's resolution under the reference's own id
    (an ack delivered later relative to the readings is dated later, README)."""
    run = cluster_failover(tmp_path, CI_LOAD, kills=1, seed=4, down_s=None)  # it stays down
    problems = run.problems()
    assert run.kills == 1
    assert run.acked >= run.published
    assert run.failovers == 1
    assert run.findings.expected_ls > 30, "the workload raised too few life-safety alerts to judge"
    assert not problems, f"{run.row()}\n{[k.row() for k in run.per_kill]}\n" + "\n".join(problems)


def test_killed_daemon_on_the_cluster_loses_and_repeats_no_alert(tmp_path: Path) -> None:
    """The daemon itself is SIGKILLed under QoS 1 load on the cluster and started again 2 s
    later: the cluster redelivers what it had not acknowledged (an ack_wait after it sent
    it, behind newer messages, which the daemon gathers for broker.redelivery_wait_s), and
    the alerts are exactly the reference's: none missing, none extra, none under two ids
    (one delivered again under its own id is allowed: the daemon may have died between a
    webhook's answer and recording it)."""
    run = cluster_failover(tmp_path, CI_LOAD, kills=1, seed=4, down_s=2.0, target="daemon")
    problems = run.problems()
    assert run.kills == 1
    assert run.acked >= run.published
    assert run.findings.expected_ls > 30, "the workload raised too few life-safety alerts to judge"
    assert not problems, f"{run.row()}\n{[k.row() for k in run.per_kill]}\n" + "\n".join(problems)


def test_cluster_starts_over_when_a_port_is_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A port chosen free but taken before its node binds it (another process got it in
    between) makes the cluster start over on new ports instead of failing the test that
    wanted it: the first route port handed out is held by a listening socket here."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    taken = [held.getsockname()[1]]

    def port() -> int:
        return taken.pop() if taken else free_port()

    monkeypatch.setattr(_nats_cluster, "free_port", port)
    try:
        with _nats_cluster.NatsCluster(tmp_path / "c").start() as cluster:
            assert len(cluster.nodes) == 3
            assert all(n.running() for n in cluster.nodes)
            assert held.getsockname()[1] not in {n.route_port for n in cluster.nodes}
    finally:
        held.close()
