"""Rule texts per locale: a rule's summary/description may be given per locale (en,
zh-CN); every event carries its text in each locale, rendered when it is made, so a
notification can be sent in its receiver's language; the shipped rules speak Chinese."""

from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path

import orjson
import pytest

from sensord._cli import main
from sensord._errors import RuleError
from sensord._registry import Registry
from sensord._settings import AlertSettings
from sensord._types import LOCALES, AlertEvent, Family
from sensord.alerts import TEMPLATE_ERROR, Engine
from sensord.alerts._events import render
from sensord.decode import FieldSpec, field_specs
from sensord.outbox import decode_event, encode_event
from sensord.rules import RuleSet, check_rule_files, load_rules
from sensord.sinks import webhook_body
from tests.unit.test_engine import batch, make_rules, registry

SHIPPED_RULES = Path(__file__).parents[2] / "rules"
CJK = re.compile(r"[\u4e00-\u9fff]")

# Lines matter: the errors below name them.
PER_LOCALE = """\
family: wristband
rules:
  - name: heart_rate_abnormal
    when: heart_rate > 120
    summary:
      en: "Heart rate {heart_rate:.0f} bpm on {device_id}"
      zh-CN: "手环 {device_id} 心率异常：{heart_rate:.0f} 次/分"
    description: "Resident of {device_id}"
"""


def ruleset(tmp_path: Path, text: str) -> RuleSet:
    return load_rules(make_rules(tmp_path, text), registry())


def fire(rules: RuleSet, reg: Registry | None = None) -> AlertEvent:
    """The one event of a heart rate of 130 on wb-0."""
    reg = reg or registry()
    events = Engine(rules, reg, AlertSettings()).process(batch([(0, 0, {"heart_rate": 130})])).events
    assert len(events) == 1
    return events[0]


class TestRendering:
    def test_per_locale_summary_renders_each_locale(self, tmp_path: Path) -> None:
        """A rule with an en and a zh-CN summary gives an event with both texts; the event's
        `summary` is the en one (what the webhook and InfluxDB carried before)."""
        event = fire(ruleset(tmp_path, PER_LOCALE))
        assert event.texts == {
            "en": ("Heart rate 130 bpm on wb-0", "Resident of wb-0"),
            "zh-CN": ("手环 wb-0 心率异常：130 次/分", "Resident of wb-0"),
        }
        assert (event.summary, event.description) == event.texts["en"]

    def test_plain_summary_is_the_same_in_every_locale(self, tmp_path: Path) -> None:
        """A plain-string summary (every rule file written before locales) is the text of
        every locale."""
        text = PER_LOCALE.replace(
            PER_LOCALE[PER_LOCALE.index("    summary:") : PER_LOCALE.index("    description")],
            '    summary: "HR {heart_rate:.0f} on {device_id}"\n',
        )
        event = fire(ruleset(tmp_path, text))
        assert {locale: event.text(locale) for locale in LOCALES} == dict.fromkeys(
            LOCALES, ("HR 130 on wb-0", "Resident of wb-0")
        )

    @pytest.mark.parametrize(
        ("entries", "default"),
        [
            ('      zh-CN: "心率 {heart_rate:.0f}"\n      en: "HR {heart_rate:.0f}"\n', "HR 130"),
            ('      zh-CN: "心率 {heart_rate:.0f}"\n', "心率 130"),
        ],
    )
    def test_default_text_is_en_else_the_first_listed(
        self, tmp_path: Path, entries: str, default: str
    ) -> None:
        """The event's `summary` is the en text wherever it is listed, else the first one;
        a locale the mapping leaves out reads that default."""
        start, end = PER_LOCALE.index("      en:"), PER_LOCALE.index("    description")
        event = fire(ruleset(tmp_path, PER_LOCALE[:start] + entries + PER_LOCALE[end:]))
        assert event.summary == default
        assert event.texts["en"][0] == default

    def test_levels_render_each_locale(self, tmp_path: Path) -> None:
        """A multi-level rule renders every locale at each level, as other rules do."""
        text = PER_LOCALE.replace(
            "    when: heart_rate > 120\n",
            "    levels:\n"
            "      - {severity: warning, when: heart_rate > 120}\n"
            "      - {severity: critical, when: heart_rate > 150}\n",
        )
        event = fire(ruleset(tmp_path, text))
        assert event.severity.value == "warning"
        assert event.texts["zh-CN"][0] == "手环 wb-0 心率异常：130 次/分"

    def test_broken_zh_cn_template_falls_back_without_losing_the_alert(self, tmp_path: Path) -> None:
        """A zh-CN template that raises at run time (one that slipped past the checks) still
        gives the alert: en keeps its text, zh-CN gets the plain text, the error is noted."""
        rules = ruleset(tmp_path, PER_LOCALE)
        family = rules.by_family[Family.WRISTBAND]
        rule = family.rules[0]
        family.rules[0] = dataclasses.replace(rule, translations={"zh-CN": ("{heart_rate:.0q}", "")})
        event = fire(rules)
        assert event.summary == "Heart rate 130 bpm on wb-0"
        assert event.texts["zh-CN"][0].startswith("heart_rate_abnormal firing on wb-0")
        assert event.extra[TEMPLATE_ERROR].startswith("zh-CN: ")


class TestRuleFileChecks:
    def test_unknown_locale_is_a_rule_error_at_its_line(self, tmp_path: Path) -> None:
        """A locale sensord does not know (`fr`) is refused with the file and the line of
        that entry, naming the locales it takes."""
        text = PER_LOCALE.replace("      zh-CN:", "      fr:")
        errors = check_rule_files([make_rules(tmp_path, text) / "wristband.yaml"], registry())
        assert len(errors) == 1
        assert isinstance(errors[0], RuleError)
        assert (errors[0].line, errors[0].rule) == (7, "heart_rate_abnormal")
        assert "unknown locale 'fr'" in str(errors[0])
        assert "en or zh-CN" in str(errors[0])

    def test_broken_zh_cn_template_is_caught_by_rules_check(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """`sensord rules check` fills every locale's template: a zh-CN one that cannot be
        filled is an error at its own line, though the en one is fine."""
        path = make_rules(tmp_path, PER_LOCALE.replace("{heart_rate:.0f} 次", "{device_id:.0f} 次"))
        assert main(["rules", "check", str(path)]) == 1
        where = f"{path / 'wristband.yaml'}:7 rule 'heart_rate_abnormal'"
        assert f"{where}: summary.zh-CN: the template cannot be filled" in capsys.readouterr().err


def _sample(spec: FieldSpec) -> object:
    if spec.kind == "enum":
        return spec.choices[0]
    return {"bool": True, "integer": 3}.get(spec.kind, 12.5)


class TestShippedRules:
    def test_every_shipped_rule_has_a_chinese_summary(self) -> None:
        """Every rule in rules/*.yaml has a zh-CN summary of its own that renders with
        sample values, is written in Chinese and names the device and the same readings
        as the en one."""
        rules = load_rules(SHIPPED_RULES, Registry.from_entries({}))
        assert rules.rule_count >= 40
        for family, fr in rules.by_family.items():
            values: dict[str, object] = {s.name: _sample(s) for s in field_specs(family)}
            values |= {**fr.param_defaults, "device_id": "dev-1"}
            for rule in fr.rules:
                assert "zh-CN" in rule.translations, rule.name
                template = rule.translations["zh-CN"][0]
                text, problem = render(template, values)
                assert problem is None, rule.name
                assert CJK.search(text), rule.name
                assert _names(template) == _names(rule.summary), rule.name
                assert "device_id" in _names(template), rule.name


def _names(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


class TestTransport:
    def test_outbox_round_trip_keeps_the_texts(self, tmp_path: Path) -> None:
        """An event read back from the outbox has the same texts per locale."""
        event = fire(ruleset(tmp_path, PER_LOCALE))
        assert decode_event(encode_event(event)) == event

    def test_outbox_body_is_the_bytes_of_the_event_as_a_dict(self, tmp_path: Path) -> None:
        """The stored body is byte for byte `orjson.dumps(asdict(event))`, the format
        outboxes written before encode_event dumped the dataclass directly hold."""
        event = dataclasses.replace(
            fire(ruleset(tmp_path, PER_LOCALE)), repeat=True, extra={"template_error": "x"}
        )
        assert encode_event(event) == orjson.dumps(dataclasses.asdict(event))

    def test_event_queued_before_locales_reads_its_summary_in_every_locale(self, tmp_path: Path) -> None:
        """An outbox body written by a sensord without texts decodes, and each locale
        reads the event's summary."""
        body = orjson.loads(encode_event(fire(ruleset(tmp_path, PER_LOCALE))))
        del body["texts"]
        event = decode_event(orjson.dumps(body))
        assert event.text("zh-CN") == ("Heart rate 130 bpm on wb-0", "Resident of wb-0")

    def test_webhook_body_has_every_locale(self, tmp_path: Path) -> None:
        """The webhook body keeps `summary` (en) and adds `texts` per locale."""
        body = webhook_body(fire(ruleset(tmp_path, PER_LOCALE)))
        assert body["summary"] == "Heart rate 130 bpm on wb-0"
        assert body["texts"] == {
            "en": {"summary": "Heart rate 130 bpm on wb-0", "description": "Resident of wb-0"},
            "zh-CN": {"summary": "手环 wb-0 心率异常：130 次/分", "description": "Resident of wb-0"},
        }
