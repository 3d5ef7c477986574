"""The dispatch file and its routing tree (issue 9, point 3): matchers, the Alertmanager
walk (first match, continue, nesting, default, inherited settings), the rule's dispatch
list, who a receiver reaches, and `sensord check` / `sensord routes test` on it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from sensord._cli import main
from sensord._errors import ConfigError
from sensord._registry import load_registry, parse_registry
from sensord.dispatch import Router, check_dispatch, read_dispatch, spec_from
from sensord.dispatch._recipients import recipients
from sensord.rules import load_rule_files, rule_files

ROOT = Path(__file__).resolve().parents[2]
TREE: dict[str, Any] = {
    "receivers": [{"name": n} for n in ("ops", "sanitation", "desk", "doctor", "family", "night")],
    "route": {
        "receiver": "ops",
        "group_by": ["community"],
        "routes": [
            {"matchers": ['family="bin"'], "receiver": "sanitation", "group_wait": "2m"},
            {
                "matchers": ['life_safety="true"'],
                "receiver": "desk",
                "continue": True,
                "routes": [{"matchers": ['rule=~"heart_.*"'], "receiver": "doctor"}],
            },
            {"matchers": ['family="wristband"', 'community!="river"'], "receiver": "family"},
            {"matchers": ['family="wristband"'], "receiver": "night"},
        ],
    },
}


def receivers(
    labels: dict[str, str], dispatch: tuple[str, ...] = (), tree: dict[str, Any] = TREE
) -> list[str]:
    return [r.receiver for r in Router(spec_from(tree)).route(labels, dispatch)]


class TestWalk:
    def test_first_matching_child_takes_the_alert(self) -> None:
        """A bin alert lands on the bin route only; the later routes are not tried."""
        assert receivers({"family": "bin", "life_safety": "false"}) == ["sanitation"]

    def test_continue_goes_on_to_later_siblings(self) -> None:
        """A life-safety wristband alert reaches the desk (continue) and the next matching sibling."""
        got = receivers({"family": "wristband", "life_safety": "true", "community": "maple", "rule": "sos"})
        assert got == ["desk", "family"]

    def test_nested_route_lands_below_its_parent(self) -> None:
        """A matching child of a node is where the alert lands, not the node itself."""
        got = receivers(
            {"family": "wristband", "life_safety": "true", "community": "river", "rule": "heart_rate"}
        )
        assert got == ["doctor", "night"]

    def test_negative_matcher_and_fallthrough(self) -> None:
        """`community!="river"` excludes river; the alert falls to the next sibling."""
        assert receivers({"family": "wristband", "life_safety": "false", "community": "river"}) == ["night"]

    def test_nothing_matching_lands_on_the_root(self) -> None:
        """An alert no child takes goes to the root's receiver."""
        assert receivers({"family": "lift", "life_safety": "false"}) == ["ops"]

    def test_settings_are_inherited_unless_set(self) -> None:
        """group_by comes from the root, group_wait from the node that sets it."""
        node = Router(spec_from(TREE)).route({"family": "bin"})[0].node
        assert (node.group_by, node.group_wait_s, node.group_interval_s) == (("community",), 120.0, 300.0)

    def test_rule_dispatch_adds_receivers_once(self) -> None:
        """Receivers the rule names are added after the tree's, each once; unknown names are skipped."""
        got = receivers({"family": "bin"}, ("sanitation", "family", "nobody"))
        assert got == ["sanitation", "family"]

    def test_rule_dispatch_can_be_turned_off(self) -> None:
        """`rule_dispatch: false`: only the tree decides."""
        assert receivers({"family": "bin"}, ("family",), {**TREE, "rule_dispatch": False}) == ["sanitation"]

    def test_webhook_is_the_default_receiver_when_configured(self) -> None:
        """Without a root receiver, today's sinks.webhook is the default (no config breaks)."""
        router = Router(spec_from({"route": {}}), builtin=("webhook",))
        assert [r.receiver for r in router.route({"family": "bin"})] == ["webhook"]


class TestMatchers:
    @pytest.mark.parametrize(
        ("text", "value", "hit"),
        [
            ('team="fire"', "fire", True),
            ("team=fire", "fire", True),
            ('team!="fire"', "fire", False),
            ('team=~"fire|lift"', "lift", True),
            ('team=~"fire"', "fire-safety", False),
            ('team!~"fire.*"', "water", True),
            ('team="say \\"hi\\""', 'say "hi"', True),
        ],
    )
    def test_matcher_forms(self, text: str, value: str, hit: bool) -> None:
        """=, !=, =~ and !~ (regexes over the whole value), quoted or bare."""
        tree = {"receivers": [{"name": "a"}, {"name": "b"}], "route": {"receiver": "a", "routes": [
            {"matchers": [text], "receiver": "b"}]}}  # fmt: skip
        assert (receivers({"team": value}, tree=tree) == ["b"]) is hit

    def test_bad_matcher_names_file_and_line(self, tmp_path: Path) -> None:
        """A matcher that is not label="value" is refused with the file, line and key."""
        f = tmp_path / "dispatch.yaml"
        f.write_text("receivers: [{name: a}]\nroute:\n  receiver: a\n  routes:\n    - matchers: ['family']\n")
        with pytest.raises(ConfigError, match=r"dispatch\.yaml:5.*route\.routes\.0\.matchers\.0"):
            read_dispatch(f)

    def test_bad_regex_is_refused(self, tmp_path: Path) -> None:
        """A matcher regex that does not compile is refused with the reason."""
        f = tmp_path / "dispatch.yaml"
        f.write_text("route:\n  routes:\n    - matchers: ['rule=~\"(\"']\n")
        with pytest.raises(ConfigError, match="not a valid regular expression"):
            read_dispatch(f)


REGISTRY = {
    "devices": {
        "wb-1": {
            "family": "wristband",
            "community": "maple",
            "grid": "g1",
            "contacts": {"女儿": "+86 139 1"},
        },
        "wb-2": {"family": "wristband", "community": "river", "grid": "g1"},
    },
    "grids": {
        "g1": {"workers": [{"name": "张伟", "phone": "+86 138 1"}]},
        "river/g1": {"workers": [{"name": "陈静", "phone": "+86 138 4"}]},
    },
}


class TestRecipients:
    def test_grid_workers_by_community_grid_first(self) -> None:
        """`recipients: grid` finds `community/grid` before a plain `grid` entry."""
        reg = parse_registry(REGISTRY, source="t")
        rec = spec_from({"receivers": [{"name": "grid_worker", "recipients": "grid"}]}).receivers[0]
        maple = recipients(rec, device_id="wb-1", community="maple", grid="g1", registry=reg)
        river = recipients(rec, device_id="wb-2", community="river", grid="g1", registry=reg)
        assert [p.name for p in maple] == ["张伟"]
        assert [p.name for p in river] == ["陈静"]

    def test_contacts_and_fixed_people(self) -> None:
        """`recipients: contacts` adds the device's contacts after the receiver's people."""
        reg = parse_registry(REGISTRY, source="t")
        spec = {"receivers": [{"name": "family", "recipients": "contacts", "people": [{"name": "desk"}]}]}
        rec = spec_from(spec).receivers[0]
        got = recipients(rec, device_id="wb-1", community="maple", grid="g1", registry=reg)
        assert [(p.name, p.phone) for p in got] == [("desk", None), ("女儿", "+86 139 1")]

    def test_bad_grid_entry_names_the_key(self) -> None:
        """A grid worker without a name is a registry error naming grids.<grid>.workers."""
        with pytest.raises(ConfigError, match=r"grids\.g1\.workers\.0\.name"):
            parse_registry({"devices": {}, "grids": {"g1": {"workers": [{"phone": "1"}]}}}, source="t")


def shipped(tmp_path: Path, dispatch: str | None = None) -> tuple[Path, Path]:
    """The shipped registry, rules and dispatch file (or `dispatch` text) with a config."""
    shutil.copy(ROOT / "config" / "devices.yaml", tmp_path / "devices.yaml")
    shutil.copytree(ROOT / "rules", tmp_path / "rules")
    d = tmp_path / "dispatch.yaml"
    d.write_text(dispatch if dispatch is not None else (ROOT / "config" / "dispatch.yaml").read_text())
    cfg = tmp_path / "sensord.yaml"
    cfg.write_text(
        f"registry: devices.yaml\nrules_dir: rules\ndispatch: dispatch.yaml\nstate_dir: {tmp_path}\n"
    )
    return cfg, d


def problems(tmp_path: Path, dispatch: str) -> list[str]:
    _, d = shipped(tmp_path, dispatch)
    reg = load_registry(tmp_path / "devices.yaml")
    loaded = read_dispatch(d)
    return check_dispatch(
        loaded, Router(loaded.spec), load_rule_files(rule_files(tmp_path / "rules"), reg), reg
    )


BASE = (ROOT / "config" / "dispatch.yaml").read_text()


class TestCheck:
    def test_shipped_dispatch_file_is_clean(self, tmp_path: Path) -> None:
        """config/dispatch.yaml names a receiver for every shipped rule's dispatch list and
        has no route that no alert reaches."""
        assert problems(tmp_path, BASE) == []

    def test_unknown_receiver_in_a_route(self, tmp_path: Path) -> None:
        """A route naming a receiver not defined is reported at its line."""
        text = BASE.replace("receiver: sanitation\n      group_by", "receiver: sanitaton\n      group_by")
        got = problems(tmp_path, text)
        line = text.splitlines().index("      receiver: sanitaton") + 1
        known = ", ".join(sorted(names(text)))
        where = f"{tmp_path / 'dispatch.yaml'}:{line}"
        assert got == [f"{where}: route.routes[1]: unknown receiver 'sanitaton' (receivers: {known})"]

    def test_route_no_alert_can_match(self, tmp_path: Path) -> None:
        """A misspelt family matches no alert: reported with its line and matchers."""
        got = problems(
            tmp_path, BASE.replace("- matchers: ['family=\"lift\"']", "- matchers: ['family=\"lifts\"']")
        )
        assert len(got) == 1
        assert 'route.routes[6]: no alert can match family="lifts"' in got[0]

    def test_unknown_escalation_policy_on_a_route(self, tmp_path: Path) -> None:
        """A route naming an escalation policy the file lacks is reported at its line."""
        got = problems(tmp_path, BASE.replace("escalation: lift_emergency\n", "escalation: lift\n"))
        assert len(got) == 1
        assert "unknown escalation policy 'lift'" in got[0]

    def test_unknown_receiver_in_an_escalation_step(self, tmp_path: Path) -> None:
        """A step notifying a receiver the file lacks is reported with the policy and step."""
        got = problems(tmp_path, BASE.replace("- {notify: [community_doctor]", "- {notify: [doctor]"))
        assert len(got) == 1
        assert "escalations.elder_sos.steps[1]: unknown receiver 'doctor'" in got[0]

    def test_life_safety_route_without_escalation(self, tmp_path: Path) -> None:
        """With policies defined, a life-safety alert whose routes have none is reported."""
        text = BASE.replace("      escalation: fire\n", "", 2).replace("  escalation: routine\n", "")
        got = problems(tmp_path, text)
        assert len(got) == 1
        assert "without an escalation policy" in got[0]
        assert "smoke_alarm" in got[0]

    def test_shadowed_route(self, tmp_path: Path) -> None:
        """A route after a sibling that takes all its alerts (no continue) is reported, naming it."""
        text = BASE.replace(
            "    - matchers: ['family=\"fire\"']",
            (
                "    - matchers: ['family=\"wristband\"', 'rule=\"wristband_sos\"']\n"
                "      receiver: grid_worker\n"
                "    - matchers: ['family=\"fire\"']"
            ),
        )
        got = problems(tmp_path, text)
        assert len(got) == 1
        assert "route.routes[4]: route.routes[2] above take every alert" in got[0]

    def test_rule_dispatching_to_a_missing_receiver(self, tmp_path: Path) -> None:
        """A rule naming a receiver the file lacks is reported at the rule's file:line."""
        text = BASE.replace(
            "  - name: sanitation               # 环卫\n"
            '    people: [{name: 环卫班组, phone: "+86 21 5555 0300"}]\n',
            "",
        )
        got = [p for p in problems(tmp_path, text) if "dispatches to" in p]
        assert got
        assert all("dispatches to 'sanitation'" in p and "/rules/bin.yaml:" in p for p in got[:1])
        assert all("'sanitation'" in p for p in got)

    def test_sensord_check_reports_dispatch_problems(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`sensord check` fails on a dispatch problem and prints it."""
        cfg, _ = shipped(tmp_path, BASE.replace('family="water"', 'family="waters"'))
        assert main(["check", "-c", str(cfg)]) == 1
        assert 'no alert can match family="waters"' in capsys.readouterr().err


def names(text: str) -> list[str]:
    return [ln.split("name:")[1].split()[0] for ln in text.splitlines() if ln.strip().startswith("- name:")]


class TestRoutesTest:
    def test_sos_reaches_desk_family_and_grid_worker(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`routes test --device --rule` prints the receivers, the grid's worker, and that
        life-safety is never grouped."""
        cfg, _ = shipped(tmp_path)
        assert main(["routes", "test", "-c", str(cfg), "--device", "wb-01", "--rule", "wristband_sos"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == "elder_care_desk, family_contact, grid_worker"
        assert any("张伟" in ln for ln in out)
        assert any("never grouped" in ln for ln in out)

    def test_labels_alone_with_a_dispatch_file(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without a config, `--dispatch FILE --labels k=v` routes on the labels given."""
        _, d = shipped(tmp_path)
        assert (
            main(
                [
                    "routes",
                    "test",
                    "--dispatch",
                    str(d),
                    "--labels",
                    "family=bin",
                    "rule=bin_full",
                    "life_safety=false",
                ]
            )
            == 0
        )
        assert capsys.readouterr().out.splitlines()[0] == "sanitation"

    def test_unknown_device_is_an_error(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """A device missing from the registry is refused with the reason."""
        cfg, _ = shipped(tmp_path)
        assert main(["routes", "test", "-c", str(cfg), "--device", "nope"]) == 1
        assert "not in the registry" in capsys.readouterr().err


class TestInhibitCheck:
    def test_shipped_inhibit_rules_are_clean(self, tmp_path: Path) -> None:
        """The shipped inhibit rules hold back no life-safety alert and match real alerts."""
        assert "inhibit_rules" in BASE
        assert problems(tmp_path, BASE) == []

    def test_rule_that_could_hold_back_life_safety_is_refused(self, tmp_path: Path) -> None:
        """Targets that include a life-safety alert (a trapped passenger) are refused at their line."""
        text = BASE.replace(
            "target_matchers: ['family=\"lift\"', 'life_safety=\"false\"']",
            "target_matchers: ['family=\"lift\"']",
        )
        got = problems(tmp_path, text)
        assert len(got) == 1
        assert "inhibit_rules[1]: its targets include life-safety alerts (" in got[0]
        assert "lift_trapped_passenger" in got[0]

    def test_rule_matching_nothing_is_refused(self, tmp_path: Path) -> None:
        """A misspelt source rule matches no alert: reported."""
        got = problems(
            tmp_path,
            BASE.replace(
                "source_matchers: ['rule=\"community_silent\"']",
                "source_matchers: ['rule=\"community_silence\"']",
            ),
        )
        assert len(got) == 1
        assert "inhibit_rules[0]: no alert can match its source matchers" in got[0]


class TestQuietHoursCheck:
    def test_quiet_hours_where_life_safety_lands_are_refused(self, tmp_path: Path) -> None:
        """A muted route that life-safety alerts can land on is refused at its line."""
        text = BASE.replace("""['family="bin"', 'life_safety="false"']""", """['family="bin"']""")
        got = problems(tmp_path, text)
        assert len(got) == 1
        assert "route.routes[1]: quiet hours on a route life-safety alerts land on" in got[0]

    def test_unknown_time_interval_is_refused(self, tmp_path: Path) -> None:
        """A route naming a time interval the file does not define is refused."""
        got = problems(
            tmp_path, BASE.replace("mute_time_intervals: [night]", "mute_time_intervals: [nights]")
        )
        assert len(got) == 1
        assert "unknown time interval 'nights' (known: night)" in got[0]

    def test_bad_time_range_is_refused(self, tmp_path: Path) -> None:
        """A time range that is not HH:MM-HH:MM is a config error with the line."""
        d = tmp_path / "dispatch.yaml"
        d.write_text('time_intervals:\n  night: [{times: ["22-07"]}]\n')
        with pytest.raises(ConfigError, match=r"dispatch\.yaml:2.*HH:MM-HH:MM"):
            read_dispatch(d)
