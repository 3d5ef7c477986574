"""A private RabbitMQ node with its MQTT plugin, for the client conformance suite.

Everything the node and its `rabbitmqctl` use is the test's own, so neither ever reaches
the machine's RabbitMQ service (AMQP 5672, node rabbit@host): a node name of its own, the
MQTT, AMQP and distribution ports picked free, data, logs and config files in the test's
folder, an Erlang cookie in a private HOME, and a port mapper (epmd) of its own on a free
port (a node registers its name with epmd; the machine's epmd is the service's).
/etc/rabbitmq is not read: the env file, config and plugins file are all ours.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sensord.testing._servers import _binary, _Process, _wait_port, free_port

# The scripts themselves: /usr/sbin's wrappers switch to the service's user and folder.
_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def _script(name: str) -> str:
    path = _SCRIPTS / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: install rabbitmq-server (run scripts/bootstrap.sh)")
    return str(path)


@dataclass(frozen=True)
class RabbitTls:
    """The files of the node's MQTT TLS listener (it asks no client certificate)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass
class RabbitMqServer(_Process):
    """RabbitMQ (Debian's rabbitmq-server) with only the MQTT plugin enabled.

    `port` is the MQTT listener; `tls` adds a TLS one on `tls_port`. The broker's own
    user (`username`/`password`) is also the one anonymous MQTT clients log in as, so a
    client without credentials connects and one with a wrong password is refused.
    `extra_conf` lines go into rabbitmq.conf (new-style `key = value`). `stop` and
    `start` keep the data, as a broker restart does; `close` also stops the node's epmd.
    """

    tls: RabbitTls | None = None
    tls_port: int = field(default_factory=free_port)
    amqp_port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    epmd_port: int = field(default_factory=free_port)
    username: str = "sensord"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(12))
    extra_conf: str = ""
    start_timeout_s: float = 90.0
    epmd: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"sensord-test-{self.port}@localhost"

    def _env(self) -> dict[str, str]:
        w = self.workdir
        # Nothing of a caller's RabbitMQ or Erlang settings, nor a systemd notify socket
        # (the node would report to the caller's unit), leaks into the node.
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in {"NOTIFY_SOCKET", "HOME"}
        }
        return base | {
            "HOME": str(w / "home"),  # the Erlang cookie for the node and rabbitmqctl
            "RABBITMQ_CONF_ENV_FILE": str(w / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(w / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(w / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(w / "enabled_plugins"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(w / "mnesia"),
            "RABBITMQ_LOG_BASE": str(w / "log"),
            "RABBITMQ_PID_FILE": str(w / "rabbitmq.pid"),
            # Our epmd is already running: the node and the CLI must not start one themselves.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-start_epmd false -kernel inet_dist_use_interface {127,0,0,1}"
            ),
            "RABBITMQ_CTL_ERL_ARGS": "-start_epmd false",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # The start script then execs the VM instead of waiting on it from a shell,
            # so our process is the node: SIGTERM stops it cleanly, SIGKILL is a crash.
            "RUNNING_UNDER_SYSTEMD": "true",
        }

    def _write_files(self) -> None:
        w = self.workdir
        for d in ("home", "mnesia", "log"):
            (w / d).mkdir(parents=True, exist_ok=True)
        cookie = w / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(20))
            cookie.chmod(0o400)  # Erlang refuses a cookie others can read
        (w / "rabbitmq-env.conf").write_text("")
        (w / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}",
            f"default_user = {self.username}",
            f"default_pass = {self.password}",
            "mqtt.allow_anonymous = true",
            f"mqtt.default_user = {self.username}",
            f"mqtt.default_pass = {self.password}",
            "log.console = false",
            "log.file.level = info",
        ]
        if self.tls is not None:
            lines += [
                f"mqtt.listeners.ssl.default = 127.0.0.1:{self.tls_port}",
                f"ssl_options.cacertfile = {self.tls.ca_file}",
                f"ssl_options.certfile = {self.tls.cert_file}",
                f"ssl_options.keyfile = {self.tls.key_file}",
                "ssl_options.verify = verify_none",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        (w / "rabbitmq.conf").write_text("\n".join([*lines, self.extra_conf, ""]))

    def start(self) -> RabbitMqServer:
        self._write_files()
        env = self._env()
        if self.epmd is None or self.epmd.poll() is not None:
            epmd_log = self.workdir / "log" / "epmd.log"
            with epmd_log.open("ab") as out:
                self.epmd = subprocess.Popen(  # noqa: S603 - fixed binary
                    [_binary("epmd", "/usr/bin/epmd"), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            _wait_port(self.epmd_port, self.epmd, 10, epmd_log)
        log = self.workdir / "log" / "console.log"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed script, our own config
                [_script("rabbitmq-server")],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
            )
        _wait_port(self.port, self.proc, self.start_timeout_s, log)
        if self.tls is not None:
            _wait_port(self.tls_port, self.proc, self.start_timeout_s, log)
        return self

    def stop(self) -> None:
        """Stop the node cleanly (SIGTERM: queues and sessions are kept on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        """Stop the node and its port mapper."""
        self.stop()
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(10)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def restart(self) -> RabbitMqServer:
        """Stop (if running) and start again on the same ports with the same data."""
        self.stop()
        return self.start()

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl against this node only (its name and cookie); returns stdout."""
        done = subprocess.run(  # noqa: S603 - fixed script
            [_script("rabbitmqctl"), "-n", self.node, "-q", *args],
            capture_output=True,
            check=False,
            timeout=timeout,
            env=self._env(),
            cwd=self.workdir,
        )
        if done.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.decode()[-2000:]}")
        return done.stdout.decode()

    def version(self) -> str:
        """The node's RabbitMQ version, as `rabbitmqctl version` prints it."""
        return self.ctl("version").strip()


def start_rabbitmq(workdir: Path, *, tls: RabbitTls | None = None, extra_conf: str = "") -> RabbitMqServer:
    """Start a private RabbitMQ node with MQTT on a free port."""
    return RabbitMqServer(workdir, free_port(), tls=tls, extra_conf=extra_conf).start()
