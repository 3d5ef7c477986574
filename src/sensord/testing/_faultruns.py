"""The three fault-injection scenarios, each one function from a work folder and its
size to its figures: the daemon SIGKILLed under load, the sinks down under load, the
broker SIGKILLed under load. Each starts its own Mosquitto, webhook receiver (and
InfluxDB) on free ports and stops them, whatever happens.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import random
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensord._types import AlertEvent
from sensord.replay import Outgoing
from sensord.testing._faultcheck import Findings, event_key, judge
from sensord.testing._faults import Daemon, Publisher, Workload, daemon_config, reference, wait_until
from sensord.testing._servers import (
    InfluxServer,
    MosquittoServer,
    Received,
    WebhookReceiver,
    start_influxdb_v1,
    start_mosquitto,
)

# A SIGKILLed Mosquitto keeps only what it had saved: save on every change, so that what
# it acknowledged survives it (the broker's durability is the deployment's to configure).
DURABLE_BROKER = "autosave_interval 1\nautosave_on_changes true\n"


@dataclass
class Run:
    """One scenario's outcome."""

    name: str
    findings: Findings
    published: int
    acked: int
    exact: bool  # held to the whole reference, not only its life-safety part
    resend_ok: bool = False  # a delivery repeated under its own id is allowed (daemon killed)
    kills: int = 0
    resent: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list, repr=False)  # for a post-mortem
    reference: list[AlertEvent] = field(default_factory=list, repr=False)
    kill_times: list[float] = field(default_factory=list, repr=False)  # wall clock of each kill

    def problems(self) -> list[str]:
        """Every broken promise of the run, in words."""
        return self.findings.problems(exact=self.exact, resend_ok=self.resend_ok) + self.notes

    def row(self) -> dict[str, object]:
        return {"scenario": self.name, "kills": self.kills, "published": self.published,
                "acked": self.acked, "resent": self.resent, **self.findings.row(),
                "seconds": round(self.seconds)}


@dataclass
class _Rig:
    mosquitto: MosquittoServer
    receiver: WebhookReceiver
    influx: InfluxServer | None
    daemon: Daemon
    stream_start: float


@contextlib.contextmanager
def _rig(  # noqa: PLR0913 - the rig's options
    work: Path,
    w: Workload,
    *,
    influx: bool = False,
    broker_conf: str = "",
    webhook_timeout_s: float = 5.0,
    dispatch: dict[str, Any] | None = None,
) -> Iterator[_Rig]:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    mosquitto = start_mosquitto(work / "mosquitto", extra_conf=broker_conf)
    receiver = WebhookReceiver(secret, hang_s=webhook_timeout_s * 3).start()
    server = None
    daemon = None
    try:
        server = start_influxdb_v1(work / "influxdb") if influx else None
        config, http_port = daemon_config(
            work / "daemon",
            broker_port=mosquitto.port,
            registry=w.registry(),
            webhook_url=receiver.url,
            webhook_secret=secret,
            influx_url=server.url if server is not None else None,
            webhook_timeout_s=webhook_timeout_s,
            dispatch=dispatch,
        )
        daemon = Daemon(config, http_port, work / "daemon" / "daemon.log")
        daemon.start()
        wait_until(daemon.ready, 60, "the daemon ready")
        # Stamped in the past (so no reading is in the future of its receive time), and
        # each message's time is unique per device.
        yield _Rig(mosquitto, receiver, server, daemon, time.time() - w.ticks * w.tick_s - 60)
    finally:
        if daemon is not None:
            daemon.stop()
        receiver.set_mode("ok")
        receiver.stop()
        if server is not None:
            server.stop()
        mosquitto.stop()


def _settle(rig: _Rig, done: Callable[[], bool], timeout: float) -> bool:
    return settle(rig.daemon, rig.receiver, done, timeout)


def settle(daemon: Daemon, receiver: WebhookReceiver, done: Callable[[], bool], timeout: float) -> bool:
    """Wait for `done` and an empty outbox, then until deliveries stop for 2 s (a late
    duplicate would show then). False if `done` never held (the judge says what is missing)."""
    with contextlib.suppress(TimeoutError):
        wait_until(daemon.ready, 60, "the daemon ready")
    try:
        wait_until(lambda: done() and daemon.outbox_empty(), timeout, "every expected delivery", every=0.25)
    except TimeoutError:
        return False
    count, still_since = len(receiver.received), time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() - still_since < 2.0 and time.monotonic() < deadline:
        time.sleep(0.2)
        if len(receiver.received) != count:
            count, still_since = len(receiver.received), time.monotonic()
    return True


def _delivered_keys(rig: _Rig) -> set[tuple[str, str, str, str]]:
    return {
        (str(r.body["rule"]), str(r.body["device"]), str(r.body["status"]), str(r.body["startsAt"]))
        for r in rig.receiver.delivered()
    }


def _delivered_ids(rig: _Rig) -> set[str]:
    return {r.headers["webhook-id"] for r in rig.receiver.delivered()}


def kill_under_load(
    rig: _Rig, w: Workload, stream: list[Outgoing], kills: int, rng: random.Random
) -> tuple[Publisher, int, list[float]]:
    """Publish `stream` and SIGKILL (then restart) the daemon at `kills` seeded points of
    it; returns when the publisher is done: (publisher, kills made, wall clock of each)."""
    publisher = Publisher(rig.mosquitto.port, stream, w.wall_tick_s, w.tick_s).start()
    span = w.ticks * w.wall_tick_s
    at = sorted(rng.uniform(0.1 * span, 0.95 * span) for _ in range(kills))
    start = time.monotonic()
    kill_times: list[float] = []
    for when in at:
        wait_until(lambda when=when: time.monotonic() - start >= when, span + 60, "the kill point")
        # Each kill finds a running daemon (ready), then dies at once.
        wait_until(rig.daemon.ready, 60, "the daemon ready before a kill")
        kill_times.append(time.time())
        rig.daemon.kill()
        rig.daemon.start()
    publisher.join(4 * span + 120)
    return publisher, len(kill_times), kill_times


def daemon_kills(work: Path, w: Workload, *, kills: int, seed: int = 1, drain_s: float = 60) -> Run:
    """SIGKILL the daemon `kills` times at seeded random points under load, restarting it
    each time. Judged: every life-safety transition of the reference delivered, none
    invented, no transition under two ids (a resurrected alert shows as a second
    `resolved`)."""
    t0 = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 - reproducible kill points
    # A crash restores from a snapshot older than it (every 10 s by default): alerts
    # acknowledged since then are only in the per-batch checkpoint.
    with _rig(work, w) as rig:
        stream = w.stream(rig.stream_start)
        ref = reference(rig.daemon.config, stream)
        publisher, done, kill_times = kill_under_load(rig, w, stream, kills, rng)
        want = {event_key(e) for e in ref if e.life_safety}
        _settle(rig, lambda: want <= _delivered_keys(rig), drain_s)
        findings = judge(rig.receiver.received, ref)
        return Run("daemon SIGKILL", findings, len(stream), publisher.acked, exact=False, kills=done,
                   resent=publisher.resent, seconds=time.monotonic() - t0,
                   received=list(rig.receiver.received), reference=ref, kill_times=kill_times)


def broker_kills(work: Path, w: Workload, *, kills: int, seed: int = 2, drain_s: float = 60) -> Run:
    """SIGKILL Mosquitto `kills` times under load and start it again on the same port with
    its saved data. The publisher resends what lost its PUBACK. Judged exactly: the
    webhook gets every event of the reference, once per id, and nothing else."""
    t0 = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 - reproducible kill points
    with _rig(work, w, broker_conf=DURABLE_BROKER) as rig:
        stream = w.stream(rig.stream_start)
        ref = reference(rig.daemon.config, stream)
        publisher = Publisher(rig.mosquitto.port, stream, w.wall_tick_s, w.tick_s).start()
        span = w.ticks * w.wall_tick_s
        at = sorted(rng.uniform(0.1 * span, 0.9 * span) for _ in range(kills))
        start = time.monotonic()
        for when in at:
            wait_until(lambda when=when: time.monotonic() - start >= when, span + 60, "the kill point")
            rig.mosquitto.kill()
            time.sleep(rng.uniform(0.2, 2.0))  # down for a moment: publisher and daemon reconnect
            rig.mosquitto.start()
        publisher.join(4 * span + 120)
        want = {e.event_id for e in ref}
        _settle(rig, lambda: want <= _delivered_ids(rig), drain_s)
        findings = judge(rig.receiver.received, ref)
        return Run("broker SIGKILL", findings, len(stream), publisher.acked, exact=True, kills=kills,
                   resent=publisher.resent, seconds=time.monotonic() - t0,
                   received=list(rig.receiver.received), reference=ref)


def sinks_down(work: Path, w: Workload, *, mode: str, outage_s: float, drain_s: float = 90) -> Run:
    """Webhook answering `mode` (503 or hang) and InfluxDB stopped for `outage_s` under
    load; the load ends before they come back, so every event not yet delivered then was
    waiting. Judged exactly, plus order per fingerprint and life-safety first after recovery."""
    t0 = time.monotonic()
    lead_s = 3.0
    ticks = max(w.ticks, int((lead_s + outage_s) / w.wall_tick_s))
    w = dataclasses.replace(w, ticks=ticks)
    with _rig(work, w, influx=True, webhook_timeout_s=2.0) as rig:
        assert rig.influx is not None
        stream = w.stream(rig.stream_start)
        ref = reference(rig.daemon.config, stream)
        publisher = Publisher(rig.mosquitto.port, stream, w.wall_tick_s, w.tick_s).start()
        time.sleep(lead_s)  # some events delivered before the outage
        down_at = time.monotonic()
        rig.receiver.set_mode(mode)
        rig.influx.stop()
        publisher.join(4 * ticks * w.wall_tick_s + 120)
        # Recover only once the daemon has committed everything published: all waiting.
        wait_until(lambda: rig.daemon.processed() >= len(stream), 120, "the daemon to take every message")
        wait_until(lambda: time.monotonic() - down_at >= outage_s, outage_s + 1, "the end of the outage")
        rig.influx.start()
        recovered_at = time.monotonic()
        rig.receiver.set_mode("ok")
        want = {e.event_id for e in ref}
        _settle(rig, lambda: want <= _delivered_ids(rig), drain_s)
        findings = judge(rig.receiver.received, ref, recovered_at=recovered_at)
        run = Run(f"sinks down ({mode})", findings, len(stream), publisher.acked, exact=True,
                  seconds=time.monotonic() - t0, received=list(rig.receiver.received), reference=ref)
        run.notes.extend(_influx_missing(rig.influx, ref))
        return run


def _influx_missing(influx: InfluxServer, ref: list[AlertEvent]) -> list[str]:
    """Reference events absent from InfluxDB after recovery (points are keyed by time and
    tags, so a repeated write is not a second point)."""
    deadline = time.monotonic() + 60
    want = {e.event_id for e in ref}
    got: set[str] = set()
    while time.monotonic() < deadline:
        rows = influx.rows('SELECT "event_id" FROM "sensord_alert"')
        got = {str(r["event_id"]) for r in rows}
        if want <= got:
            return []
        time.sleep(0.5)
    return [f"{len(want - got)} of {len(want)} events never written to InfluxDB"]
