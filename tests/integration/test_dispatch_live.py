"""Dispatch end to end (issue 9): the daemon as a process routes real alerts to each
receiver's chat robot (WeCom, DingTalk signed, Feishu signed), stand-ins that check the
platforms' documented shape and signature; life-safety goes first after an outage, and
a receiver not marked sensitive never sees a wristband's readings."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from sensord.testing import (
    DingTalkRobotServer,
    FeishuBotServer,
    MosquittoServer,
    SmsGateway,
    WeComRobotServer,
    start_smtp,
)

from ._helpers import publish, ready, start_daemon, stop_daemon, topic, wait_for, write_config

T0 = time.time() - 60
REGISTRY: dict[str, Any] = {
    "devices": {
        "wb-001": {
            "family": "wristband", "community": "maple", "grid": "g1", "building": "3", "unit": "3-402",
            "floor": 4, "location": {"lat": 31.23, "lon": 121.47}, "contacts": {"女儿": "+86 139 0000 0009"},
        },
        "bin-1": {"family": "bin", "community": "maple", "grid": "g1", "building": "1"},
    },
    "grids": {"g1": {"workers": [{"name": "张伟", "phone": "+86 138 0000 0001"}]}},
}  # fmt: skip


def dispatch_file(
    tmp: Path, wecom: WeComRobotServer, ding: DingTalkRobotServer, feishu: FeishuBotServer
) -> str:
    (tmp / "ding-secret").write_text(ding.secret or "")
    (tmp / "feishu-secret").write_text(feishu.secret or "")
    spec = {
        "receivers": [
            {"name": "elder_care_desk", "sensitive": True, "channels": [{"type": "wecom", "url": wecom.url}]},
            {
                "name": "grid_worker",
                "recipients": "grid",
                "channels": [
                    {"type": "dingtalk", "url": ding.url, "secret": {"file": str(tmp / "ding-secret")}}
                ],
            },
            {
                "name": "sanitation",
                "channels": [
                    {"type": "feishu", "url": feishu.url, "secret": {"file": str(tmp / "feishu-secret")}}
                ],
            },
            *({"name": n} for n in ("family_contact", "community_doctor", "operator")),
        ],
        "route": {
            "receiver": "operator",
            "routes": [
                {"matchers": ['family="bin"'], "receiver": "sanitation"},
                {"matchers": ['family="wristband"'], "receiver": "elder_care_desk"},
            ],
        },
    }
    (tmp / "dispatch.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    return "dispatch.yaml"


def test_alerts_reach_each_receivers_robot(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """An SOS reaches the elder-care desk (WeCom, with readings and coordinates: sensitive)
    and the grid's worker (DingTalk, signed, mentioning the worker's phone, no readings);
    a full bin reaches sanitation (Feishu, signed) and the grid worker; each message once,
    in Chinese."""
    with (
        WeComRobotServer(key="k-desk") as wecom,
        DingTalkRobotServer(access_token="t-grid", secret="SEC0123456789abcdef") as ding,
        FeishuBotServer(token="h-sanitation", secret="feishu-secret-1") as feishu,
    ):
        config, mport = write_config(tmp_path, broker_port=mosquitto.port, registry=REGISTRY)
        cfg = yaml.safe_load(config.read_text())
        cfg["dispatch"] = dispatch_file(tmp_path, wecom, ding, feishu)
        config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        proc = start_daemon(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            publish(
                mosquitto.port,
                [
                    (topic("wristband", "wb-001"), {"sos": True, "heart_rate": 71, "ts": T0}),
                    (topic("bin", "bin-1"), {"fill_pct": 93.0, "ts": T0 + 1}),
                ],
            )
            wait_for(lambda: all((wecom.accepted, ding.accepted, feishu.accepted)), 20, "all three robots")
            time.sleep(1.0)  # a duplicate would arrive by now
        finally:
            stop_daemon(proc)
        # The grid worker gets the SOS and the bin (the bin rule dispatches to grid_worker too).
        assert (len(wecom.accepted), len(ding.accepted), len(feishu.accepted)) == (1, 2, 1)
        desk, bins = wecom.accepted[0], feishu.accepted[0]
        for part in (
            "手环SOS求救",
            "紧急",
            "3号楼",
            "sos=True",
            "lat=31.23",
        ):  # in Chinese; the desk is sensitive
            assert part in desk.text
        sos = next(a for a in ding.accepted if "SOS" in a.title)
        assert "13800000001" in sos.mentioned
        for part in ("sos=", "lat="):  # grid_worker is not sensitive
            assert part not in sos.text
        for part in ("93", "1号楼"):
            assert part in bins.text
        for part in ("wb-001", "sos"):
            assert part not in bins.text.lower()


def test_sos_reaches_the_family_by_sms_and_the_doctor_by_email(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """Per-person SMS to the device's contact (Yunpian-style gateway, apikey from a secret
    file) and an email to the doctor (STARTTLS, AUTH), both in Chinese, each once."""
    smtp = start_smtp(tmp_path / "smtp", security="starttls")
    (tmp_path / "smtp-password").write_text(smtp.password)
    with SmsGateway("yunpian", credential="9b11127a9701975c734b8aee81ee3526") as sms:
        (tmp_path / "sms-apikey").write_text(sms.credential)
        spec = {
            "receivers": [
                {
                    "name": "family_contact", "recipients": "contacts", "sensitive": True,
                    "channels": [{
                        "type": "sms", "url": sms.url, "body_format": "form",
                        "body": {"mobile": "{phone}", "text": "【平安社区】{text}", "uid": "{id}"},
                        "secret_fields": {"apikey": {"file": str(tmp_path / "sms-apikey")}},
                        "max_chars": 64, "success_field": "code", "success_value": 0,
                    }],
                },
                {
                    "name": "community_doctor", "sensitive": True,
                    "channels": [{
                        "type": "email", "host": "localhost", "port": smtp.port, "security": "starttls",
                        "username": smtp.username, "password": {"file": str(tmp_path / "smtp-password")},
                        "from_address": "alerts@maple.example.cn", "to": ["doctor@maple.example.cn"],
                        "ca_file": str(smtp.cert_file),
                    }],
                },
                *({"name": n} for n in ("elder_care_desk", "grid_worker", "operator", "sanitation")),
            ],
            "route": {"receiver": "operator", "routes": [
                {"matchers": ['family="wristband"'], "receiver": "community_doctor"}]},
        }  # fmt: skip
        (tmp_path / "dispatch.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
        config, mport = write_config(tmp_path, broker_port=mosquitto.port, registry=REGISTRY)
        cfg = yaml.safe_load(config.read_text())
        cfg["dispatch"] = "dispatch.yaml"
        config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        proc = start_daemon(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            publish(mosquitto.port, [(topic("wristband", "wb-001"), {"sos": True, "ts": T0})])
            wait_for(lambda: bool(sms.texts() and smtp.mails()), 20, "the text and the mail")
            time.sleep(1.0)
        finally:
            stop_daemon(proc)
            smtp.stop()
        [text] = sms.texts()
        [mail] = smtp.mails()
    assert text.phone == "13900000009"  # registered as +86 139 0000 0009
    assert text.text is not None
    assert "手环SOS" in text.text
    assert mail.recipients == ("doctor@maple.example.cn",)
    assert "手环SOS求救" in str(mail.message["Subject"])


def test_silence_made_by_the_cli_holds_a_bin_while_an_sos_goes_through(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    """`sensord silence add` beside the running daemon: a full bin (ordinary, sent at
    once without the silence: group_wait 0s) is held, the SOS still reaches the chat;
    `silence list` shows who, when and why."""
    with WeComRobotServer(key="k-all") as wecom:
        spec = {"receivers": [{"name": "all", "channels": [{"type": "wecom", "url": wecom.url}]}],
                "route": {"receiver": "all", "group_wait": "0s"}, "rule_dispatch": False}  # fmt: skip
        (tmp_path / "dispatch.yaml").write_text(yaml.safe_dump(spec))
        config, mport = write_config(tmp_path, broker_port=mosquitto.port, registry=REGISTRY)
        cfg = yaml.safe_load(config.read_text())
        cfg["dispatch"] = "dispatch.yaml"
        config.write_text(yaml.safe_dump(cfg))
        proc = start_daemon(config, tmp_path / "daemon.log")
        try:
            wait_for(lambda: ready(mport), 20, "daemon ready")
            cli = [sys.executable, "-m", "sensord", "silence"]
            why = ["--by", "王工", "--comment", "bins emptied late for the festival"]
            made = subprocess.run(
                [*cli, "add", "-c", str(config), "--match", "family=bin", "--for", "2h", *why],
                capture_output=True,
                text=True,
                check=True,
            )
            assert made.stdout.startswith("silence 1 from")
            publish(
                mosquitto.port,
                [
                    # Stamped after the silence began: silences apply by event time.
                    (topic("bin", "bin-1"), {"fill_pct": 95.0, "ts": time.time()}),
                    (topic("wristband", "wb-001"), {"sos": True, "ts": time.time()}),
                ],
            )
            wait_for(lambda: bool(wecom.accepted), 20, "the SOS")
            time.sleep(3.0)  # a bin message, flushed in its batch or by an idle tick, would be here
            listed = subprocess.run(
                [*cli, "list", "-c", str(config)], capture_output=True, text=True, check=True
            )
        finally:
            stop_daemon(proc)
    assert ["SOS" in a.text for a in wecom.accepted] == [True]
    assert "active" in listed.stdout
    assert "by 王工" in listed.stdout
    assert "bins emptied late for the festival" in listed.stdout
