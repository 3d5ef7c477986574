"""SIGHUP to the real daemon process reloads its rules; a broken file keeps the old ones."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sensord.testing import MosquittoServer
from tests.integration._helpers import (
    metrics,
    ready,
    start_daemon,
    stop_daemon,
    wait_for,
    wristbands,
    write_config,
)

pytestmark = pytest.mark.integration

RULES = """\
family: wristband
params: {hr_high: 120}
rules:
  - name: hr_high
    when: heart_rate > hr_high
    summary: "HR {heart_rate}"
"""


def test_sighup_reloads_rules_and_survives_a_broken_file(tmp_path: Path, mosquitto: MosquittoServer) -> None:
    """A broken rule file on SIGHUP is logged and counted and the daemon keeps running;
    a fixed file on the next SIGHUP is loaded and its diff logged."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "wristband.yaml").write_text(RULES)
    config, mport = write_config(
        tmp_path, broker_port=mosquitto.port, registry=wristbands(2), rules_dir=rules
    )
    log = tmp_path / "daemon.log"
    proc = start_daemon(config, log)
    try:
        wait_for(lambda: ready(mport), 20, "daemon ready")
        (rules / "wristband.yaml").write_text(RULES.replace("heart_rate > hr_high", "heart_rat > hr_high"))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(
            lambda: metrics(mport).get('sensord_rule_reloads_total{result="error"}') == 1.0,
            10,
            "a failed reload",
        )
        assert proc.poll() is None, "the daemon died on a broken rule file"
        assert "heart_rat" in log.read_text()
        (rules / "wristband.yaml").write_text(RULES.replace("hr_high: 120", "hr_high: 110"))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: metrics(mport).get('sensord_rule_reloads_total{result="ok"}') == 1.0, 10, "a reload")
        assert '"changed":["wristband/hr_high"]' in log.read_text()
    finally:
        stop_daemon(proc)
