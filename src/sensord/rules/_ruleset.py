"""Compile validated rule files into a RuleSet: per family, rules with numpy closures and
parameter arrays indexed by device (family default, overridden per device by the registry).
"""

from __future__ import annotations

import dataclasses
import functools
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sensord._errors import RuleError
from sensord._registry import Registry
from sensord._types import LOCALES, Family, Severity
from sensord.decode import FieldSpec, field_specs
from sensord.rules._expr import Compiled, ExprError, WindowSpec, compile_expr
from sensord.rules._spec import (
    FlappingSpec,
    LoadedFile,
    LocalText,
    RuleSpec,
    default_text,
    locale_text,
    read_rule_file,
)

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

_BUILTIN_PLACEHOLDERS = frozenset({"device_id", "family", "rule", "community", "grid", "building"})


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready to evaluate. `fields` are the payload fields it reads (rows missing one
    of them are skipped by this rule)."""

    family: Family
    name: str
    when: Compiled | None
    clear: Compiled | None
    for_s: float
    repeat_s: float | None
    severity: Severity
    life_safety: bool
    labels: dict[str, str]
    dispatch: tuple[str, ...]
    # The default text's templates (`en`, or the only one given): what the event's
    # `summary`/`description` carry.
    summary: str
    description: str
    fields: tuple[str, ...]
    params: tuple[str, ...]
    source: str
    # Fields shown in the alert: those the conditions read plus those the texts name.
    shown: tuple[str, ...] = ()
    # The rule as written plus the family defaults of the parameters it reads: two rules
    # with the same definition behave the same, so a reload can keep their state as is.
    definition: str = ""
    kind: str = "state"
    # Durations as written: seconds, or the name of a parameter (per-device overridable).
    durations: dict[str, float | str] = field(default_factory=dict)
    windows: tuple[WindowSpec, ...] = ()
    # Multi-level rules: one rule per level (its severity, condition and reset), lowest first.
    levels: tuple[CompiledRule, ...] = ()
    flapping: FlappingSpec | None = None
    # Locales whose text differs from the default: locale -> (summary, description)
    # templates. Every other locale reads the default text.
    translations: dict[str, tuple[str, str]] = field(default_factory=dict)

    @functools.cached_property
    def watched(self) -> frozenset[str]:
        """The fields whose presence makes a reading relevant to this rule."""
        return frozenset({*self.fields, *(w.field for w in self.windows)})

    @property
    def no_data(self) -> bool:
        return "no_data" in self.durations


@dataclass
class FamilyRules:
    """One family's rules and its parameter arrays (one value per registered device)."""

    family: Family
    rules: list[CompiledRule] = field(default_factory=list)
    param_defaults: dict[str, float] = field(default_factory=dict)
    param_arrays: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    constant: dict[str, float] = field(default_factory=dict)
    specs: dict[str, FieldSpec] = field(default_factory=dict)


@dataclass
class RuleSet:
    """Every loaded rule, by family."""

    by_family: dict[Family, FamilyRules] = field(default_factory=dict)

    @property
    def families(self) -> set[Family]:
        return {f for f, fr in self.by_family.items() if fr.rules}

    @property
    def rule_count(self) -> int:
        return sum(len(fr.rules) for fr in self.by_family.values())

    def referenced_fields(self, family: Family) -> set[str]:
        fr = self.by_family.get(family)
        return {f for r in fr.rules for f in r.fields} if fr else set()


def _template_names(text: str) -> set[str]:
    """The names a template fills; raises ValueError for a placeholder that is not a plain
    name (attribute access and indexing would run at render time, on live values)."""
    names = set()
    for _, name, _, _ in string.Formatter().parse(text):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(
                f"placeholder {{{name}}} is not a plain name; write {{field}} or {{field:.0f}} "
                "(no attribute access, indexing or positional fields)"
            )
        names.add(name)
    return names


def _sample(spec: FieldSpec) -> object:
    """A value of the kind a field has at render time."""
    if spec.kind == "enum":
        return spec.choices[0] if spec.choices else ""
    if spec.kind == "bool":
        return True
    if spec.kind == "integer":
        return 1
    return 1.5


def _fill_error(text: str, fr: FamilyRules) -> str | None:
    """Why `text` cannot be filled with values of the kinds it will get, or None."""
    values: dict[str, object] = {name: _sample(spec) for name, spec in fr.specs.items()}
    values |= dict(fr.param_defaults)
    values |= dict.fromkeys(_BUILTIN_PLACEHOLDERS, "x")
    try:
        text.format_map(values)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        return str(exc)
    return None


def _templates(key: str, text: LocalText) -> list[tuple[str, str]]:
    """(where, template) of each template of a text: `summary`, or `summary.zh-CN` per locale."""
    if isinstance(text, str):
        return [(key, text)]
    return [(f"{key}.{locale}", template) for locale, template in text.items()]


def _template_fields(template: str, fr: FamilyRules) -> set[str]:
    """The fields a template names; ValueError says why it could not be rendered."""
    try:
        names = _template_names(template)
    except ValueError as exc:
        raise ValueError(f"broken template: {exc}") from None
    unknown = names - (set(fr.specs) | set(fr.param_defaults) | _BUILTIN_PLACEHOLDERS)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; use fields, params or device_id")
    problem = _fill_error(template, fr)
    if problem is not None:
        raise ValueError(f"the template cannot be filled: {problem} (check the format specs)")
    return names & set(fr.specs)


def _translations(summary: LocalText, description: LocalText) -> dict[str, tuple[str, str]]:
    """The (summary, description) templates of each locale whose text is not the default."""
    default = (default_text(summary), default_text(description))
    pairs = {locale: (locale_text(summary, locale), locale_text(description, locale)) for locale in LOCALES}
    return {locale: pair for locale, pair in pairs.items() if pair != default}


def _compile_levels(
    spec: RuleSpec, fr: FamilyRules, err: Callable[[str, str], RuleError], compiled: dict[str, Compiled]
) -> list[tuple[Severity, Compiled, Compiled | None]]:
    """Each level's condition and reset, lowest severity first (also added to `compiled`)."""
    parts: list[tuple[Severity, Compiled, Compiled | None]] = []
    for n, lv in enumerate(sorted(spec.levels or (), key=lambda x: _SEVERITY_RANK[x.severity])):
        try:
            lw = compile_expr(lv.when, fr.specs, fr.param_defaults)
            lc = compile_expr(lv.clear, fr.specs, fr.param_defaults) if lv.clear else None
        except ExprError as exc:
            raise err("levels", f"levels ({lv.severity.value}): {exc}") from None
        parts.append((lv.severity, lw, lc))
        compiled[f"level{n}.when"] = lw
        if lc is not None:
            compiled[f"level{n}.clear"] = lc
    return parts


def _compile_rule(  # noqa: C901 - one check per key of the rule
    loaded: LoadedFile, index: int, spec: RuleSpec, fr: FamilyRules
) -> CompiledRule:
    path = str(loaded.path)

    def err(key: str, message: str) -> RuleError:
        return RuleError(message, file=path, line=loaded.line(index, key), rule=spec.name)

    compiled: dict[str, Compiled] = {}
    for key in ("when", "clear"):
        text = getattr(spec, key)
        if text is None:
            continue
        try:
            compiled[key] = compile_expr(text, fr.specs, fr.param_defaults)
        except ExprError as exc:
            raise err(key, f"{key}: {exc}") from None
    level_parts = _compile_levels(spec, fr, err, compiled)
    used_fields = set().union(*(c.fields for c in compiled.values()))
    used_params = set().union(*(c.params for c in compiled.values()))
    windows = set().union(*(c.windows for c in compiled.values()))
    refs = {
        "for": spec.for_s,
        "keep_firing_for": spec.keep_firing_for,
        "cooldown": spec.cooldown,
        "resolve_after": spec.resolve_after,
    }
    if spec.no_data is not None:
        refs["no_data"] = spec.no_data
    durations: dict[str, float | str] = {}
    for key, ref in refs.items():
        if isinstance(ref, str):
            if ref not in fr.param_defaults:
                raise err(
                    "for" if key == "for" else key,
                    f"{key}: {ref!r} is neither a duration (30s, 5m, 2h) nor a parameter of this family",
                )
            used_params.add(ref)
        durations[key] = ref
    named: set[str] = set()
    for key in ("summary", "description"):
        for where, template in _templates(key, getattr(spec, key)):
            try:
                named |= _template_fields(template, fr)
            except ValueError as exc:
                raise err(where, f"{where}: {exc}") from None
    base = CompiledRule(
        family=fr.family,
        name=spec.name,
        when=compiled.get("when"),
        clear=compiled.get("clear"),
        for_s=float(fr.param_defaults[spec.for_s] if isinstance(spec.for_s, str) else spec.for_s),
        repeat_s=spec.repeat,
        severity=spec.severity,
        life_safety=spec.life_safety,
        labels=dict(spec.labels),
        dispatch=spec.dispatch,
        summary=default_text(spec.summary),
        description=default_text(spec.description),
        translations=_translations(spec.summary, spec.description),
        fields=tuple(sorted(used_fields)),
        params=tuple(sorted(used_params)),
        source=f"{path}:{loaded.line(index)}",
        shown=tuple(sorted(used_fields | named)),
        definition=spec.model_dump_json()
        + repr(sorted((p, fr.param_defaults[p]) for p in used_params | (named & set(fr.param_defaults)))),
        kind=spec.kind,
        durations=durations,
        windows=tuple(sorted(windows)),
        flapping=spec.flapping,
    )
    if level_parts:
        base = dataclasses.replace(base, severity=level_parts[-1][0])
        base = dataclasses.replace(
            base,
            levels=tuple(
                dataclasses.replace(
                    base,
                    when=lw,
                    clear=lc,
                    severity=sev,
                    fields=tuple(sorted(lw.fields | (lc.fields if lc else set()))),
                    windows=tuple(sorted(lw.windows | (lc.windows if lc else set()))),
                )
                for sev, lw, lc in level_parts
            ),
        )
    return base


def _add_file(loaded: LoadedFile, ruleset: RuleSet, registry: Registry, errors: list[RuleError]) -> None:
    spec = loaded.spec
    fr = ruleset.by_family.setdefault(
        spec.family, FamilyRules(spec.family, specs={s.name: s for s in field_specs(spec.family)})
    )
    for name, value in spec.params.items():
        if name in fr.specs:
            errors.append(RuleError(f"parameter {name!r} has the name of a field", file=str(loaded.path)))
        elif name in fr.param_defaults and fr.param_defaults[name] != value:
            errors.append(
                RuleError(f"parameter {name!r} defined twice for {spec.family}", file=str(loaded.path))
            )
        fr.param_defaults[name] = value
    seen = {r.name for r in fr.rules}
    for i, rule in enumerate(spec.rules):
        if rule.name in seen:
            errors.append(
                RuleError("duplicate rule name", file=str(loaded.path), line=loaded.line(i), rule=rule.name)
            )
            continue
        seen.add(rule.name)
        try:
            fr.rules.append(_compile_rule(loaded, i, rule, fr))
        except RuleError as exc:
            errors.append(exc)
    _build_params(fr, registry)


def _build_params(fr: FamilyRules, registry: Registry) -> None:
    """One value per device for every parameter. A parameter nobody overrides is a
    read-only broadcast of its default: no memory per device, and `fr.constant` says so
    the engine can use the plain number."""
    n = registry.count(fr.family)
    for name, default in fr.param_defaults.items():
        overrides = registry.overrides(fr.family, name)
        if not overrides:
            fr.param_arrays[name] = np.broadcast_to(np.float64(default), (n,))
            fr.constant[name] = float(default)
            continue
        arr = np.full(n, default, dtype=np.float64)
        for idx, value in overrides.items():
            arr[idx] = value
        fr.param_arrays[name] = arr
        fr.constant.pop(name, None)


def rule_files(rules_dir: Path) -> list[Path]:
    """The rule files of a directory, in load order."""
    return sorted(rules_dir.glob("*.yaml")) + sorted(rules_dir.glob("*.yml"))


def _unknown_overrides(ruleset: RuleSet, registry: Registry) -> list[RuleError]:
    """A per-device override of a parameter no rule file defines is a typo that would
    silently leave the family default in force (a resident's own limit ignored)."""
    return [
        RuleError(
            f"device {device.device_id} overrides parameter {name!r}, which no {family.value} "
            f"rule file defines (defined: {', '.join(sorted(fr.param_defaults)) or 'none'})",
            file="device registry",
        )
        for family, fr in ruleset.by_family.items()
        for device in registry.devices(family)
        for name in sorted(set(device.entry.params) - set(fr.param_defaults))
    ]


def _collect(files: Sequence[Path], registry: Registry, *, where: str) -> tuple[RuleSet, list[RuleError]]:
    errors: list[RuleError] = []
    ruleset = RuleSet()
    if not files:
        errors.append(RuleError("no rule files (*.yaml) found", file=where))
    for path in files:
        try:
            loaded = read_rule_file(path)
        except RuleError as exc:
            errors.append(exc)
            continue
        _add_file(loaded, ruleset, registry, errors)
    errors.extend(_unknown_overrides(ruleset, registry))
    return ruleset, errors


def _collect_dir(rules_dir: Path, registry: Registry) -> tuple[RuleSet, list[RuleError]]:
    if not rules_dir.is_dir():
        return RuleSet(), [RuleError("rules directory does not exist", file=str(rules_dir))]
    return _collect(rule_files(rules_dir), registry, where=str(rules_dir))


def check_rule_files(files: Sequence[Path], registry: Registry) -> list[RuleError]:
    """Every problem in the given rule files (empty when all is well)."""
    return _collect(files, registry, where=", ".join(map(str, files)) or "(no files)")[1]


def load_rule_files(files: Sequence[Path], registry: Registry) -> RuleSet:
    """Load and compile the given rule files; the first problem stops the load."""
    ruleset, errors = _collect(files, registry, where=", ".join(map(str, files)))
    if errors:
        raise errors[0]
    return ruleset


def check_rules(rules_dir: Path, registry: Registry) -> list[RuleError]:
    """Every problem in every rule file (empty when all is well)."""
    return _collect_dir(rules_dir, registry)[1]


def load_rules(rules_dir: Path, registry: Registry) -> RuleSet:
    """Load and compile every rule file; the first problem stops the load."""
    ruleset, errors = _collect_dir(rules_dir, registry)
    if errors:
        raise errors[0]
    return ruleset
