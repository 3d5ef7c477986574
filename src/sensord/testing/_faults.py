"""Fault injection against real processes: a seeded workload, a publisher that knows
what the broker acknowledged, the daemon as a process that can be SIGKILLed, and the
reference the results are judged against (an offline replay of what was published).

Used by `tests/faults` (short runs in CI) and `bench/faults.py` (long runs with figures).
None of this needs pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from sensord._errors import IngestError
from sensord._metrics import Metrics
from sensord._registry import load_registry
from sensord._settings import BatchSettings, BrokerHost, BrokerSettings, ReconnectSettings, load_settings
from sensord._types import AlertEvent, RawMessage
from sensord.dispatch import Dispatcher, read_dispatch
from sensord.dispatch._build import build_desk
from sensord.ingest import MqttSource
from sensord.replay import Outgoing, ReplayResult, replay
from sensord.rules import load_rule_files, rule_files
from sensord.testing._servers import free_port

ROOT_RULES = Path(__file__).resolve().parents[3] / "rules"


@dataclass(frozen=True)
class Workload:
    """A steady neighbourhood: every device reports once per tick, with SOS presses,
    acknowledgements (some sent twice, as a dispatch platform retrying would), smoke
    alarms and bins filling up and being emptied (ordinary alerts) mixed in."""

    wristbands: int = 150
    fire: int = 50
    bins: int = 100
    ticks: int = 60
    # Event time between two readings of one device. 400 ticks stay under the SOS rule's
    # 30 min resolve_after: the judge is about faults, and timers that expire inside a
    # batch are not batch-size invariant today (see the fault-injection report).
    tick_s: float = 2.5
    wall_tick_s: float = 0.5  # wall time between two ticks when published
    sos_per_tick: float = 1.0
    ack_share: float = 0.8
    second_ack_share: float = 0.5
    smoke_per_tick: float = 0.3
    seed: int = 7
    # Acks name the alert they answer (`startsAt`, as copied from the notification), so
    # one that arrives late, after a newer press, is recognised as stale: across a broker
    # failover, acks and readings are two subscriptions whose order is not kept.
    ack_names_alert: bool = False

    @property
    def devices(self) -> int:
        return self.wristbands + self.fire + self.bins

    def registry(self) -> dict[str, Any]:
        """The device registry of this workload (two communities)."""
        devices: dict[str, Any] = {}
        for family, prefix, n in (("wristband", "wb", self.wristbands), ("fire", "fire", self.fire),
                                  ("bin", "bin", self.bins)):
            for i in range(n):
                devices[f"{prefix}-{i:04d}"] = {
                    "family": family,
                    "community": ("maple", "river")[i % 2],
                    "grid": f"g{i % 4}",
                }
        return {"devices": devices}

    def stream(self, start: float) -> list[Outgoing]:
        """Every message in publish order, ts from `start` (epoch seconds), all QoS 1."""
        return _Generator(self, start).run()


def _topic(community: str, family: str, device: str, kind: str = "telemetry") -> str:
    return f"sensord/{community}/{family}/{device}/{kind}"


class _Generator:
    """Builds one workload's stream tick by tick from a seeded RNG."""

    def __init__(self, w: Workload, start: float) -> None:
        self.w, self.start = w, start
        self.rng = random.Random(w.seed)  # noqa: S311 - a reproducible workload, not a secret
        self.out: list[Outgoing] = []
        self.sos_open: dict[int, int] = {}  # wristband → tick its SOS was pressed
        self.acks: dict[int, list[int]] = {}  # tick → wristbands acknowledged then
        self.smoke_until: dict[int, int] = {}  # fire sensor → last tick of its alarm
        self.fill = [self.rng.uniform(0, 90) for _ in range(w.bins)]
        self.rate = [self.rng.uniform(1.0, 4.0) for _ in range(w.bins)]

    def emit(self, ts: float, topic: str, payload: dict[str, Any]) -> None:
        self.out.append((ts, topic, orjson.dumps({**payload, "ts": round(ts, 3)}), 1))

    def run(self) -> list[Outgoing]:
        for k in range(self.w.ticks):
            self.tick(k, self.start + k * self.w.tick_s)
        return self.out

    def _count(self, mean: float) -> int:
        return int(mean) + (self.rng.random() < mean - int(mean))

    def tick(self, k: int, ts: float) -> None:
        w, rng = self.w, self.rng
        idle = [i for i in range(w.wristbands) if i not in self.sos_open]
        pressed = set(rng.sample(idle, min(len(idle), self._count(w.sos_per_tick))))
        for i in pressed:
            self.sos_open[i] = k
            if rng.random() < w.ack_share:
                self.acks.setdefault(k + rng.randint(2, 8), []).append(i)
        quiet = [i for i in range(w.fire) if i not in self.smoke_until]
        for i in rng.sample(quiet, min(len(quiet), self._count(w.smoke_per_tick))):
            self.smoke_until[i] = k + rng.randint(1, 6)
        for i in range(w.wristbands):
            payload: dict[str, Any] = {"heart_rate": 60 + rng.randint(0, 25), "sos": i in pressed}
            self.emit(ts + i * 1e-3, _topic(("maple", "river")[i % 2], "wristband", f"wb-{i:04d}"), payload)
        for i in range(w.fire):
            alarm = i in self.smoke_until
            if alarm and self.smoke_until[i] <= k:
                del self.smoke_until[i]
            payload = {"smoke_alarm": alarm, "temp_c": 22.0, "co_ppm": 2.0}
            self.emit(ts + i * 1e-3, _topic(("maple", "river")[i % 2], "fire", f"fire-{i:04d}"), payload)
        for i in range(w.bins):
            self.fill[i] = self.fill[i] + self.rate[i] if self.fill[i] < 95 else rng.uniform(0, 20)
            payload = {"fill_pct": round(min(self.fill[i], 100.0), 1), "temp_c": 20.0}
            self.emit(ts + i * 1e-3, _topic(("maple", "river")[i % 2], "bin", f"bin-{i:04d}"), payload)
        for i in self.acks.pop(k, []):
            self._ack(i if i >= 0 else -1 - i, ts + 1.0)
            if i >= 0 and rng.random() < w.second_ack_share:
                # A retried acknowledgement, late: it must change nothing (the wristband
                # stays out of the SOS draw until then, so it cannot ack a new press).
                self.acks.setdefault(k + rng.randint(10, 25), []).append(-1 - i)
            else:
                self.sos_open.pop(i if i >= 0 else -1 - i, None)

    def _ack(self, i: int, ts: float) -> None:
        topic = f"sensord-dispatch/ack/{('maple', 'river')[i % 2]}/wristband/wb-{i:04d}"
        payload: dict[str, Any] = {"rule": "wristband_sos", "by": "desk 1"}
        if self.w.ack_names_alert:
            pressed = round(self.start + self.sos_open[i] * self.w.tick_s + i * 1e-3, 3)
            stamp = datetime.fromtimestamp(pressed, UTC).isoformat(timespec="milliseconds")
            payload["startsAt"] = stamp.replace("+00:00", "Z")
        self.emit(ts, topic, payload)


def daemon_config(  # noqa: PLR0913 - a test daemon's knobs
    work: Path,
    *,
    broker_port: int,
    registry: dict[str, Any],
    webhook_url: str,
    webhook_secret: str,
    influx_url: str | None = None,
    webhook_timeout_s: float = 5.0,
    snapshot_every_s: float = 10.0,
    rules_dir: Path = ROOT_RULES,
    dispatch: dict[str, Any] | None = None,
    broker: dict[str, Any] | None = None,
) -> tuple[Path, int]:
    """A daemon config in `work`; returns (path, HTTP port of /metrics and /healthz).
    `dispatch`: a dispatch file's content, written beside the config and named in it.
    `broker`: settings over the broker's defaults here (`hosts` replaces host and port)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "devices.yaml").write_text(yaml.safe_dump(registry))
    (work / "webhook-secret").write_text(webhook_secret)
    sinks: dict[str, Any] = {
        "webhook": {"url": webhook_url, "secret": {"file": "webhook-secret"}, "timeout_s": webhook_timeout_s}
    }
    if influx_url is not None:
        sinks["influx"] = {"url": influx_url, "api": "v1", "database": "sensord", "timeout_s": 2}
    http_port = free_port()
    broker_cfg: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": broker_port,
        "client_id": "sensord-faults",
        "keepalive_s": 10,
        "reconnect": {"initial_s": 0.2, "max_s": 1.0},
    }
    if broker is not None and "hosts" in broker:
        del broker_cfg["host"], broker_cfg["port"]
    cfg = {
        "broker": {**broker_cfg, **(broker or {})},
        "registry": "devices.yaml",
        "rules_dir": str(rules_dir),
        "state_dir": str(work / "state"),
        "sinks": sinks,
        "delivery": {"initial_backoff_s": 0.2, "max_backoff_s": 2.0},
        # The workload is stamped in the past and judged by an offline replay, which has no
        # wall clock: the quiet-stream clock must never move (a daemon idle before the
        # first message would set it to wall clock - grace, and raise community_silent).
        "alerts": {"idle_tick_s": 86400, "clock_grace_s": 86400, "snapshot_every_s": snapshot_every_s},
        "http": {"host": "127.0.0.1", "port": http_port},
        "log": {"format": "json", "level": "INFO"},
    }
    if dispatch is not None:
        (work / "dispatch.yaml").write_text(yaml.safe_dump(dispatch, allow_unicode=True))
        cfg["dispatch"] = "dispatch.yaml"
    path = work / "sensord.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, http_port


@dataclass
class Daemon:
    """`sensord run` as a real process that can be SIGKILLed and started again."""

    config: Path
    http_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        with self.log.open("ab") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and config
                [sys.executable, "-m", "sensord", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM (a clean stop), SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> dict[str, float]:
        """/metrics as {sample with labels: value}; {} while not up."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.http_port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("sensord_"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def health(self) -> dict[str, Any]:
        """/healthz's detail (messages processed since start, outbox depth per sink); {} while not up."""
        try:
            detail: dict[str, Any] = orjson.loads(
                httpx.get(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2).content
            )
        except (httpx.HTTPError, orjson.JSONDecodeError):
            return {}
        return detail

    def processed(self) -> int:
        """Messages evaluated and committed since this process started."""
        return int(self.health().get("messages_processed", 0))

    def outbox_empty(self) -> bool:
        depths = self.health().get("outbox_depth")
        return isinstance(depths, dict) and bool(depths) and not any(depths.values())


def wait_until(predicate: Any, timeout: float, what: str, *, every: float = 0.1) -> float:
    """Poll until `predicate()` is true; returns the seconds it took. Raises TimeoutError."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - t0


@dataclass
class Publisher:
    """Publishes a stream tick by tick in a thread, QoS 1, resending what the broker did not
    acknowledge (a lost connection fails the PUBACK wait), so every message is
    acknowledged at least once. `acked` counts messages with a PUBACK."""

    port: int
    stream: list[Outgoing]
    wall_tick_s: float
    tick_s: float
    max_inflight: int = 500
    # Further nodes of a cluster, tried after `port` in this order (broker.hosts).
    more_ports: tuple[int, ...] = ()
    acked: int = 0
    resent: int = 0
    started_at: float = 0.0  # time.monotonic() when the stream's first message was due
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Publisher:
        self._thread = threading.Thread(target=self._main, name="fault-publisher", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"publisher still running after {timeout:.0f}s")
        if self.error is not None:
            raise self.error

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that joins
            self.error = exc
        finally:
            self.done.set()

    async def _run(self) -> None:
        settings = BrokerSettings(
            hosts=tuple(BrokerHost(host="127.0.0.1", port=p) for p in (self.port, *self.more_ports)),
            client_id=f"fault-pub-{time.monotonic_ns()}",
            subscriptions=(),
            reconnect=ReconnectSettings(initial_s=0.1, max_s=0.5),
        )
        client = MqttSource(settings, None, Metrics(), BatchSettings())
        runner = asyncio.create_task(client.run(), name="fault-publisher-mqtt")
        inflight = asyncio.Semaphore(self.max_inflight)
        pending: set[asyncio.Task[None]] = set()
        try:
            async with asyncio.timeout(20):
                await client.connected.wait()
            origin, wall0 = self.stream[0][0], time.monotonic()
            self.started_at = wall0
            for msg in self.stream:
                delay = wall0 + (msg[0] - origin) / self.tick_s * self.wall_tick_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await inflight.acquire()
                task = asyncio.create_task(self._send(client, msg, inflight))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)
        finally:
            await client.aclose()
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _send(self, client: MqttSource, msg: Outgoing, inflight: asyncio.Semaphore) -> None:
        try:
            while True:
                try:
                    async with asyncio.timeout(30):
                        await client.publish(msg[1], msg[2], 1)
                except (IngestError, TimeoutError):
                    self.resent += 1
                    await asyncio.sleep(0.05)
                    continue
                self.acked += 1
                return
        finally:
            inflight.release()


def reference(config: Path, stream: list[Outgoing]) -> list[AlertEvent]:
    """The notifications (firing, resolved) an offline `sensord replay` of the published
    stream produces under the daemon's own config: what a daemon that never failed sends."""
    return replay_published(config, stream).notifications()


def replay_published(config: Path, stream: list[Outgoing], *, dispatch: bool = False) -> ReplayResult:
    """An offline replay of the published stream under the daemon's own config (and, with
    `dispatch`, its dispatch file, no channel called)."""
    settings = load_settings(config)
    decode = settings.decode.model_copy(update={"max_clock_skew_s": 0})
    settings = settings.model_copy(update={"decode": decode})
    registry = load_registry(settings.input_path(settings.registry))
    rules = load_rule_files(rule_files(settings.input_path(settings.rules_dir)), registry)
    dispatcher = None
    if dispatch:
        assert settings.dispatch is not None
        loaded = read_dispatch(settings.input_path(settings.dispatch))
        dispatcher = Dispatcher(loaded.spec, registry, Metrics(), per_recipient={}, desk=build_desk(loaded))
    # The stream is stamped in the past and received now: the daemon dates acks by the
    # stream clock, and so does the reference if its messages are received now too.
    now = time.time()
    messages = (RawMessage(topic, payload, max(ts, now)) for ts, topic, payload, _ in stream)
    return replay(messages, registry=registry, rules=rules, settings=settings, dispatcher=dispatcher)
