"""Start-up and memory benchmark: `sensord run` as a process, from start to ready, and its RSS.

    .venv/bin/python bench/startup.py [--devices 10000 100000] [--compare-ref main] [--repeat 2]

For each device count, a registry of all six families (the drain benchmark's scenario) and
the default rules; a private Mosquitto; the daemon started with NOTIFY_SOCKET pointing at a
datagram socket of ours. "Ready" is the READY=1 datagram (sent once the subscription is
acknowledged and the outbox is open); the daemon's "sensord ready" log line and the
broker's log of the subscription are checked too. RSS (VmRSS) is read after ready and, for
the largest fleet, after a day of traffic (every device reporting every `--interval` s)
has been published through the broker and taken in by the daemon.

`--compare-ref REF` runs the same measurements with the sources of git REF (extracted with
`git archive` to a temp folder) in the same run, before this tree's, so the pair shares the
machine's load; the load average is printed next to each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from _backlog import scenario
from sensord.simulate import Scenario, publish, registry_for
from sensord.testing import MosquittoServer, free_port, start_mosquitto

ROOT = Path(__file__).resolve().parent.parent
CLIENT_ID = "sensord-startup-bench"
# The broker logs subscriptions, so the benchmark can see the daemon's being made.
BROKER_CONF = "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type subscribe\n"


@dataclass(frozen=True)
class Version:
    name: str
    src: Path


@dataclass
class Result:
    version: str
    devices: int
    ready_s: float
    cpu_ready_s: float
    rss_ready_mb: float
    load: str
    rss_day_mb: float | None = None
    day_messages: int = 0
    day_s: float = 0.0


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process used: the start-up cost without the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def extract(ref: str, into: Path) -> Path:
    """The `src/` of a git ref, without touching any work tree."""
    blob = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "src"], check=True, capture_output=True
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def write_config(work: Path, port: int, devices: int) -> Path:
    """A config with the default rules and a registry of `devices` devices (six families)."""
    work.mkdir(parents=True, exist_ok=True)
    registry = registry_for(scenario(devices // 6))
    with (work / "devices.yaml").open("w") as out:
        yaml.dump(registry, out, Dumper=yaml.CSafeDumper, sort_keys=False)
    cfg: dict[str, Any] = {
        "broker": {"port": port, "client_id": CLIENT_ID},
        "registry": "devices.yaml",
        "rules_dir": str(ROOT / "rules"),
        "state_dir": str(work / "state"),
        "http": {"port": free_port()},
        "decode": {"max_clock_skew_s": 300},
        "log": {"level": "INFO"},
    }
    (work / "sensord.yaml").write_text(yaml.safe_dump(cfg))
    return work / "sensord.yaml"


class Daemon:
    """`sensord run` of one version, with a NOTIFY_SOCKET we listen on."""

    def __init__(self, version: Version, config: Path, work: Path) -> None:
        self.config = config
        self.work = work
        self.log = work / f"sensord-{version.name}.log"
        self.http_port = yaml.safe_load(config.read_text())["http"]["port"]
        self.sock_path = work / f"notify-{version.name}.sock"
        self.sock_path.unlink(missing_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.sock_path))
        self.env = {**os.environ, "PYTHONPATH": str(version.src), "NOTIFY_SOCKET": str(self.sock_path)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start_until_ready(self, timeout: float = 300) -> float:
        """Seconds from process start to the READY=1 datagram."""
        with self.log.open("wb") as out:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sensord", "run", "-c", str(self.config)],
                stdout=out, stderr=out, env=self.env,
            )  # fmt: skip
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                ready = time.perf_counter() - t0
                # Keep reading as systemd does: a full datagram queue (10 by default) would
                # block the daemon's next WATCHDOG=1 send, and with it its event loop.
                threading.Thread(target=self._drain, daemon=True).start()
                return ready

    def _drain(self) -> None:
        self.sock.settimeout(None)
        with contextlib.suppress(OSError):
            while self.sock.recv(4096):
                pass

    def messages_in(self) -> float:
        try:
            text = httpx.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=30).text
        except httpx.HTTPError:
            return -1.0
        lines = [ln for ln in text.splitlines() if ln.startswith("sensord_messages_in_total")]
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the drain thread's recv
        self.sock.close()
        self.sock_path.unlink(missing_ok=True)


def check_ready(daemon: Daemon, broker: MosquittoServer) -> None:
    """The daemon logged "sensord ready" and the broker logged its subscription."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logged = "sensord ready" in daemon.log.read_text(errors="replace")
        subscribed = any(
            CLIENT_ID in ln and "sensord/" in ln
            for ln in (broker.workdir / "mosquitto.log").read_text(errors="replace").splitlines()
        )
        if logged and subscribed:
            return
        time.sleep(0.05)
    msg = f"daemon not ready by its log or the broker's: see {daemon.log}"
    raise SystemExit(msg)


def day_scenario(devices: int, interval_s: float, readings: int = 12) -> Scenario:
    """A day compressed: every device reports `readings` times, every `interval_s` (under
    each family's `silent_after_s`, else the no-data rules would page for the whole fleet)."""
    base = scenario(devices // 6).model_dump(by_alias=True)
    base["duration"] = interval_s * readings
    base["report_interval_s"] = interval_s
    base["report_intervals"] = {}
    return Scenario.model_validate(base)


def replay_day(daemon: Daemon, port: int, devices: int, interval_s: float) -> tuple[int, float]:
    """Publish a day of traffic; wait until the daemon took it all in. (messages, seconds)"""
    before = max(daemon.messages_in(), 0.0)
    t0 = time.perf_counter()
    sent = asyncio.run(
        publish(day_scenario(devices, interval_s), host="127.0.0.1", port=port, speed=None, seed=1)
    )
    # Done when the count of readings taken in stops moving (rejected noise is not counted).
    last, still = -1.0, 0
    deadline = time.monotonic() + 900
    while still < 3 and time.monotonic() < deadline:
        time.sleep(1)
        now = daemon.messages_in()
        still = still + 1 if now == last and now >= 0 else 0  # -1: a busy daemon did not answer
        last = now
    print(f"  day: {sent} published, {last - before:.0f} readings taken in", flush=True)
    return sent, time.perf_counter() - t0


def measure(args: argparse.Namespace, version: Version, devices: int, work: Path) -> Result:
    broker = start_mosquitto(work / "broker", extra_conf=BROKER_CONF)
    try:
        config = write_config(work, broker.port, devices)
        daemon = Daemon(version, config, work)
        try:
            load = load_average()
            ready = daemon.start_until_ready()
            assert daemon.proc is not None
            check_ready(daemon, broker)
            pid = daemon.proc.pid
            result = Result(version.name, devices, ready, cpu_s(pid), rss_mb(pid), load)
            if devices == max(args.devices) and args.interval > 0:
                result.day_messages, result.day_s = replay_day(daemon, broker.port, devices, args.interval)
                result.rss_day_mb = rss_mb(daemon.proc.pid)
            return result
        finally:
            daemon.stop()
    finally:
        broker.stop()


def report(results: list[Result]) -> None:
    head = f"{'version':<10} {'devices':>8} {'ready s':>8} {'CPU s':>6} {'RSS ready':>10} {'RSS day':>8}"
    print(f"\n{head}  load (1/5/15 min)")
    for r in results:
        day = f"{r.rss_day_mb:7.0f}M" if r.rss_day_mb is not None else "       -"
        print(
            f"{r.version:<10} {r.devices:>8} {r.ready_s:8.2f} {r.cpu_ready_s:6.2f} "
            f"{r.rss_ready_mb:9.0f}M {day}  {r.load}"
        )
        if r.day_messages:
            print(f"{'':<10} {'':>8} day: {r.day_messages} messages in {r.day_s:.0f} s")
    names = list(dict.fromkeys(r.version for r in results))
    if len(names) == 2:
        for n in sorted({r.devices for r in results}):
            best = {v: min(r.ready_s for r in results if r.version == v and r.devices == n) for v in names}
            print(f"{n} devices: ready {best[names[0]]:.2f} s → {best[names[1]]:.2f} s "
                  f"({best[names[0]] / best[names[1]]:.1f}x faster, best of runs)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, nargs="+", default=[10000, 100000])
    ap.add_argument("--compare-ref", metavar="REF", help="also measure the sources of git REF (e.g. main)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per version and fleet (best is compared)")
    ap.add_argument(
        "--interval", type=float, default=240,
        help="report interval of the replayed day, s (0: no day); 12 readings a device",
    )  # fmt: skip
    args = ap.parse_args()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="sensord-startup-") as tmp:
        versions = [Version("this", ROOT / "src")]
        if args.compare_ref:
            versions.insert(0, Version(args.compare_ref, extract(args.compare_ref, Path(tmp) / "ref")))
        for devices in args.devices:
            for i in range(args.repeat):
                for v in versions:
                    work = Path(tmp) / f"{v.name}-{devices}-{i}"
                    r = measure(args, v, devices, work)
                    day = f", after the day {r.rss_day_mb:.0f} MB" if r.rss_day_mb else ""
                    print(
                        f"{v.name}: {devices} devices ready in {r.ready_s:.2f} s ({r.cpu_ready_s:.2f} CPU), "
                        f"RSS {r.rss_ready_mb:.0f} MB{day}  (load {r.load})",
                        flush=True,
                    )
                    results.append(r)
                    with contextlib.suppress(OSError):
                        (work / "devices.yaml").unlink()
    report(results)


if __name__ == "__main__":
    main()
