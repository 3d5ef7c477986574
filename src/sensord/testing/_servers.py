"""Real servers for tests and the demo: Mosquitto, InfluxDB 1.x, VictoriaMetrics, and a
webhook receiver. Each starts on a free port in a folder it is given and stops cleanly.
None of this needs pytest.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import orjson

from sensord.sinks import verify


def free_port() -> int:
    """A TCP port nothing listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str, *candidates: str) -> str:
    for c in (shutil.which(name), *candidates):
        if c and Path(c).exists():
            return c
    raise FileNotFoundError(f"{name} is not installed (run scripts/bootstrap.sh)")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"server did not listen on {port} within {timeout}s: {log.read_text()[-2000:]}")


@dataclass
class _Process:
    """A started server process and where it keeps its files."""

    workdir: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    def stop(self) -> None:
        """Terminate and wait (kill after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class MosquittoServer(_Process):
    """A private Mosquitto with persistence on, as on the edge box."""

    extra_conf: str = ""

    def start(self) -> MosquittoServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "set_tcp_nodelay true\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            # Started as root, Mosquitto would switch to its own user and could not read
            # files in this private folder; stay who we are instead.
            f"{'user root' if os.geteuid() == 0 else ''}\n"
            f"{self.extra_conf}\n"
        )
        log = self.workdir / "mosquitto.log"
        log.touch()
        self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
            [_binary("mosquitto", "/usr/sbin/mosquitto"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait_port(self.port, self.proc, 10, log)
        return self

    def restart(self) -> MosquittoServer:
        """Stop (if running) and start again on the same port with the same data."""
        self.stop()
        return self.start()


def start_mosquitto(workdir: Path, *, extra_conf: str = "", port: int | None = None) -> MosquittoServer:
    """Start Mosquitto on a free port (or `port`, to restart on the same one)."""
    return MosquittoServer(workdir, port or free_port(), extra_conf=extra_conf).start()


@dataclass
class InfluxServer(_Process):
    """InfluxDB 1.x (Debian's influxd), HTTP API only, bound to loopback."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> InfluxServer:
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        conf = w / "influxdb.conf"
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{free_port()}"\n'
            f'[meta]\n  dir = "{w}/meta"\n'
            f'[data]\n  dir = "{w}/data"\n  wal-dir = "{w}/wal"\n  query-log-enabled = false\n'
            f'[http]\n  enabled = true\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[monitor]\n  store-enabled = false\n"
            "[[graphite]]\n  enabled = false\n[[collectd]]\n  enabled = false\n"
            "[[opentsdb]]\n  enabled = false\n[[udp]]\n  enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        log = w / "influxd.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(  # noqa: S603
                [_binary("influxd", "/usr/bin/influxd"), "-config", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, self.proc, 30, log)
        deadline = time.monotonic() + 30
        while httpx.get(f"{self.url}/ping", timeout=2).status_code != 204:
            if time.monotonic() > deadline:
                raise TimeoutError("influxd did not answer /ping")
            time.sleep(0.1)
        return self

    def query(self, q: str, db: str = "sensord") -> dict[str, Any]:
        """Run InfluxQL; returns the parsed JSON answer."""
        r = httpx.post(f"{self.url}/query", params={"db": db, "q": q}, timeout=10)
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result

    def create_database(self, db: str = "sensord") -> None:
        self.query(f'CREATE DATABASE "{db}"', db="")

    def rows(self, q: str, db: str = "sensord") -> list[dict[str, Any]]:
        """InfluxQL result rows as dicts (column → value)."""
        out: list[dict[str, Any]] = []
        for res in self.query(q, db).get("results", []):
            for series in res.get("series", []):
                cols = series["columns"]
                tags = series.get("tags", {})
                out.extend({**tags, **dict(zip(cols, v, strict=True))} for v in series["values"])
        return out


def start_influxdb_v1(workdir: Path, *, database: str = "sensord") -> InfluxServer:
    """Start influxd 1.x on a free port with `database` created."""
    server = InfluxServer(workdir, free_port()).start()
    server.create_database(database)
    return server


@dataclass
class VictoriaMetricsServer(_Process):
    """VictoriaMetrics single node: speaks the InfluxDB v2 write API."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VictoriaMetricsServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / "vm.log"
        out = log.open("wb")  # the child keeps its own descriptor; ours closes below
        self.proc = subprocess.Popen(  # noqa: S603
            [
                _binary("victoria-metrics", "/usr/bin/victoria-metrics"),
                f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-storageDataPath={self.workdir}/data",
                "-search.latencyOffset=0s",
                "-search.disableCache",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        _wait_port(self.port, self.proc, 30, log)
        return self

    def export(self, match: str) -> list[dict[str, Any]]:
        """Stored series matching a selector, as VictoriaMetrics' JSON-lines export."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10)
        r = httpx.post(f"{self.url}/api/v1/export", data={"match[]": match}, timeout=10)
        r.raise_for_status()
        return [orjson.loads(ln) for ln in r.text.splitlines() if ln.strip()]


def start_victoria_metrics(workdir: Path) -> VictoriaMetricsServer:
    """Start VictoriaMetrics on a free port."""
    return VictoriaMetricsServer(workdir, free_port()).start()


# A POST as (path, lower-cased headers, body) -> (status, extra headers, body).
PostHandler = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


class _QuietServer(http.server.ThreadingHTTPServer):
    # One connection per request (HTTP/1.0, so a stopped server answers nothing more),
    # and a sender posts several at once: socketserver's backlog of 5 overflowed under
    # two daemons' deliveries, and the kernel's SYN cookies and retries slowed them to
    # about 20 a second each (the long shard test's count change 3 -> 2).
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:  # noqa: ARG002
        # A sender that gave up on a hung request has closed its socket before we answer.
        return


def serve_posts(port: int, handle: PostHandler, name: str) -> http.server.ThreadingHTTPServer:
    """A loopback HTTP server answering each POST with `handle`, in a daemon thread, for
    the stand-ins of the tests (webhook receiver, chat robots, SMS gateway). Stop it with
    shutdown() and server_close(); its short poll makes that quick."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", "0")))
            status, extra, body = handle(self.path, {k.lower(): v for k, v in self.headers.items()}, raw)
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ARG002 - no access log
            return

    server = _QuietServer(("127.0.0.1", port), Handler)
    serve = functools.partial(server.serve_forever, poll_interval=0.05)
    threading.Thread(target=serve, name=name, daemon=True).start()
    return server


@dataclass
class Received:
    """One request the webhook receiver got."""

    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes
    valid: bool
    answered: int
    at: float = 0.0  # time.monotonic() when the answer was decided


@dataclass
class WebhookReceiver:
    """A dispatch-platform stand-in: verifies each Standard Webhooks signature and records it.

    `script(500, 429, 400)` makes the next requests get those answers (then 200 again).
    `set_mode("503")` answers 503 to everything until `set_mode("ok")`; `set_mode("hang")`
    holds each request until the mode changes (at most `hang_s`), then answers 503: a
    request the sender may have given up on is never counted as delivered.
    `echo_errors=True` gives every refusal a body that quotes the request's path and
    query, as many platforms' error pages do, to show whether the sender logs it.
    """

    secret: str
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    on_receive: Any = None
    hang_s: float = 60.0
    echo_errors: bool = False
    _mode: str = "ok"
    _mode_changed: threading.Event = field(default_factory=threading.Event)
    _script: list[int] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    def script(self, *codes: int) -> None:
        with self._lock:
            self._script.extend(codes)

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        """`ok`, `503` (every request refused) or `hang` (held, then refused)."""
        if mode not in {"ok", "503", "hang"}:
            raise ValueError(f"unknown receiver mode {mode!r}")
        with self._lock:
            self._mode = mode
            self._mode_changed.set()
            self._mode_changed = threading.Event()

    def _handle(self, headers: dict[str, str], raw: bytes) -> int:
        with self._lock:
            mode, changed = self._mode, self._mode_changed
        if mode == "hang":
            changed.wait(self.hang_s)
        with self._lock:
            default = 200 if mode == "ok" else 503
            code = self._script.pop(0) if self._script else default
            valid = verify(self.secret, headers, raw)
            rec = Received(headers, orjson.loads(raw) if raw else {}, raw, valid, code, time.monotonic())
            self.received.append(rec)
        if self.on_receive is not None and code == 200:
            self.on_receive(rec)
        return code if valid else 401

    def start(self) -> WebhookReceiver:
        def answer(path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
            code = self._handle(headers, raw)
            echo = self.echo_errors and code != 200
            body = f"no route for POST {path}".encode() if echo else b""
            return code, {"Retry-After": "1"} if code == 429 else {}, body

        self._server = serve_posts(self.port, answer, "webhook-receiver")
        return self

    def delivered(self) -> list[Received]:
        """Requests answered 200 with a valid signature."""
        with self._lock:
            return [r for r in self.received if r.valid and r.answered == 200]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class NatsServer(_Process):
    """nats-server with its MQTT listener (sessions and QoS 1 messages kept in
    JetStream on disk), on loopback. `port` is the MQTT port; `mqtt_conf` is added
    inside the `mqtt {}` block (tls, ack_wait, ...), `extra_conf` at the top level."""

    client_port: int = field(default_factory=free_port)
    mqtt_conf: str = ""
    extra_conf: str = ""

    def start(self) -> NatsServer:
        w = self.workdir
        w.mkdir(parents=True, exist_ok=True)
        conf = w / "nats.conf"
        conf.write_text(
            f"server_name: sensord-test-{self.port}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f'jetstream {{ store_dir: "{w}/js" }}\n'
            f"mqtt {{\n  listen: 127.0.0.1:{self.port}\n{self.mqtt_conf}\n}}\n"
            f"{self.extra_conf}\n"
        )
        log = w / "nats.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
                [_binary("nats-server", "/usr/sbin/nats-server"), "-c", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        _wait_port(self.port, self.proc, 20, log)
        return self

    def restart(self) -> NatsServer:
        """Stop (if running) and start again on the same ports with the same data."""
        self.stop()
        return self.start()


def start_nats(workdir: Path, *, mqtt_conf: str = "", extra_conf: str = "") -> NatsServer:
    """Start nats-server with MQTT on a free port."""
    return NatsServer(workdir, free_port(), mqtt_conf=mqtt_conf, extra_conf=extra_conf).start()
