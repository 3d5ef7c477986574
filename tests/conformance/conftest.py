"""Brokers for the client conformance suite: Mosquitto with the settings the project
ships (config/mosquitto.conf), nats-server's MQTT listener, and RabbitMQ's MQTT plugin
with config/rabbitmq.conf, each private, on free ports in temp dirs. Messages are
published with `mosquitto_pub`, a client we did not write.

Mosquitto and nats-server start in well under a second, so each test gets its own. A
RabbitMQ node takes about 9 s to boot, so one node serves the whole suite: each test
gets its own prefix (`Broker.ns`) for client ids, topics and user names on it, and what
another test left there (sessions, queued messages) is never seen."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
from pydantic import SecretStr

from sensord._metrics import Metrics
from sensord._settings import BatchSettings, BrokerSettings, ReconnectSettings
from sensord._types import RawMessage
from sensord.ingest import MqttSource
from sensord.testing import (
    MosquittoServer,
    NatsServer,
    RabbitMqServer,
    RabbitTls,
    free_port,
    start_mosquitto,
    start_nats,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"
SHIPPED_CONF = CONFIG / "mosquitto.conf"
# Deployment-specific lines of the shipped file that a private test broker replaces.
_LOCAL = (
    "listener",
    "persistence_location",
    "password_file",
    "acl_file",
    "allow_anonymous",
    "log_",
    "connection_",
)


def shipped_settings() -> str:
    """The shipped Mosquitto settings that shape sessions, queues and packets."""
    lines = [ln.strip() for ln in SHIPPED_CONF.read_text().splitlines()]
    return "\n".join(ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith(_LOCAL))


def rabbitmq_settings() -> str:
    """config/rabbitmq.conf less its listeners and anonymous access (the node's own)."""
    lines = [ln.strip() for ln in (CONFIG / "rabbitmq.conf").read_text().splitlines()]
    local = ("mqtt.listeners", "mqtt.allow_anonymous", "ssl_options")
    return "\n".join(ln for ln in lines if ln and not ln.startswith("#") and not ln.startswith(local))


@dataclass
class Broker:
    """A started broker under test, with what the tests need of it. On a broker shared
    by several tests, `ns` prefixes this test's client ids, topics and user names."""

    name: str
    server: MosquittoServer | NatsServer | RabbitMqServer
    ns: str = ""

    @property
    def port(self) -> int:
        return self.server.port

    def topic(self, name: str) -> str:
        return self.ns + name

    def client_id(self, name: str) -> str:
        return self.ns + name

    def source(
        self, *, client_id: str = "sensord-conf", subscriptions: tuple[str, ...] = ("conf/#",), **kw: object
    ) -> MqttSource:
        """`make_source` on this broker, in this test's namespace."""
        subs = tuple(self.topic(f) for f in subscriptions)
        return make_source(self.port, client_id=self.client_id(client_id), subscriptions=subs, **kw)

    def restart(self) -> None:
        """Stop and start on the same port, with the data it kept."""
        self.server.stop()
        self.server.start()

    def lose_sessions(self) -> None:
        """The broker loses the sessions it kept, as it can happen to each: Mosquitto and
        nats-server restart without their data; RabbitMQ deletes this test's session
        queues (what its `mqtt.subscription_ttl` does to a session), closing the
        connections that consume from them."""
        server = self.server
        if isinstance(server, RabbitMqServer):
            prefix = f"mqtt-subscription-{self.ns}"
            for queue in server.ctl("list_queues", "name").split():
                if queue.startswith(prefix):
                    server.ctl("delete_queue", queue)
            return
        server.stop()
        for p in (*server.workdir.glob("*.db"), server.workdir / "js"):
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        server.start()

    def publish(self, topic: str, payloads: list[bytes], *, qos: int = 1, client_id: str = "pub") -> None:
        """Publish each payload (one line each) with mosquitto_pub, in order."""
        subprocess.run(
            [
                "mosquitto_pub",
                "-p",
                str(self.port),
                "-i",
                self.client_id(client_id),
                "-t",
                self.topic(topic),
                "-q",
                str(qos),
                "-l",
            ],
            input=b"\n".join(payloads) + b"\n",
            check=True,
            timeout=60,
        )


def mosquitto_broker(workdir: Path, extra: str = "") -> Broker:
    return Broker("mosquitto", start_mosquitto(workdir, extra_conf=shipped_settings() + "\n" + extra))


@dataclass
class SharedRabbit:
    """The suite's one RabbitMQ node, the certificates of its TLS listener, and a
    counter that gives each test its own namespace on it."""

    node: RabbitMqServer
    certs: dict[str, Path]
    _count: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _restricted_password: str = ""

    def broker(self) -> Broker:
        return Broker("rabbitmq", self.node, ns=f"t{next(self._count)}-")

    def restricted_password(self) -> str:
        """The user `restricted`, made on first use: it may not publish to `…deny/…`
        nor subscribe to `…secret/…` (RabbitMQ topic permissions, matched against the
        routing key, where MQTT's `/` is `.`)."""
        if not self._restricted_password:
            password = secrets.token_hex(8)
            self.node.ctl("add_user", "restricted", password)
            self.node.ctl("set_permissions", "-p", "/", "restricted", ".*", ".*", ".*")
            write, read = r"^(?!.*deny\.)", r"^(?!.*secret\.)"
            self.node.ctl("set_topic_permissions", "-p", "/", "restricted", "amq.topic", write, read)
            self._restricted_password = password
        return self._restricted_password


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRabbit]:
    """One RabbitMQ node for the suite, with a plain and a TLS MQTT listener."""
    folder = tmp_path_factory.mktemp("rabbitmq")
    certs = make_certs(folder / "certs")
    tls = RabbitTls(certs["ca"], certs["server"], certs["key"])
    node = RabbitMqServer(folder / "node", free_port(), tls=tls, extra_conf=rabbitmq_settings())
    try:
        yield SharedRabbit(node.start(), certs)
    finally:
        node.close()


BROKERS = ["mosquitto", "nats", "rabbitmq"]
# nats-server redelivers a QoS 1 message its client did not acknowledge only after
# `ack_wait` (default 30 s), also when the client reconnects to its session; the suite
# waits 5 s instead of 30 in each such test.
NATS_MQTT = '  ack_wait: "5s"'


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """Each conformance test against each broker."""
    if request.param == "rabbitmq":
        shared: SharedRabbit = request.getfixturevalue("rabbitmq")
        b = shared.broker()
        yield b
        # A test that stopped the shared node leaves it running for the next one.
        if b.server.proc is None or b.server.proc.poll() is not None:
            b.server.start()
        return
    if request.param == "mosquitto":
        b = mosquitto_broker(tmp_path / "mosquitto")
    else:
        b = Broker("nats", start_nats(tmp_path / "nats", mqtt_conf=NATS_MQTT))
    yield b
    b.server.stop()


@dataclass
class Restricted:
    """A broker with one user and password; the user may not publish to `deny/…` nor
    subscribe to `secret/…` (each broker's own permissions), everything else is open."""

    name: str
    port: int
    user: str
    password: str
    ns: str = ""

    def topic(self, name: str) -> str:
        return self.ns + name

    def source(
        self, *, password: str | None = None, subscriptions: tuple[str, ...] = ("conf/#",)
    ) -> MqttSource:
        """A source logging in as the user (with `password` instead, if given)."""
        return make_source(
            self.port,
            client_id=self.ns + "sensord-conf",
            subscriptions=tuple(self.topic(f) for f in subscriptions),
            username=self.user,
            password=self.password if password is None else password,
            ack_topic_template=None,
        )


@pytest.fixture(params=BROKERS)
def restricted(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Restricted]:
    """Each broker with a password and permissions (see Restricted)."""
    password = secrets.token_hex(8)
    if request.param == "rabbitmq":
        shared: SharedRabbit = request.getfixturevalue("rabbitmq")
        ns = shared.broker().ns
        yield Restricted("rabbitmq", shared.node.port, "restricted", shared.restricted_password(), ns)
        return
    if request.param == "mosquitto":
        pwfile, acl = tmp_path / "passwd", tmp_path / "acl"
        pwfile.write_text(f"sensord:{password}\n")
        subprocess.run(["mosquitto_passwd", "-U", str(pwfile)], check=True)
        acl.write_text("user sensord\ntopic readwrite conf/#\n")
        extra = f"allow_anonymous false\npassword_file {pwfile}\nacl_file {acl}\n"
        server: MosquittoServer | NatsServer | RabbitMqServer = mosquitto_broker(tmp_path / "m", extra).server
    else:
        perms = '{publish: {deny: ["deny.>"]}, subscribe: {deny: ["secret.>"]}}'
        user = f'{{user: sensord, password: "{password}", permissions: {perms}}}'
        server = start_nats(tmp_path / "n", extra_conf=f"authorization {{ users = [ {user} ] }}")
    yield Restricted(request.param, server.port, "sensord", password)
    server.stop()


def make_certs(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and an unrelated CA."""
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={ca}",
            "-keyout", f"{ca}.key", "-out", f"{ca}.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")  # fmt: skip
    return {n: folder / f"{n}.crt" for n in ("ca", "other-ca", "server")} | {"key": folder / "server.key"}


def make_source(port: int, *, client_id: str = "sensord-conf", **kw: object) -> MqttSource:
    """A source as the daemon builds it (persistent session, QoS 1 on conf/#); `kw`
    overrides broker settings, `high_water` the source's pause threshold."""
    high_water = cast("int | None", kw.pop("high_water", None))
    session_file = cast("Path | None", kw.pop("session_file", None))
    password = cast("str | None", kw.pop("password", None))
    fields: dict[str, object] = {
        "port": port,
        "client_id": client_id,
        "subscriptions": ("conf/#",),
        "keepalive_s": 10,
        "reconnect": ReconnectSettings(initial_s=0.1, max_s=0.5),
        **kw,
    }
    settings = BrokerSettings.model_validate(fields)
    batch = BatchSettings(max_size=500, max_wait_ms=20)
    return MqttSource(
        settings,
        None if password is None else SecretStr(password),
        Metrics(),
        batch,
        high_water=high_water,
        session_file=session_file,
    )


@contextlib.asynccontextmanager
async def running(src: MqttSource, *, connected: bool = True) -> AsyncIterator[asyncio.Task[None]]:
    """The source's connection loop as a task, stopped cleanly after."""
    task = asyncio.create_task(src.run())
    try:
        if connected:
            await asyncio.wait_for(src.connected.wait(), 20)
        yield task
    finally:
        await src.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def take(src: MqttSource, n: int, *, ack: bool = True, limit_s: float = 30) -> list[RawMessage]:
    """Receive n messages from the source (acknowledging each batch, or not)."""
    got: list[RawMessage] = []

    async def loop() -> None:
        async for batch in src.batches():
            got.extend(batch)
            if ack:
                src.ack([m.token for m in batch if m.token is not None])
            if len(got) >= n:
                return

    await asyncio.wait_for(loop(), limit_s)
    return got


async def take_all(src: MqttSource, expected: set[bytes], *, limit_s: float = 30) -> set[bytes]:
    """Receive and acknowledge until every payload in `expected` came (repeats allowed)."""
    got: set[bytes] = set()

    async def loop() -> None:
        async for batch in src.batches():
            got.update(m.payload for m in batch)
            src.ack([m.token for m in batch if m.token is not None])
            if got >= expected:
                return

    await asyncio.wait_for(loop(), limit_s)
    return got


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [f"m{i}".encode() for i in range(start, start + n)]
