"""Rule files: YAML with line numbers → validated pydantic specs.

A rule file holds one family's parameters and rules:

    family: bin
    params: {fill_high: 80, fill_clear: 70}
    rules:
      - name: bin_full
        when: fill_pct >= fill_high
        clear: fill_pct < fill_clear
        for: 0s
        severity: warning
        labels: {team: sanitation}
        dispatch: [sanitation, grid_worker]
        summary: "Bin {device_id} is {fill_pct:.0f}% full"

`summary` and `description` are one template for every locale, or a template per locale
(`en`, `zh-CN`). The default text (what `AlertEvent.summary` carries, and so the webhook's
`summary` and InfluxDB) is the `en` one, or the first listed when there is no `en`; a
locale a mapping leaves out gets the default text:

        summary:
          en: "Bin {device_id} is {fill_pct:.0f}% full"
          zh-CN: "垃圾桶 {device_id} 已满 {fill_pct:.0f}%"
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from sensord._errors import RuleError
from sensord._types import DEFAULT_LOCALE, LOCALES, Family, Severity

_DURATION = re.compile(
    r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$"
)


# The longest duration a rule may name (for, cooldown, no_data, …): 30 days. Longer is a
# typo, and an infinite one would never fire.
MAX_DURATION_S = 30 * 86400.0


def parse_duration(value: object) -> float:
    """'30s', '5m', '2h', '1h30m', '1d', or a number of seconds → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"a duration must be a finite number of seconds, got {value!r}")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return _bounded(float(value))
    if not isinstance(value, str):
        raise ValueError(f"a duration is text like 30s, 5m, 2h or 1h30m, got {value!r}")  # noqa: TRY004 - pydantic validators report ValueError
    text = value.strip()
    m = _DURATION.match(text)
    if not text or m is None or not any(m.groups()):
        raise ValueError(f"cannot read duration {value!r}: use forms like 30s, 5m, 2h or 1h30m")
    d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return _bounded(d * 86400 + h * 3600 + mi * 60 + s)


def _bounded(seconds: float) -> float:
    if seconds > MAX_DURATION_S:
        raise ValueError(f"a duration of {seconds:g} s is longer than the limit of 30d")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _duration_or_param(value: object) -> float | str:
    """A duration, or the name of a parameter holding seconds (per-device overridable)."""
    if isinstance(value, str) and _IDENT.match(value.strip()):
        return value.strip()
    return parse_duration(value)


DurationRef = Annotated[float | str, BeforeValidator(_duration_or_param)]


class _EntryError(ValueError):
    """A reject of one entry of a mapping in a rule: `entry` lets the error point at the
    entry's own line rather than the line of the key holding the mapping."""

    def __init__(self, message: str, entry: str) -> None:
        super().__init__(message)
        self.entry = entry


def _local_text(value: object, *, required: bool) -> object:
    """A text as written: one template for every locale, or a mapping locale → template."""
    if isinstance(value, str):
        if required and not value:
            raise ValueError("the text cannot be empty")
        return value
    if not isinstance(value, dict) or not value:
        raise ValueError(f"give a text, or a mapping of locale to text ({', '.join(LOCALES)})")
    for locale, text in value.items():
        if locale not in LOCALES:
            known = " or ".join(LOCALES)
            raise _EntryError(f"unknown locale {locale!r}: texts are given for {known}", str(locale))
        if not isinstance(text, str) or (required and not text):
            raise _EntryError(f"the {locale} text must be a non-empty string", locale)
    return value


# A summary or description: the same template in every locale, or one per locale.
LocalText = str | dict[str, str]
Summary = Annotated[LocalText, BeforeValidator(functools.partial(_local_text, required=True))]
Description = Annotated[LocalText, BeforeValidator(functools.partial(_local_text, required=False))]


def default_text(text: LocalText) -> str:
    """The template of the default text: `en` when given, else the first listed."""
    if isinstance(text, str):
        return text
    return text[DEFAULT_LOCALE] if DEFAULT_LOCALE in text else next(iter(text.values()))


def locale_text(text: LocalText, locale: str) -> str:
    """The template `locale` reads: its own, else the default."""
    if isinstance(text, str):
        return text
    return text.get(locale, default_text(text))


class FlappingSpec(BaseModel):
    """Flap detection over the last `window` evaluations of one alert: flapping starts
    when the share of them that changed state reaches `high`, ends at or below `low`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: Annotated[int, Field(ge=4, le=64)] = 20
    high: Annotated[float, Field(gt=0, le=1)] = 0.5
    low: Annotated[float, Field(ge=0, lt=1)] = 0.25

    @model_validator(mode="after")
    def _marks(self) -> FlappingSpec:
        if self.low >= self.high:
            raise ValueError("flapping: `low` must be below `high`")
        return self


class LevelSpec(BaseModel):
    """One severity level of a multi-level rule, with its own reset condition."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    severity: Severity
    when: Annotated[str, Field(min_length=1)]
    clear: str | None = None


_SEVERITY_ORDER = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class RuleSpec(BaseModel):
    """One alert rule as written by an operator."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=80)]
    # state: an alert while the condition holds; event: one-shot (SOS, fall) that fires on
    # each rising edge and resolves by acknowledgement or after `resolve_after`.
    kind: Literal["state", "event"] = "state"
    when: Annotated[str, Field(min_length=1)] | None = None
    clear: str | None = None
    for_s: Annotated[DurationRef, Field(alias="for")] = 0.0
    keep_firing_for: DurationRef = 0.0
    cooldown: DurationRef = 0.0
    resolve_after: DurationRef = 1800.0
    # No data: fires when the device has sent nothing for this long (no `when`).
    no_data: DurationRef | None = None
    # Several severities, each with its own condition and reset; the alert moves between them.
    levels: tuple[LevelSpec, ...] | None = None
    # Hold notifications while the alert changes state too often (see FlappingSpec).
    flapping: FlappingSpec | None = None
    severity: Severity = Severity.WARNING
    life_safety: bool = False
    repeat: Duration | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    dispatch: tuple[str, ...] = ()
    summary: Summary
    description: Description = ""

    @model_validator(mode="after")
    def _shape(self) -> RuleSpec:
        if self.levels is not None:
            if self.when is not None or self.clear is not None or self.no_data is not None:
                raise ValueError(
                    "a rule with `levels:` has its conditions in the levels, not `when:`/`clear:`"
                )
            if self.kind != "state" or self.for_s or self.keep_firing_for or self.cooldown or self.flapping:
                raise ValueError("`levels:` rules take no kind/for/keep_firing_for/cooldown/flapping")
            order = [_SEVERITY_ORDER[lv.severity] for lv in self.levels]
            if not order or len(set(order)) != len(order):
                raise ValueError("`levels:` lists each severity (info, warning, critical) at most once")
            return self
        if self.no_data is None and self.when is None:
            raise ValueError(
                "a rule needs `when:` (a condition), `levels:` or `no_data:` (a silence duration)"
            )
        if self.flapping is not None and (self.kind != "state" or self.no_data is not None):
            raise ValueError("`flapping:` applies to state rules (a condition that comes and goes)")
        if self.no_data is not None and (self.when is not None or self.clear is not None):
            raise ValueError("a `no_data:` rule has no `when:` or `clear:`; it fires on silence alone")
        if self.kind == "event" and self.clear is not None:
            raise ValueError(
                "an event rule (kind: event) has no `clear:`; it resolves by ack or resolve_after"
            )
        return self


class RuleFileSpec(BaseModel):
    """One rule file: a family, its parameter defaults and its rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Family
    params: dict[str, float] = Field(default_factory=dict)
    rules: tuple[RuleSpec, ...] = ()


def _parse(text: str) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree, from one parse with libyaml (pure-Python PyYAML took
    ~0.3 s of every start for the six default rule files, parsing each twice)."""
    loader = yaml.CSafeLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def _lines(node: yaml.Node | None) -> tuple[dict[str, int], list[tuple[int, dict[str, int]]]]:
    """Line numbers (1-based) of top-level keys, and of each rule, its keys and the entries
    of its mappings (`summary.zh-CN`, `labels.team`)."""
    top: dict[str, int] = {}
    rules: list[tuple[int, dict[str, int]]] = []
    if not isinstance(node, yaml.MappingNode):
        return top, rules
    for k, v in node.value:
        top[str(k.value)] = k.start_mark.line + 1
        if k.value == "rules" and isinstance(v, yaml.SequenceNode):
            for item in v.value:
                keys: dict[str, int] = {}
                if isinstance(item, yaml.MappingNode):
                    keys = {str(rk.value): rk.start_mark.line + 1 for rk, _ in item.value}
                    keys |= {
                        f"{rk.value}.{ek.value}": ek.start_mark.line + 1
                        for rk, rv in item.value
                        if isinstance(rv, yaml.MappingNode)
                        for ek, _ in rv.value
                    }
                rules.append((item.start_mark.line + 1, keys))
    return top, rules


class LoadedFile:
    """A parsed rule file with the line of each rule, for error messages."""

    def __init__(self, path: Path, spec: RuleFileSpec, rule_lines: list[tuple[int, dict[str, int]]]) -> None:
        self.path = path
        self.spec = spec
        self._rule_lines = rule_lines

    def line(self, index: int, key: str = "") -> int:
        """The line of a rule's key (`summary`, or an entry: `summary.zh-CN`), else of the
        key holding it, else of the rule."""
        if index >= len(self._rule_lines):
            return 0
        start, keys = self._rule_lines[index]
        return keys.get(key, keys.get(key.split(".", 1)[0], start))


def _error_line(loc: tuple[Any, ...], top: dict[str, int], rules: list[tuple[int, dict[str, int]]]) -> int:
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] < len(rules):
        start, keys = rules[loc[1]]
        if len(loc) <= 2:
            return start
        return keys.get(".".join(map(str, loc[2:4])), keys.get(str(loc[2]), start))
    return top.get(str(loc[0]), 1) if loc else 1


def yaml_error(path: Path, exc: yaml.YAMLError) -> RuleError:
    """A YAML syntax error as a RuleError with the file and the line it points at."""
    mark = getattr(exc, "problem_mark", None)
    return RuleError(
        f"not valid YAML: {getattr(exc, 'problem', exc)}",
        file=str(path),
        line=mark.line + 1 if mark is not None else 0,
    )


def read_rule_file(path: Path) -> LoadedFile:
    """Parse and validate one rule file; RuleError names file, line and reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RuleError(f"cannot read: {exc.strerror}", file=str(path)) from None
    try:
        data, node = _parse(text)
        top, rules = _lines(node)
    except yaml.YAMLError as exc:
        raise yaml_error(path, exc) from None
    if not isinstance(data, dict):
        raise RuleError("a rule file is a mapping with family, params and rules", file=str(path), line=1)
    try:
        spec = RuleFileSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _EntryError):
            loc = (*loc, cause.entry)
        rule = ""
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            raw = data.get("rules") or []
            item = raw[loc[1]] if loc[1] < len(raw) else None
            rule = str(item.get("name", "")) if isinstance(item, dict) else ""
        key = ".".join(str(p) for p in loc if not isinstance(p, int))
        raise RuleError(
            f"{key}: {err['msg']}", file=str(path), line=_error_line(loc, top, rules), rule=rule
        ) from None
    return LoadedFile(path, spec, rules)
