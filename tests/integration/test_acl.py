"""The shipped broker ACL and sensord together keep acknowledgements with the dispatch
side (issue 8, item 10): a private Mosquitto with a password file and
`config/mosquitto.acl` as shipped, the daemon as a process, devices and the dispatch side
as `mosquitto_pub` clients with their own logins."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from sensord.testing import MosquittoServer, WebhookReceiver, start_mosquitto

from ._helpers import metrics, ready, start_daemon, stop_daemon, wait_for, wristbands, write_config

ROOT = Path(__file__).resolve().parents[2]
T0 = time.time() - 60
LOGINS = {"sensord": "pw-sensord", "dispatch": "pw-dispatch", "wb-000": "pw-wb0", "wb-001": "pw-wb1"}


def acl_broker(tmp: Path) -> MosquittoServer:
    """Mosquitto with logins for sensord, the dispatch side and two wristbands, and the
    shipped ACL file unchanged."""
    pwfile = tmp / "passwd"
    pwfile.write_text("".join(f"{u}:{p}\n" for u, p in LOGINS.items()))
    subprocess.run(["mosquitto_passwd", "-U", str(pwfile)], check=True)
    acl = ROOT / "config" / "mosquitto.acl"
    conf = f"allow_anonymous false\npassword_file {pwfile}\nacl_file {acl}\n"
    return start_mosquitto(tmp / "mosquitto", extra_conf=conf)


def send(port: int, user: str, topic: str, body: dict[str, Any]) -> None:
    """Publish at QoS 1 as `user`; returns after the broker's PUBACK (Mosquitto also
    answers a publish its ACL denies with PUBACK, and drops it)."""
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", LOGINS[user],
         "-i", f"{user}-{time.monotonic_ns()}", "-q", "1", "-t", topic, "-m", orjson.dumps(body).decode()],
        check=True,
        timeout=10,
    )  # fmt: skip


def test_only_the_dispatch_side_can_acknowledge(
    tmp_path: Path, webhook_receiver: WebhookReceiver, webhook_secret: str
) -> None:
    """A device cannot close its own SOS: its ack on the dispatch topics is dropped by the
    broker, its ack on its own topic is rejected by sensord (`ack_on_device_topic`), its
    reading on another device's topic is dropped; the dispatch side's ack closes the SOS
    and names who acted."""
    broker = acl_broker(tmp_path)
    config, mport = write_config(
        tmp_path,
        broker_port=broker.port,
        registry=wristbands(2),
        webhook_url=webhook_receiver.url,
        webhook_secret=webhook_secret,
    )
    cfg = yaml.safe_load(config.read_text())
    (tmp_path / "broker-password").write_text(LOGINS["sensord"])
    cfg["broker"].update(username="sensord", password={"file": str(tmp_path / "broker-password")})
    config.write_text(yaml.safe_dump(cfg))
    proc = start_daemon(config, tmp_path / "daemon.log")
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        port = broker.port
        send(port, "wb-000", "sensord/maple/wristband/wb-000/telemetry", {"sos": True, "ts": T0})
        wait_for(lambda: len(webhook_receiver.delivered()) >= 1, 20, "the SOS at the webhook")

        forged = {"rule": "wristband_sos", "by": "wb-000 itself"}
        send(port, "wb-000", "sensord-dispatch/ack/maple/wristband/wb-000", forged)
        send(port, "wb-000", "sensord/maple/wristband/wb-000/ack", forged)
        send(port, "wb-000", "sensord/maple/bin/bin-1/telemetry", {"fill_pct": 99.0, "ts": T0 + 1})
        send(port, "wb-001", "sensord/maple/wristband/wb-000/telemetry", {"fall": True, "ts": T0 + 2})
        rejected = 'sensord_rejects_total{reason="ack_on_device_topic"}'
        wait_for(lambda: metrics(mport).get(rejected, 0) == 1, 20, "the ack on the device topic rejected")

        answer = {"rule": "wristband_sos", "by": "desk 1"}
        send(port, "dispatch", "sensord-dispatch/ack/maple/wristband/wb-000", answer)
        wait_for(lambda: len(webhook_receiver.delivered()) >= 2, 20, "the SOS resolved")
        time.sleep(1.0)  # anything the forged messages caused would be delivered by now

        got = [(r.body["rule"], r.body["device"], r.body["status"]) for r in webhook_receiver.delivered()]
        assert got == [("wristband_sos", "wb-000", "firing"), ("wristband_sos", "wb-000", "resolved")]
        assert webhook_receiver.delivered()[1].body["readings"]["acknowledged_by"] == "desk 1"
        dead = [orjson.loads(x) for x in (tmp_path / "state" / "deadletter.jsonl").read_bytes().splitlines()]
        assert [(d["topic"], d["reason"]) for d in dead] == [
            ("sensord/maple/wristband/wb-000/ack", "ack_on_device_topic")
        ]
    finally:
        stop_daemon(proc)
        broker.stop()
