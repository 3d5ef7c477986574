"""Rules stage: YAML rule files → validated specs → compiled numpy plans."""

from sensord.rules._expr import WINDOW_FUNCS, Compiled, ExprError, WindowSpec, compile_expr
from sensord.rules._ruleset import (
    CompiledRule,
    FamilyRules,
    RuleSet,
    check_rule_files,
    check_rules,
    load_rule_files,
    load_rules,
    rule_files,
)
from sensord.rules._spec import RuleSpec, parse_duration

__all__ = [
    "WINDOW_FUNCS",
    "Compiled",
    "CompiledRule",
    "ExprError",
    "FamilyRules",
    "RuleSet",
    "RuleSpec",
    "WindowSpec",
    "check_rule_files",
    "check_rules",
    "compile_expr",
    "load_rule_files",
    "load_rules",
    "parse_duration",
    "rule_files",
]
