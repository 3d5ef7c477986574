"""Unit tests for recordings and offline replay through the rule set."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensord._cli import main
from sensord._errors import RecordingError
from sensord._registry import parse_registry
from sensord._settings import Settings
from sensord._tools import _iso
from sensord._types import AlertStatus, RawMessage
from sensord.replay import read_recording, replay, write_recording
from sensord.rules import load_rules
from sensord.simulate import generate, load_scenario, registry_for

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


class TestRecording:
    @pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
    def test_round_trip(self, tmp_path: Path, name: str) -> None:
        """Text and non-UTF-8 payloads come back byte for byte, plain or gzip."""
        msgs = [(T0, "sensord/c/bin/b1/telemetry", b'{"fill_pct": 1}'), (T0 + 1, "t/x", b"\xff\x00bad")]
        assert write_recording(tmp_path / name, msgs) == 2
        back = [(m.received_at, m.topic, m.payload) for m in read_recording(tmp_path / name)]
        assert back == msgs

    def test_bad_line_names_file_and_line(self, tmp_path: Path) -> None:
        """A corrupt line is an error naming the file and the line number."""
        path = tmp_path / "rec.jsonl"
        path.write_text('[1.0, "t", "{}"]\nnot json\n')
        with pytest.raises(RecordingError, match=r"rec\.jsonl:2"):
            list(read_recording(path))


class TestReplay:
    def test_scenario_incidents_alert_offline(self) -> None:
        """The demo scenario replayed with no broker fires every rule its incidents expect."""
        sc = load_scenario(ROOT / "simulators" / "neighbourhood.yaml")
        registry = parse_registry(registry_for(sc), source="scenario")
        rules = load_rules(ROOT / "rules", registry)
        msgs = [RawMessage(t, p, ts) for ts, t, p, _ in generate(sc, seed=1, start_ts=T0)]
        settings = Settings.model_validate({"decode": {"max_clock_skew_s": 0}})
        result = replay(msgs, registry=registry, rules=rules, settings=settings)
        fired = {(e.rule, e.device_id) for e in result.events if e.status is AlertStatus.FIRING}
        for inc in sc.incidents:
            for rule in inc.expect:
                assert (rule, inc.device) in fired, f"{inc.kind} on {inc.device} did not fire {rule}"
        assert sum(result.rejects.values()) == sc.malformed + sc.unknown_devices

    def test_same_events_whatever_the_batch_size(self) -> None:
        """Replaying in batches of 7 or of 5000 gives the same event ids in the same order."""
        sc = load_scenario(ROOT / "simulators" / "neighbourhood.yaml")
        registry = parse_registry(registry_for(sc), source="scenario")
        rules = load_rules(ROOT / "rules", registry)
        msgs = [RawMessage(t, p, ts) for ts, t, p, _ in generate(sc, seed=1, start_ts=T0)]
        ids = []
        for size in (7, 5000):
            settings = Settings.model_validate(
                {"decode": {"max_clock_skew_s": 0}, "batch": {"max_size": size}}
            )
            result = replay(msgs, registry=registry, rules=rules, settings=settings)
            ids.append(sorted(e.event_id for e in result.events))
        assert ids[0] == ids[1]
        assert ids[0]

    def test_cli_generate_then_replay(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """`simulate --out` writes a recording; `replay` prints its alert timeline."""
        rec, reg = tmp_path / "day.jsonl.gz", tmp_path / "devices.yaml"
        scenario = str(ROOT / "simulators" / "neighbourhood.yaml")
        assert main(["simulate", scenario, "--registry-out", str(reg)]) == 0
        assert main(["simulate", scenario, "--out", str(rec), "--start", str(T0)]) == 0
        capsys.readouterr()
        assert main(["replay", str(rec), "--registry", str(reg), "--rules", str(ROOT / "rules")]) == 0
        out = capsys.readouterr()
        assert "firing" in out.out
        assert "wristband_sos" in out.out
        assert "replayed" in out.err

    def test_cli_missing_recording(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A recording that does not exist is a one-line error and exit 1."""
        reg = tmp_path / "devices.yaml"
        reg.write_text("devices: {}\n")
        args = [
            "replay",
            str(tmp_path / "nope.jsonl"),
            "--registry",
            str(reg),
            "--rules",
            str(ROOT / "rules"),
        ]
        assert main(args) == 1
        assert "cannot open" in capsys.readouterr().err


class TestReplayNotifications:
    """`sensord replay --notifications` (issue 9, point 10): the messages each receiver
    would get, on event time, the same on every run."""

    def setup(self, tmp_path: Path) -> Path:
        root = Path(__file__).resolve().parents[2]
        reg = {
            "devices": {
                "wb-1": {
                    "family": "wristband",
                    "community": "maple",
                    "grid": "g1",
                    "contacts": {"女儿": "+86 139 1"},
                },
                **{f"bin-{i}": {"family": "bin", "community": "maple", "grid": "g1"} for i in range(12)},
            },
            "grids": {"g1": {"workers": [{"name": "张伟", "phone": "+86 138 1"}]}},
        }
        import yaml  # noqa: PLC0415

        (tmp_path / "devices.yaml").write_text(yaml.safe_dump(reg, allow_unicode=True))
        # The shipped sample, with a chat robot for each receiver (the sample leaves channels out).
        sample = yaml.safe_load((root / "config" / "dispatch.yaml").read_text())
        for r in sample["receivers"]:
            r["channels"] = [{"type": "wecom", "url": f"http://chat.example/{r['name']}?key=k"}]
        (tmp_path / "dispatch.yaml").write_text(yaml.safe_dump(sample, allow_unicode=True))
        cfg = tmp_path / "sensord.yaml"
        paths = f"rules_dir: {root / 'rules'}\nstate_dir: {tmp_path}\n"
        cfg.write_text(f"registry: devices.yaml\ndispatch: dispatch.yaml\n{paths}")
        t0 = 1_796_090_400.0  # 2026-12-01 10:00 Shanghai: no quiet hours
        msgs = [(t0, "sensord/maple/wristband/wb-1/telemetry", b'{"sos": true, "ts": %f}' % t0)]
        msgs += [
            (t0 + 1 + i, f"sensord/maple/bin/bin-{i}/telemetry", b'{"fill_pct": 95, "ts": %f}' % (t0 + 1 + i))
            for i in range(12)
        ]
        msgs += [
            (t0 + 300, "sensord/maple/wristband/wb-1/telemetry", b'{"sos": false, "ts": %f}' % (t0 + 300))
        ]
        write_recording(tmp_path / "rec.jsonl", msgs)
        return cfg

    def test_an_unaccepted_sos_escalates_at_its_timeout_in_replay(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With the shipped policy, the doctor (step 2) is told 3 min after the SOS on the
        recording's clock, to the second, and no one else is told of a step before it."""
        cfg = self.setup(tmp_path)
        assert main(["replay", str(tmp_path / "rec.jsonl"), "-c", str(cfg), "--notifications"]) == 0
        lines = [ln for ln in capsys.readouterr().out.splitlines() if "升级" in ln]
        assert [ln.split()[2].split("/")[0] for ln in lines] == ["*community_doctor"]
        assert " ".join(lines[0].split()[:2]) == _iso(1_796_090_400.0 + 180)

    def test_sos_to_three_receivers_and_twelve_bins_in_one_message(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The SOS reaches desk, family and grid worker at once, in Chinese; the twelve bins
        reach sanitation as one message after group_wait; a second run prints the same."""
        cfg = self.setup(tmp_path)
        args = ["replay", str(tmp_path / "rec.jsonl"), "-c", str(cfg), "--notifications"]
        assert main(args) == 0
        first = capsys.readouterr().out
        assert main(args) == 0
        assert capsys.readouterr().out == first
        lines = first.splitlines()
        sos = [ln for ln in lines if "手环SOS" in ln and "升级" not in ln]
        assert {ln.split()[2].split("/")[0] for ln in sos} == {
            "*elder_care_desk",
            "*family_contact",
            "*grid_worker",
        }
        bins = [ln for ln in lines if "sanitation/" in ln or " sanitation" in ln]
        assert len(bins) == 1
        assert "12" in bins[0]
