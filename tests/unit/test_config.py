"""Unit tests for configuration loading and the `sensord check` / `--version` commands."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from sensord import __version__
from sensord._cli import main
from sensord._errors import ConfigError
from sensord._settings import load_settings
from sensord.sinks import sign, verify

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECRET_2 = "whsec_" + base64.b64encode(b"from-systemd-credential-32-bytes").decode()


def write_config(tmp_path: Path, extra: str = "") -> Path:
    """A copy of the shipped registry and rules with a config that reads its secret from a file."""
    shutil.copy(ROOT / "config" / "devices.yaml", tmp_path / "devices.yaml")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    (tmp_path / "webhook-secret").write_text(SECRET + "\n")
    cfg = tmp_path / "sensord.yaml"
    cfg.write_text(
        f"""\
registry: devices.yaml
rules_dir: rules
state_dir: {tmp_path / "state"}
sinks:
  webhook:
    url: http://127.0.0.1:9/alerts
    secret: {{file: webhook-secret}}
{extra}"""
    )
    return cfg


class TestSettings:
    def test_secret_is_read_from_file_and_hidden(self, tmp_path: Path) -> None:
        """A file secret is loaded without its newline and never appears in the settings' repr."""
        settings = load_settings(write_config(tmp_path))
        secret = settings.secret("sinks.webhook.secret")
        assert secret is not None
        assert secret.get_secret_value() == SECRET
        assert SECRET not in repr(settings)

    def test_unknown_key_names_the_key(self, tmp_path: Path) -> None:
        """A misspelt key stops loading with the dotted key in the message."""
        with pytest.raises(ConfigError, match=r"broker\.prot"):
            load_settings(write_config(tmp_path, "broker: {prot: 1883}\n"))

    def test_out_of_range_value_names_the_key(self, tmp_path: Path) -> None:
        """A port above 65535 is refused naming broker.port."""
        with pytest.raises(ConfigError, match=r"broker\.port"):
            load_settings(write_config(tmp_path, "broker: {port: 70000}\n"))

    def test_credential_without_systemd_says_why(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A credential reference outside systemd names the key and $CREDENTIALS_DIRECTORY."""
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        cfg = write_config(tmp_path)
        cfg.write_text(cfg.read_text().replace("{file: webhook-secret}", "{credential: webhook-secret}"))
        with pytest.raises(ConfigError, match=r"sinks\.webhook\.secret.*CREDENTIALS_DIRECTORY"):
            load_settings(cfg)

    def test_credential_is_read_from_credentials_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Under systemd the credential file in $CREDENTIALS_DIRECTORY is the secret."""
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "webhook-secret").write_text(SECRET_2)
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
        cfg = write_config(tmp_path)
        cfg.write_text(cfg.read_text().replace("{file: webhook-secret}", "{credential: webhook-secret}"))
        secret = load_settings(cfg).secret("sinks.webhook.secret")
        assert secret is not None
        assert secret.get_secret_value() == SECRET_2

    def test_settings_are_frozen(self, tmp_path: Path) -> None:
        """Settings cannot be changed after loading: they are passed in, never mutated."""
        settings = load_settings(write_config(tmp_path))
        with pytest.raises(ValueError, match="frozen"):
            settings.broker.port = 1


class TestAckTopics:
    """Acks have their own topic tree, apart from the devices' (issue 8, item 10)."""

    def test_ack_filter_is_subscribed_beside_the_device_topics(self, tmp_path: Path) -> None:
        """The daemon subscribes to the device topics and the dispatch side's ack tree."""
        broker = load_settings(write_config(tmp_path)).broker
        assert broker.filters == ("sensord/+/+/+/+", "sensord-dispatch/ack/+/+/+")

    def test_no_ack_topic_subscribes_to_devices_only(self, tmp_path: Path) -> None:
        """`ack_topic_template: null` turns MQTT acks off."""
        broker = load_settings(write_config(tmp_path, "broker: {ack_topic_template: null}\n")).broker
        assert broker.filters == ("sensord/+/+/+/+",)

    @pytest.mark.parametrize(
        "extra",
        [
            "broker: {ack_topic_template: 'sensord/{community}/{family}/{device_id}/ack'}\n",
            "broker: {subscriptions: ['#']}\n",
            "broker: {ack_topic_template: 'acks/{family}/{device_id}/{kind}'}\n",
            "broker: {ack_topic_template: '{device_id}/ack'}\n",
            "broker: {ack_topic_template: 'acks/+/{device_id}'}\n",
        ],
    )
    def test_ack_topic_inside_the_device_topics_is_refused(self, tmp_path: Path, extra: str) -> None:
        """An ack topic a device filter would also take (so a device's write permission
        could reach it), or without a fixed first level for the ACL, is a config error."""
        with pytest.raises(ConfigError, match=r"broker\.ack_topic_template|ack_topic_template"):
            load_settings(write_config(tmp_path, extra))


class TestCli:
    def test_check_clean_config_exits_zero(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`sensord check` on the shipped registry and rules says ok and exits 0."""
        assert main(["check", "-c", str(write_config(tmp_path))]) == 0
        assert capsys.readouterr().out.startswith("ok:")

    def test_check_names_the_mqtt_parser(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`sensord check` says which MQTT parser runs: the compiled scanner here (setup.py
        builds it at install), and what to install when it is missing."""
        assert main(["check", "-c", str(write_config(tmp_path))]) == 0
        assert "MQTT parser: compiled" in capsys.readouterr().out

    def test_check_explains_a_missing_scanner(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without the C scanner, `check` names the fallback and how to get the scanner."""
        monkeypatch.setattr("sensord.ingest._packets.COMPILED", False)
        assert main(["check", "-c", str(write_config(tmp_path))]) == 0
        assert "MQTT parser: pure Python" in capsys.readouterr().out

    def test_check_broken_rule_names_file_and_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A rule reading a field its family lacks fails `check` with file:line and the reason."""
        cfg = write_config(tmp_path)
        bin_rules = tmp_path / "rules" / "bin.yaml"
        text = bin_rules.read_text()
        bin_rules.write_text(text.replace("when: fill_pct >=", "when: fill_percent >=", 1))
        bad_line = next(
            i for i, line in enumerate(bin_rules.read_text().splitlines(), 1) if "fill_percent" in line
        )
        assert main(["check", "-c", str(cfg)]) == 1
        err = capsys.readouterr().err
        assert f"bin.yaml:{bad_line}" in err
        assert "fill_percent" in err

    def test_check_broken_registry_exits_one(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A registry entry with an unknown family fails `check` naming the device."""
        cfg = write_config(tmp_path)
        (tmp_path / "devices.yaml").write_text("devices:\n  x-1: {family: toaster, community: c, grid: g}\n")
        assert main(["check", "-c", str(cfg)]) == 1
        assert "x-1" in capsys.readouterr().err

    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`sensord --version` prints the package version and exits 0."""
        with pytest.raises(SystemExit) as exc:
            main(["--version"])
        assert exc.value.code == 0
        assert capsys.readouterr().out.strip() == f"sensord {__version__}"


class TestRulesCheck:
    def test_clean_files_exit_zero(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`sensord rules check rules/` on the shipped rules says ok and exits 0."""
        assert main(["rules", "check", str(ROOT / "rules")]) == 0
        assert capsys.readouterr().out.startswith("ok:")

    def test_each_problem_has_file_and_line(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Two broken rules in one file give two errors, each with file:line, and exit 1."""
        bad = tmp_path / "bin.yaml"
        bad.write_text(
            "family: bin\nrules:\n"
            "  - name: a\n    when: fill > 1\n    summary: x\n"
            "  - name: b\n    when: fill_pct > 1\n    for: soon\n    summary: x\n"
        )
        assert main(["rules", "check", str(bad)]) == 1
        err = capsys.readouterr().err
        assert f"{bad}:4" in err
        assert "unknown name 'fill'" in err
        assert f"{bad}:8" in err
        assert "soon" in err

    def test_override_of_unknown_parameter(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """With -c, a registry override of a parameter no rule defines is an error naming the device."""
        cfg = write_config(tmp_path)
        reg = tmp_path / "devices.yaml"
        reg.write_text(reg.read_text().replace("hr_high: 110.0", "hr_hihg: 110.0"))
        assert main(["rules", "check", "-c", str(cfg)]) == 1
        assert "overrides parameter 'hr_hihg'" in capsys.readouterr().err


class TestWebhookSecrets:
    @pytest.mark.parametrize(
        ("secret", "needle"),
        [
            ("s3cret-signing-key", "whsec_"),
            ("whsec_not*base64!", "not base64"),
            ("whsec_" + base64.b64encode(b"short").decode(), "is 5 bytes; use 24 to 64"),
        ],
    )
    def test_secret_not_in_standard_webhooks_form_is_refused(
        self, tmp_path: Path, secret: str, needle: str
    ) -> None:
        """A plain-text or malformed webhook secret is a config error naming the key and
        how to make a good one (a receiver using the Standard Webhooks libraries would
        reject every signature made with it)."""
        cfg = write_config(tmp_path)
        (tmp_path / "webhook-secret").write_text(secret + "\n")
        with pytest.raises(ConfigError, match=r"sinks\.webhook\.secret") as info:
            load_settings(cfg)
        assert needle in str(info.value)
        assert "sensord secret new" in str(info.value)

    def test_secret_new_makes_a_secret_that_loads_and_verifies(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`sensord secret new` prints a whsec_ secret that the config accepts and whose
        signatures verify; two runs differ."""
        assert main(["secret", "new"]) == 0
        assert main(["secret", "new"]) == 0
        first, second = capsys.readouterr().out.split()
        assert first != second
        assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32
        cfg = write_config(tmp_path)
        (tmp_path / "webhook-secret").write_text(first + "\n")
        loaded = load_settings(cfg).secret("sinks.webhook.secret")
        assert loaded is not None
        body = b'{"status": "firing"}'
        headers = {"webhook-id": "e1", "webhook-timestamp": "1790000000"}
        headers["webhook-signature"] = sign(loaded.get_secret_value(), "e1", 1790000000, body)
        assert verify(first, headers, body, now=1790000000)
