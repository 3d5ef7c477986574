"""Unit tests for the daemon's runtime helpers: sd_notify, the HTTP listener, rate-limited logs."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from sensord._http import HttpServer
from sensord._logging import RateLimited
from sensord._metrics import Metrics
from sensord._systemd import Notifier


class TestNotifier:
    def test_sends_ready_to_notify_socket(self, tmp_path: Path) -> None:
        """READY=1 arrives as one datagram on $NOTIFY_SOCKET."""
        path = str(tmp_path / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            n = Notifier({"NOTIFY_SOCKET": path})
            assert n.ready("up")
            assert sock.recv(100) == b"READY=1\nSTATUS=up"

    def test_a_listener_that_stops_reading_never_blocks_a_send(self, tmp_path: Path) -> None:
        """With the listener's queue full, WATCHDOG=1 returns False at once instead of
        blocking the caller (the event loop) until someone reads."""
        path = str(tmp_path / "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            n = Notifier({"NOTIFY_SOCKET": path})
            sent = [n.watchdog() for _ in range(1000)]  # nobody reads: the queue fills
            assert sent[0]
            assert not sent[-1]

    def test_outside_systemd_is_a_no_op(self) -> None:
        """Without $NOTIFY_SOCKET nothing is sent and no watchdog interval is set."""
        n = Notifier({})
        assert not n.watchdog()
        assert n.watchdog_s is None

    def test_watchdog_interval_only_for_our_pid(self) -> None:
        """WATCHDOG_USEC applies only when WATCHDOG_PID is ours (or absent)."""
        assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_s == 30.0
        assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_s is None
        mine = Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
        assert mine.watchdog_s == 2.0


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class TestHttpServer:
    def test_metrics_and_health(self) -> None:
        """/metrics renders the passed-in registry; /healthz says 200 or 503 from the check."""

        async def scenario() -> None:
            metrics = Metrics()
            metrics.rejects.labels("invalid_json").inc(3)
            healthy = {"ok": True}
            server = HttpServer("127.0.0.1", 0, metrics, lambda: (healthy["ok"], {"x": 1}))
            await server.start()
            status, body = await _get(server.port, "/metrics")
            assert status == 200
            assert b'sensord_rejects_total{reason="invalid_json"} 3.0' in body
            assert (await _get(server.port, "/healthz")) == (200, b'{"x":1}')
            healthy["ok"] = False
            assert (await _get(server.port, "/healthz"))[0] == 503
            assert (await _get(server.port, "/nope"))[0] == 404
            await server.aclose()

        asyncio.run(scenario())


class TestRateLimited:
    def test_logs_once_per_interval_per_key(self, caplog: pytest.LogCaptureFixture) -> None:
        """The same key logs once per interval; another key logs independently."""
        rl = RateLimited(logging.getLogger("t"), every_s=60)
        with caplog.at_level(logging.WARNING):
            rl.warning("a", "m", {}, now=0)
            rl.warning("a", "m", {}, now=30)
            rl.warning("b", "m", {}, now=30)
            rl.warning("a", "m", {}, now=61)
        assert len(caplog.records) == 3
