"""The documented install works verbatim: the README's steps, run into a temporary root,
give a unit whose credentials exist, a config that checks, and a daemon that starts with
the unit's own command line, as systemd would start it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import sensord
from sensord._settings import load_settings
from sensord.testing import MosquittoServer, free_port
from tests.integration._helpers import ready, stop_daemon, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "sensord.service"
# The absolute paths the install writes; in a test they live under a temporary root.
INSTALLED = re.compile(r"(?<![\w./-])(/etc/sensord|/opt/sensord|/var/lib/sensord|/etc/systemd/system)\b")
SECRETS = "/etc/sensord/secrets"
ANALYZE = shutil.which("systemd-analyze")


def in_root(text: str, root: Path) -> str:
    """`text` with every installed path moved under `root`."""
    return INSTALLED.sub(lambda m: f"{root}{m.group(1)}", text)


def readme_install_steps() -> list[str]:
    """The command lines of the first `sh` block of the README's "Installing as a service"."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Installing as a service") :]
    block = section[section.index("```sh\n") + len("```sh\n") :]
    block = block[: block.index("```")]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def unit_settings(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]}, comments left out."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), [])
        else:
            key, _, value = line.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def service_values(path: Path, key: str) -> list[str]:
    return [v for k, v in unit_settings(path)["Service"] if k == key]


def load_credentials(path: Path) -> list[tuple[str, str]]:
    """The unit's `LoadCredential=ID:PATH` lines as (ID, PATH)."""
    return [
        (cred_id, file)
        for cred_id, _, file in (v.partition(":") for v in service_values(path, "LoadCredential"))
    ]


def stand_in_package(root: Path) -> None:
    """/opt/sensord/venv/bin/sensord as the package install would leave it, running this
    checkout's sensord with this interpreter (the test makes no virtualenv and fetches nothing)."""
    bin_dir = root / "opt/sensord/venv/bin"
    bin_dir.mkdir(parents=True)
    package_parent = Path(sensord.__file__).resolve().parents[1]
    script = bin_dir / "sensord"
    script.write_text(
        "#!/bin/sh\n"
        f'PYTHONPATH={shlex.quote(str(package_parent))}"${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec {shlex.quote(sys.executable)} -m sensord "$@"\n'
    )
    script.chmod(0o755)


def outside_systemd() -> dict[str, str]:
    """The environment of an operator's shell: no credentials, no notify socket."""
    env = dict(os.environ)
    for var in ("CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(var, None)
    return env


def run_step(step: str, root: Path) -> subprocess.CompletedProcess[str]:
    """One README command line, with the installed paths under `root`; the install script
    gets `--root` and `--no-package` (see stand_in_package)."""
    if re.fullmatch(r"bash scripts/install\.sh", step):
        step += f" --root {shlex.quote(str(root))} --no-package"
    return subprocess.run(  # noqa: PLW1510 - the caller reports the output on failure
        ["bash", "-ec", in_root(step, root)],
        cwd=REPO,
        env=outside_systemd(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def install(root: Path) -> None:
    stand_in_package(root)
    done = run_step("bash scripts/install.sh", root)
    assert done.returncode == 0, done.stdout + done.stderr


def edit_config(root: Path, *, broker_port: int) -> int:
    """What the operator does between install and start: their broker and sinks (here a
    private broker, and sinks on free ports where nothing listens). Returns the HTTP port."""
    path = root / "etc/sensord/sensord.yaml"
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["broker"]["port"] = broker_port
    cfg["http"]["port"] = http_port = free_port()
    cfg["sinks"]["webhook"]["url"] = f"http://127.0.0.1:{free_port()}/alerts"
    cfg["sinks"]["influx"]["url"] = f"http://127.0.0.1:{free_port()}"
    cfg["state_dir"] = in_root(cfg["state_dir"], root)
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return http_port


def credentials_as_systemd_loads_them(root: Path, unit: Path, into: Path) -> Path:
    """$CREDENTIALS_DIRECTORY as LoadCredential= fills it; a missing file is systemd's
    243/CREDENTIALS and fails the test."""
    into.mkdir(mode=0o700)
    for cred_id, path in load_credentials(unit):
        source = Path(in_root(path, root))
        assert source.is_file(), f"LoadCredential={cred_id}:{path}: no such file, so 243/CREDENTIALS"
        shutil.copyfile(source, into / cred_id)
    return into


class NotifySocket:
    """The socket systemd gives a Type=notify service ($NOTIFY_SOCKET)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))

    def wait_ready(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                if b"READY=1" in self.sock.recv(4096).split(b"\n"):
                    return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a unix socket's path is limited to 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="sensord-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root into which `scripts/install.sh` has installed sensord, untouched since."""
    root = tmp_path_factory.mktemp("root")
    install(root)
    return root


class TestReadmeInstall:
    def test_readme_steps_start_the_daemon(
        self, tmp_path: Path, short_dir: Path, mosquitto: MosquittoServer
    ) -> None:
        """The README's install steps, then the unit's ExecStart= with the credentials its
        LoadCredential= lines give, start a daemon that tells systemd READY=1 and is healthy."""
        root = tmp_path / "root"
        stand_in_package(root)
        steps = readme_install_steps()
        assert steps[0] == "bash scripts/install.sh"
        assert steps[-1] == "systemctl enable --now sensord"
        http_port = 0
        for step in steps[:-1]:
            assert not step.startswith("systemctl"), f"a README step this test does not run: {step}"
            done = run_step(step, root)
            assert done.returncode == 0, f"{step}\n{done.stdout}{done.stderr}"
            if step.startswith("bash scripts/install.sh"):
                http_port = edit_config(root, broker_port=mosquitto.port)
        unit = root / "etc/systemd/system/sensord.service"
        if shutil.which("systemctl"):  # `enable`: the [Install] section holds
            enabled = subprocess.run(
                ["systemctl", f"--root={root}", "enable", "sensord.service"],
                capture_output=True,
                text=True,
                check=False,
            )
            assert enabled.returncode == 0, enabled.stderr
        # `--now`: start it as systemd would.
        state = Path(in_root(service_values(unit, "WorkingDirectory")[0], root))
        state.mkdir(mode=0o700, parents=True)
        notify = NotifySocket(short_dir)
        env = outside_systemd() | {
            "CREDENTIALS_DIRECTORY": str(credentials_as_systemd_loads_them(root, unit, short_dir / "creds")),
            "NOTIFY_SOCKET": str(notify.path),
            "STATE_DIRECTORY": str(state),
        }
        command = [in_root(arg, root) for arg in shlex.split(service_values(unit, "ExecStart")[0])]
        with (tmp_path / "daemon.log").open("wb") as log:
            proc = subprocess.Popen(command, cwd=state, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            assert notify.wait_ready(60), (tmp_path / "daemon.log").read_text()
            wait_for(lambda: ready(http_port), 10, "/healthz 200")
        finally:
            stop_daemon(proc)
            notify.close()

    def test_readme_check_step_works_outside_systemd(self, installed: Path) -> None:
        """The README's `sensord check` step passes on the installed sample config in an
        operator's shell, where systemd has set no $CREDENTIALS_DIRECTORY."""
        (check,) = [s for s in readme_install_steps() if " check " in s]
        done = run_step(check, installed)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.startswith("ok:")


class TestInstalledFiles:
    def test_every_loaded_credential_is_a_file_the_install_makes(self, installed: Path) -> None:
        """Each LoadCredential= of the installed unit names a non-empty file the install made,
        in the secrets folder under its own ID (so systemd cannot fail with 243/CREDENTIALS,
        and CREDENTIALS_DIRECTORY=/etc/sensord/secrets reads what the service reads)."""
        creds = load_credentials(installed / "etc/systemd/system/sensord.service")
        assert creds
        for cred_id, path in creds:
            assert path == f"{SECRETS}/{cred_id}"
            assert Path(in_root(path, installed)).stat().st_size > 0, path

    def test_every_credential_of_the_sample_config_is_loaded_by_the_unit(self, installed: Path) -> None:
        """Every `{credential: NAME}` of the installed config has a LoadCredential=NAME in the unit."""
        cfg = yaml.safe_load((installed / "etc/sensord/sensord.yaml").read_text(encoding="utf-8"))
        unit = installed / "etc/systemd/system/sensord.service"
        loaded = {cred_id for cred_id, _ in load_credentials(unit)}

        def used(node: object) -> set[str]:
            if isinstance(node, dict):
                own = {node["credential"]} if "credential" in node else set()
                return own.union(*(used(v) for v in node.values()))
            return set()

        assert used(cfg) <= loaded

    def test_sample_config_inputs_resolve_inside_etc_sensord(
        self, installed: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The installed config's registry, rules folder and dispatch file are the copies in
        /etc/sensord."""
        etc = installed / "etc/sensord"
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(etc / "secrets"))
        settings = load_settings(etc / "sensord.yaml")
        rules = settings.input_path(settings.rules_dir)
        assert rules.resolve() == (etc / "rules").resolve()
        assert sorted(rules.glob("*.yaml"))
        assert settings.input_path(settings.registry).resolve() == (etc / "devices.yaml").resolve()
        assert settings.dispatch is not None
        assert settings.input_path(settings.dispatch).resolve() == (etc / "dispatch.yaml").resolve()
        assert (etc / "dispatch.yaml").is_file()


class TestUnit:
    def test_unit_bounds_its_resources_and_restarts_within_a_limit(self) -> None:
        """The unit caps memory, tasks and descriptors, restarts always, and has a start limit."""
        sections = unit_settings(UNIT)
        service = dict(sections["Service"])
        unit = dict(sections["Unit"])
        for key in ("MemoryMax", "TasksMax", "LimitNOFILE", "StartLimitIntervalSec", "StartLimitBurst"):
            assert (service | unit).get(key, "infinity") not in ("", "infinity", "0"), key
        assert service["Restart"] == "always"
        assert "StartLimitIntervalSec" in unit
        assert "StartLimitBurst" in unit

    @pytest.mark.skipif(ANALYZE is None, reason="no systemd-analyze on this machine")
    def test_systemd_analyze_verify_accepts_the_installed_unit(self, installed: Path, tmp_path: Path) -> None:
        """`systemd-analyze verify` reports nothing about the installed unit (its paths under the
        temporary root, so the ExecStart= binary exists)."""
        assert ANALYZE is not None
        unit = tmp_path / "sensord.service"
        unit.write_text(in_root((installed / "etc/systemd/system/sensord.service").read_text(), installed))
        done = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert [ln for ln in done.stderr.splitlines() if "sensord" in ln] == []

    @pytest.mark.skipif(ANALYZE is None, reason="no systemd-analyze on this machine")
    def test_documented_address_pinning_is_valid(self, installed: Path, tmp_path: Path) -> None:
        """The unit's commented IPAddressDeny=/IPAddressAllow= example, enabled, passes `verify`."""
        assert ANALYZE is not None
        text = in_root((installed / "etc/systemd/system/sensord.service").read_text(), installed)
        pinned = re.sub(r"(?m)^# (IPAddress(?:Deny|Allow)=)", r"\1", text)
        assert pinned.count("\nIPAddress") == 2
        unit = tmp_path / "sensord.service"
        unit.write_text(pinned)
        done = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert [ln for ln in done.stderr.splitlines() if "sensord" in ln] == []

    @pytest.mark.skipif(ANALYZE is None, reason="no systemd-analyze on this machine")
    def test_systemd_analyze_security_rates_the_unit_ok(self) -> None:
        """`systemd-analyze security --offline` rates the shipped unit's exposure OK or better."""
        assert ANALYZE is not None
        done = subprocess.run(
            [ANALYZE, "security", "--offline=true", str(UNIT)], capture_output=True, text=True, check=False
        )
        level = re.search(r"Overall exposure level for sensord\.service: ([\d.]+) (\w+)", done.stdout)
        assert level is not None, done.stdout + done.stderr
        assert level.group(2) in {"PERFECT", "SAFE", "OK"}, level.group(0)
