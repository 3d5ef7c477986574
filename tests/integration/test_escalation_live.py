"""Escalation with the daemon as a process (issue 10, point 3 and the restart acceptance):
an SOS nobody accepts reaches the policy's second step at its timeout on event time, and
a restart (SIGTERM or SIGKILL) between dispatch and the step loses neither the work
order nor its timer, nor sends the step twice."""

from __future__ import annotations

import base64
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sensord.testing import InfluxServer, MosquittoServer, WebhookReceiver
from sensord.workorders import WorkOrder

from ._helpers import publish, ready, start_daemon, stop_daemon, topic, wait_for, write_config

pytestmark = pytest.mark.integration

STEP_S = 6.0  # the first step's ack_timeout
GRACE_S = 0.5  # the idle clock's grace: the event clock trails the wall clock by this
REGISTRY: dict[str, Any] = {
    "devices": {"wb-001": {"family": "wristband", "community": "maple", "grid": "g1", "building": "3"}}
}


def _secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    with WebhookReceiver(_secret()) as desk, WebhookReceiver(_secret()) as doctor:
        yield desk, doctor


def configure(
    tmp: Path, port: int, desk: WebhookReceiver, doctor: WebhookReceiver, influx: dict[str, Any] | None = None
) -> tuple[Path, int]:
    config, mport = write_config(tmp, broker_port=port, registry=REGISTRY, influx=influx)
    channels = {}
    for name, r in (("desk", desk), ("doctor", doctor)):
        (tmp / f"{name}.whsec").write_text(r.secret)
        channels[name] = [{"type": "webhook", "url": r.url, "secret": {"file": str(tmp / f"{name}.whsec")}}]
    spec = {
        "receivers": [{"name": n, "sensitive": True, "channels": c} for n, c in channels.items()],
        "escalations": {"sos": {"steps": [{"notify": ["desk"], "ack_timeout": f"{STEP_S:g}s"},
                                          {"notify": ["doctor"]}]}},
        "route": {"receiver": "desk", "escalation": "sos"},
    }  # fmt: skip
    (tmp / "dispatch.yaml").write_text(yaml.safe_dump(spec))
    cfg = yaml.safe_load(config.read_text())
    cfg["dispatch"] = "dispatch.yaml"
    cfg["alerts"] = {"idle_tick_s": 0.2, "clock_grace_s": GRACE_S, "snapshot_every_s": 1}
    config.write_text(yaml.safe_dump(cfg))
    return config, mport


def work_order(tmp: Path) -> WorkOrder:
    """The one work order, as committed (read as another process would)."""
    db = sqlite3.connect(f"file:{tmp / 'state' / 'outbox.sqlite3'}?mode=ro", uri=True)
    try:
        [(body,)] = db.execute("SELECT body FROM work_orders").fetchall()
    finally:
        db.close()
    return WorkOrder.decode(bytes(body))


def sos_now(port: int) -> float:
    ts = round(time.time(), 3)
    publish(port, [(topic("wristband", "wb-001"), {"sos": True, "heart_rate": 71, "ts": ts})])
    return ts


def test_unaccepted_sos_reaches_the_second_step_at_its_timeout(
    tmp_path: Path, mosquitto: MosquittoServer, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    """The doctor (step 2) is told once, STEP_S after the SOS on event time (history to the
    millisecond), and on the wall clock within the idle clock's grace plus 1 s."""
    desk, doctor = receivers
    config, mport = configure(tmp_path, mosquitto.port, desk, doctor)
    proc = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        ts = sos_now(mosquitto.port)
        wait_for(lambda: len(desk.received) == 1, 10, "the desk's message")
        wait_for(lambda: len(doctor.received) == 1, STEP_S + 10, "the doctor's escalation")
        arrived = time.time()
        time.sleep(1.0)  # a second escalation message would arrive by now
    finally:
        stop_daemon(proc)
    assert len(doctor.received) == 1
    assert "升级·第2级" in doctor.received[0].body["title"]
    assert ts + STEP_S - 1 <= arrived <= ts + STEP_S + GRACE_S + 1
    wo = work_order(tmp_path)
    [step] = [h for h in wo.history if h.action == "escalated"]
    assert step.at == pytest.approx(ts + STEP_S, abs=1e-3)
    assert wo.state.value == "dispatched"


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_a_restart_before_the_step_keeps_the_work_order_and_its_timer(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    receivers: tuple[WebhookReceiver, WebhookReceiver],
    how: str,
) -> None:
    """Stopped (SIGTERM) or killed (SIGKILL) two seconds after dispatch and started again,
    the daemon restores the work order and takes the step once, at its time."""
    desk, doctor = receivers
    config, mport = configure(tmp_path, mosquitto.port, desk, doctor)
    proc = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        ts = sos_now(mosquitto.port)
        wait_for(lambda: len(desk.received) == 1, 10, "the desk's message")
        time.sleep(1.0)
        if how == "sigkill":
            proc.kill()
            proc.wait()
        else:
            stop_daemon(proc)
        assert work_order(tmp_path).state.value == "dispatched"  # committed before the stop
        proc = start_daemon(config, tmp_path / "daemon.log")
        wait_for(lambda: len(doctor.received) >= 1, STEP_S + 20, "the doctor's escalation after restart")
        time.sleep(1.5)
    finally:
        stop_daemon(proc)
    assert proc.returncode is not None
    assert len(doctor.received) == 1
    assert len({r.body["id"] for r in desk.received}) == 1  # the desk's message was not sent anew
    [step] = [h for h in work_order(tmp_path).history if h.action == "escalated"]
    assert step.at == pytest.approx(ts + STEP_S, abs=1e-3)


def test_work_order_changes_are_points_in_influxdb(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    influxdb_v1: InfluxServer,
    receivers: tuple[WebhookReceiver, WebhookReceiver],
) -> None:
    """The work order's opening and its escalation step land in InfluxDB as
    `sensord_work_orders` points, with the work order's id, action and age."""
    desk, doctor = receivers
    influx = {"url": influxdb_v1.url, "api": "v1", "database": "sensord"}
    config, mport = configure(tmp_path, mosquitto.port, desk, doctor, influx)
    proc = start_daemon(config, tmp_path / "daemon.log")
    query = 'SELECT "action", "work_order", "age_s", "community" FROM "sensord_work_orders"'
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        sos_now(mosquitto.port)
        wait_for(lambda: len(influxdb_v1.rows(query)) >= 2, STEP_S + 20, "two work-order points")
    finally:
        stop_daemon(proc)
    rows = influxdb_v1.rows(query)
    wo = work_order(tmp_path)
    assert [(r["action"], r["work_order"], r["community"]) for r in rows] == [
        ("opened", wo.id, "maple"), ("escalated", wo.id, "maple")
    ]
    assert [r["age_s"] for r in rows] == [0, pytest.approx(STEP_S, abs=1e-3)]
